package dev.privtune.demo.runtime;

import dev.privtune.core.device.Classifier;
import dev.privtune.core.device.LocalTrainer;
import dev.privtune.core.dp.RandomBytes;
import java.io.File;
import java.io.IOException;
import java.util.List;

/**
 * What the app needs from an inference/training runtime. The ONNX Runtime implementation lives in the
 * {@code ort} source set ({@code dev.privtune.demo.ort.OrtRuntime}) and is found by
 * {@link RuntimeLookup}; a build without it has no runtime and says so.
 */
public interface OnDeviceRuntime {
    /** Human-readable name and version, e.g. "ONNX Runtime 1.19.2 (training)". */
    String description();

    /**
     * The safety classifier: the newest exported global model in {@code modelDir} if any, else the
     * bundle's inference model.
     *
     * @throws IOException when the model cannot be loaded
     */
    Classifier openClassifier(OpenBundle bundle, File modelDir) throws IOException;

    /**
     * A local DP trainer on the given examples.
     *
     * @param examples token ids of the device's examples ([CLS] ... [SEP])
     * @param labels their labels
     * @param workDir scratch space for per-round checkpoints (large: about the size of the bundle's checkpoint)
     * @param modelDir where to export the global model for {@link #openClassifier}
     * @param random secure source for sampling and noise
     * @param deviceEpsilonBudget the device's own epsilon cap (infinity for none)
     * @throws IOException when the training session cannot be prepared
     */
    LocalTrainer openTrainer(OpenBundle bundle, List<long[]> examples, int[] labels, File workDir, File modelDir,
            RandomBytes random, double deviceEpsilonBudget) throws IOException;
}
