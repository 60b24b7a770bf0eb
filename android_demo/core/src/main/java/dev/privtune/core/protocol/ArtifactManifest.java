package dev.privtune.core.protocol;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.json.JsonWriter;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * What an exported bundle holds ({@code manifest.json}); its {@link #manifestHash()} pins rounds and
 * updates to one bundle. Parsing and the hash match Python's {@code ArtifactManifest} byte for byte.
 */
public final class ArtifactManifest {
    private static final String OWNER = "ArtifactManifest";
    private final String baseModelId;
    private final String baseModelSha256;
    private final LoraSpec lora;
    private final List<TensorSpec> trainable;
    private final int maxSeqLen;
    private final List<String> labels;
    private final String tokenizerSha256;
    private final List<ArtifactFile> files;
    private final String privtuneVersion;

    private ArtifactManifest(Map<String, Object> map) {
        Fields.requireVersion(OWNER, map.get("protocol_version"));
        if (!(map.get("trainable") instanceof List) || !(map.get("files") instanceof List)) {
            throw new ProtocolException("ArtifactManifest.trainable and .files must be JSON arrays");
        }
        baseModelId = Fields.requireStr(OWNER, "base_model_id", map.get("base_model_id"), null);
        baseModelSha256 = Fields.requireSha256(OWNER, "base_model_sha256", map.get("base_model_sha256"));
        lora = LoraSpec.fromMap(map.get("lora"));
        List<TensorSpec> specs = new ArrayList<TensorSpec>();
        Set<String> names = new HashSet<String>();
        for (Object item : (List<?>) map.get("trainable")) {
            TensorSpec spec = TensorSpec.fromMap(item);
            if (!names.add(spec.name())) {
                throw Fields.fail(OWNER, "trainable", "must not repeat tensor names", spec.name());
            }
            specs.add(spec);
        }
        if (specs.isEmpty()) {
            throw Fields.fail(OWNER, "trainable", "must be a non-empty tuple of TensorSpec", "()");
        }
        trainable = Collections.unmodifiableList(specs);
        long seq = Fields.requireInt(OWNER, "max_seq_len", map.get("max_seq_len"), 2);
        if (seq > 1 << 20) {
            throw Fields.fail(OWNER, "max_seq_len", "is implausibly large", map.get("max_seq_len"));
        }
        maxSeqLen = (int) seq;
        labels = Fields.requireStrList(OWNER, "labels", map.get("labels"));
        if (labels.size() < 2) {
            throw Fields.fail(OWNER, "labels", "must name at least two classes", labels);
        }
        tokenizerSha256 = Fields.requireSha256(OWNER, "tokenizer_sha256", map.get("tokenizer_sha256"));
        List<ArtifactFile> list = new ArrayList<ArtifactFile>();
        Set<String> paths = new HashSet<String>();
        for (Object item : (List<?>) map.get("files")) {
            ArtifactFile file = ArtifactFile.fromMap(item);
            if (!paths.add(file.path())) {
                throw Fields.fail(OWNER, "files", "must not list a path twice", file.path());
            }
            list.add(file);
        }
        files = Collections.unmodifiableList(list);
        privtuneVersion = Fields.requireStr(OWNER, "privtune_version", map.get("privtune_version"), null);
    }

    /** Validates a decoded JSON object with exactly the manifest's fields. */
    public static ArtifactManifest fromMap(Object data) {
        Map<String, Object> map = Fields.checkKeys(OWNER, data, Fields.keys("protocol_version", "base_model_id",
                "base_model_sha256", "lora", "trainable", "max_seq_len", "labels", "tokenizer_sha256", "files",
                "privtune_version"));
        return new ArtifactManifest(map);
    }

    /** Parses {@code manifest.json} bytes. */
    public static ArtifactManifest fromJson(byte[] utf8) {
        return fromMap(Fields.parseJson(utf8, OWNER));
    }

    /** sha256 of the canonical JSON of {@link #toMap()}: the identity rounds and updates refer to. */
    public String manifestHash() {
        return Digests.sha256Hex(JsonWriter.canonical(toMap()));
    }

    /**
     * The one file with this role (and backend, when not null).
     *
     * @throws IllegalArgumentException naming the files the bundle has
     */
    public ArtifactFile file(String role, String backend) {
        ArtifactFile hit = null;
        int count = 0;
        List<String> have = new ArrayList<String>();
        for (ArtifactFile f : files) {
            have.add(f.backend() + ":" + f.role());
            if (f.role().equals(role) && (backend == null || f.backend().equals(backend))) {
                hit = f;
                count++;
            }
        }
        if (count != 1) {
            Collections.sort(have);
            throw new IllegalArgumentException("bundle has " + count + " file(s) with role '" + role + "' backend "
                    + (backend == null ? "None" : "'" + backend + "'") + "; it has " + have);
        }
        return hit;
    }

    /** Base model id (e.g. sentence-transformers/all-MiniLM-L6-v2). */
    public String baseModelId() {
        return baseModelId;
    }

    /** The LoRA adapter shape. */
    public LoraSpec lora() {
        return lora;
    }

    /** The trainable tensors in the bundle's order (the order updates and norms use). */
    public List<TensorSpec> trainable() {
        return trainable;
    }

    /** Sum of the trainable tensors' element counts. */
    public long trainableNumel() {
        long n = 0;
        for (TensorSpec spec : trainable) {
            n += spec.numel();
        }
        return n;
    }

    /** Token limit, [CLS] and [SEP] included. */
    public int maxSeqLen() {
        return maxSeqLen;
    }

    /** Class labels in output order. */
    public List<String> labels() {
        return labels;
    }

    /** sha256 of the tokenizer file. */
    public String tokenizerSha256() {
        return tokenizerSha256;
    }

    /** Every listed file. */
    public List<ArtifactFile> files() {
        return files;
    }

    /** Python's {@code to_dict()} (the hashed form). */
    public Map<String, Object> toMap() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("protocol_version", Long.valueOf(Protocol.PROTOCOL_VERSION));
        out.put("base_model_id", baseModelId);
        out.put("base_model_sha256", baseModelSha256);
        out.put("lora", lora.toMap());
        List<Object> specs = new ArrayList<Object>();
        for (TensorSpec spec : trainable) {
            specs.add(spec.toMap());
        }
        out.put("trainable", specs);
        out.put("max_seq_len", Long.valueOf(maxSeqLen));
        out.put("labels", new ArrayList<Object>(labels));
        out.put("tokenizer_sha256", tokenizerSha256);
        List<Object> list = new ArrayList<Object>();
        for (ArtifactFile f : files) {
            list.add(f.toMap());
        }
        out.put("files", list);
        out.put("privtune_version", privtuneVersion);
        return out;
    }
}
