package dev.privtune.core.protocol;

/** Reason codes for rejected uploads (the aggregator returns them in 4xx bodies). */
public enum RejectionReason {
    MALFORMED("malformed"),
    TOO_LARGE("too_large"),
    UNSUPPORTED_VERSION("unsupported_version"),
    BAD_SIGNATURE("bad_signature"),
    UNKNOWN_DEVICE("unknown_device"),
    REVOKED_DEVICE("revoked_device"),
    STALE_TIMESTAMP("stale_timestamp"),
    REPLAYED_NONCE("replayed_nonce"),
    NOT_SELECTED("not_selected"),
    ROUND_NOT_OPEN("round_not_open"),
    WRONG_ROUND("wrong_round"),
    WRONG_MANIFEST("wrong_manifest"),
    WRONG_KEYS("wrong_keys"),
    WRONG_SHAPE("wrong_shape"),
    WRONG_DTYPE("wrong_dtype"),
    NON_FINITE("non_finite"),
    NORM_EXCEEDED("norm_exceeded"),
    DUPLICATE_CONFLICT("duplicate_conflict");

    private final String code;

    RejectionReason(String code) {
        this.code = code;
    }

    /** The wire code, e.g. "bad_signature". */
    public String code() {
        return code;
    }

    /**
     * The reason with this wire code.
     *
     * @throws ProtocolException for an unknown code
     */
    public static RejectionReason fromCode(Object code) {
        for (RejectionReason reason : values()) {
            if (reason.code.equals(code)) {
                return reason;
            }
        }
        throw new ProtocolException("ErrorBody.reason is not a known reason code, found " + Fields.repr(code));
    }
}
