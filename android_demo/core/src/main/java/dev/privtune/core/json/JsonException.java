package dev.privtune.core.json;

/** Text that is not the JSON this library accepts, or a value that has no JSON form (NaN, a non-JSON type). */
public class JsonException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    /** @param message what is wrong and where */
    public JsonException(String message) {
        super(message);
    }
}
