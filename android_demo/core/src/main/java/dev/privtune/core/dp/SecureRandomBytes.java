package dev.privtune.core.dp;

import java.security.SecureRandom;

/**
 * The platform CSPRNG ({@link SecureRandom}: /dev/urandom-backed on Linux and Android), the Java
 * counterpart of Python's {@code os.urandom}. Never seed it: a seedable generator lets anyone who
 * learns the seed subtract the noise from an update.
 */
public final class SecureRandomBytes implements RandomBytes {
    private final SecureRandom random;

    /** Uses a new default {@link SecureRandom}. */
    public SecureRandomBytes() {
        this(new SecureRandom());
    }

    /** Uses the given instance (e.g. a platform-specific strong one). */
    public SecureRandomBytes(SecureRandom random) {
        this.random = random;
    }

    @Override
    public void nextBytes(byte[] out) {
        random.nextBytes(out);
    }

    @Override
    public boolean isSecure() {
        return true;
    }
}
