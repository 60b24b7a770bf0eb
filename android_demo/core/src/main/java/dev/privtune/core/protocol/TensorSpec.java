package dev.privtune.core.protocol;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Name, shape and dtype of one trainable tensor. */
public final class TensorSpec {
    private static final String OWNER = "TensorSpec";
    private final String name;
    private final int[] shape;
    private final String dtype;

    /**
     * @param name tensor name (canonical, e.g. {@code encoder.layer.0...lora_A.weight})
     * @param shape dimensions, each >= 1
     * @param dtype "float32" or "float16"
     * @throws ProtocolException for an empty name, a bad shape or dtype
     */
    public TensorSpec(String name, int[] shape, String dtype) {
        Fields.requireStr(OWNER, "name", name, null);
        if (shape == null || shape.length == 0) {
            throw Fields.fail(OWNER, "shape", "of '" + name + "' must be a non-empty tuple of ints", shape == null ? null : "()");
        }
        for (int dim : shape) {
            if (dim < 1) {
                throw Fields.fail(OWNER, "shape", "of '" + name + "' must hold ints >= 1", Arrays.toString(shape));
            }
        }
        this.name = name;
        this.shape = shape.clone();
        this.dtype = Fields.requireChoice(OWNER, "dtype", dtype, Protocol.SUPPORTED_TENSOR_DTYPES);
    }

    /** Validates a decoded JSON object (exactly name, shape, dtype). */
    public static TensorSpec fromMap(Object data) {
        Map<String, Object> map = Fields.checkKeys(OWNER, data, Fields.keys("name", "shape", "dtype"));
        Object rawShape = map.get("shape");
        if (!(rawShape instanceof List) || ((List<?>) rawShape).isEmpty()) {
            throw Fields.fail(OWNER, "shape", "must be a non-empty tuple of ints", rawShape);
        }
        List<?> dims = (List<?>) rawShape;
        int[] shape = new int[dims.size()];
        for (int i = 0; i < shape.length; i++) {
            long dim = Fields.requireInt(OWNER, "shape", dims.get(i), 1);
            if (dim > Integer.MAX_VALUE) {
                throw Fields.fail(OWNER, "shape", "has a dimension too large for this client", rawShape);
            }
            shape[i] = (int) dim;
        }
        Object name = map.get("name");
        if (!(name instanceof String)) {
            throw Fields.fail(OWNER, "name", "must be a non-empty string", name);
        }
        Object dtype = map.get("dtype");
        return new TensorSpec((String) name, shape, dtype instanceof String ? (String) dtype : null);
    }

    /** Tensor name. */
    public String name() {
        return name;
    }

    /** A copy of the shape. */
    public int[] shape() {
        return shape.clone();
    }

    /** "float32" or "float16". */
    public String dtype() {
        return dtype;
    }

    /** Number of elements. */
    public int numel() {
        long n = 1;
        for (int dim : shape) {
            n *= dim;
        }
        if (n > Integer.MAX_VALUE) {
            throw new ProtocolException("TensorSpec " + name + " has more elements than fit a Java array");
        }
        return (int) n;
    }

    /** Python's {@code to_dict()}. */
    public Map<String, Object> toMap() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("name", name);
        List<Object> dims = new ArrayList<Object>();
        for (int dim : shape) {
            dims.add(Long.valueOf(dim));
        }
        out.put("shape", dims);
        out.put("dtype", dtype);
        return out;
    }
}
