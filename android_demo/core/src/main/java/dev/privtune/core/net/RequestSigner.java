package dev.privtune.core.net;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.crypto.Hex;
import dev.privtune.core.protocol.Protocol;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Signs device requests exactly as {@code ondevice/auth.py}: four headers, the last an HMAC-SHA256
 * (lowercase hex) under the device secret of
 *
 * <pre>
 *   PRIVTUNE-HMAC-SHA256\n{METHOD}\n{path}\n{sha256_hex(body)}\n{timestamp}\n{nonce}
 * </pre>
 *
 * The path is signed exactly as sent on the request line (raw, no query string allowed).
 */
public final class RequestSigner {
    /** First line of the signed string. */
    public static final String SCHEME = "PRIVTUNE-HMAC-SHA256";
    /** The device id header (selects the secret on the server). */
    public static final String HEADER_DEVICE = "X-Privtune-Device";
    /** Integer Unix seconds. */
    public static final String HEADER_TIMESTAMP = "X-Privtune-Timestamp";
    /** 32-128 lowercase hex characters, fresh per request. */
    public static final String HEADER_NONCE = "X-Privtune-Nonce";
    /** HMAC-SHA256 (hex) of the canonical request. */
    public static final String HEADER_SIGNATURE = "X-Privtune-Signature";
    /** Random bytes per request nonce (32 hex characters). */
    public static final int NONCE_BYTES = 16;

    private static final Pattern METHOD = Pattern.compile("^[A-Z]{1,16}$");
    private static final Pattern PATH = Pattern.compile("^/[A-Za-z0-9\\-._~!$&'()*+,;=:@%/]*$");
    private static final Pattern NONCE = Pattern.compile("^[0-9a-f]{32,128}$");
    private static final SecureRandom RANDOM = new SecureRandom();

    private RequestSigner() {}

    /**
     * The string that is signed.
     *
     * @throws IllegalArgumentException for a method, path, timestamp or nonce without canonical form
     */
    public static String canonicalRequest(String method, String path, String bodySha256, long timestamp, String nonce) {
        if (method == null || !METHOD.matcher(method).matches()) {
            throw new IllegalArgumentException("method must be an upper-case HTTP token, found " + method);
        }
        if (path == null || !PATH.matcher(path).matches()) {
            throw new IllegalArgumentException("path must be an absolute path without query string or fragment, found " + path);
        }
        if (timestamp < 0) {
            throw new IllegalArgumentException("timestamp must be a non-negative int of Unix seconds, found " + timestamp);
        }
        if (nonce == null || !NONCE.matcher(nonce).matches()) {
            throw new IllegalArgumentException("nonce must be 32-128 lowercase hex characters, found " + nonce);
        }
        return SCHEME + "\n" + method + "\n" + path + "\n" + bodySha256 + "\n" + timestamp + "\n" + nonce;
    }

    /**
     * HMAC-SHA256 (hex) of the canonical request under {@code secret}.
     *
     * @throws IllegalArgumentException for a secret shorter than 16 bytes or an unsignable field
     */
    public static String sign(byte[] secret, String method, String path, byte[] body, long timestamp, String nonce) {
        checkSecret(secret);
        String message = canonicalRequest(method, path, Digests.sha256Hex(body), timestamp, nonce);
        return Digests.hmacSha256Hex(secret, message.getBytes(StandardCharsets.US_ASCII));
    }

    /**
     * The four authentication headers for one request.
     *
     * @param nowSeconds Unix seconds (the caller's clock)
     * @param nonce null for a fresh one
     */
    public static Map<String, String> signedHeaders(String deviceId, byte[] secret, String method, String path, byte[] body,
            long nowSeconds, String nonce) {
        Protocol.validateDeviceId(deviceId);
        String n = nonce == null ? newNonce() : nonce;
        Map<String, String> headers = new LinkedHashMap<String, String>();
        headers.put(HEADER_DEVICE, deviceId);
        headers.put(HEADER_TIMESTAMP, Long.toString(nowSeconds));
        headers.put(HEADER_NONCE, n);
        headers.put(HEADER_SIGNATURE, sign(secret, method, path, body, nowSeconds, n));
        return headers;
    }

    /** A fresh request nonce from {@link SecureRandom}. */
    public static String newNonce() {
        byte[] bytes = new byte[NONCE_BYTES];
        RANDOM.nextBytes(bytes);
        return Hex.encode(bytes);
    }

    static void checkSecret(byte[] secret) {
        if (secret == null || secret.length < 16) {
            throw new IllegalArgumentException("secret must be at least 16 bytes, found " + (secret == null ? 0 : secret.length));
        }
    }
}
