package dev.privtune.core.net;

import dev.privtune.core.protocol.ErrorBody;

/** The aggregator refused the update (4xx with a reason code); retrying the same bytes won't help. */
public class UploadRejectedException extends UploadException {
    private static final long serialVersionUID = 1L;
    private final transient ErrorBody error;

    /** @param error the server's reason code and message */
    public UploadRejectedException(ErrorBody error, int status) {
        super("update rejected (" + error.reason().code() + "): " + error.message(), status);
        this.error = error;
    }

    /** The server's reason code and message. */
    public ErrorBody error() {
        return error;
    }
}
