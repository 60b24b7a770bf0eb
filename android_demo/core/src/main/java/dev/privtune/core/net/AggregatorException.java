package dev.privtune.core.net;

import dev.privtune.core.protocol.ErrorBody;

/** The aggregator refused a request or answered outside the protocol. */
public class AggregatorException extends Exception {
    private static final long serialVersionUID = 1L;
    private final int status;
    private final transient ErrorBody error;

    /**
     * @param status HTTP status or -1
     * @param error the parsed error body, or null
     */
    public AggregatorException(String message, int status, ErrorBody error, Throwable cause) {
        super(status < 0 ? message : "HTTP " + status + ": " + message, cause);
        this.status = status;
        this.error = error;
    }

    /** HTTP status, or -1 when no response arrived. */
    public int status() {
        return status;
    }

    /** The server's reason code and message, or null. */
    public ErrorBody error() {
        return error;
    }
}
