package dev.privtune.demo.tools;

import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.demo.privacy.RdpAccountant;
import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * TEST TOOL for tests/e2e/test_android_apk.py: {@code RdpCli CASES.json} prints the app's epsilon for
 * each case, one per line. CASES: {"cases": [{"delta": d, "events": [[q, sigma, count], ...]}, ...]}.
 */
public final class RdpCli {
    private RdpCli() {}

    public static void main(String[] args) throws Exception {
        Map<String, Object> data = Json.asObject(Json.parse(AtomicFiles.readAll(new File(args[0]))), "cases file");
        for (Object c : Json.asArray(data.get("cases"), "cases")) {
            Map<String, Object> m = Json.asObject(c, "case");
            List<LedgerStep> steps = new ArrayList<LedgerStep>();
            long k = 0;
            for (Object e : Json.asArray(m.get("events"), "events")) {
                List<Object> ev = Json.asArray(e, "event");
                double q = ((Number) ev.get(0)).doubleValue();
                double sigma = ((Number) ev.get(1)).doubleValue();
                long count = ((Number) ev.get(2)).longValue();
                for (long i = 0; i < count; i++) {
                    steps.add(new LedgerStep(0, k++, q, sigma));
                }
            }
            System.out.println(Double.toString(RdpAccountant.epsilon(steps, ((Number) m.get("delta")).doubleValue())));
        }
    }
}
