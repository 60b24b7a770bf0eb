package dev.privtune.core.dp;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.Test;

public class DpMathTest {
    @Test
    public void pairwiseSumLosesNothingAcrossItsBlockBoundaries() {
        for (int n : new int[] {0, 1, 7, 8, 9, 15, 16, 127, 128, 129, 255, 256, 1000, 4097}) {
            double[] a = new double[n];
            long exact = 0;
            for (int i = 0; i < n; i++) {
                a[i] = i % 13 + 1;
                exact += i % 13 + 1;
            }
            assertEquals("n=" + n, (double) exact, PairwiseSum.sum(a, 0, n), 0.0);
        }
    }

    @Test
    public void pairwiseSumUsesNumpysEightAccumulators() {
        // 1e16 + 1 + 1 ... : sequentially each 1 is lost; with eight accumulators the ones meet first
        double[] a = new double[16];
        a[0] = 1e16;
        for (int i = 1; i < 16; i++) {
            a[i] = (i % 8 == 0) ? 0.0 : 1.0;
        }
        double sequential = 0;
        for (double v : a) {
            sequential += v;
        }
        assertEquals(1e16, sequential, 0.0);
        // accumulators r0 = 1e16 + 0, r1..r7 = 2 each: ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) = (1e16+2+4)+8
        assertEquals(1e16 + 14, PairwiseSum.sum(a, 0, 16), 0.0);
    }

    @Test
    public void clipFactorsFollowOpacus() {
        double[] f = DpMath.clipFactors(new double[] {0.0, 0.5, 2.0, Double.POSITIVE_INFINITY}, 1.0);
        assertEquals(1.0, f[0], 0.0);
        assertEquals(1.0, f[1], 0.0);
        assertEquals(1.0 / (2.0 + 1e-6), f[2], 0.0);
        assertEquals(0.0, f[3], 0.0);
        assertThrows(IllegalArgumentException.class, () -> DpMath.clipFactors(new double[] {Double.NaN}, 1.0));
        assertThrows(IllegalArgumentException.class, () -> DpMath.clipFactors(new double[] {1.0}, 0.0));
    }

    @Test
    public void everyClippedExampleIsWithinTheBoundAndPaddingIsDropped() {
        Random random = new Random(1);
        int batch = 5;
        Map<String, double[][]> grads = new LinkedHashMap<String, double[][]>();
        grads.put("a", new double[batch][30]);
        grads.put("b", new double[batch][7]);
        for (double[][] g : grads.values()) {
            for (int b = 0; b < batch; b++) {
                for (int i = 0; i < g[b].length; i++) {
                    g[b][i] = random.nextGaussian() * (b + 1) * 3;
                }
            }
        }
        grads.get("a")[3][0] = Double.POSITIVE_INFINITY; // an infinite example is dropped, never NaN
        double clip = 0.7;
        double[] weights = {1, 1, 1, 1, 0};
        Map<String, double[]> sum = DpMath.clipAndSum(grads, clip, weights);
        // each kept example contributes at most C, so the sum's norm is at most (kept examples) * C
        double norm = Norms.globalNorm(sum.values());
        assertTrue("norm " + norm, norm <= 3 * clip + 1e-12);
        for (double[] v : sum.values()) {
            for (double x : v) {
                assertTrue(!Double.isNaN(x));
            }
        }
        // one example alone: its clipped gradient has norm min(||g||, C) up to the 1e-6
        Map<String, double[][]> one = new LinkedHashMap<String, double[][]>();
        one.put("a", new double[][] {{3.0, 4.0}});
        double[] clipped = DpMath.clipAndSum(one, 1.0, null).get("a");
        assertEquals(1.0, Math.hypot(clipped[0], clipped[1]), 1e-6);
    }

    @Test
    public void batchSizesMustAgree() {
        Map<String, double[][]> grads = new LinkedHashMap<String, double[][]>();
        grads.put("a", new double[2][3]);
        grads.put("b", new double[3][3]);
        assertThrows(IllegalArgumentException.class, () -> DpMath.perExampleNorms(grads));
        assertThrows(IllegalArgumentException.class, () -> DpMath.perExampleNorms(new LinkedHashMap<String, double[][]>()));
    }
}
