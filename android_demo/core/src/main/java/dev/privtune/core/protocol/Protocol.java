package dev.privtune.core.protocol;

import java.util.regex.Pattern;

/** Constants of the wire and artifact contracts (mirrors {@code ondevice/protocol.py}). */
public final class Protocol {
    private Protocol() {}

    /**
     * Bumped on any incompatible change to a contract type or to the update encoding (2: updates no
     * longer carry num_examples).
     */
    public static final int PROTOCOL_VERSION = 2;
    /** Hard cap on an encoded AdapterUpdate. */
    public static final int MAX_UPDATE_BYTES = 64 * 1024 * 1024;
    /** Tensor dtypes an update may use. */
    public static final String[] SUPPORTED_TENSOR_DTYPES = {"float32", "float16"};
    /** Backends a bundle file may belong to. */
    public static final String[] FILE_BACKENDS = {"ort", "executorch", "tokenizer", "common"};
    /** Optimizers a round may name. */
    public static final String[] OPTIMIZERS = {"sgd", "adamw"};
    /** Key of the update's JSON metadata inside the safetensors header metadata. */
    public static final String METADATA_KEY = "privtune";

    static final Pattern SHA256 = Pattern.compile("^[0-9a-f]{64}$");
    /** Device ids (and other ids): the same rule as Python's {@code _ID_RE}. */
    public static final Pattern ID = Pattern.compile("^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$");
    static final Pattern NONCE = Pattern.compile("^[0-9a-f]{32,128}$");

    /**
     * {@code device_id} if it is a valid device id.
     *
     * @throws IllegalArgumentException naming the rule
     */
    public static String validateDeviceId(String deviceId) {
        if (deviceId == null || !ID.matcher(deviceId).matches()) {
            throw new IllegalArgumentException("device_id must match " + ID.pattern() + ", found " + Fields.repr(deviceId));
        }
        return deviceId;
    }
}
