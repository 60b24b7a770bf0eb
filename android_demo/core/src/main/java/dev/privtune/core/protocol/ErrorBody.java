package dev.privtune.core.protocol;

import java.util.LinkedHashMap;
import java.util.Map;

/** A 4xx response body: a machine-readable reason code and a human message. */
public final class ErrorBody {
    private final RejectionReason reason;
    private final String message;

    /** @param message non-empty human-readable explanation */
    public ErrorBody(RejectionReason reason, String message) {
        if (reason == null) {
            throw new ProtocolException("ErrorBody.reason must be a reason code, found None");
        }
        this.reason = reason;
        this.message = Fields.requireStr("ErrorBody", "message", message, null);
    }

    /** Validates a decoded JSON object (exactly reason, message). */
    public static ErrorBody fromMap(Object data) {
        Map<String, Object> m = Fields.checkKeys("ErrorBody", data, Fields.keys("reason", "message"));
        Object message = m.get("message");
        return new ErrorBody(RejectionReason.fromCode(m.get("reason")), message instanceof String ? (String) message : null);
    }

    /** The reason code. */
    public RejectionReason reason() {
        return reason;
    }

    /** The server's explanation. */
    public String message() {
        return message;
    }

    /** Python's {@code to_dict()}. */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("reason", reason.code());
        m.put("message", message);
        return m;
    }
}
