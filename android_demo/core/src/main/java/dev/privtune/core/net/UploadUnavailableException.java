package dev.privtune.core.net;

/** The aggregator could not be reached or kept failing; the update stays pending in the outbox. */
public class UploadUnavailableException extends UploadException {
    private static final long serialVersionUID = 1L;

    /** @param message what the last attempt saw */
    public UploadUnavailableException(String message) {
        super(message, -1);
    }
}
