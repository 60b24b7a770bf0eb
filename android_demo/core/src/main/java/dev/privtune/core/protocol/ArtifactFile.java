package dev.privtune.core.protocol;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/** One file of a bundle: path relative to the bundle root, its sha256, backend, role and size. */
public final class ArtifactFile {
    private static final String OWNER = "ArtifactFile";
    private final String path;
    private final String sha256;
    private final String backend;
    private final String role;
    private final long sizeBytes;

    private ArtifactFile(String path, String sha256, String backend, String role, long sizeBytes) {
        this.path = path;
        this.sha256 = sha256;
        this.backend = backend;
        this.role = role;
        this.sizeBytes = sizeBytes;
    }

    /** Validates a decoded JSON object (exactly path, sha256, backend, role, size_bytes). */
    public static ArtifactFile fromMap(Object data) {
        Map<String, Object> map = Fields.checkKeys(OWNER, data, Fields.keys("path", "sha256", "backend", "role", "size_bytes"));
        String path = Fields.requireStr(OWNER, "path", map.get("path"), null);
        if (path.startsWith("/") || Arrays.asList(path.split("/", -1)).contains("..") || path.indexOf('\\') >= 0) {
            throw Fields.fail(OWNER, "path", "must be a relative POSIX path inside the bundle", path);
        }
        String sha = Fields.requireSha256(OWNER, "sha256", map.get("sha256"));
        String backend = Fields.requireChoice(OWNER, "backend", map.get("backend"), Protocol.FILE_BACKENDS);
        String role = Fields.requireStr(OWNER, "role", map.get("role"), null);
        long size = Fields.requireInt(OWNER, "size_bytes", map.get("size_bytes"), 0);
        return new ArtifactFile(path, sha, backend, role, size);
    }

    /** Path relative to the bundle root (POSIX separators). */
    public String path() {
        return path;
    }

    /** Lowercase hex sha256 of the file. */
    public String sha256() {
        return sha256;
    }

    /** ort, executorch, tokenizer or common. */
    public String backend() {
        return backend;
    }

    /** What the file is for (e.g. "tokenizer_vocab", "inference_model"). */
    public String role() {
        return role;
    }

    /** Size in bytes. */
    public long sizeBytes() {
        return sizeBytes;
    }

    /** Python's {@code to_dict()}. */
    public Map<String, Object> toMap() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("path", path);
        out.put("sha256", sha256);
        out.put("backend", backend);
        out.put("role", role);
        out.put("size_bytes", Long.valueOf(sizeBytes));
        return out;
    }
}
