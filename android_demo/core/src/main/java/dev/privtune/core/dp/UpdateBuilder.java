package dev.privtune.core.dp;

import dev.privtune.core.protocol.AdapterUpdate;
import dev.privtune.core.protocol.DType;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.UpdateCodec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * The device's upload ({@code ondevice/update.py}): delta = local - global in float64, kept to the
 * round's trained rank, scaled by min(1, S / ||delta||) (global L2 over all tensors), cast to the
 * round's dtype; if the cast (fp16 rounding) pushes the norm above S, the delta is shrunk by the
 * excess and cast again, so the encoded update always satisfies ||delta|| <= S. Bit-identical to
 * Python for the same inputs in the same tensor order.
 */
public final class UpdateBuilder {
    private static final String LORA_A = ".lora_A.weight";
    private static final String LORA_B = ".lora_B.weight";
    private static final int MAX_CAST_TRIES = 8;

    private UpdateBuilder() {}

    /**
     * The clipped, typed delta with its metadata.
     *
     * @param global the round's global adapter, in the manifest's trainable order
     * @param local the locally trained tensors (same names)
     * @param localEpsilon the device's local epsilon from an accountant (not computed in core)
     * @param nonce null for 128 fresh random bits
     * @throws IllegalArgumentException when the tensor names differ or the delta is not finite
     */
    public static AdapterUpdate build(RoundConfig round, String deviceId, Map<String, Tensor> global,
            Map<String, Tensor> local, double localEpsilon, double localDelta, String nonce) {
        TreeSet<String> diff = new TreeSet<String>(global.keySet());
        diff.addAll(local.keySet());
        TreeSet<String> both = new TreeSet<String>(global.keySet());
        both.retainAll(local.keySet());
        diff.removeAll(both);
        if (!diff.isEmpty()) {
            List<String> first = new ArrayList<String>(diff).subList(0, Math.min(3, diff.size()));
            throw new IllegalArgumentException("global and local parameters disagree on tensors " + first);
        }
        Map<String, double[]> delta = new LinkedHashMap<String, double[]>();
        Map<String, int[]> shapes = new LinkedHashMap<String, int[]>();
        for (Map.Entry<String, Tensor> e : global.entrySet()) {
            Tensor g = e.getValue();
            Tensor l = local.get(e.getKey());
            if (!Arrays.equals(g.shape(), l.shape())) {
                throw new IllegalArgumentException(e.getKey() + ": local shape " + Arrays.toString(l.shape())
                        + " differs from the global " + Arrays.toString(g.shape()));
            }
            double[] d = new double[g.size()];
            for (int i = 0; i < d.length; i++) {
                d[i] = (double) l.get(i) - (double) g.get(i);
            }
            delta.put(e.getKey(), d);
            shapes.put(e.getKey(), g.shape());
        }
        Long rank = round.dp().trainRank();
        if (rank != null) {
            sliceToRank(delta, shapes, rank.intValue());
        }
        Map<String, Tensor> tensors = clipDelta(delta, shapes, round.updateClipNorm(), DType.fromNumpyName(round.updateDtype()));
        return new AdapterUpdate(round.roundId(), deviceId, round.manifestHash(), round.globalAdapterVersion(), tensors,
                round.dp(), localEpsilon, localDelta, nonce == null ? UpdateCodec.newNonce() : nonce);
    }

    /**
     * Keeps the first r' rank components in place: lora_A [r, in] to [r', in], lora_B [out, r] to [out, r'].
     */
    public static void sliceToRank(Map<String, double[]> values, Map<String, int[]> shapes, int rank) {
        for (Map.Entry<String, double[]> e : values.entrySet()) {
            String name = e.getKey();
            int[] shape = shapes.get(name);
            if (name.endsWith(LORA_A) && shape.length == 2 && rank < shape[0]) {
                double[] out = new double[rank * shape[1]];
                System.arraycopy(e.getValue(), 0, out, 0, out.length);
                e.setValue(out);
                shapes.put(name, new int[] {rank, shape[1]});
            } else if (name.endsWith(LORA_B) && shape.length == 2 && rank < shape[1]) {
                double[] v = e.getValue();
                double[] out = new double[shape[0] * rank];
                for (int row = 0; row < shape[0]; row++) {
                    System.arraycopy(v, row * shape[1], out, row * rank, rank);
                }
                e.setValue(out);
                shapes.put(name, new int[] {shape[0], rank});
            }
        }
    }

    /**
     * Scales {@code delta} to global norm <= {@code maxNorm} and casts to {@code dtype} (norm checked after the cast).
     *
     * @throws IllegalArgumentException for a bad maxNorm or a non-finite delta
     */
    public static Map<String, Tensor> clipDelta(Map<String, double[]> delta, Map<String, int[]> shapes, double maxNorm, DType dtype) {
        if (!(maxNorm > 0) || Double.isInfinite(maxNorm)) {
            throw new IllegalArgumentException("max_norm must be a finite number > 0, found " + maxNorm);
        }
        double norm = Norms.globalNorm(delta.values());
        if (Double.isNaN(norm) || Double.isInfinite(norm)) {
            throw new IllegalArgumentException("the adapter delta is not finite; refusing to upload it");
        }
        double factor = norm > 0 ? Math.min(1.0, maxNorm / norm) : 1.0;
        for (int attempt = 0; attempt < MAX_CAST_TRIES; attempt++) {
            Map<String, Tensor> cast = new LinkedHashMap<String, Tensor>();
            List<double[]> widened = new ArrayList<double[]>();
            for (Map.Entry<String, double[]> e : delta.entrySet()) {
                double[] v = e.getValue();
                double[] scaled = new double[v.length];
                for (int i = 0; i < v.length; i++) {
                    scaled[i] = v[i] * factor;
                }
                Tensor t = dtype == DType.FLOAT32
                        ? Tensor.float32FromDoubles(shapes.get(e.getKey()), scaled)
                        : Tensor.float16FromDoubles(shapes.get(e.getKey()), scaled);
                cast.put(e.getKey(), t);
                widened.add(t.toDoubles());
            }
            double castNorm = Norms.globalNorm(widened);
            if (castNorm <= maxNorm) {
                return Collections.unmodifiableMap(cast);
            }
            factor *= maxNorm / castNorm * (1 - 1e-4);
        }
        throw new IllegalStateException("could not bring the delta under " + maxNorm + " after casting to " + dtype.numpyName());
    }
}
