package dev.privtune.core.bundle;

/** The bundle cannot be used; the message names the file and what is wrong with it. */
public class BundleException extends Exception {
    private static final long serialVersionUID = 1L;

    /** @param message names the file and the problem */
    public BundleException(String message) {
        super(message);
    }

    /** @param message names the file and the problem */
    public BundleException(String message, Throwable cause) {
        super(message, cause);
    }
}
