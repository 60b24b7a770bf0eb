package dev.privtune.core.net;

/** Different bytes for a round that already has an update (a device makes one per round). */
public class OutboxConflictException extends UploadException {
    private static final long serialVersionUID = 1L;

    /** @param message names the round and both hashes */
    public OutboxConflictException(String message) {
        super(message, -1);
    }
}
