package dev.privtune.core.net;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.json.Json;
import dev.privtune.core.protocol.ErrorBody;
import dev.privtune.core.protocol.Protocol;
import dev.privtune.core.protocol.RejectionReason;
import dev.privtune.core.protocol.UpdateCodec;
import dev.privtune.core.protocol.UpdateReceipt;
import java.io.IOException;
import java.net.MalformedURLException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Delivers the outbox's updates to the aggregator exactly once per round (Python's
 * {@code ondevice.upload.UploadClient}).
 *
 * <p>{@code POST {base}/v1/rounds/{round}/updates} with {@code Content-Type: application/octet-stream},
 * the signed request headers ({@link RequestSigner}, fresh nonce per attempt), {@code X-Privtune-Update-Mac}
 * and {@code Idempotency-Key: sha256(body)}. Every retry sends the same bytes, so the server answers a
 * repeat with the receipt it already issued (200); different bytes for a round that already has an
 * update get 409 duplicate_conflict. 200/201 give a receipt, checked against (round, device, sha256)
 * and stored in the outbox; 408/429/5xx and transport errors are retried ({@link RetryPolicy}); any
 * other 4xx is recorded in the outbox and raised as {@link UploadRejectedException} with the server's
 * reason code — except 401 replayed_nonce, which only our own duplicated request can cause (an HTTP
 * stack re-sending a POST on a stale connection) and is retried with a fresh nonce.
 */
public final class UploadClient {
    /** Header carrying the update MAC. */
    public static final String UPDATE_MAC_HEADER = "X-Privtune-Update-Mac";
    /** Header carrying sha256(body). */
    public static final String IDEMPOTENCY_HEADER = "Idempotency-Key";
    /** The upload's content type. */
    public static final String CONTENT_TYPE = "application/octet-stream";
    /** Responses are small JSON documents; anything longer is refused. */
    public static final int MAX_RESPONSE_BYTES = 64 * 1024;

    /** The device's clock, injectable for tests. */
    public interface Clock {
        /** Current Unix time in seconds. */
        long nowSeconds();
    }

    /** {@link System#currentTimeMillis()}. */
    public static final Clock SYSTEM_CLOCK = new Clock() {
        @Override
        public long nowSeconds() {
            return System.currentTimeMillis() / 1000;
        }
    };

    private final String baseUrl;
    private final String deviceId;
    private final byte[] secret;
    private final Outbox outbox;
    private final HttpTransport transport;
    private final RetryPolicy retry;
    private final Sleeper sleeper;
    private final Clock clock;

    /**
     * @param baseUrl http(s) URL of the aggregator (no query or fragment)
     * @throws IllegalArgumentException for a bad URL, device id or a secret shorter than 16 bytes
     */
    public UploadClient(String baseUrl, String deviceId, byte[] secret, Outbox outbox, HttpTransport transport,
            RetryPolicy retry, Sleeper sleeper, Clock clock) {
        this.baseUrl = checkBaseUrl(baseUrl);
        this.deviceId = Protocol.validateDeviceId(deviceId);
        UpdateCodec.mac(new byte[0], secret); // validates the secret's length now, not at the first upload
        this.secret = secret.clone();
        this.outbox = outbox;
        this.transport = transport;
        this.retry = retry;
        this.sleeper = sleeper;
        this.clock = clock;
    }

    /** A client with the real transport (10 s timeout), default retry policy, real sleep and clock. */
    public UploadClient(String baseUrl, String deviceId, byte[] secret, Outbox outbox) {
        this(baseUrl, deviceId, secret, outbox, new UrlConnectionTransport(10000), RetryPolicy.defaults(), Sleeper.REAL,
                SYSTEM_CLOCK);
    }

    static String checkBaseUrl(String baseUrl) {
        URL url;
        try {
            url = new URL(baseUrl);
        } catch (MalformedURLException e) {
            throw new IllegalArgumentException("base_url must be an http(s) URL with a host, found " + baseUrl, e);
        }
        if (!("http".equals(url.getProtocol()) || "https".equals(url.getProtocol())) || url.getHost().isEmpty()) {
            throw new IllegalArgumentException("base_url must be an http(s) URL with a host, found " + baseUrl);
        }
        if (url.getQuery() != null || url.getRef() != null) {
            throw new IllegalArgumentException("base_url must not carry a query or fragment, found " + baseUrl);
        }
        String out = baseUrl;
        while (out.endsWith("/")) {
            out = out.substring(0, out.length() - 1);
        }
        return out;
    }

    /** The outbox this client delivers from. */
    public Outbox outbox() {
        return outbox;
    }

    /**
     * Sends the outbox's update for the round until a receipt for exactly those bytes arrives. A
     * delivered round returns its stored receipt without a network call.
     *
     * @throws UploadRejectedException on a 4xx (recorded in the outbox)
     * @throws UploadUnavailableException when the attempts are used up (still pending; call again later)
     * @throws UploadException for a response that breaks the contract (still pending)
     */
    public UpdateReceipt deliver(long roundId) throws IOException, UploadException, InterruptedException {
        UpdateReceipt stored = outbox.receipt(roundId);
        if (stored != null) {
            return stored;
        }
        byte[] body = outbox.get(roundId);
        if (body == null) {
            throw new IllegalArgumentException("round " + roundId + " has no update in the outbox " + outbox.directory());
        }
        URL url = new URL(baseUrl + "/v1/rounds/" + roundId + "/updates");
        String path = url.getPath();
        Map<String, String> fixed = new LinkedHashMap<String, String>();
        fixed.put("Content-Type", CONTENT_TYPE);
        fixed.put(UPDATE_MAC_HEADER, UpdateCodec.mac(body, secret));
        fixed.put(IDEMPOTENCY_HEADER, Digests.sha256Hex(body));
        String lastProblem = "no attempt made";
        for (int attempt = 1; attempt <= retry.maxAttempts(); attempt++) {
            Map<String, String> headers = new LinkedHashMap<String, String>(fixed);
            headers.putAll(RequestSigner.signedHeaders(deviceId, secret, "POST", path, body, clock.nowSeconds(), null));
            HttpResponse response;
            try {
                response = transport.send("POST", url, headers, body, MAX_RESPONSE_BYTES);
            } catch (HttpTransport.ResponseTooLargeException e) {
                if (!RetryPolicy.isRetryableStatus(e.status())) {
                    throw new UploadException(e.getMessage(), e.status(), e);
                }
                lastProblem = "HTTP " + e.status() + " (" + e.getMessage() + ")";
                if (attempt < retry.maxAttempts()) {
                    sleeper.sleep(retry.delay(attempt, null));
                }
                continue;
            } catch (IOException e) {
                lastProblem = e.getClass().getSimpleName() + ": " + e.getMessage();
                if (attempt < retry.maxAttempts()) {
                    sleeper.sleep(retry.delay(attempt, null));
                }
                continue;
            }
            int status = response.status();
            if (RetryPolicy.isRetryableStatus(status) || isOwnReplay(response)) {
                lastProblem = "HTTP " + status;
                if (attempt < retry.maxAttempts()) {
                    sleeper.sleep(retry.delay(attempt, response.header("Retry-After")));
                }
                continue;
            }
            UpdateReceipt receipt = receiptOrRaise(roundId, body, response);
            outbox.markDelivered(roundId, receipt);
            return receipt;
        }
        throw new UploadUnavailableException("round " + roundId + " not delivered after " + retry.maxAttempts()
                + " attempt(s) to " + url + "; last: " + lastProblem);
    }

    private static boolean isOwnReplay(HttpResponse response) {
        if (response.status() != 401) {
            return false;
        }
        try {
            return ErrorBody.fromMap(Json.parse(response.body())).reason() == RejectionReason.REPLAYED_NONCE;
        } catch (IllegalArgumentException e) {
            return false;
        }
    }

    private UpdateReceipt receiptOrRaise(long roundId, byte[] body, HttpResponse response) throws IOException, UploadException {
        int status = response.status();
        if (status == 200 || status == 201) {
            UpdateReceipt receipt;
            try {
                receipt = UpdateReceipt.fromMap(Json.parse(response.body()));
            } catch (IllegalArgumentException e) {
                throw new UploadException("not a valid UpdateReceipt (" + e.getMessage() + "): " + snippet(response.body()), status, e);
            }
            String sha = Digests.sha256Hex(body);
            if (receipt.roundId() != roundId || !receipt.deviceId().equals(deviceId) || !receipt.updateSha256().equals(sha)) {
                throw new UploadException("receipt names (round, device, sha256) (" + receipt.roundId() + ", " + receipt.deviceId()
                        + ", " + receipt.updateSha256() + "), expected (" + roundId + ", " + deviceId + ", " + sha
                        + "); not marked delivered", status);
            }
            return receipt;
        }
        if (status >= 400 && status <= 499) {
            ErrorBody error;
            try {
                error = ErrorBody.fromMap(Json.parse(response.body()));
            } catch (IllegalArgumentException e) {
                throw new UploadException("not a valid ErrorBody (" + e.getMessage() + "): " + snippet(response.body()), status, e);
            }
            outbox.markRejected(roundId, error);
            throw new UploadRejectedException(error, status);
        }
        throw new UploadException("unexpected response to the upload of round " + roundId + ": " + snippet(response.body()), status);
    }

    static String snippet(byte[] body) {
        String text = new String(body, 0, Math.min(body.length, 800), StandardCharsets.UTF_8);
        return text.length() > 200 ? text.substring(0, 200) + "..." : text;
    }
}
