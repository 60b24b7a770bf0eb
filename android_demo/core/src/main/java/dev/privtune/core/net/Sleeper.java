package dev.privtune.core.net;

/** Waits between attempts; tests inject one that records instead of sleeping. */
public interface Sleeper {
    /** Sleeps {@code seconds} (may be fractional). */
    void sleep(double seconds) throws InterruptedException;

    /** {@link Thread#sleep}. */
    Sleeper REAL = new Sleeper() {
        @Override
        public void sleep(double seconds) throws InterruptedException {
            Thread.sleep((long) Math.ceil(seconds * 1000));
        }
    };
}
