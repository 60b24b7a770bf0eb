package dev.privtune.core.net;

import java.security.SecureRandom;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * When and how long to wait between upload attempts (Python's UploadClient rules): connection errors,
 * timeouts, 408, 429 and 5xx are retried with exponential backoff and full jitter,
 * U(0, min(max, base * 2^(attempt-1))); a {@code Retry-After} in seconds replaces the jitter (capped at max).
 */
public final class RetryPolicy {
    private static final Pattern DELAY_SECONDS = Pattern.compile("^\\s*([0-9]{1,9})\\s*$");
    private final int maxAttempts;
    private final double baseSeconds;
    private final double maxSeconds;
    private final Random jitter;

    /**
     * @param jitter source of the jitter (default {@link SecureRandom}; injectable so tests do not depend on chance)
     * @throws IllegalArgumentException for maxAttempts < 1, a negative base or max < base
     */
    public RetryPolicy(int maxAttempts, double baseSeconds, double maxSeconds, Random jitter) {
        if (maxAttempts < 1) {
            throw new IllegalArgumentException("max_attempts must be an int >= 1, found " + maxAttempts);
        }
        if (!(baseSeconds >= 0)) {
            throw new IllegalArgumentException("backoff_base_s must be >= 0, found " + baseSeconds);
        }
        if (!(maxSeconds >= baseSeconds)) {
            throw new IllegalArgumentException("backoff_max_s must be >= backoff_base_s (" + baseSeconds + "), found " + maxSeconds);
        }
        this.maxAttempts = maxAttempts;
        this.baseSeconds = baseSeconds;
        this.maxSeconds = maxSeconds;
        this.jitter = jitter == null ? new SecureRandom() : jitter;
    }

    /** Python's defaults: 6 attempts, base 0.5 s, max 30 s. */
    public static RetryPolicy defaults() {
        return new RetryPolicy(6, 0.5, 30, null);
    }

    /** Attempts in total (first one included). */
    public int maxAttempts() {
        return maxAttempts;
    }

    /** True for the statuses that are retried: 408, 429 and 5xx. */
    public static boolean isRetryableStatus(int status) {
        return status == 408 || status == 429 || (status >= 500 && status <= 599);
    }

    /** Full-jitter delay after failed attempt {@code attempt} (1-based). */
    public double backoffDelay(int attempt) {
        double ceiling = Math.min(maxSeconds, baseSeconds * Math.pow(2.0, Math.min(attempt - 1, 64)));
        return jitter.nextDouble() * ceiling;
    }

    /** The wait before the next attempt: Retry-After seconds when given (capped), else {@link #backoffDelay}. */
    public double delay(int attempt, String retryAfter) {
        if (retryAfter != null) {
            Matcher m = DELAY_SECONDS.matcher(retryAfter);
            if (m.matches()) {
                return Math.min(Double.parseDouble(m.group(1)), maxSeconds);
            }
        }
        return backoffDelay(attempt);
    }
}
