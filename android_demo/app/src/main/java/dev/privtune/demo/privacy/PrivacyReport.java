package dev.privtune.demo.privacy;

import dev.privtune.core.dp.LedgerStep;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** The text of the privacy screen: steps, their (q, sigma) groups, and epsilon with what it means. */
public final class PrivacyReport {
    private PrivacyReport() {}

    /**
     * @param delta the delta epsilon is stated at
     * @param deviceBudget the device's own cap (infinity for none)
     */
    public static String text(List<LedgerStep> steps, double delta, double deviceBudget) {
        StringBuilder out = new StringBuilder();
        out.append(String.format(Locale.ROOT, "%d local DP-SGD step(s) recorded (Poisson sampling, add/remove-one example).",
                steps.size()));
        Map<String, Integer> groups = new LinkedHashMap<String, Integer>();
        for (LedgerStep s : steps) {
            String key = String.format(Locale.ROOT, "q=%s, sigma=%s", s.samplingRate(), s.noiseMultiplier());
            Integer n = groups.get(key);
            groups.put(key, n == null ? 1 : n + 1);
        }
        for (Map.Entry<String, Integer> g : groups.entrySet()) {
            out.append("\n  ").append(g.getValue()).append(" x ").append(g.getKey());
        }
        double eps = RdpAccountant.epsilon(steps, delta);
        out.append(String.format(Locale.ROOT, "\n\nLocal epsilon <= %.4f at delta = %g", eps, delta));
        out.append("\n(Renyi DP of the subsampled Gaussian at integer orders 2-1024, computed on this phone: an upper"
                + " bound. The server and `ondevice.accounting` report the tighter PLD epsilon from the same ledger.)");
        if (!Double.isInfinite(deviceBudget)) {
            out.append(String.format(Locale.ROOT, "\nDevice budget: epsilon %.4f (%.1f%% used)", deviceBudget, 100 * eps / deviceBudget));
        }
        int from = Math.max(0, steps.size() - 20);
        if (!steps.isEmpty()) {
            out.append("\n\nLast steps:");
        }
        for (int i = from; i < steps.size(); i++) {
            LedgerStep s = steps.get(i);
            out.append(String.format(Locale.ROOT, "\n  round %d step %d", s.roundId(), s.step()));
        }
        return out.toString();
    }
}
