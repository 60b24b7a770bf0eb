package dev.privtune.demo.ort;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import dev.privtune.core.device.Classifier;
import dev.privtune.core.tokenizer.DeviceTokenizer;
import dev.privtune.demo.runtime.Probabilities;
import java.io.File;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The safety classifier on an ORT inference model ({@code input_ids}, {@code attention_mask} int64
 * [B, T] to {@code logits} float32 [B, L]), tokenising with the bundle's WordPiece tokenizer.
 */
final class OrtClassifier implements Classifier {
    private final OrtEnvironment env;
    private final OrtSession session;
    private final DeviceTokenizer tokenizer;
    private final List<String> labels;

    OrtClassifier(OrtEnvironment env, File model, DeviceTokenizer tokenizer, List<String> labels, int threads) throws OrtException {
        OrtSession.SessionOptions options = new OrtSession.SessionOptions();
        options.setIntraOpNumThreads(threads);
        this.env = env;
        this.session = env.createSession(model.getPath(), options);
        this.tokenizer = tokenizer;
        this.labels = Collections.unmodifiableList(new ArrayList<String>(labels));
    }

    @Override
    public synchronized float[][] classify(List<String> texts) {
        long[][][] batch = tokenizer.padBatch(tokenizer.encode(texts)); // validates: non-empty, no blank text
        OnnxTensor ids = null;
        OnnxTensor mask = null;
        OrtSession.Result result = null;
        try {
            ids = OnnxTensor.createTensor(env, batch[0]);
            mask = OnnxTensor.createTensor(env, batch[1]);
            Map<String, OnnxTensor> inputs = new HashMap<String, OnnxTensor>();
            inputs.put("input_ids", ids);
            inputs.put("attention_mask", mask);
            result = session.run(inputs);
            float[][] logits = (float[][]) result.get(0).getValue();
            if (logits.length != texts.size() || logits[0].length != labels.size()) {
                throw new IllegalStateException("model returned logits of shape [" + logits.length + ", " + logits[0].length
                        + "], expected [" + texts.size() + ", " + labels.size() + "]");
            }
            return Probabilities.softmax(logits);
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime inference failed: " + e.getMessage(), e);
        } finally {
            if (result != null) {
                result.close();
            }
            if (ids != null) {
                ids.close();
            }
            if (mask != null) {
                mask.close();
            }
        }
    }

    @Override
    public List<String> labels() {
        return labels;
    }
}
