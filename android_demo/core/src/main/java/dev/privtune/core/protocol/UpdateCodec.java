package dev.privtune.core.protocol;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.crypto.Hex;
import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import java.security.SecureRandom;
import java.util.Collections;
import java.util.Map;

/**
 * {@link AdapterUpdate} to bytes and back, and the update MAC; byte-compatible with Python's
 * {@code encode_update}, {@code decode_update} and {@code update_mac}.
 */
public final class UpdateCodec {
    /** Minimum device secret length (bytes). */
    public static final int MIN_SECRET_BYTES = 16;
    private static final SecureRandom RANDOM = new SecureRandom();

    private UpdateCodec() {}

    /**
     * Safetensors bytes with the metadata under key "privtune"; deterministic for equal updates.
     *
     * @throws ProtocolException when the encoding exceeds {@link Protocol#MAX_UPDATE_BYTES}
     */
    public static byte[] encode(AdapterUpdate update) {
        String metadata = JsonWriter.canonical(update.metadataMap());
        byte[] blob = Safetensors.encode(update.tensors(), Collections.singletonMap(Protocol.METADATA_KEY, metadata));
        if (blob.length > Protocol.MAX_UPDATE_BYTES) {
            throw new ProtocolException("encoded AdapterUpdate is " + blob.length + " bytes, over the cap of " + Protocol.MAX_UPDATE_BYTES);
        }
        return blob;
    }

    /**
     * Parses and validates bytes from {@link #encode} (or Python's encode_update).
     *
     * @throws ProtocolException on anything malformed
     */
    public static AdapterUpdate decode(byte[] blob) {
        if (blob.length > Protocol.MAX_UPDATE_BYTES) {
            throw new ProtocolException("AdapterUpdate body is " + blob.length + " bytes, over the cap of " + Protocol.MAX_UPDATE_BYTES);
        }
        Safetensors.Contents contents = Safetensors.decode(blob);
        String metadata = contents.metadata().get(Protocol.METADATA_KEY);
        if (metadata == null) {
            throw new ProtocolException("AdapterUpdate safetensors metadata lacks the '" + Protocol.METADATA_KEY + "' entry");
        }
        Object parsed;
        try {
            parsed = Json.parse(metadata);
        } catch (IllegalArgumentException e) {
            throw new ProtocolException("AdapterUpdate metadata is not valid UTF-8 JSON: " + e.getMessage(), e);
        }
        Map<String, Object> meta = Fields.checkKeys("AdapterUpdate metadata", parsed, Fields.keys("protocol_version", "round_id",
                "device_id", "manifest_hash", "global_adapter_version", "dp", "local_epsilon", "local_delta", "nonce"));
        Fields.requireVersion("AdapterUpdate", meta.get("protocol_version"));
        String owner = "AdapterUpdate";
        return new AdapterUpdate(
                Fields.requireInt(owner, "round_id", meta.get("round_id"), 0),
                stringOrNull(meta.get("device_id")),
                stringOrNull(meta.get("manifest_hash")),
                Fields.requireInt(owner, "global_adapter_version", meta.get("global_adapter_version"), 0),
                contents.tensors(),
                DpConfig.fromMap(meta.get("dp")),
                Fields.requireFloat(owner, "local_epsilon", meta.get("local_epsilon"), 0.0, null, false),
                Fields.requireFloat(owner, "local_delta", meta.get("local_delta"), 0.0, 1.0, false),
                stringOrNull(meta.get("nonce")));
    }

    private static String stringOrNull(Object value) {
        return value instanceof String ? (String) value : null;
    }

    /**
     * HMAC-SHA256 (lowercase hex) of an encoded update under the device's secret.
     *
     * @throws ProtocolException for a secret shorter than 16 bytes
     */
    public static String mac(byte[] body, byte[] secret) {
        if (secret == null || secret.length < MIN_SECRET_BYTES) {
            throw new ProtocolException("device secret must be at least " + MIN_SECRET_BYTES + " bytes, found "
                    + (secret == null ? 0 : secret.length));
        }
        return Digests.hmacSha256Hex(secret, body);
    }

    /** Constant-time check of {@link #mac}. */
    public static boolean verifyMac(byte[] body, byte[] secret, String mac) {
        return Digests.constantTimeEquals(mac(body, secret), mac);
    }

    /** A fresh update nonce: 128 bits from {@link SecureRandom}, 32 hex characters. */
    public static String newNonce() {
        byte[] bytes = new byte[16];
        RANDOM.nextBytes(bytes);
        return Hex.encode(bytes);
    }
}
