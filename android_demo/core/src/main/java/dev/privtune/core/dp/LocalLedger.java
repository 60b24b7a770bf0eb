package dev.privtune.core.dp;

import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The device's record of its local DP-SGD steps, in the exact file format of Python's
 * {@code LocalPrivacyLedger} ({@code json.dumps(..., indent=1)}; steps in recording order), so either
 * side can read the other's file.
 *
 * <p><b>No epsilon here.</b> The ledger's inputs (each step's q and sigma, add/remove-one neighbouring
 * relation, Poisson sampling) are recorded on the device; epsilon is computed from them with PLD
 * accounting by Python's {@code ondevice.accounting} (dp_accounting), or by the server, not in Java.
 *
 * <p>Record a step before its noised gradient is applied or stored, so a crash can only over-count.
 * One process per ledger file. An unreadable file is never replaced by a fresh ledger (that would
 * reset the device's privacy spend): the constructor throws {@link LedgerCorruptedException}.
 */
public final class LocalLedger {
    /** Value of the file's "format" field. */
    public static final String FORMAT = "privtune-local-privacy-ledger";
    /** Value of the file's "version" field. */
    public static final long VERSION = 1;
    /** The neighbouring relation each step's guarantee is stated under. */
    public static final String NEIGHBOURING_RELATION = "add_remove";
    /** How examples are drawn per step. */
    public static final String SAMPLING = "poisson";

    /** The ledger file exists but cannot be read. */
    public static final class LedgerCorruptedException extends IOException {
        private static final long serialVersionUID = 1L;

        LedgerCorruptedException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    private final File file;
    private final Map<String, LedgerStep> steps = new LinkedHashMap<String, LedgerStep>();

    /** Opens (or starts, when the file does not exist) the ledger at {@code file}. */
    public LocalLedger(File file) throws IOException {
        this.file = file;
        if (file.exists()) {
            for (LedgerStep step : load(file)) {
                steps.put(key(step.roundId(), step.step()), step);
            }
        }
    }

    private static String key(long roundId, long step) {
        return roundId + "/" + step;
    }

    private static List<LedgerStep> load(File file) throws IOException {
        try {
            Map<String, Object> data = Json.asObject(Json.parse(AtomicFiles.readAll(file)), "ledger");
            expect(data, "format", FORMAT);
            expect(data, "version", Long.valueOf(VERSION));
            expect(data, "neighbouring_relation", NEIGHBOURING_RELATION);
            expect(data, "sampling", SAMPLING);
            List<LedgerStep> out = new ArrayList<LedgerStep>();
            Set<String> seen = new HashSet<String>();
            for (Object item : Json.asArray(data.get("steps"), "steps")) {
                Map<String, Object> m = Json.asObject(item, "step entry");
                if (m.size() != 4 || !(m.get("round_id") instanceof Long) || !(m.get("step") instanceof Long)
                        || !(m.get("sampling_rate") instanceof Number) || !(m.get("noise_multiplier") instanceof Number)) {
                    throw new IllegalArgumentException("malformed step entry " + m);
                }
                LedgerStep step = new LedgerStep((Long) m.get("round_id"), (Long) m.get("step"),
                        ((Number) m.get("sampling_rate")).doubleValue(), ((Number) m.get("noise_multiplier")).doubleValue());
                if (!seen.add(key(step.roundId(), step.step()))) {
                    throw new IllegalArgumentException("duplicate step (round " + step.roundId() + ", step " + step.step() + ")");
                }
                out.add(step);
            }
            return out;
        } catch (IllegalArgumentException e) {
            throw new LedgerCorruptedException("privacy ledger " + file + " is unreadable (" + e.getMessage()
                    + "); refusing to start a fresh ledger, which would reset this device's privacy spend", e);
        }
    }

    private static void expect(Map<String, Object> data, String key, Object value) {
        if (!value.equals(data.get(key))) {
            throw new IllegalArgumentException(key + " must be " + value + ", found " + data.get(key));
        }
    }

    /**
     * Records one step durably; false (no change) if (round, step) is already recorded identically.
     *
     * @throws IllegalArgumentException when the same (round, step) was recorded with other parameters
     */
    public synchronized boolean recordStep(long roundId, long step, double samplingRate, double noiseMultiplier) throws IOException {
        LedgerStep added = new LedgerStep(roundId, step, samplingRate, noiseMultiplier);
        String key = key(roundId, step);
        LedgerStep old = steps.get(key);
        if (old != null) {
            if (!old.equals(added)) {
                throw new IllegalArgumentException("round " + roundId + " step " + step + " is already recorded as " + old
                        + ", conflicting with " + added);
            }
            return false;
        }
        steps.put(key, added);
        try {
            AtomicFiles.write(file, toJson().getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            steps.remove(key);
            throw e;
        }
        return true;
    }

    /** Recorded steps in recording order. */
    public synchronized List<LedgerStep> steps() {
        return new ArrayList<LedgerStep>(steps.values());
    }

    /** The file content: Python's {@code json.dumps(data, indent=1, allow_nan=False)}. */
    public synchronized String toJson() {
        Map<String, Object> data = new LinkedHashMap<String, Object>();
        data.put("format", FORMAT);
        data.put("version", Long.valueOf(VERSION));
        data.put("neighbouring_relation", NEIGHBOURING_RELATION);
        data.put("sampling", SAMPLING);
        List<Object> list = new ArrayList<Object>();
        for (LedgerStep s : steps.values()) {
            list.add(s.toMap());
        }
        data.put("steps", list);
        return JsonWriter.indented(data, 1);
    }

    /** The ledger file. */
    public File file() {
        return file;
    }
}
