package dev.privtune.demo.train;

import dev.privtune.core.protocol.DType;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.TensorSpec;
import java.io.Closeable;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads and patches the trainable tensors of an ONNX Runtime Training checkpoint file, with no ORT
 * code: ORT's Java API (1.19) has no parameter getter or setter, so the app starts a round from a copy
 * of the bundle's checkpoint with the global adapter written into it, and reads the trained adapter
 * back from the checkpoint ORT saves after the last step.
 *
 * <p>Format: a FlatBuffer with file identifier {@code ODTC}, schema {@code ort_training_checkpoint.fbs}:
 * {@code Checkpoint{version, module_state: ModuleState{requires_grad_params: [Tensor], frozen_params,
 * is_nominal_state, has_external_data}, ...}} with {@code Tensor{name, doc_string, dims: [int64],
 * data_type, raw_data: [uint8], ...}} from {@code ort.fbs}. Only inline float32 tensors of a
 * non-nominal state are supported; anything else is refused with the reason. Values are patched in
 * place (same byte length), so the file's structure never changes.
 */
public final class OrtCheckpointFile implements Closeable {
    /** The FlatBuffer file identifier of an ORT training checkpoint. */
    public static final String FILE_IDENTIFIER = "ODTC";
    private static final int TENSOR_FLOAT = 1; // onnxruntime.fbs.TensorDataType.FLOAT

    /** Where one tensor's raw little-endian float32 bytes live in the file. */
    public static final class Location {
        private final int[] dims;
        private final long offset;
        private final int numel;

        Location(int[] dims, long offset, int numel) {
            this.dims = dims;
            this.offset = offset;
            this.numel = numel;
        }

        /** Tensor shape. */
        public int[] dims() {
            return dims.clone();
        }

        /** File offset of the first byte of the raw data. */
        public long offset() {
            return offset;
        }

        /** Number of float32 elements. */
        public int numel() {
            return numel;
        }
    }

    private final File file;
    private final RandomAccessFile raf;
    private final long length;
    private final Map<String, Location> trainable;

    private OrtCheckpointFile(File file, boolean writable) throws IOException {
        this.file = file;
        this.raf = new RandomAccessFile(file, writable ? "rw" : "r");
        try {
            this.length = raf.length();
            this.trainable = readTrainable();
        } catch (IOException | RuntimeException e) {
            raf.close();
            throw e;
        }
    }

    /**
     * Opens a checkpoint and indexes its trainable tensors.
     *
     * @throws IOException when unreadable or not a supported ORT checkpoint (the message says why)
     */
    public static OrtCheckpointFile open(File file, boolean writable) throws IOException {
        return new OrtCheckpointFile(file, writable);
    }

    /** Trainable (requires_grad) tensors by name, in file order. */
    public Map<String, Location> trainable() {
        return trainable;
    }

    /** The float32 values of a trainable tensor. */
    public float[] read(String name) throws IOException {
        Location loc = location(name);
        byte[] raw = new byte[loc.numel * 4];
        raf.seek(loc.offset);
        raf.readFully(raw);
        float[] out = new float[loc.numel];
        for (int i = 0; i < out.length; i++) {
            int bits = (raw[4 * i] & 0xff) | (raw[4 * i + 1] & 0xff) << 8 | (raw[4 * i + 2] & 0xff) << 16
                    | (raw[4 * i + 3] & 0xff) << 24;
            out[i] = Float.intBitsToFloat(bits);
        }
        return out;
    }

    /**
     * Overwrites a trainable tensor's values in place.
     *
     * @throws IllegalArgumentException when the element count differs
     */
    public void write(String name, float[] values) throws IOException {
        Location loc = location(name);
        if (values.length != loc.numel) {
            throw new IllegalArgumentException(name + ": " + values.length + " values for a tensor of " + loc.numel);
        }
        byte[] raw = new byte[values.length * 4];
        for (int i = 0; i < values.length; i++) {
            int bits = Float.floatToRawIntBits(values[i]);
            raw[4 * i] = (byte) bits;
            raw[4 * i + 1] = (byte) (bits >>> 8);
            raw[4 * i + 2] = (byte) (bits >>> 16);
            raw[4 * i + 3] = (byte) (bits >>> 24);
        }
        raf.seek(loc.offset);
        raf.write(raw);
    }

    @Override
    public void close() throws IOException {
        raf.close();
    }

    /**
     * The trainable tensors named by {@code specs} (float32, in spec order), each checked against its shape.
     *
     * @throws IOException when a tensor is missing or has another shape
     */
    public static Map<String, Tensor> readTensors(File checkpoint, List<TensorSpec> specs) throws IOException {
        OrtCheckpointFile f = open(checkpoint, false);
        try {
            Map<String, Tensor> out = new LinkedHashMap<String, Tensor>();
            for (TensorSpec spec : specs) {
                Location loc = f.checkedLocation(spec);
                out.put(spec.name(), new Tensor(loc.dims(), DType.FLOAT32, f.read(spec.name())));
            }
            return out;
        } finally {
            f.close();
        }
    }

    /**
     * Copies {@code source} to {@code target} (replaced if present) with the given trainable tensors
     * written into the copy; every other byte is the source's.
     *
     * @throws IOException when a tensor is missing from the checkpoint or has another shape
     */
    public static void copyWith(File source, File target, Map<String, Tensor> values, List<TensorSpec> specs) throws IOException {
        copyFile(source, target);
        OrtCheckpointFile f = open(target, true);
        try {
            for (TensorSpec spec : specs) {
                Tensor value = values.get(spec.name());
                if (value == null) {
                    throw new IOException("no value given for trainable tensor " + spec.name());
                }
                f.checkedLocation(spec);
                if (!Arrays.equals(value.shape(), spec.shape())) {
                    throw new IOException(spec.name() + ": value shape " + Arrays.toString(value.shape())
                            + " differs from " + Arrays.toString(spec.shape()));
                }
                f.write(spec.name(), value.values());
            }
        } finally {
            f.close();
        }
    }

    private Location checkedLocation(TensorSpec spec) throws IOException {
        Location loc = trainable.get(spec.name());
        if (loc == null) {
            throw new IOException(file + ": trainable tensor " + spec.name() + " is not in the checkpoint (it has "
                    + trainable.size() + " trainable tensors)");
        }
        if (!Arrays.equals(loc.dims, spec.shape())) {
            throw new IOException(file + ": " + spec.name() + " has shape " + Arrays.toString(loc.dims)
                    + " in the checkpoint, the manifest says " + Arrays.toString(spec.shape()));
        }
        return loc;
    }

    private Location location(String name) {
        Location loc = trainable.get(name);
        if (loc == null) {
            throw new IllegalArgumentException(name + " is not a trainable tensor of " + file);
        }
        return loc;
    }

    private static void copyFile(File source, File target) throws IOException {
        if (target.exists() && !target.delete()) {
            throw new IOException("cannot replace " + target);
        }
        InputStream in = new FileInputStream(source);
        try {
            FileOutputStream out = new FileOutputStream(target);
            try {
                byte[] buf = new byte[1 << 20];
                int n;
                while ((n = in.read(buf)) > 0) {
                    out.write(buf, 0, n);
                }
                out.getFD().sync();
            } finally {
                out.close();
            }
        } finally {
            in.close();
        }
    }

    // ------------------------------------------------------------------ FlatBuffer navigation

    private Map<String, Location> readTrainable() throws IOException {
        if (length < 16) {
            throw bad("too short for an ORT checkpoint (" + length + " bytes)");
        }
        byte[] ident = new byte[4];
        raf.seek(4);
        raf.readFully(ident);
        if (!FILE_IDENTIFIER.equals(new String(ident, StandardCharsets.ISO_8859_1))) {
            throw bad("file identifier is not " + FILE_IDENTIFIER + "; not an ONNX Runtime training checkpoint");
        }
        long root = u32(0);
        long moduleState = table(field(root, 1), "Checkpoint.module_state");
        long nominal = field(moduleState, 2);
        if (nominal != 0 && u8(nominal) != 0) {
            throw bad("nominal checkpoint state (no parameter data) is not supported");
        }
        long external = field(moduleState, 3);
        if (external != 0 && u8(external) != 0) {
            throw bad("parameters stored in an external data file are not supported");
        }
        long params = field(moduleState, 0);
        if (params == 0) {
            throw bad("checkpoint has no trainable parameters");
        }
        long vec = params + u32(params);
        long count = u32(vec);
        Map<String, Location> out = new LinkedHashMap<String, Location>();
        for (long i = 0; i < count; i++) {
            long slot = vec + 4 + 4 * i;
            long tensor = slot + u32(slot);
            String name = string(field(tensor, 0), "Tensor.name");
            out.put(name, tensorLocation(tensor, name));
        }
        return out;
    }

    private Location tensorLocation(long tensor, String name) throws IOException {
        long typeField = field(tensor, 3);
        int type = typeField == 0 ? 0 : (int) u32(typeField);
        if (type != TENSOR_FLOAT) {
            throw bad(name + " has data type " + type + "; only float32 parameters are supported");
        }
        long dimsField = field(tensor, 2);
        if (dimsField == 0) {
            throw bad(name + " has no dims");
        }
        long dimsVec = dimsField + u32(dimsField);
        int rank = (int) u32(dimsVec);
        int[] dims = new int[rank];
        long numel = 1;
        for (int d = 0; d < rank; d++) {
            raf.seek(dimsVec + 4 + 8L * d);
            long dim = Long.reverseBytes(raf.readLong());
            if (dim < 0 || dim > Integer.MAX_VALUE) {
                throw bad(name + " has dimension " + dim);
            }
            dims[d] = (int) dim;
            numel *= dim;
        }
        long rawField = field(tensor, 4);
        if (rawField == 0) {
            throw bad(name + " has no inline raw_data");
        }
        long rawVec = rawField + u32(rawField);
        long rawLength = u32(rawVec);
        if (rawLength != numel * 4 || rawVec + 4 + rawLength > length) {
            throw bad(name + ": raw_data holds " + rawLength + " bytes for " + numel + " float32 values");
        }
        return new Location(dims, rawVec + 4, (int) numel);
    }

    /** Position of field {@code index} of the table at {@code table}, or 0 when absent. */
    private long field(long table, int index) throws IOException {
        long vtable = table - s32(table);
        int vtableSize = u16(vtable);
        int slot = 4 + 2 * index;
        if (slot + 2 > vtableSize) {
            return 0;
        }
        int offset = u16(vtable + slot);
        return offset == 0 ? 0 : table + offset;
    }

    private long table(long refField, String what) throws IOException {
        if (refField == 0) {
            throw bad(what + " is missing");
        }
        return refField + u32(refField);
    }

    private String string(long refField, String what) throws IOException {
        if (refField == 0) {
            throw bad(what + " is missing");
        }
        long at = refField + u32(refField);
        long n = u32(at);
        if (n > 1 << 16) {
            throw bad(what + " is " + n + " bytes long");
        }
        byte[] raw = new byte[(int) n];
        raf.seek(at + 4);
        raf.readFully(raw);
        return new String(raw, StandardCharsets.UTF_8);
    }

    private void check(long pos, int width) throws IOException {
        if (pos < 0 || pos + width > length) {
            throw bad("offset " + pos + " is outside the file (" + length + " bytes); the checkpoint is damaged");
        }
    }

    private long u32(long pos) throws IOException {
        check(pos, 4);
        raf.seek(pos);
        return Integer.reverseBytes(raf.readInt()) & 0xffffffffL;
    }

    private long s32(long pos) throws IOException {
        check(pos, 4);
        raf.seek(pos);
        return Integer.reverseBytes(raf.readInt());
    }

    private int u16(long pos) throws IOException {
        check(pos, 2);
        raf.seek(pos);
        return Short.reverseBytes(raf.readShort()) & 0xffff;
    }

    private int u8(long pos) throws IOException {
        check(pos, 1);
        raf.seek(pos);
        return raf.readUnsignedByte();
    }

    private IOException bad(String why) {
        return new IOException(file + ": " + why);
    }
}
