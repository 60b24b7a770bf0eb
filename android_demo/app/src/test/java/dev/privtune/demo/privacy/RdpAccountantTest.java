package dev.privtune.demo.privacy;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.dp.LedgerStep;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.junit.Test;

/** Properties of the phone-side accountant; the exact values are checked against Python in tests/e2e/test_android_apk.py. */
public class RdpAccountantTest {
    static List<LedgerStep> steps(double q, double sigma, int n) {
        List<LedgerStep> out = new ArrayList<LedgerStep>();
        for (int i = 0; i < n; i++) {
            out.add(new LedgerStep(0, i, q, sigma));
        }
        return out;
    }

    @Test
    public void noStepsCostNothingAndNoNoiseCostsEverything() {
        assertEquals(0.0, RdpAccountant.epsilon(Collections.<LedgerStep>emptyList(), 1e-5), 0.0);
        assertEquals(Double.POSITIVE_INFINITY, RdpAccountant.epsilon(steps(0.1, 0.0, 1), 1e-5), 0.0);
    }

    @Test
    public void fullBatchIsTheGaussianMechanismsRdp() {
        // q = 1: RDP(alpha) = alpha / (2 sigma^2) exactly
        assertEquals(3 / (2 * 1.5 * 1.5), RdpAccountant.rdp(1.0, 1.5, 3), 1e-15);
        // tiny q and order 2: log(1 + q^2 (e^{1/sigma^2} - 1)) (the i = 2 term of the binomial expansion)
        double q = 1e-3;
        double expected = Math.log1p(q * q * Math.expm1(1.0));
        assertEquals(expected, RdpAccountant.rdp(q, 1.0, 2), 1e-15);
    }

    @Test
    public void epsilonGrowsWithStepsAndSamplingAndShrinksWithNoise() {
        double base = RdpAccountant.epsilon(steps(0.1, 1.0, 10), 1e-5);
        assertTrue(base > 0);
        assertTrue(RdpAccountant.epsilon(steps(0.1, 1.0, 100), 1e-5) > base);
        assertTrue(RdpAccountant.epsilon(steps(0.2, 1.0, 10), 1e-5) > base);
        assertTrue(RdpAccountant.epsilon(steps(0.1, 2.0, 10), 1e-5) < base);
        assertTrue(RdpAccountant.epsilon(steps(0.1, 1.0, 10), 1e-3) < base);
    }

    @Test
    public void projectionAddsStepsWithTheGivenParameters() {
        List<LedgerStep> recorded = steps(0.1, 1.0, 4);
        assertEquals(RdpAccountant.epsilon(steps(0.1, 1.0, 10), 1e-5),
                RdpAccountant.projectedEpsilon(recorded, 0.1, 1.0, 6, 1e-5), 1e-12);
    }

    @Test(expected = IllegalArgumentException.class)
    public void deltaMustBeInTheOpenUnitInterval() {
        RdpAccountant.epsilon(steps(0.1, 1.0, 1), 0.0);
    }
}
