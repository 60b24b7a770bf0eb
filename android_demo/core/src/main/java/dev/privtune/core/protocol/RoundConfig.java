package dev.privtune.core.protocol;

import dev.privtune.core.json.JsonWriter;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/** One federated round as the server announces it (check-in answer). */
public final class RoundConfig {
    private static final String OWNER = "RoundConfig";
    private final long roundId;
    private final String manifestHash;
    private final long globalAdapterVersion;
    private final DpConfig dp;
    private final Number updateClipNorm;
    private final Number deadlineUnix;
    private final String updateDtype;

    private RoundConfig(Map<String, Object> m) {
        Fields.requireVersion(OWNER, m.get("protocol_version"));
        roundId = Fields.requireInt(OWNER, "round_id", m.get("round_id"), 0);
        manifestHash = Fields.requireSha256(OWNER, "manifest_hash", m.get("manifest_hash"));
        globalAdapterVersion = Fields.requireInt(OWNER, "global_adapter_version", m.get("global_adapter_version"), 0);
        dp = DpConfig.fromMap(m.get("dp"));
        updateClipNorm = Fields.requireFloat(OWNER, "update_clip_norm", m.get("update_clip_norm"), 0.0, null, true);
        deadlineUnix = Fields.requireFloat(OWNER, "deadline_unix", m.get("deadline_unix"), 0.0, null, true);
        updateDtype = Fields.requireChoice(OWNER, "update_dtype", m.get("update_dtype"), Protocol.SUPPORTED_TENSOR_DTYPES);
    }

    /** Validates a decoded JSON object with exactly Python's {@code RoundConfig.to_dict()} fields. */
    public static RoundConfig fromMap(Object data) {
        return new RoundConfig(Fields.checkKeys(OWNER, data, Fields.keys("protocol_version", "round_id", "manifest_hash",
                "global_adapter_version", "dp", "update_clip_norm", "deadline_unix", "update_dtype")));
    }

    /** Parses JSON text. */
    public static RoundConfig fromJson(String json) {
        return fromMap(Fields.parseJson(json.getBytes(StandardCharsets.UTF_8), OWNER));
    }

    /** A config built in code (floats as Python floats). */
    public static RoundConfig of(long roundId, String manifestHash, long globalAdapterVersion, DpConfig dp,
            double updateClipNorm, double deadlineUnix, String updateDtype) {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("protocol_version", Long.valueOf(Protocol.PROTOCOL_VERSION));
        m.put("round_id", roundId);
        m.put("manifest_hash", manifestHash);
        m.put("global_adapter_version", globalAdapterVersion);
        m.put("dp", dp.toMap());
        m.put("update_clip_norm", updateClipNorm);
        m.put("deadline_unix", deadlineUnix);
        m.put("update_dtype", updateDtype);
        return fromMap(m);
    }

    /** Round id. */
    public long roundId() {
        return roundId;
    }

    /** Hash of the bundle manifest the round trains. */
    public String manifestHash() {
        return manifestHash;
    }

    /** Version of the global adapter to start from. */
    public long globalAdapterVersion() {
        return globalAdapterVersion;
    }

    /** Local DP-SGD parameters. */
    public DpConfig dp() {
        return dp;
    }

    /** Update clip norm S (global L2 over all tensors). */
    public double updateClipNorm() {
        return updateClipNorm.doubleValue();
    }

    /** Upload deadline (Unix seconds). */
    public double deadlineUnix() {
        return deadlineUnix.doubleValue();
    }

    /** "float32" or "float16". */
    public String updateDtype() {
        return updateDtype;
    }

    /** Python's {@code to_dict()}. */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("protocol_version", Long.valueOf(Protocol.PROTOCOL_VERSION));
        m.put("round_id", Long.valueOf(roundId));
        m.put("manifest_hash", manifestHash);
        m.put("global_adapter_version", Long.valueOf(globalAdapterVersion));
        m.put("dp", dp.toMap());
        m.put("update_clip_norm", updateClipNorm);
        m.put("deadline_unix", deadlineUnix);
        m.put("update_dtype", updateDtype);
        return m;
    }

    /** Canonical JSON (Python's {@code to_json()}). */
    public String toJson() {
        return JsonWriter.canonical(toMap());
    }

    @Override
    public String toString() {
        return toJson();
    }
}
