package dev.privtune.core.dp;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.Arrays;
import org.junit.Test;

public class GaussianTest {
    /** A source that repeats one fixed byte pattern. */
    static final class FixedBytes implements RandomBytes {
        private final byte[] pattern;
        private int at;

        FixedBytes(byte... pattern) {
            this.pattern = pattern;
        }

        @Override
        public void nextBytes(byte[] out) {
            for (int i = 0; i < out.length; i++) {
                out[i] = pattern[at++ % pattern.length];
            }
        }

        @Override
        public boolean isSecure() {
            return false;
        }
    }

    @Test
    public void uniformsKeepTheTop53BitsOfLittleEndianWords() {
        byte[] raw = new byte[32];
        Arrays.fill(raw, 0, 8, (byte) 0xff); // all ones: (2^53 - 1) / 2^53
        raw[8] = (byte) 0xff; // only low bits set: shifted out, 0
        raw[9] = (byte) 0x07;
        raw[23] = (byte) 0x80; // top bit: 0.5
        raw[31] = (byte) 0x40; // 0.25
        raw[24] = 0x00;
        assertArrayEquals(new double[] {1 - 0x1p-53, 0.0, 0.5, 0.25}, Gaussian.uniformsFromBytes(raw), 0.0);
        assertThrows(IllegalArgumentException.class, () -> Gaussian.uniformsFromBytes(new byte[7]));
    }

    @Test
    public void boxMullerPairsTheHalvesOfTheUniforms() {
        double[] z = Gaussian.boxMuller(new double[] {0.5, 0.0, 0.25, 0.5});
        double r = Math.sqrt(2 * Math.log(2)); // u1 = 0.5
        assertEquals(r * Math.cos(Math.PI / 2), z[0], 1e-15);
        assertEquals(0.0, z[1], 0.0); // u1 = 0: radius 0, never log(0)
        assertEquals(r, z[2], 1e-15);
        assertEquals(0.0, z[3], 0.0);
        assertThrows(IllegalArgumentException.class, () -> Gaussian.boxMuller(new double[3]));
    }

    @Test
    public void oddCountsReadWholePairsAndTruncate() {
        double[] five = Gaussian.standardNormal(new FixedBytes((byte) 1, (byte) 2, (byte) 3), 5);
        double[] six = Gaussian.standardNormal(new FixedBytes((byte) 1, (byte) 2, (byte) 3), 6);
        assertEquals(5, five.length);
        // 5 normals read the same 48 bytes as 6 (three pairs) and drop the last
        assertArrayEquals(Arrays.copyOf(six, 5), five, 0.0);
    }

    @Test
    public void secureNormalsHaveMeanZeroAndUnitVariance() {
        int n = 200000;
        double[] z = Gaussian.standardNormal(new SecureRandomBytes(), n);
        double mean = 0;
        double sq = 0;
        for (double v : z) {
            mean += v;
            sq += v * v;
        }
        mean /= n;
        double var = sq / n - mean * mean;
        assertTrue("mean " + mean, Math.abs(mean) < 0.015); // ~7 standard errors
        assertTrue("var " + var, Math.abs(var - 1) < 0.025);
    }

    @Test
    public void dpNoiseRefusesAnInsecureSource() {
        assertThrows(IllegalArgumentException.class, () -> Gaussian.noise(new FixedBytes((byte) 1), 4, 1.0));
        assertEquals(4, Gaussian.noise(new SecureRandomBytes(), 4, 1.0).length);
        assertArrayEquals(new float[3], Gaussian.noise(new SecureRandomBytes(), 3, 0.0), 0f);
        assertThrows(IllegalArgumentException.class, () -> Gaussian.noise(new SecureRandomBytes(), 3, -1.0));
    }
}
