package dev.privtune.core.net;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import dev.privtune.core.crypto.Digests;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import org.junit.Test;

public class RequestSignerTest {
    static final String NONCE = "0123456789abcdef0123456789abcdef";

    @Test
    public void canonicalStringLayout() {
        String c = RequestSigner.canonicalRequest("POST", "/v1/rounds/3/updates", Digests.sha256Hex(new byte[0]), 1700000000, NONCE);
        assertEquals("PRIVTUNE-HMAC-SHA256\nPOST\n/v1/rounds/3/updates\n"
                + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n1700000000\n" + NONCE, c);
    }

    @Test
    public void signatureIsTheHmacOfTheCanonicalString() {
        byte[] secret = "0123456789abcdef".getBytes(StandardCharsets.US_ASCII);
        byte[] body = "{}".getBytes(StandardCharsets.US_ASCII);
        String canonical = RequestSigner.canonicalRequest("POST", "/v1/checkin", Digests.sha256Hex(body), 5, NONCE);
        assertEquals(Digests.hmacSha256Hex(secret, canonical.getBytes(StandardCharsets.US_ASCII)),
                RequestSigner.sign(secret, "POST", "/v1/checkin", body, 5, NONCE));
        Map<String, String> h = RequestSigner.signedHeaders("phone-1", secret, "POST", "/v1/checkin", body, 5, NONCE);
        assertEquals("phone-1", h.get("X-Privtune-Device"));
        assertEquals("5", h.get("X-Privtune-Timestamp"));
        assertEquals(NONCE, h.get("X-Privtune-Nonce"));
        assertEquals(RequestSigner.sign(secret, "POST", "/v1/checkin", body, 5, NONCE), h.get("X-Privtune-Signature"));
    }

    @Test
    public void fieldsWithoutCanonicalFormAreRefused() {
        byte[] secret = new byte[16];
        byte[] body = new byte[0];
        assertThrows(IllegalArgumentException.class, () -> RequestSigner.sign(secret, "post", "/x", body, 1, NONCE));
        assertThrows(IllegalArgumentException.class, () -> RequestSigner.sign(secret, "GET", "/x?q=1", body, 1, NONCE));
        assertThrows(IllegalArgumentException.class, () -> RequestSigner.sign(secret, "GET", "x", body, 1, NONCE));
        assertThrows(IllegalArgumentException.class, () -> RequestSigner.sign(secret, "GET", "/x", body, -1, NONCE));
        assertThrows(IllegalArgumentException.class, () -> RequestSigner.sign(secret, "GET", "/x", body, 1, "ABC"));
        assertThrows(IllegalArgumentException.class, () -> RequestSigner.sign(new byte[15], "GET", "/x", body, 1, NONCE));
        assertEquals(32, RequestSigner.newNonce().length());
    }
}
