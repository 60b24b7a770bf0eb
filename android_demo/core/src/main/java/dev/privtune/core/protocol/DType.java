package dev.privtune.core.protocol;

/** Tensor element types an update or adapter may use. */
public enum DType {
    /** IEEE binary32, safetensors "F32", numpy "float32". */
    FLOAT32("float32", "F32", 4),
    /** IEEE binary16, safetensors "F16", numpy "float16". */
    FLOAT16("float16", "F16", 2);

    private final String numpyName;
    private final String safetensorsName;
    private final int itemSize;

    DType(String numpyName, String safetensorsName, int itemSize) {
        this.numpyName = numpyName;
        this.safetensorsName = safetensorsName;
        this.itemSize = itemSize;
    }

    /** The protocol's name ("float32", "float16"). */
    public String numpyName() {
        return numpyName;
    }

    /** The safetensors header name ("F32", "F16"). */
    public String safetensorsName() {
        return safetensorsName;
    }

    /** Bytes per element. */
    public int itemSize() {
        return itemSize;
    }

    /**
     * The dtype with this protocol name.
     *
     * @throws ProtocolException for anything but float32/float16
     */
    public static DType fromNumpyName(String name) {
        for (DType d : values()) {
            if (d.numpyName.equals(name)) {
                return d;
            }
        }
        throw new ProtocolException("dtype must be float32 or float16, found " + Fields.repr(name));
    }

    /**
     * The dtype with this safetensors name.
     *
     * @throws ProtocolException for anything but F32/F16
     */
    public static DType fromSafetensorsName(Object name) {
        for (DType d : values()) {
            if (d.safetensorsName.equals(name)) {
                return d;
            }
        }
        throw new ProtocolException("tensor dtype " + Fields.repr(name) + " is not supported (F32 or F16 only)");
    }
}
