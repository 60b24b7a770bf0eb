package dev.privtune.core.device;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.dp.DpMath;
import dev.privtune.core.dp.Gaussian;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.SecureRandomBytes;
import dev.privtune.core.dp.UpdateBuilder;
import dev.privtune.core.protocol.AdapterUpdate;
import dev.privtune.core.protocol.DpConfig;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.UpdateCodec;
import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * Pure-Java test doubles of the two interfaces the app's ONNX Runtime classes implement, driven
 * through one round: train (DP steps recorded in the ledger) then build and encode the update.
 */
public class InterfacesTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    /** Scores a text "unsafe" by the share of words on a list. */
    static final class KeywordClassifier implements Classifier {
        @Override
        public float[][] classify(List<String> texts) {
            if (texts.isEmpty()) {
                throw new IllegalArgumentException("texts is empty");
            }
            float[][] out = new float[texts.size()][];
            for (int i = 0; i < texts.size(); i++) {
                String[] words = texts.get(i).toLowerCase(java.util.Locale.ROOT).split("\\s+");
                int bad = 0;
                for (String w : words) {
                    if (w.equals("idiot") || w.equals("shut")) {
                        bad++;
                    }
                }
                float unsafe = (float) bad / words.length;
                out[i] = new float[] {1 - unsafe, unsafe};
            }
            return out;
        }

        @Override
        public List<String> labels() {
            return Arrays.asList("safe", "unsafe");
        }
    }

    /** DP-SGD on a linear model over per-example "gradients" that pull every weight toward 1. */
    static final class ToyTrainer implements LocalTrainer {
        @Override
        public TrainingResult train(RoundConfig round, Map<String, Tensor> global, LocalLedger ledger) throws java.io.IOException {
            DpConfig dp = round.dp();
            Map<String, double[]> params = new LinkedHashMap<String, double[]>();
            for (Map.Entry<String, Tensor> e : global.entrySet()) {
                params.put(e.getKey(), e.getValue().toDoubles());
            }
            int examples = 8;
            for (long step = 0; step < dp.localSteps(); step++) {
                ledger.recordStep(round.roundId(), step, dp.samplingRate(), dp.noiseMultiplier()); // before the noise exists
                Map<String, double[][]> grads = new LinkedHashMap<String, double[][]>();
                for (Map.Entry<String, double[]> e : params.entrySet()) {
                    double[][] g = new double[examples][e.getValue().length];
                    for (int b = 0; b < examples; b++) {
                        for (int i = 0; i < g[b].length; i++) {
                            g[b][i] = e.getValue()[i] - 1.0;
                        }
                    }
                    grads.put(e.getKey(), g);
                }
                Map<String, double[]> sum = DpMath.clipAndSum(grads, dp.clipNorm(), null);
                int total = DpMath.flatten(sum).length;
                float[] noise = Gaussian.noise(new SecureRandomBytes(), total, dp.noiseMultiplier() * dp.clipNorm());
                double[] n = new double[total];
                for (int i = 0; i < total; i++) {
                    n[i] = noise[i];
                }
                Map<String, double[]> update = DpMath.noiseAndScale(sum, n, 1.0 / (dp.samplingRate() * examples));
                for (Map.Entry<String, double[]> e : params.entrySet()) {
                    double[] u = update.get(e.getKey());
                    for (int i = 0; i < u.length; i++) {
                        e.getValue()[i] -= dp.learningRate() * u[i];
                    }
                }
            }
            Map<String, Tensor> local = new LinkedHashMap<String, Tensor>();
            for (Map.Entry<String, double[]> e : params.entrySet()) {
                local.put(e.getKey(), Tensor.float32FromDoubles(global.get(e.getKey()).shape(), e.getValue()));
            }
            return new TrainingResult(local, new ArrayList<dev.privtune.core.dp.LedgerStep>(ledger.steps()), examples);
        }
    }

    @Test
    public void aRoundThroughTheInterfaces() throws Exception {
        Classifier classifier = new KeywordClassifier();
        float[][] p = classifier.classify(Arrays.asList("you are great", "shut up idiot"));
        assertTrue(p[1][1] > p[0][1]);
        assertEquals(classifier.labels().size(), p[0].length);

        Map<String, Tensor> global = new LinkedHashMap<String, Tensor>();
        global.put("head.weight", Tensor.float32FromDoubles(new int[] {2, 4}, new double[8]));
        RoundConfig round = RoundConfig.of(2, "ab00000000000000000000000000000000000000000000000000000000000000", 1,
                DpConfig.of(1.0, 0.5, 0.5, 3, 0.1, "sgd"), 0.5, 2e9, "float16");
        LocalLedger ledger = new LocalLedger(new File(tmp.getRoot(), "ledger.json"));
        TrainingResult result = new ToyTrainer().train(round, global, ledger);
        assertEquals(3, result.steps().size());
        assertEquals(3, new LocalLedger(ledger.file()).steps().size());
        AdapterUpdate update = UpdateBuilder.build(round, "phone-1", global, result.localParams(), 0.0,
                round.dp().localDelta(), null);
        AdapterUpdate decoded = UpdateCodec.decode(UpdateCodec.encode(update));
        assertEquals(round.roundId(), decoded.roundId());
        assertEquals("float16", decoded.dtype().numpyName());
    }
}
