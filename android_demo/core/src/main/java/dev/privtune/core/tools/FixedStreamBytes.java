package dev.privtune.core.tools;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.dp.RandomBytes;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;

/**
 * A reproducible byte stream, sha256(seed || counter as 8-byte big-endian) for counter = 0, 1, ...,
 * concatenated: the same stream {@code android_demo/golden/make_golden.py} feeds Python's noise
 * transform, so both languages draw from identical bytes. NOT secure: golden tests only.
 */
public final class FixedStreamBytes implements RandomBytes {
    private final byte[] seed;
    private long counter;
    private byte[] block = new byte[0];
    private int used;

    /** @param seed the stream's seed (UTF-8 bytes of the golden file's seed string) */
    public FixedStreamBytes(String seed) {
        this.seed = seed.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public void nextBytes(byte[] out) {
        for (int i = 0; i < out.length; i++) {
            if (used == block.length) {
                MessageDigest digest = Digests.sha256();
                digest.update(seed);
                digest.update(ByteBuffer.allocate(8).putLong(counter++).array());
                block = digest.digest();
                used = 0;
            }
            out[i] = block[used++];
        }
    }

    @Override
    public boolean isSecure() {
        return false;
    }
}
