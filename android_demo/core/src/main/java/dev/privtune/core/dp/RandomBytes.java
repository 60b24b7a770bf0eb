package dev.privtune.core.dp;

/**
 * A source of random bytes for DP noise and sampling. Production code uses {@link SecureRandomBytes};
 * tests may feed a fixed stream to reproduce Python's draws exactly.
 */
public interface RandomBytes {
    /** Fills {@code out} with random bytes. */
    void nextBytes(byte[] out);

    /** True only for a cryptographically secure source (the only kind a device may add noise from). */
    boolean isSecure();
}
