package dev.privtune.demo.ort;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.OrtTrainingSession;
import dev.privtune.demo.train.DpStepRunner;
import dev.privtune.demo.train.LocalDpLoop;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * One private step with ORT Training's TrainStep / OptimizerStep / LazyResetGrad on the bundle's
 * training graph, whose user inputs are (in order) {@code input_ids} int64 [1, T], {@code attention_mask}
 * int64 [1, T], {@code labels} int64 [1], {@code dp_clip_norm} float32 [1], {@code dp_noise} float32 [P],
 * {@code dp_scale} float32 [1]; every TrainStep accumulates {@code (clip_C(g) + noise) * scale} per
 * trainable tensor ({@code export/ort_backend.py}). Batch-1 steps make the clip per example.
 */
final class OrtStepRunner implements DpStepRunner {
    /** The training graph's user inputs, in order. */
    static final List<String> TRAINING_INPUTS = Arrays.asList(
            "input_ids", "attention_mask", "labels", "dp_clip_norm", "dp_noise", "dp_scale");

    private final OrtEnvironment env;
    private final OrtTrainingSession session;
    private final long[] noiseOnlyIds;
    private final float[] zeros;

    /**
     * @param noiseOnlyIds token ids of the empty text ([CLS] [SEP]) for a noise-only step
     * @param numParams P, the length of dp_noise
     * @throws IOException when the graph does not take the six DP inputs
     */
    OrtStepRunner(OrtEnvironment env, OrtTrainingSession session, long[] noiseOnlyIds, int numParams) throws IOException {
        if (!session.getTrainInputNames().containsAll(TRAINING_INPUTS)) {
            throw new IOException("the bundle's training_model.onnx takes " + session.getTrainInputNames()
                    + ", not the DP inputs " + TRAINING_INPUTS + "; re-export the bundle with privtune export");
        }
        this.env = env;
        this.session = session;
        this.noiseOnlyIds = noiseOnlyIds.clone();
        this.zeros = new float[numParams];
    }

    @Override
    public double privateStep(List<long[]> examples, int[] labels, double clipNorm, float[] noise, double scale) throws IOException {
        if (noise.length != zeros.length) {
            throw new IllegalArgumentException("noise has " + noise.length + " coordinates, the graph takes " + zeros.length);
        }
        try {
            session.lazyResetGrad();
            double lossSum = 0;
            if (examples.isEmpty()) {
                accumulate(noiseOnlyIds, 0, LocalDpLoop.NOISE_ONLY_CLIP, noise, scale);
            } else {
                for (int i = 0; i < examples.size(); i++) {
                    lossSum += accumulate(examples.get(i), labels[i], clipNorm, i == 0 ? noise : zeros, scale);
                }
            }
            session.optimizerStep();
            session.lazyResetGrad();
            return examples.isEmpty() ? Double.NaN : lossSum / examples.size();
        } catch (OrtException e) {
            throw new IOException("ONNX Runtime training step failed: " + e.getMessage(), e);
        }
    }

    /** One batch-1 TrainStep; returns its cross-entropy. */
    private double accumulate(long[] ids, int label, double clipNorm, float[] noise, double scale) throws OrtException {
        long[][] mask = new long[1][ids.length];
        Arrays.fill(mask[0], 1L);
        List<OnnxTensor> owned = new ArrayList<OnnxTensor>();
        OrtSession.Result result = null;
        try {
            Map<String, OnnxTensor> inputs = new HashMap<String, OnnxTensor>();
            inputs.put("input_ids", own(owned, OnnxTensor.createTensor(env, new long[][] {ids})));
            inputs.put("attention_mask", own(owned, OnnxTensor.createTensor(env, mask)));
            inputs.put("labels", own(owned, OnnxTensor.createTensor(env, new long[] {label})));
            inputs.put("dp_clip_norm", own(owned, OnnxTensor.createTensor(env, new float[] {(float) clipNorm})));
            inputs.put("dp_noise", own(owned, OnnxTensor.createTensor(env, FloatBuffer.wrap(noise), new long[] {noise.length})));
            inputs.put("dp_scale", own(owned, OnnxTensor.createTensor(env, new float[] {(float) scale})));
            result = session.trainStep(inputs);
            OnnxValue loss = result.get(0);
            Object value = loss.getValue();
            return value instanceof Number ? ((Number) value).doubleValue() : Double.NaN;
        } finally {
            if (result != null) {
                result.close();
            }
            for (OnnxTensor t : owned) {
                t.close();
            }
        }
    }

    private static OnnxTensor own(List<OnnxTensor> owned, OnnxTensor tensor) {
        owned.add(tensor);
        return tensor;
    }
}
