package dev.privtune.demo.runtime;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

public class ProbabilitiesTest {
    @Test
    public void softmaxRowsSumToOneAndKeepOrder() {
        float[][] p = Probabilities.softmax(new float[][] {{2.0f, 0.0f}, {-1000f, 1000f}});
        assertEquals(1.0, p[0][0] + p[0][1], 1e-6);
        assertEquals(1.0 / (1.0 + Math.exp(-2.0)), p[0][0], 1e-6);
        assertEquals(1.0, p[1][1], 0.0);
    }

    @Test(expected = IllegalArgumentException.class)
    public void nanLogitsAreRefused() {
        Probabilities.softmax(new float[][] {{Float.NaN, 0f}});
    }
}
