package dev.privtune.core.protocol;

/** A contract value is malformed; the message names the field and the value found (Python's ProtocolError). */
public class ProtocolException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    /** @param message names the field, what is expected and what was found */
    public ProtocolException(String message) {
        super(message);
    }

    /** @param message names the field, what is expected and what was found */
    public ProtocolException(String message, Throwable cause) {
        super(message, cause);
    }
}
