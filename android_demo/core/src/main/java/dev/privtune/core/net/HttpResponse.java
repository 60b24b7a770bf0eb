package dev.privtune.core.net;

import java.util.Collections;
import java.util.Locale;
import java.util.Map;

/** A received HTTP response: status, headers (names lower-cased; the last value of a repeated header) and body. */
public final class HttpResponse {
    private final int status;
    private final Map<String, String> headers;
    private final byte[] body;

    /** @param headers header names must already be lower-case */
    public HttpResponse(int status, Map<String, String> headers, byte[] body) {
        this.status = status;
        this.headers = Collections.unmodifiableMap(headers);
        this.body = body;
    }

    /** HTTP status code. */
    public int status() {
        return status;
    }

    /** A header value (case-insensitive name), or null. */
    public String header(String name) {
        return headers.get(name.toLowerCase(Locale.ROOT));
    }

    /** The body bytes (empty when there was none). */
    public byte[] body() {
        return body;
    }
}
