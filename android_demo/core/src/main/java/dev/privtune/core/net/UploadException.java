package dev.privtune.core.net;

/** An upload failed; {@link #status()} is the HTTP status when a response arrived (else -1). */
public class UploadException extends Exception {
    private static final long serialVersionUID = 1L;
    private final int status;

    /** @param status HTTP status, or -1 when no response arrived */
    public UploadException(String message, int status) {
        super(status < 0 ? message : "HTTP " + status + ": " + message);
        this.status = status;
    }

    /** @param status HTTP status, or -1 when no response arrived */
    public UploadException(String message, int status, Throwable cause) {
        super(status < 0 ? message : "HTTP " + status + ": " + message, cause);
        this.status = status;
    }

    /** HTTP status, or -1. */
    public int status() {
        return status;
    }
}
