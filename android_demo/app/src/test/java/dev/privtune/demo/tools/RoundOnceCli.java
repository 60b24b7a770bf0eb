package dev.privtune.demo.tools;

import dev.privtune.core.json.JsonWriter;
import dev.privtune.demo.round.Participation;
import dev.privtune.demo.round.RoundOutcome;
import dev.privtune.demo.runtime.OpenBundle;
import dev.privtune.demo.settings.AppFiles;
import dev.privtune.demo.settings.DeviceCredentials;
import dev.privtune.demo.train.ExampleStore;
import java.io.File;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * TEST TOOL for tests/e2e/test_android_apk.py: one {@link Participation#runOnce} of the app's real
 * round logic against a live aggregator, with {@link NoiseOnlyRuntime} in place of ONNX Runtime.
 * <pre>
 *   RoundOnceCli URL DEVICE_ID SECRET_HEX BUNDLE STATE_DIR NUM_EXAMPLES [DEVICE_EPSILON_BUDGET]
 * </pre>
 * Prints the outcome as one JSON line.
 */
public final class RoundOnceCli {
    private RoundOnceCli() {}

    public static void main(String[] args) throws Exception {
        DeviceCredentials credentials = DeviceCredentials.parse(args[0], args[1], args[2]);
        OpenBundle bundle = OpenBundle.verify(new File(args[3]));
        AppFiles files = new AppFiles(new File(args[4]));
        int n = Integer.parseInt(args[5]);
        double budget = args.length > 6 ? Double.parseDouble(args[6]) : Double.POSITIVE_INFINITY;
        ExampleStore store = new ExampleStore(files.examples());
        for (int i = store.size(); i < n; i++) {
            store.add("example text number " + i, i % bundle.manifest().labels().size());
        }
        RoundOutcome outcome = Participation.runOnce(credentials, bundle, files, new NoiseOnlyRuntime(), budget);
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("kind", outcome.kind().name());
        out.put("round_id", outcome.roundId());
        out.put("detail", outcome.detail());
        out.put("steps", Long.valueOf(outcome.steps()));
        out.put("epsilon", Double.isNaN(outcome.localEpsilon()) ? null : Double.valueOf(outcome.localEpsilon()));
        out.put("receipt_sha256", outcome.receipt() == null ? null : outcome.receipt().updateSha256());
        System.out.println(JsonWriter.canonical(out));
    }
}
