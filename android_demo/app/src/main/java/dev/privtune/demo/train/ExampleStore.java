package dev.privtune.demo.train;

import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The user's own labelled examples, kept in the app's private storage as JSON (never uploaded: only
 * clipped, noised adapter deltas leave the device). Labels are indexes into the manifest's labels.
 */
public final class ExampleStore {
    /** The file's "format" value. */
    public static final String FORMAT = "privtune-demo-examples";
    /** Most examples kept (oldest dropped first). */
    public static final int MAX_EXAMPLES = 10000;

    /** One labelled text. */
    public static final class Example {
        private final String text;
        private final int label;

        /** @throws IllegalArgumentException for a blank text or a negative label */
        public Example(String text, int label) {
            if (text == null || text.trim().isEmpty()) {
                throw new IllegalArgumentException("an example needs a non-blank text");
            }
            if (label < 0) {
                throw new IllegalArgumentException("label must be >= 0, found " + label);
            }
            this.text = text;
            this.label = label;
        }

        /** The text. */
        public String text() {
            return text;
        }

        /** Index into the manifest's labels. */
        public int label() {
            return label;
        }
    }

    private final File file;
    private final List<Example> examples = new ArrayList<Example>();

    /**
     * Opens (or starts) the store at {@code file}.
     *
     * @throws IOException when the file exists but cannot be read as an example store
     */
    public ExampleStore(File file) throws IOException {
        this.file = file;
        if (file.exists()) {
            try {
                Map<String, Object> data = Json.asObject(Json.parse(AtomicFiles.readAll(file)), "examples file");
                if (!FORMAT.equals(data.get("format"))) {
                    throw new IllegalArgumentException("format is not " + FORMAT);
                }
                for (Object item : Json.asArray(data.get("examples"), "examples")) {
                    Map<String, Object> m = Json.asObject(item, "example");
                    Object label = m.get("label");
                    if (!(m.get("text") instanceof String) || !(label instanceof Long)) {
                        throw new IllegalArgumentException("malformed example " + m);
                    }
                    examples.add(new Example((String) m.get("text"), ((Long) label).intValue()));
                }
            } catch (IllegalArgumentException e) {
                throw new IOException(file + " is not a readable example store: " + e.getMessage(), e);
            }
        }
    }

    /** All examples, oldest first. */
    public synchronized List<Example> all() {
        return Collections.unmodifiableList(new ArrayList<Example>(examples));
    }

    /** Number of examples. */
    public synchronized int size() {
        return examples.size();
    }

    /** Adds one example and saves the file atomically. */
    public synchronized void add(String text, int label) throws IOException {
        examples.add(new Example(text, label));
        while (examples.size() > MAX_EXAMPLES) {
            examples.remove(0);
        }
        save();
    }

    /** Removes every example and saves. */
    public synchronized void clear() throws IOException {
        examples.clear();
        save();
    }

    /**
     * The labels as an array, checked against the number of classes.
     *
     * @throws IllegalArgumentException when a label is out of range
     */
    public synchronized int[] labels(int numLabels) {
        int[] out = new int[examples.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = examples.get(i).label();
            if (out[i] >= numLabels) {
                throw new IllegalArgumentException("example " + i + " has label " + out[i] + " but the bundle has "
                        + numLabels + " labels");
            }
        }
        return out;
    }

    /** The texts in order. */
    public synchronized List<String> texts() {
        List<String> out = new ArrayList<String>();
        for (Example e : examples) {
            out.add(e.text());
        }
        return out;
    }

    private void save() throws IOException {
        Map<String, Object> data = new LinkedHashMap<String, Object>();
        data.put("format", FORMAT);
        data.put("version", Long.valueOf(1));
        List<Object> list = new ArrayList<Object>();
        for (Example e : examples) {
            Map<String, Object> m = new LinkedHashMap<String, Object>();
            m.put("text", e.text());
            m.put("label", Long.valueOf(e.label()));
            list.add(m);
        }
        data.put("examples", list);
        File parent = file.getParentFile();
        if (parent != null && !parent.isDirectory() && !parent.mkdirs()) {
            throw new IOException("cannot create " + parent);
        }
        AtomicFiles.write(file, JsonWriter.indented(data, 1).getBytes(StandardCharsets.UTF_8));
    }
}
