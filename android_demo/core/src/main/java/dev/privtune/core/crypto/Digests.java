package dev.privtune.core.crypto;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/** SHA-256 and HMAC-SHA256 as lowercase hex (Python's {@code hashlib.sha256(...).hexdigest()}, {@code hmac}). */
public final class Digests {
    private Digests() {}

    /** A fresh SHA-256 digest (every JVM and Android ships it). */
    public static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this Java runtime has no SHA-256", e);
        }
    }

    /** SHA-256 of {@code data}. */
    public static byte[] sha256(byte[] data) {
        return sha256().digest(data);
    }

    /** Lowercase hex SHA-256 of {@code data}. */
    public static String sha256Hex(byte[] data) {
        return Hex.encode(sha256(data));
    }

    /** Lowercase hex SHA-256 of the UTF-8 bytes of {@code text}. */
    public static String sha256Hex(String text) {
        return sha256Hex(text.getBytes(StandardCharsets.UTF_8));
    }

    /** Streaming lowercase hex SHA-256 of a file (1 MiB reads). */
    public static String sha256Hex(File file) throws IOException {
        MessageDigest digest = sha256();
        InputStream in = new FileInputStream(file);
        try {
            byte[] buffer = new byte[1 << 20];
            int n;
            while ((n = in.read(buffer)) > 0) {
                digest.update(buffer, 0, n);
            }
        } finally {
            in.close();
        }
        return Hex.encode(digest.digest());
    }

    /** HMAC-SHA256 of {@code data} under {@code key}. */
    public static byte[] hmacSha256(byte[] key, byte[] data) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal(data);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is unavailable or refused the key", e);
        }
    }

    /** Lowercase hex HMAC-SHA256 of {@code data} under {@code key}. */
    public static String hmacSha256Hex(byte[] key, byte[] data) {
        return Hex.encode(hmacSha256(key, data));
    }

    /** Constant-time comparison of two strings' UTF-8 bytes (for MACs and signatures). */
    public static boolean constantTimeEquals(String a, String b) {
        return MessageDigest.isEqual(a.getBytes(StandardCharsets.UTF_8), b.getBytes(StandardCharsets.UTF_8));
    }
}
