package dev.privtune.demo.tools;

import dev.privtune.core.device.Classifier;
import dev.privtune.core.device.LocalTrainer;
import dev.privtune.core.device.TrainingResult;
import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.RandomBytes;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.TensorSpec;
import dev.privtune.demo.runtime.OnDeviceRuntime;
import dev.privtune.demo.runtime.OpenBundle;
import dev.privtune.demo.train.DpStepRunner;
import dev.privtune.demo.train.LocalDpLoop;
import java.io.File;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * TEST DOUBLE (JVM tests only; never in the APK): a "runtime" whose model has zero gradients, so each
 * private step is plain SGD on the step's DP noise: theta -= lr * scale * noise. It runs the app's real
 * {@link LocalDpLoop} (sampling, noise, ledger) so the rest of a round (check-in, adapter download,
 * clipping, outbox, upload) can be exercised against the real Python aggregator without ONNX Runtime.
 */
public final class NoiseOnlyRuntime implements OnDeviceRuntime {
    @Override
    public String description() {
        return "TEST DOUBLE: zero-gradient model (no ONNX Runtime)";
    }

    @Override
    public Classifier openClassifier(OpenBundle bundle, File modelDir) {
        throw new UnsupportedOperationException("the test double cannot classify");
    }

    @Override
    public LocalTrainer openTrainer(final OpenBundle bundle, final List<long[]> examples, final int[] labels, File workDir,
            File modelDir, final RandomBytes random, final double deviceEpsilonBudget) {
        return new LocalTrainer() {
            @Override
            public TrainingResult train(RoundConfig round, Map<String, Tensor> global, LocalLedger ledger) throws IOException {
                List<TensorSpec> specs = bundle.manifest().trainable();
                final float[] theta = new float[(int) bundle.manifest().trainableNumel()];
                int k = 0;
                for (TensorSpec spec : specs) {
                    float[] v = global.get(spec.name()).values();
                    System.arraycopy(v, 0, theta, k, v.length);
                    k += v.length;
                }
                final float lr = (float) round.dp().learningRate();
                DpStepRunner runner = new DpStepRunner() {
                    @Override
                    public double privateStep(List<long[]> batch, int[] batchLabels, double clipNorm, float[] noise, double scale) {
                        for (int i = 0; i < theta.length; i++) {
                            theta[i] -= lr * (float) (scale * noise[i]);
                        }
                        return batch.isEmpty() ? Double.NaN : 0.0;
                    }
                };
                List<LedgerStep> steps;
                try {
                    steps = LocalDpLoop.run(round, theta.length, examples, labels, ledger, random, runner, deviceEpsilonBudget, null);
                } catch (dev.privtune.demo.train.PrivacyBudgetExceededException e) {
                    throw new IOException(e.getMessage(), e);
                }
                Map<String, Tensor> local = new LinkedHashMap<String, Tensor>();
                k = 0;
                for (TensorSpec spec : specs) {
                    float[] v = new float[spec.numel()];
                    System.arraycopy(theta, k, v, 0, v.length);
                    k += v.length;
                    local.put(spec.name(), new Tensor(spec.shape(), dev.privtune.core.protocol.DType.FLOAT32, v));
                }
                return new TrainingResult(local, steps, examples.size());
            }
        };
    }
}
