package dev.privtune.demo.train;

import dev.privtune.core.dp.Gaussian;
import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.RandomBytes;
import dev.privtune.core.protocol.DpConfig;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.demo.privacy.RdpAccountant;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * The round's local DP-SGD steps, runtime-independent ({@code ondevice.trainer.LocalTrainer.run_round}
 * without seed methods or mid-round resume). Per step t:
 *
 * <ol>
 *   <li>Poisson sampling: one uniform per example from 8n secure random bytes, example i joins iff
 *       u_i &lt; q ({@code ondevice.sampling.poisson_sample});
 *   <li>noise N(0, (sigma C)^2) per trainable coordinate from the same secure source
 *       ({@link Gaussian#noise}, which refuses an insecure source);
 *   <li>the step is recorded in the ledger (idempotent per (round, step)) BEFORE the noised gradient
 *       exists, so a crash can only over-count;
 *   <li>the runtime's private step with scale 1 / (q n).
 * </ol>
 *
 * Before the first step, the round is refused if it would take the device's epsilon (RDP, see
 * {@link RdpAccountant}) past min(device budget, round's local_epsilon_budget). A round killed midway is
 * re-run from step 0 on the next attempt: the abandoned partial run never leaves the device, and the
 * ledger keys keep the re-run steps counted once.
 */
public final class LocalDpLoop {
    /** Clip norm of the noise-only TrainStep of an empty batch ({@code train_backends.NOISE_ONLY_CLIP}). */
    public static final double NOISE_ONLY_CLIP = 1e-30;

    /** Called after every step (e.g. to show progress); may be null. */
    public interface Listener {
        /** Step {@code step} of {@code total} finished with this batch size and mean loss (NaN if empty). */
        void onStep(long step, long total, int batchSize, double meanLoss);
    }

    private LocalDpLoop() {}

    /**
     * Runs the round's steps on the device's examples.
     *
     * @param numParams trainable coordinates P (the noise length)
     * @param examples token ids per example; {@code labels} in the same order
     * @param deviceBudget the device's own epsilon cap (infinity for none)
     * @return the steps recorded for this round, in order
     * @throws PrivacyBudgetExceededException before any step when the budget would be exceeded
     * @throws IOException when the ledger cannot be written or the runtime fails
     */
    public static List<LedgerStep> run(RoundConfig round, int numParams, List<long[]> examples, int[] labels,
            LocalLedger ledger, RandomBytes random, DpStepRunner runner, double deviceBudget, Listener listener)
            throws IOException, PrivacyBudgetExceededException {
        if (examples.isEmpty()) {
            throw new IllegalArgumentException("the device has no examples to train on");
        }
        if (examples.size() != labels.length) {
            throw new IllegalArgumentException(examples.size() + " examples but " + labels.length + " labels");
        }
        if (!random.isSecure()) {
            throw new IllegalArgumentException("sampling and noise must come from a secure source (SecureRandomBytes)");
        }
        DpConfig dp = round.dp();
        checkBudget(round, ledger, deviceBudget);
        int n = examples.size();
        double q = dp.samplingRate();
        double scale = 1.0 / (q * n);
        double noiseStd = dp.noiseMultiplier() * dp.clipNorm();
        List<LedgerStep> recorded = new ArrayList<LedgerStep>();
        for (long step = 0; step < dp.localSteps(); step++) {
            if (Thread.interrupted()) {
                throw new IOException("interrupted before step " + step + " of round " + round.roundId());
            }
            int[] chosen = poissonSample(n, q, random);
            float[] noise = Gaussian.noise(random, numParams, noiseStd);
            ledger.recordStep(round.roundId(), step, q, dp.noiseMultiplier());
            recorded.add(new LedgerStep(round.roundId(), step, q, dp.noiseMultiplier()));
            List<long[]> batch = new ArrayList<long[]>(chosen.length);
            int[] batchLabels = new int[chosen.length];
            for (int k = 0; k < chosen.length; k++) {
                batch.add(examples.get(chosen[k]));
                batchLabels[k] = labels[chosen[k]];
            }
            double loss = runner.privateStep(batch, batchLabels, dp.clipNorm(), noise, scale);
            if (listener != null) {
                listener.onStep(step, dp.localSteps(), chosen.length, loss);
            }
        }
        return recorded;
    }

    /**
     * Indices (ascending) of the examples included at rate q: u_i &lt; q for u_i from 8n bytes.
     *
     * @throws IllegalArgumentException for n &lt; 0 or q outside (0, 1]
     */
    public static int[] poissonSample(int n, double q, RandomBytes random) {
        if (n < 0) {
            throw new IllegalArgumentException("num_examples must be >= 0, found " + n);
        }
        if (!(q > 0 && q <= 1)) {
            throw new IllegalArgumentException("rate must be a number in (0, 1], found " + q);
        }
        byte[] raw = new byte[8 * n];
        random.nextBytes(raw);
        double[] u = Gaussian.uniformsFromBytes(raw);
        int count = 0;
        int[] tmp = new int[n];
        for (int i = 0; i < n; i++) {
            if (u[i] < q) {
                tmp[count++] = i;
            }
        }
        int[] out = new int[count];
        System.arraycopy(tmp, 0, out, 0, count);
        return out;
    }

    /**
     * Refuses the round when its remaining steps would exceed min(device budget, round budget).
     *
     * @throws PrivacyBudgetExceededException stating the numbers
     */
    public static void checkBudget(RoundConfig round, LocalLedger ledger, double deviceBudget) throws PrivacyBudgetExceededException {
        DpConfig dp = round.dp();
        double budget = Math.min(deviceBudget, dp.localEpsilonBudget());
        List<LedgerStep> steps = ledger.steps();
        long already = 0;
        for (LedgerStep s : steps) {
            if (s.roundId() == round.roundId()) {
                already++;
            }
        }
        long remaining = dp.localSteps() - already;
        if (remaining <= 0) {
            return;
        }
        double projected = RdpAccountant.projectedEpsilon(steps, dp.samplingRate(), dp.noiseMultiplier(), remaining, dp.localDelta());
        if (projected <= budget) {
            return;
        }
        double spent = RdpAccountant.epsilon(steps, dp.localDelta());
        throw new PrivacyBudgetExceededException(spent, projected, budget, String.format(java.util.Locale.ROOT,
                "local privacy budget exceeded (RDP, delta=%g): spent epsilon=%.4f over %d recorded steps; the %d planned"
                        + " steps would bring it to %.4f > budget %.4f",
                dp.localDelta(), spent, steps.size(), remaining, projected, budget));
    }
}
