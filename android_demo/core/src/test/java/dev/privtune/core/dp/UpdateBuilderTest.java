package dev.privtune.core.dp;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.protocol.AdapterUpdate;
import dev.privtune.core.protocol.DType;
import dev.privtune.core.protocol.DpConfig;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.Test;

public class UpdateBuilderTest {
    static final String HASH = "cd00000000000000000000000000000000000000000000000000000000000000";

    static Map<String, Tensor> params(long seed, double scale) {
        Random random = new Random(seed);
        Map<String, Tensor> m = new LinkedHashMap<String, Tensor>();
        int[][] shapes = {{8, 16}, {16, 8}, {2, 16}};
        String[] names = {"l0.q.lora_A.weight", "l0.q.lora_B.weight", "classifier.weight"};
        for (int t = 0; t < names.length; t++) {
            double[] v = new double[shapes[t][0] * shapes[t][1]];
            for (int i = 0; i < v.length; i++) {
                v[i] = random.nextGaussian() * scale;
            }
            m.put(names[t], Tensor.float32FromDoubles(shapes[t], v));
        }
        return m;
    }

    static Map<String, Tensor> plus(Map<String, Tensor> a, Map<String, Tensor> b) {
        Map<String, Tensor> out = new LinkedHashMap<String, Tensor>();
        for (String k : a.keySet()) {
            double[] x = a.get(k).toDoubles();
            double[] y = b.get(k).toDoubles();
            for (int i = 0; i < x.length; i++) {
                x[i] += y[i];
            }
            out.put(k, Tensor.float32FromDoubles(a.get(k).shape(), x));
        }
        return out;
    }

    static RoundConfig round(double s, String dtype, Long rank) {
        DpConfig dp = DpConfig.of(1.0, 1.1, 0.25, 2, 0.05, "sgd");
        if (rank != null) {
            Map<String, Object> m = dp.toMap();
            m.put("train_rank", rank);
            dp = DpConfig.fromMap(m);
        }
        return RoundConfig.of(1, HASH, 0, dp, s, 2e9, dtype);
    }

    static double norm(AdapterUpdate u) {
        List<double[]> v = new ArrayList<double[]>();
        for (Tensor t : u.tensors().values()) {
            v.add(t.toDoubles());
        }
        return Norms.globalNorm(v);
    }

    @Test
    public void largeDeltasAreClippedToSEvenAfterTheFp16Cast() {
        Map<String, Tensor> global = params(1, 0.02);
        Map<String, Tensor> local = plus(global, params(2, 0.5));
        for (String dtype : new String[] {"float32", "float16"}) {
            for (double s : new double[] {0.1, 0.5, 1.0, 3.0}) {
                AdapterUpdate u = UpdateBuilder.build(round(s, dtype, null), "p", global, local, 0.0, 1e-5, null);
                double n = norm(u);
                assertTrue(dtype + " S=" + s + " norm " + n, n <= s);
                assertTrue(dtype + " S=" + s + " norm " + n, n > s * 0.999); // clipped to S, not far below
                assertEquals(DType.fromNumpyName(dtype), u.dtype());
            }
        }
    }

    @Test
    public void smallDeltasPassUnscaled() {
        Map<String, Tensor> global = params(1, 0.02);
        Map<String, Tensor> delta = params(3, 1e-3);
        Map<String, Tensor> local = plus(global, delta);
        AdapterUpdate u = UpdateBuilder.build(round(100.0, "float32", null), "p", global, local, 0.0, 1e-5, null);
        for (String k : global.keySet()) {
            double[] g = global.get(k).toDoubles();
            double[] l = local.get(k).toDoubles();
            float[] expected = new float[g.length];
            for (int i = 0; i < g.length; i++) {
                expected[i] = (float) (l[i] - g[i]);
            }
            assertArrayEquals(expected, u.tensors().get(k).values(), 0f);
        }
    }

    @Test
    public void trainRankKeepsTheFirstComponents() {
        Map<String, Tensor> global = params(1, 0.02);
        Map<String, Tensor> local = plus(global, params(4, 1e-3));
        AdapterUpdate u = UpdateBuilder.build(round(100.0, "float32", 3L), "p", global, local, 0.0, 1e-5, null);
        assertArrayEquals(new int[] {3, 16}, u.tensors().get("l0.q.lora_A.weight").shape());
        assertArrayEquals(new int[] {16, 3}, u.tensors().get("l0.q.lora_B.weight").shape());
        assertArrayEquals(new int[] {2, 16}, u.tensors().get("classifier.weight").shape());
        // lora_B row 1, column 2 of the sliced delta is row 1, column 2 of the full one
        double full = local.get("l0.q.lora_B.weight").get(8 + 2) - (double) global.get("l0.q.lora_B.weight").get(8 + 2);
        assertEquals((float) full, u.tensors().get("l0.q.lora_B.weight").get(3 + 2), 0f);
    }

    @Test
    public void mismatchedOrNonFiniteInputsAreRefused() {
        Map<String, Tensor> global = params(1, 0.02);
        Map<String, Tensor> local = new LinkedHashMap<String, Tensor>(global);
        local.remove("classifier.weight");
        assertThrows(IllegalArgumentException.class, () -> UpdateBuilder.build(round(1.0, "float32", null), "p", global, local, 0, 0, null));
        Map<String, Tensor> inf = new LinkedHashMap<String, Tensor>(global);
        inf.put("classifier.weight", new Tensor(new int[] {2, 16}, DType.FLOAT32, filled(32, Float.POSITIVE_INFINITY)));
        assertThrows(IllegalArgumentException.class, () -> UpdateBuilder.build(round(1.0, "float32", null), "p", global, inf, 0, 0, null));
    }

    private static float[] filled(int n, float v) {
        float[] out = new float[n];
        java.util.Arrays.fill(out, v);
        return out;
    }
}
