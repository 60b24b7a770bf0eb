package dev.privtune.core.net;

import java.io.IOException;
import java.net.URL;
import java.util.Map;

/** Sends one HTTP request; swapped out in tests. Implementations must not follow redirects or retry. */
public interface HttpTransport {
    /**
     * @param body null for none
     * @param maxResponseBytes a longer response body is refused with {@link ResponseTooLargeException}
     * @throws IOException for connection errors and timeouts (the caller decides about retries)
     */
    HttpResponse send(String method, URL url, Map<String, String> headers, byte[] body, int maxResponseBytes) throws IOException;

    /** The response body was longer than the caller allows. */
    final class ResponseTooLargeException extends IOException {
        private static final long serialVersionUID = 1L;
        private final int status;

        /** @param status the response's status */
        public ResponseTooLargeException(int status, int limit) {
            super("response is over " + limit + " bytes");
            this.status = status;
        }

        /** Status of the oversized response. */
        public int status() {
            return status;
        }
    }
}
