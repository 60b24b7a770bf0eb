package dev.privtune.core.json;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.util.Random;
import org.junit.Test;

public class PyFloatTest {
    /** Pairs (value, Python 3.11 repr). */
    private static final Object[][] KNOWN = {
        {0.1, "0.1"}, {1e-05, "1e-05"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"},
        {123456789012345680.0, "1.2345678901234568e+17"}, {5e-324, "5e-324"}, {-0.0, "-0.0"}, {0.0, "0.0"},
        {100.0, "100.0"}, {0.0001, "0.0001"}, {0.00012, "0.00012"}, {1e22, "1e+22"},
        {1.7976931348623157e308, "1.7976931348623157e+308"}, {1.0 / 3, "0.3333333333333333"},
        {9007199254740993.0, "9007199254740992.0"}, {0x1p-1022, "2.2250738585072014e-308"}, {1.5e-7, "1.5e-07"},
        {2.5, "2.5"}, {-16.0, "-16.0"},
    };

    @Test
    public void knownPythonReprs() {
        for (Object[] pair : KNOWN) {
            assertEquals(pair[1], PyFloat.repr((Double) pair[0]));
        }
    }

    @Test
    public void everyReprReadsBackToTheSameDouble() {
        Random random = new Random(7);
        for (int i = 0; i < 4000; i++) {
            double x = Double.longBitsToDouble(random.nextLong());
            if (Double.isNaN(x) || Double.isInfinite(x)) {
                continue;
            }
            assertEquals(x, Double.parseDouble(PyFloat.repr(x)), 0.0);
        }
    }

    @Test
    public void nonFiniteIsRefused() {
        assertThrows(JsonException.class, () -> PyFloat.repr(Double.NaN));
        assertThrows(JsonException.class, () -> PyFloat.repr(Double.NEGATIVE_INFINITY));
    }
}
