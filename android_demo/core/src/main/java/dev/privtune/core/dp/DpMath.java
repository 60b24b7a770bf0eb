package dev.privtune.core.dp;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Per-example clipping arithmetic ({@code ondevice/dp_math.py}), for host-side clipping.
 *
 * <p>The clip rule is Opacus's: factor_i = min(1, C / (||g_i|| + 1e-6)), where ||g_i|| is the global
 * L2 norm of example i's gradient over all trainable tensors. Norms and factors match Python bit for
 * bit; the weighted sum matches to rounding (numpy sums it with BLAS, whose order is not specified).
 */
public final class DpMath {
    /** Added to each norm before dividing (Opacus). */
    public static final double CLIP_EPS = 1e-6;

    private DpMath() {}

    /**
     * min(1, C / (norm + 1e-6)) per example.
     *
     * @throws IllegalArgumentException for a non-positive or non-finite C, or a NaN norm
     */
    public static double[] clipFactors(double[] norms, double clipNorm) {
        if (!(clipNorm > 0) || Double.isInfinite(clipNorm)) {
            throw new IllegalArgumentException("clip_norm must be a finite number > 0, found " + clipNorm);
        }
        double[] out = new double[norms.length];
        for (int i = 0; i < norms.length; i++) {
            if (Double.isNaN(norms[i])) {
                throw new IllegalArgumentException("per-example gradient norms contain NaN; refusing to clip");
            }
            out[i] = Math.min(1.0, clipNorm / (norms[i] + CLIP_EPS));
        }
        return out;
    }

    /**
     * Global L2 norm of each example's gradient.
     *
     * @param perExample tensor name to [B][numel] (row b = example b's gradient of that tensor, flattened)
     * @throws IllegalArgumentException when the tensors disagree on B or there are none
     */
    public static double[] perExampleNorms(Map<String, double[][]> perExample) {
        int batch = batchSize(perExample);
        double[] total = new double[batch];
        for (double[][] g : perExample.values()) {
            for (int b = 0; b < batch; b++) {
                total[b] += PairwiseSum.sumOfSquares(g[b]);
            }
        }
        for (int b = 0; b < batch; b++) {
            total[b] = Math.sqrt(total[b]);
        }
        return total;
    }

    /**
     * Sum over examples of w_b * factor_b * g_b per tensor, in float64.
     *
     * @param weights null (all ones) or 1 for real examples, 0 for padding rows; rows with a zero
     *     factor (weight 0 or an infinite norm) are dropped, as in Python
     */
    public static Map<String, double[]> clipAndSum(Map<String, double[][]> perExample, double clipNorm, double[] weights) {
        double[] factors = clipFactors(perExampleNorms(perExample), clipNorm);
        if (weights != null) {
            if (weights.length != factors.length) {
                throw new IllegalArgumentException("weights length " + weights.length + " does not match batch " + factors.length);
            }
            for (int b = 0; b < factors.length; b++) {
                factors[b] *= weights[b];
            }
        }
        Map<String, double[]> out = new LinkedHashMap<String, double[]>();
        for (Map.Entry<String, double[][]> e : perExample.entrySet()) {
            double[][] g = e.getValue();
            double[] sum = new double[g[0].length];
            for (int b = 0; b < g.length; b++) {
                if (!(factors[b] > 0)) {
                    continue;
                }
                for (int i = 0; i < sum.length; i++) {
                    sum[i] += factors[b] * g[b][i];
                }
            }
            out.put(e.getKey(), sum);
        }
        return out;
    }

    private static int batchSize(Map<String, double[][]> perExample) {
        if (perExample.isEmpty()) {
            throw new IllegalArgumentException("per_example holds no tensors");
        }
        int batch = -1;
        for (Map.Entry<String, double[][]> e : perExample.entrySet()) {
            if (batch >= 0 && e.getValue().length != batch) {
                throw new IllegalArgumentException("per-example tensors disagree on the batch size: " + e.getKey()
                        + " has " + e.getValue().length + ", others " + batch);
            }
            batch = e.getValue().length;
        }
        return batch;
    }

    /** Adds {@code noise[i]} to every coordinate of {@code sums} (flattened in map order) and scales by {@code scale}. */
    public static Map<String, double[]> noiseAndScale(Map<String, double[]> sums, double[] noise, double scale) {
        int total = 0;
        for (double[] v : sums.values()) {
            total += v.length;
        }
        if (noise.length != total) {
            throw new IllegalArgumentException("noise has " + noise.length + " coordinates, the tensors " + total);
        }
        Map<String, double[]> out = new LinkedHashMap<String, double[]>();
        int k = 0;
        for (Map.Entry<String, double[]> e : sums.entrySet()) {
            double[] v = e.getValue();
            double[] r = new double[v.length];
            for (int i = 0; i < v.length; i++) {
                r[i] = (v[i] + noise[k++]) * scale;
            }
            out.put(e.getKey(), r);
        }
        return out;
    }

    /** Concatenates tensors (map order) into one flat vector. */
    public static double[] flatten(Map<String, double[]> tensors) {
        int total = 0;
        for (double[] v : tensors.values()) {
            total += v.length;
        }
        double[] out = new double[total];
        int k = 0;
        for (double[] v : tensors.values()) {
            System.arraycopy(v, 0, out, k, v.length);
            k += v.length;
        }
        return out;
    }
}
