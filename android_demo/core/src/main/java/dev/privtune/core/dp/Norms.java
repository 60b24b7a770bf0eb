package dev.privtune.core.dp;

import java.util.Collection;

/**
 * The global L2 norm over several tensors exactly as {@code ondevice.update.global_norm} computes it:
 * per tensor {@code np.sum(np.square(float64))} (pairwise, {@link PairwiseSum}), the per-tensor sums
 * added left to right in tensor order (Python 3.11's {@code sum()} over floats), then sqrt.
 *
 * <p>Tensor order matters for the last bit: use the manifest's trainable order, as Python does.
 */
public final class Norms {
    private Norms() {}

    /** Global L2 norm of float64 tensors given as flat arrays, in order. */
    public static double globalNorm(Collection<double[]> tensors) {
        double total = 0.0;
        for (double[] t : tensors) {
            total += PairwiseSum.sumOfSquares(t);
        }
        return Math.sqrt(total);
    }
}
