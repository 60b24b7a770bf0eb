package dev.privtune.demo.train;

import dev.privtune.core.dp.RandomBytes;

/** TEST DOUBLE: a repeatable byte stream that claims to be secure, so DP code paths can be checked deterministically. */
final class FixedBytes implements RandomBytes {
    private long state;

    FixedBytes(long seed) {
        state = seed;
    }

    @Override
    public void nextBytes(byte[] out) {
        for (int i = 0; i < out.length; i++) {
            state = state * 6364136223846793005L + 1442695040888963407L;
            out[i] = (byte) (state >>> 56);
        }
    }

    @Override
    public boolean isSecure() {
        return true;
    }
}
