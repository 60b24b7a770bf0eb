package dev.privtune.demo.train;

/** The round asks for something this app cannot do as specified (another bundle, a seed method, an expired deadline). */
public final class RoundNotSupportedException extends Exception {
    private static final long serialVersionUID = 1L;

    /** @param message why the round cannot be trained here */
    public RoundNotSupportedException(String message) {
        super(message);
    }
}
