package dev.privtune.core.device;

import java.util.List;

/**
 * The safety classifier as the app sees it. The Android app implements it with ONNX Runtime on the
 * bundle's inference model (tokenising with {@link dev.privtune.core.tokenizer.DeviceTokenizer});
 * core only defines the contract, so it builds and tests without ORT.
 */
public interface Classifier {
    /**
     * Class probabilities for each text, in the manifest's label order (each row sums to 1).
     *
     * @param texts non-empty list of texts, each with at least one non-space character
     * @return float[texts.size()][labels]
     * @throws IllegalArgumentException for an empty list or a blank text
     */
    float[][] classify(List<String> texts);

    /** Labels in output order (the manifest's {@code labels}). */
    List<String> labels();
}
