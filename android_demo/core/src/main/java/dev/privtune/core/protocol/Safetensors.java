package dev.privtune.core.protocol;

import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The safetensors format, written byte for byte as the Rust {@code safetensors} library (0.4+, used by
 * Python's {@code safetensors.numpy.save}) writes it:
 *
 * <pre>
 *   u64 little-endian N | N bytes of JSON header, space-padded to a multiple of 8 | tensor data
 * </pre>
 *
 * The header is compact JSON: {@code "__metadata__"} first (when given), then one entry per tensor
 * {@code {"dtype":"F32","shape":[..],"data_offsets":[begin,end]}}, tensors sorted by dtype (wider
 * first) then by name; data is little-endian in that same order. Only float32 and float16 are
 * supported, the protocol's two dtypes.
 */
public final class Safetensors {
    private static final String METADATA = "__metadata__";

    private Safetensors() {}

    /** A parsed file: tensors in data order and the header metadata (empty when absent). */
    public static final class Contents {
        private final Map<String, Tensor> tensors;
        private final Map<String, String> metadata;

        Contents(Map<String, Tensor> tensors, Map<String, String> metadata) {
            this.tensors = Collections.unmodifiableMap(tensors);
            this.metadata = Collections.unmodifiableMap(metadata);
        }

        /** Name to tensor, in data order. */
        public Map<String, Tensor> tensors() {
            return tensors;
        }

        /** Header metadata (string to string). */
        public Map<String, String> metadata() {
            return metadata;
        }
    }

    private static final Comparator<Map.Entry<String, Tensor>> RUST_ORDER = new Comparator<Map.Entry<String, Tensor>>() {
        @Override
        public int compare(Map.Entry<String, Tensor> a, Map.Entry<String, Tensor> b) {
            int byDtype = Integer.compare(rank(b.getValue().dtype()), rank(a.getValue().dtype()));
            return byDtype != 0 ? byDtype : JsonWriter.compareCodePoints(a.getKey(), b.getKey());
        }
    };

    private static int rank(DType dtype) {
        return dtype == DType.FLOAT32 ? 2 : 1; // order of the Rust Dtype enum: F16 < F32
    }

    /**
     * Encodes tensors and (at most one entry of) metadata.
     *
     * @param metadata null or a map with at most one entry (the Rust library writes several in hash
     *     order, which no other implementation can reproduce)
     */
    public static byte[] encode(Map<String, Tensor> tensors, Map<String, String> metadata) {
        if (metadata != null && metadata.size() > 1) {
            throw new IllegalArgumentException("at most one metadata entry can be written reproducibly, found " + metadata.keySet());
        }
        List<Map.Entry<String, Tensor>> entries = new ArrayList<Map.Entry<String, Tensor>>(tensors.entrySet());
        Collections.sort(entries, RUST_ORDER);
        StringBuilder header = new StringBuilder("{");
        boolean first = true;
        if (metadata != null && !metadata.isEmpty()) {
            Map.Entry<String, String> only = metadata.entrySet().iterator().next();
            header.append(JsonWriter.canonical(METADATA)).append(":{")
                    .append(JsonWriter.canonical(only.getKey())).append(':')
                    .append(JsonWriter.canonical(only.getValue())).append('}');
            first = false;
        }
        long offset = 0;
        for (Map.Entry<String, Tensor> entry : entries) {
            Tensor t = entry.getValue();
            long end = offset + (long) t.size() * t.dtype().itemSize();
            if (!first) {
                header.append(',');
            }
            first = false;
            header.append(JsonWriter.canonical(entry.getKey())).append(":{\"dtype\":\"").append(t.dtype().safetensorsName())
                    .append("\",\"shape\":[");
            int[] shape = t.shape();
            for (int i = 0; i < shape.length; i++) {
                header.append(i == 0 ? "" : ",").append(shape[i]);
            }
            header.append("],\"data_offsets\":[").append(offset).append(',').append(end).append("]}");
            offset = end;
        }
        header.append('}');
        byte[] headerBytes = header.toString().getBytes(StandardCharsets.UTF_8);
        int padded = (headerBytes.length + 7) / 8 * 8;
        if (8L + padded + offset > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("tensors are too large for one byte array: " + offset + " bytes");
        }
        ByteBuffer out = ByteBuffer.allocate((int) (8 + padded + offset)).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(padded);
        out.put(headerBytes);
        for (int i = headerBytes.length; i < padded; i++) {
            out.put((byte) ' ');
        }
        for (Map.Entry<String, Tensor> entry : entries) {
            Tensor t = entry.getValue();
            for (int i = 0; i < t.size(); i++) {
                if (t.dtype() == DType.FLOAT32) {
                    out.putInt(Float.floatToRawIntBits(t.get(i)));
                } else {
                    out.putShort(Fp16.fromDouble(t.get(i)));
                }
            }
        }
        return out.array();
    }

    /**
     * Parses safetensors bytes, checking what the Rust library checks: header length, offsets that
     * tile the data exactly, sizes that match the shapes.
     *
     * @throws ProtocolException naming the first problem
     */
    public static Contents decode(byte[] blob) {
        if (blob.length < 8) {
            throw new ProtocolException("safetensors body is " + blob.length + " bytes: too short for a header");
        }
        long headerLen = ByteBuffer.wrap(blob, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        if (headerLen < 0 || headerLen > blob.length - 8) {
            throw new ProtocolException("safetensors header claims " + headerLen + " bytes, body has " + (blob.length - 8));
        }
        byte[] headerBytes = new byte[(int) headerLen];
        System.arraycopy(blob, 8, headerBytes, 0, headerBytes.length);
        Object parsed;
        try {
            parsed = Json.parse(headerBytes);
        } catch (IllegalArgumentException e) {
            throw new ProtocolException("safetensors header is not valid UTF-8 JSON: " + e.getMessage(), e);
        }
        if (!(parsed instanceof Map)) {
            throw new ProtocolException("safetensors header is not a JSON object");
        }
        Map<String, Object> header = Json.asObject(parsed, "safetensors header");
        Map<String, String> metadata = new LinkedHashMap<String, String>();
        List<Object[]> entries = new ArrayList<Object[]>(); // {name, begin, end, dtype, shape}
        for (Map.Entry<String, Object> e : header.entrySet()) {
            if (METADATA.equals(e.getKey())) {
                if (e.getValue() == null) {
                    continue;
                }
                if (!(e.getValue() instanceof Map)) {
                    throw new ProtocolException("safetensors __metadata__ must be an object of strings");
                }
                for (Map.Entry<String, Object> m : Json.asObject(e.getValue(), METADATA).entrySet()) {
                    if (!(m.getValue() instanceof String)) {
                        throw new ProtocolException("safetensors __metadata__ value of " + m.getKey() + " is not a string");
                    }
                    metadata.put(m.getKey(), (String) m.getValue());
                }
                continue;
            }
            entries.add(parseEntry(e.getKey(), e.getValue()));
        }
        Collections.sort(entries, new Comparator<Object[]>() {
            @Override
            public int compare(Object[] a, Object[] b) {
                return Long.compare((Long) a[1], (Long) b[1]);
            }
        });
        long dataStart = 8 + headerLen;
        long expected = 0;
        Map<String, Tensor> tensors = new LinkedHashMap<String, Tensor>();
        for (Object[] entry : entries) {
            String name = (String) entry[0];
            long begin = (Long) entry[1];
            long end = (Long) entry[2];
            DType dtype = (DType) entry[3];
            int[] shape = (int[]) entry[4];
            if (begin != expected) {
                throw new ProtocolException("safetensors tensor " + name + " starts at " + begin + ", expected " + expected);
            }
            long numel = 1;
            for (int dim : shape) {
                numel *= dim;
            }
            if (end - begin != numel * dtype.itemSize()) {
                throw new ProtocolException("safetensors tensor " + name + " has " + (end - begin) + " bytes, its shape needs "
                        + numel * dtype.itemSize());
            }
            if (dataStart + end > blob.length) {
                throw new ProtocolException("safetensors tensor " + name + " runs past the end of the body");
            }
            ByteBuffer data = ByteBuffer.wrap(blob, (int) (dataStart + begin), (int) (end - begin)).order(ByteOrder.LITTLE_ENDIAN);
            float[] values = new float[(int) numel];
            for (int i = 0; i < values.length; i++) {
                values[i] = dtype == DType.FLOAT32 ? Float.intBitsToFloat(data.getInt()) : Fp16.toFloat(data.getShort());
            }
            tensors.put(name, Tensor.adopt(shape, dtype, values));
            expected = end;
        }
        if (dataStart + expected != blob.length) {
            throw new ProtocolException("safetensors data is " + (blob.length - dataStart) + " bytes, the tensors cover " + expected);
        }
        return new Contents(tensors, metadata);
    }

    private static Object[] parseEntry(String name, Object value) {
        if (!(value instanceof Map)) {
            throw new ProtocolException("safetensors entry " + name + " is not an object");
        }
        Map<String, Object> info = Json.asObject(value, name);
        DType dtype = DType.fromSafetensorsName(info.get("dtype"));
        Object rawShape = info.get("shape");
        Object rawOffsets = info.get("data_offsets");
        if (!(rawShape instanceof List) || !(rawOffsets instanceof List) || ((List<?>) rawOffsets).size() != 2) {
            throw new ProtocolException("safetensors entry " + name + " needs shape and two data_offsets");
        }
        List<?> dims = (List<?>) rawShape;
        if (dims.isEmpty()) {
            throw new ProtocolException("safetensors entry " + name + " is a scalar; the protocol uses tensors of rank >= 1");
        }
        int[] shape = new int[dims.size()];
        for (int i = 0; i < shape.length; i++) {
            Object d = dims.get(i);
            if (!(d instanceof Long) || (Long) d < 0 || (Long) d > Integer.MAX_VALUE) {
                throw new ProtocolException("safetensors entry " + name + " has a bad dimension " + d);
            }
            shape[i] = ((Long) d).intValue();
        }
        List<?> offsets = (List<?>) rawOffsets;
        Object begin = offsets.get(0);
        Object end = offsets.get(1);
        if (!(begin instanceof Long) || !(end instanceof Long) || (Long) begin < 0 || (Long) end < (Long) begin) {
            throw new ProtocolException("safetensors entry " + name + " has bad data_offsets " + offsets);
        }
        return new Object[] {name, begin, end, dtype, shape};
    }

    /** Encodes tensors without metadata. */
    public static byte[] encode(Map<String, Tensor> tensors) {
        return encode(tensors, null);
    }
}
