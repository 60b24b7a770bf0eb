package dev.privtune.core.net;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@link HttpTransport} over {@link HttpURLConnection} (JDK and Android alike).
 *
 * <p>The body is buffered, not streamed: in fixed-length streaming mode the JDK turns a 401 into an
 * {@code HttpRetryException} and the server's reason code is lost. Redirects are not followed.
 */
public final class UrlConnectionTransport implements HttpTransport {
    private final int connectTimeoutMs;
    private final int readTimeoutMs;

    /** @param timeoutMs connect and read timeout each */
    public UrlConnectionTransport(int timeoutMs) {
        if (timeoutMs <= 0) {
            throw new IllegalArgumentException("timeout must be > 0 ms, found " + timeoutMs);
        }
        this.connectTimeoutMs = timeoutMs;
        this.readTimeoutMs = timeoutMs;
    }

    @Override
    public HttpResponse send(String method, URL url, Map<String, String> headers, byte[] body, int maxResponseBytes)
            throws IOException {
        HttpURLConnection conn = (HttpURLConnection) url.openConnection();
        try {
            conn.setInstanceFollowRedirects(false);
            conn.setUseCaches(false);
            conn.setConnectTimeout(connectTimeoutMs);
            conn.setReadTimeout(readTimeoutMs);
            conn.setRequestMethod(method);
            for (Map.Entry<String, String> h : headers.entrySet()) {
                conn.setRequestProperty(h.getKey(), h.getValue());
            }
            if (body != null) {
                conn.setDoOutput(true);
                OutputStream out = conn.getOutputStream();
                try {
                    out.write(body);
                } finally {
                    out.close();
                }
            }
            int status = conn.getResponseCode();
            Map<String, String> responseHeaders = new HashMap<String, String>();
            for (Map.Entry<String, List<String>> h : conn.getHeaderFields().entrySet()) {
                if (h.getKey() != null && !h.getValue().isEmpty()) {
                    responseHeaders.put(h.getKey().toLowerCase(Locale.ROOT), h.getValue().get(h.getValue().size() - 1));
                }
            }
            InputStream in = status >= 400 ? conn.getErrorStream() : conn.getInputStream();
            byte[] content = in == null ? new byte[0] : readCapped(in, status, maxResponseBytes);
            return new HttpResponse(status, responseHeaders, content);
        } finally {
            conn.disconnect();
        }
    }

    private static byte[] readCapped(InputStream in, int status, int limit) throws IOException {
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buffer = new byte[16384];
            int n;
            while ((n = in.read(buffer)) > 0) {
                if (out.size() + n > limit) {
                    throw new ResponseTooLargeException(status, limit);
                }
                out.write(buffer, 0, n);
            }
            return out.toByteArray();
        } finally {
            in.close();
        }
    }
}
