package dev.privtune.core.protocol;

import java.util.LinkedHashMap;
import java.util.Map;

/** What the aggregator returns for an accepted update (the same bytes again give the same receipt). */
public final class UpdateReceipt {
    private static final String OWNER = "UpdateReceipt";
    private final long roundId;
    private final String deviceId;
    private final String updateSha256;
    private final Number acceptedAtUnix;

    private UpdateReceipt(Map<String, Object> m) {
        Fields.requireVersion(OWNER, m.get("protocol_version"));
        roundId = Fields.requireInt(OWNER, "round_id", m.get("round_id"), 0);
        deviceId = Fields.requireStr(OWNER, "device_id", m.get("device_id"), Protocol.ID);
        updateSha256 = Fields.requireSha256(OWNER, "update_sha256", m.get("update_sha256"));
        acceptedAtUnix = Fields.requireFloat(OWNER, "accepted_at_unix", m.get("accepted_at_unix"), 0.0, null, true);
    }

    /** Validates a decoded JSON object with exactly Python's {@code UpdateReceipt.to_dict()} fields. */
    public static UpdateReceipt fromMap(Object data) {
        return new UpdateReceipt(Fields.checkKeys(OWNER, data,
                Fields.keys("protocol_version", "round_id", "device_id", "update_sha256", "accepted_at_unix")));
    }

    /** The round the update belongs to. */
    public long roundId() {
        return roundId;
    }

    /** The uploading device. */
    public String deviceId() {
        return deviceId;
    }

    /** sha256 of the update bytes the server stored. */
    public String updateSha256() {
        return updateSha256;
    }

    /** Server time of acceptance (Unix seconds). */
    public double acceptedAtUnix() {
        return acceptedAtUnix.doubleValue();
    }

    /** Python's {@code to_dict()}. */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("protocol_version", Long.valueOf(Protocol.PROTOCOL_VERSION));
        m.put("round_id", Long.valueOf(roundId));
        m.put("device_id", deviceId);
        m.put("update_sha256", updateSha256);
        m.put("accepted_at_unix", acceptedAtUnix);
        return m;
    }

    @Override
    public boolean equals(Object other) {
        if (!(other instanceof UpdateReceipt)) {
            return false;
        }
        UpdateReceipt o = (UpdateReceipt) other;
        return roundId == o.roundId && deviceId.equals(o.deviceId) && updateSha256.equals(o.updateSha256)
                && acceptedAtUnix.doubleValue() == o.acceptedAtUnix.doubleValue();
    }

    @Override
    public int hashCode() {
        return updateSha256.hashCode();
    }

    @Override
    public String toString() {
        return "UpdateReceipt(round " + roundId + ", device " + deviceId + ", sha256 " + updateSha256 + ")";
    }
}
