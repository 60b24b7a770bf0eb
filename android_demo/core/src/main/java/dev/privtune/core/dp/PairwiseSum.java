package dev.privtune.core.dp;

/**
 * numpy's pairwise summation of float64, the exact order {@code np.sum} adds a contiguous array in:
 * blocks of up to 128 elements summed with eight interleaved accumulators, larger runs split in two
 * at a multiple of 8. Mirroring it makes norms (and so clip factors and encoded updates) bit-identical
 * to the Python implementation.
 */
public final class PairwiseSum {
    private static final int BLOCK = 128;

    private PairwiseSum() {}

    /** {@code np.sum(a[offset:offset+n])} for float64 data. */
    public static double sum(double[] a, int offset, int n) {
        if (n < 8) {
            double res = 0.0;
            for (int i = 0; i < n; i++) {
                res += a[offset + i];
            }
            return res;
        }
        if (n <= BLOCK) {
            double r0 = a[offset];
            double r1 = a[offset + 1];
            double r2 = a[offset + 2];
            double r3 = a[offset + 3];
            double r4 = a[offset + 4];
            double r5 = a[offset + 5];
            double r6 = a[offset + 6];
            double r7 = a[offset + 7];
            int i;
            int limit = n - (n % 8);
            for (i = 8; i < limit; i += 8) {
                r0 += a[offset + i];
                r1 += a[offset + i + 1];
                r2 += a[offset + i + 2];
                r3 += a[offset + i + 3];
                r4 += a[offset + i + 4];
                r5 += a[offset + i + 5];
                r6 += a[offset + i + 6];
                r7 += a[offset + i + 7];
            }
            double res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
            for (; i < n; i++) {
                res += a[offset + i];
            }
            return res;
        }
        int n2 = n / 2;
        n2 -= n2 % 8;
        return sum(a, offset, n2) + sum(a, offset + n2, n - n2);
    }

    /** {@code np.sum(np.square(a, dtype=np.float64))}: the squares in float64, summed pairwise. */
    public static double sumOfSquares(double[] a, int offset, int n) {
        double[] squares = new double[n];
        for (int i = 0; i < n; i++) {
            double v = a[offset + i];
            squares[i] = v * v;
        }
        return sum(squares, 0, n);
    }

    /** {@link #sumOfSquares(double[], int, int)} over a whole array. */
    public static double sumOfSquares(double[] a) {
        return sumOfSquares(a, 0, a.length);
    }
}
