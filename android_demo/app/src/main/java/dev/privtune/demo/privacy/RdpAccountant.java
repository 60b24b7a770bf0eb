package dev.privtune.demo.privacy;

import dev.privtune.core.dp.LedgerStep;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Example-level epsilon of the device's recorded local DP-SGD steps, computed on the phone with
 * Renyi DP of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar, Zhang 2019) at INTEGER
 * orders only, where the moment A_alpha has a closed form:
 *
 * <pre>
 *   A_alpha = sum_{i=0..alpha} C(alpha, i) (1-q)^(alpha-i) q^i exp((i^2 - i) / (2 sigma^2)),
 *   RDP(alpha) = log(A_alpha) / (alpha - 1)        (q = 1: alpha / (2 sigma^2))
 * </pre>
 *
 * steps with equal (q, sigma) grouped and composed additively, then converted to (epsilon, delta) with
 * the bound dp_accounting uses (Balle et al. 2020, Prop. 12 / Canonne et al. 2020 eq. 20):
 * {@code eps = min_alpha rdp + log1p(-1/alpha) - log(delta * alpha) / (alpha - 1)}.
 *
 * <p>This is the same arithmetic as {@code dp_accounting.rdp.RdpAccountant} (and so
 * {@code ondevice.accounting.RdpAccountant}) restricted to {@link #ORDERS}, the integer orders of
 * its default order list; the Python test {@code tests/e2e/test_android_apk.py} checks the two agree.
 * Dropping the fractional orders can only raise epsilon, so the value shown is an upper bound on
 * Python's RDP figure, which is itself above the tighter PLD figure Python and the server report from
 * the same ledger. The neighbouring relation is add/remove-one example, as in the ledger file.
 */
public final class RdpAccountant {
    /** The integer orders of dp_accounting's DEFAULT_RDP_ORDERS: 2..63, 128, 256, 512, 1024. */
    public static final int[] ORDERS = integerOrders();

    private RdpAccountant() {}

    private static int[] integerOrders() {
        int[] out = new int[62 + 4];
        for (int a = 2; a <= 63; a++) {
            out[a - 2] = a;
        }
        out[62] = 128;
        out[63] = 256;
        out[64] = 512;
        out[65] = 1024;
        return out;
    }

    /** log(exp(a) + exp(b)) without overflow (dp_accounting's {@code _log_add}). */
    static double logAdd(double a, double b) {
        double lo = Math.min(a, b);
        double hi = Math.max(a, b);
        if (lo == Double.NEGATIVE_INFINITY) {
            return hi;
        }
        return Math.log1p(Math.exp(lo - hi)) + hi;
    }

    /** log A_alpha for integer alpha and 0 < q < 1. */
    static double logAInt(double q, double sigma, int alpha) {
        double logA = Double.NEGATIVE_INFINITY;
        double log1mq = Math.log1p(-q);
        double logq = Math.log(q);
        double logComb = 0.0; // log C(alpha, 0)
        double twoSigmaSq = 2.0 * (sigma * sigma);
        for (int i = 0; i <= alpha; i++) {
            if (i > 0) {
                logComb += Math.log((double) (alpha - i + 1) / (double) i);
            }
            double s = logComb + i * logq + (alpha - i) * log1mq + ((double) i * i - i) / twoSigmaSq;
            logA = logAdd(logA, s);
        }
        return logA;
    }

    /**
     * RDP of one Poisson-subsampled Gaussian step at integer order alpha.
     *
     * @throws IllegalArgumentException for q outside [0, 1], a negative sigma or alpha below 2
     */
    public static double rdp(double q, double sigma, int alpha) {
        if (!(q >= 0 && q <= 1)) {
            throw new IllegalArgumentException("sampling rate must be in [0, 1], found " + q);
        }
        if (!(sigma >= 0)) {
            throw new IllegalArgumentException("noise multiplier must be >= 0, found " + sigma);
        }
        if (alpha < 2) {
            throw new IllegalArgumentException("integer RDP orders start at 2, found " + alpha);
        }
        if (q == 0) {
            return 0.0;
        }
        if (sigma == 0) {
            return Double.POSITIVE_INFINITY;
        }
        if (q == 1.0) {
            return alpha / (2.0 * (sigma * sigma));
        }
        return logAInt(q, sigma, alpha) / (alpha - 1);
    }

    /**
     * Epsilon at {@code delta} after all {@code steps} (0 for none, infinity if any sigma is 0).
     *
     * @throws IllegalArgumentException for delta outside (0, 1)
     */
    public static double epsilon(List<LedgerStep> steps, double delta) {
        if (!(delta > 0 && delta < 1)) {
            throw new IllegalArgumentException("delta must be a number in (0, 1), found " + delta);
        }
        Map<String, double[]> groups = group(steps);
        if (groups.isEmpty()) {
            return 0.0;
        }
        for (double[] g : groups.values()) {
            if (g[1] == 0) {
                return Double.POSITIVE_INFINITY;
            }
        }
        double[] total = new double[ORDERS.length];
        for (double[] g : groups.values()) {
            for (int k = 0; k < ORDERS.length; k++) {
                total[k] += g[2] * rdp(g[0], g[1], ORDERS[k]);
            }
        }
        return epsilonFromRdp(total, delta);
    }

    /** Epsilon after the recorded steps plus {@code extraSteps} more at (q, sigma): for budget checks. */
    public static double projectedEpsilon(List<LedgerStep> steps, double q, double sigma, long extraSteps, double delta) {
        List<LedgerStep> all = new ArrayList<LedgerStep>(steps);
        long roundId = Long.MAX_VALUE / 2; // placeholder keys: only (q, sigma) matter to the accountant
        for (long i = 0; i < extraSteps; i++) {
            all.add(new LedgerStep(roundId, i, q, sigma));
        }
        return epsilon(all, delta);
    }

    /** (q, sigma) sorted as Python's group_steps, each with its count: {q, sigma, count}. */
    private static Map<String, double[]> group(List<LedgerStep> steps) {
        TreeMap<String, double[]> out = new TreeMap<String, double[]>();
        for (LedgerStep s : steps) {
            String key = sortKey(s.samplingRate()) + "/" + sortKey(s.noiseMultiplier());
            double[] g = out.get(key);
            if (g == null) {
                g = new double[] {s.samplingRate(), s.noiseMultiplier(), 0};
                out.put(key, g);
            }
            g[2] += 1;
        }
        return out;
    }

    /** A string whose lexicographic order is the numeric order of non-negative doubles. */
    private static String sortKey(double v) {
        String hex = Long.toHexString(Double.doubleToLongBits(v));
        StringBuilder padded = new StringBuilder();
        for (int i = hex.length(); i < 16; i++) {
            padded.append('0');
        }
        return padded.append(hex).toString();
    }

    /** dp_accounting's {@code compute_epsilon} over {@link #ORDERS}. */
    static double epsilonFromRdp(double[] rdp, double delta) {
        double best = Double.POSITIVE_INFINITY;
        for (int k = 0; k < ORDERS.length; k++) {
            double a = ORDERS[k];
            double r = rdp[k];
            double eps;
            if (r < 0) {
                eps = 0.0;
            } else if (delta * delta + Math.expm1(-r) > 0) {
                eps = 0.0;
            } else {
                eps = r + Math.log1p(-1.0 / a) - Math.log(delta * a) / (a - 1);
            }
            if (eps < best) {
                best = eps;
            }
        }
        return Math.max(0.0, best);
    }
}
