package dev.privtune.core.protocol;

/**
 * IEEE binary16 conversions with numpy's rounding: {@code np.float64(x).astype(np.float16)} rounds
 * the double directly to the nearest half (ties to even), never through float32 (which could round
 * twice and differ).
 */
public final class Fp16 {
    private Fp16() {}

    /** Largest finite half, 65504. */
    public static final double MAX = 65504.0;

    /** Half bits of the nearest half to {@code x} (ties to even; overflow to infinity, like numpy). */
    public static short fromDouble(double x) {
        long raw = Double.doubleToRawLongBits(x);
        int sign = (int) ((raw >>> 48) & 0x8000);
        if (Double.isNaN(x)) {
            return (short) 0x7e00;
        }
        double a = Math.abs(x);
        if (a >= 65520.0) { // halfway between 65504 and 2^16 rounds to even = overflow
            return (short) (sign | 0x7c00);
        }
        if (a < 0x1p-14) { // subnormal half (or zero): multiples of 2^-24
            int m = (int) Math.rint(a * 0x1p24); // exact scaling, rint = ties to even
            return (short) (sign | m); // m == 1024 is the smallest normal, bits 0x0400
        }
        int e = Math.getExponent(a); // -14 .. 15
        double scaled = a * Math.scalb(1.0, 10 - e); // in [1024, 2048), exact
        int m = (int) Math.rint(scaled);
        if (m == 2048) {
            m = 1024;
            e += 1;
        }
        if (e > 15) {
            return (short) (sign | 0x7c00);
        }
        return (short) (sign | ((e + 15) << 10) | (m - 1024));
    }

    /** The exact value of half bits {@code h}. */
    public static float toFloat(short h) {
        int bits = h & 0xffff;
        int sign = bits & 0x8000;
        int exp = (bits >>> 10) & 0x1f;
        int mant = bits & 0x3ff;
        float value;
        if (exp == 0) {
            value = mant * 0x1p-24f;
        } else if (exp == 31) {
            value = mant == 0 ? Float.POSITIVE_INFINITY : Float.NaN;
        } else {
            value = Math.scalb(1.0f + mant / 1024.0f, exp - 15);
        }
        return sign != 0 ? -value : value;
    }

    /** True if {@code v} is exactly a half value (or NaN/infinity). */
    public static boolean isExact(float v) {
        return Float.compare(toFloat(fromDouble(v)), v) == 0 || Float.isNaN(v);
    }
}
