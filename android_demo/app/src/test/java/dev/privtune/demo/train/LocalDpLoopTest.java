package dev.privtune.demo.train;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.RandomBytes;
import dev.privtune.core.dp.SecureRandomBytes;
import dev.privtune.core.protocol.DpConfig;
import dev.privtune.core.protocol.RoundConfig;
import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class LocalDpLoopTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    /** Records what the loop hands the runtime, and the ledger size at that moment. */
    static final class RecordingRunner implements DpStepRunner {
        final LocalLedger ledger;
        final List<Integer> batchSizes = new ArrayList<Integer>();
        final List<Integer> ledgerSizeAtCall = new ArrayList<Integer>();
        final List<float[]> noises = new ArrayList<float[]>();
        final List<Double> scales = new ArrayList<Double>();
        final List<Double> clips = new ArrayList<Double>();

        RecordingRunner(LocalLedger ledger) {
            this.ledger = ledger;
        }

        @Override
        public double privateStep(List<long[]> examples, int[] labels, double clipNorm, float[] noise, double scale) {
            batchSizes.add(examples.size());
            ledgerSizeAtCall.add(ledger.steps().size());
            noises.add(noise.clone());
            scales.add(scale);
            clips.add(clipNorm);
            return examples.isEmpty() ? Double.NaN : 0.5;
        }
    }

    static RoundConfig round(long id, double q, double sigma, long steps, double budget) {
        DpConfig dp = DpConfig.of(0.7, sigma, q, steps, 0.05, "sgd");
        java.util.Map<String, Object> m = dp.toMap();
        m.put("local_epsilon_budget", budget);
        return RoundConfig.of(id, repeat('a', 64), 0, DpConfig.fromMap(m), 1.0, 1e12, "float32");
    }

    static String repeat(char c, int n) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < n; i++) {
            b.append(c);
        }
        return b.toString();
    }

    static List<long[]> examples(int n) {
        List<long[]> out = new ArrayList<long[]>();
        for (int i = 0; i < n; i++) {
            out.add(new long[] {101, 1000 + i, 102});
        }
        return out;
    }

    @Test
    public void everyStepIsRecordedBeforeTheRuntimeSeesItsNoise() throws Exception {
        LocalLedger ledger = new LocalLedger(new File(tmp.getRoot(), "ledger.json"));
        RecordingRunner runner = new RecordingRunner(ledger);
        List<LedgerStep> steps = LocalDpLoop.run(round(3, 0.5, 1.1, 6, 100), 10, examples(8), new int[8], ledger,
                new FixedBytes(1), runner, Double.POSITIVE_INFINITY, null);
        assertEquals(6, steps.size());
        assertEquals(6, ledger.steps().size());
        for (int t = 0; t < 6; t++) {
            assertEquals("ledger size when step " + t + " ran", t + 1, (int) runner.ledgerSizeAtCall.get(t));
            assertEquals(1.0 / (0.5 * 8), runner.scales.get(t), 0.0);
            assertEquals(0.7, runner.clips.get(t), 0.0);
            assertEquals(10, runner.noises.get(t).length);
            assertEquals(new LedgerStep(3, t, 0.5, 1.1), ledger.steps().get(t));
        }
        // a re-run of the same round counts nothing twice
        LocalDpLoop.run(round(3, 0.5, 1.1, 6, 100), 10, examples(8), new int[8], ledger, new FixedBytes(2), runner,
                Double.POSITIVE_INFINITY, null);
        assertEquals(6, ledger.steps().size());
    }

    @Test
    public void noiseHasTheRoundsStandardDeviation() throws Exception {
        LocalLedger ledger = new LocalLedger(new File(tmp.getRoot(), "ledger.json"));
        RecordingRunner runner = new RecordingRunner(ledger);
        LocalDpLoop.run(round(1, 1.0, 2.0, 1, 1e9), 200000, examples(3), new int[3], ledger, new SecureRandomBytes(),
                runner, Double.POSITIVE_INFINITY, null);
        float[] noise = runner.noises.get(0);
        double sum = 0;
        double sq = 0;
        for (float v : noise) {
            sum += v;
            sq += (double) v * v;
        }
        double mean = sum / noise.length;
        double std = Math.sqrt(sq / noise.length - mean * mean);
        assertEquals(0.0, mean, 0.02);
        assertEquals(2.0 * 0.7, std, 0.01); // sigma * C
        assertEquals(3, (int) runner.batchSizes.get(0)); // q = 1: everyone
    }

    @Test
    public void poissonSamplingIncludesEachExampleAtRateQ() {
        RandomBytes random = new SecureRandomBytes();
        int n = 200000;
        int[] chosen = LocalDpLoop.poissonSample(n, 0.1, random);
        assertEquals(0.1 * n, chosen.length, 5 * Math.sqrt(n * 0.1 * 0.9));
        for (int i = 1; i < chosen.length; i++) {
            assertTrue(chosen[i] > chosen[i - 1]);
        }
        assertArrayEquals(new int[] {0, 1, 2}, LocalDpLoop.poissonSample(3, 1.0, random));
    }

    @Test
    public void roundBeyondTheBudgetIsRefusedBeforeAnyStep() throws Exception {
        LocalLedger ledger = new LocalLedger(new File(tmp.getRoot(), "ledger.json"));
        RecordingRunner runner = new RecordingRunner(ledger);
        try {
            LocalDpLoop.run(round(1, 0.5, 0.5, 50, 1.0), 4, examples(4), new int[4], ledger, new FixedBytes(3), runner,
                    Double.POSITIVE_INFINITY, null);
            fail("expected the budget to refuse the round");
        } catch (PrivacyBudgetExceededException e) {
            assertTrue(e.getMessage(), e.projected() > 1.0 && e.budget() == 1.0 && e.spent() == 0.0);
        }
        assertEquals(0, ledger.steps().size());
        assertEquals(0, runner.batchSizes.size());
        // the device's own cap applies too
        try {
            LocalDpLoop.run(round(2, 0.1, 1.0, 5, 100), 4, examples(4), new int[4], ledger, new FixedBytes(3), runner, 0.01, null);
            fail("expected the device budget to refuse the round");
        } catch (PrivacyBudgetExceededException e) {
            assertEquals(0.01, e.budget(), 0.0);
        }
    }

    @Test
    public void insecureRandomnessIsRefused() throws IOException, PrivacyBudgetExceededException {
        LocalLedger ledger = new LocalLedger(new File(tmp.getRoot(), "ledger.json"));
        RandomBytes insecure = new RandomBytes() {
            @Override
            public void nextBytes(byte[] out) {
            }

            @Override
            public boolean isSecure() {
                return false;
            }
        };
        try {
            LocalDpLoop.run(round(1, 0.5, 1.0, 1, 100), 4, examples(2), new int[2], ledger, insecure,
                    new RecordingRunner(ledger), Double.POSITIVE_INFINITY, null);
            fail("expected an insecure source to be refused");
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().contains("secure"));
        }
        assertEquals(0, ledger.steps().size());
    }
}
