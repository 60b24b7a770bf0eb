package dev.privtune.core.dp;

/**
 * Gaussian noise from raw random bytes, the same transform as {@code ondevice/randomness.py}:
 *
 * <ol>
 *   <li>8n bytes, read as little-endian uint64, keep the top 53 bits: u = (w >>> 11) * 2^-53, in [0, 1);
 *   <li>Box-Muller in float64 on pairs (u1, u2) = (u[:m], u[m:]): r = sqrt(-2 ln(1 - u1)),
 *       theta = 2 pi u2, output [r cos theta ..., r sin theta ...].
 * </ol>
 *
 * <p>The uniforms are bit-identical to Python's for the same bytes; the normals agree to within a few
 * ulp ({@code log1p}, {@code cos} and {@code sin} of different math libraries may differ in the last bit).
 * Like every floating-point sampler this is not an exact DP mechanism (Mironov 2012; Jin et al. 2022);
 * see the Python module's docstring for the measured alternative.
 */
public final class Gaussian {
    private static final double TWO_POW_MINUS_53 = 0x1p-53;

    private Gaussian() {}

    /**
     * n uniforms on the 53-bit grid {k / 2^53} from 8n bytes.
     *
     * @throws IllegalArgumentException when the length is not a multiple of 8
     */
    public static double[] uniformsFromBytes(byte[] raw) {
        if (raw.length % 8 != 0) {
            throw new IllegalArgumentException("need a multiple of 8 bytes, found " + raw.length);
        }
        double[] out = new double[raw.length / 8];
        for (int i = 0; i < out.length; i++) {
            long w = 0;
            for (int k = 7; k >= 0; k--) {
                w = (w << 8) | (raw[8 * i + k] & 0xffL);
            }
            out[i] = (w >>> 11) * TWO_POW_MINUS_53;
        }
        return out;
    }

    /**
     * Standard normals from an even number of uniforms in [0, 1).
     *
     * @throws IllegalArgumentException for an odd length
     */
    public static double[] boxMuller(double[] u) {
        if (u.length % 2 != 0) {
            throw new IllegalArgumentException("box_muller needs an even number of uniforms, found " + u.length);
        }
        int m = u.length / 2;
        double[] out = new double[u.length];
        for (int i = 0; i < m; i++) {
            double radius = Math.sqrt(-2.0 * Math.log1p(-u[i])); // 1 - u1 in (0, 1]: the log never sees 0
            double theta = (2.0 * Math.PI) * u[m + i];
            out[i] = radius * Math.cos(theta);
            out[m + i] = radius * Math.sin(theta);
        }
        return out;
    }

    /** n standard normals from one read of 16 * ceil(n/2) bytes (Python's SecureRandomSource.standard_normal). */
    public static double[] standardNormal(RandomBytes source, int n) {
        if (n < 0) {
            throw new IllegalArgumentException("size must be >= 0, found " + n);
        }
        int pairs = (n + 1) / 2;
        byte[] raw = new byte[16 * pairs];
        source.nextBytes(raw);
        double[] normals = boxMuller(uniformsFromBytes(raw));
        if (normals.length == n) {
            return normals;
        }
        double[] out = new double[n];
        System.arraycopy(normals, 0, out, 0, n);
        return out;
    }

    /**
     * N(0, std^2) per coordinate as float32 (drawn in float64, then rounded): Python's {@code gaussian_noise}.
     *
     * @throws IllegalArgumentException for a negative or non-finite std, or an insecure source
     */
    public static float[] noise(RandomBytes source, int n, double std) {
        if (!(std >= 0) || Double.isInfinite(std)) {
            throw new IllegalArgumentException("std must be a finite number >= 0, found " + std);
        }
        if (!source.isSecure()) {
            throw new IllegalArgumentException("DP noise must come from a secure source (SecureRandomBytes); "
                    + "use noiseFromAnySource only in tests");
        }
        return noiseFromAnySource(source, n, std);
    }

    /** {@link #noise} without the secure-source check: for reproducing fixed streams in tests only. */
    public static float[] noiseFromAnySource(RandomBytes source, int n, double std) {
        float[] out = new float[n];
        if (std == 0) {
            return out;
        }
        double[] z = standardNormal(source, n);
        for (int i = 0; i < n; i++) {
            out[i] = (float) (z[i] * std);
        }
        return out;
    }
}
