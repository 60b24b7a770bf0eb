package dev.privtune.core.bundle;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.protocol.ArtifactFile;
import dev.privtune.core.protocol.ArtifactManifest;
import java.io.File;
import java.io.IOException;

/**
 * Opens a phone bundle safely ({@code ondevice/bundle.py}): parse {@code manifest.json} and check
 * every listed file's presence, size and sha256 before anything uses it. A missing file, a wrong size
 * or hash, an unsupported protocol version or a malformed manifest raises {@link BundleException}
 * naming the file.
 */
public final class Bundle {
    /** The manifest's file name at the bundle root. */
    public static final String MANIFEST_FILE = "manifest.json";
    /** Role of the tokenizer.json file (its hash is also the manifest's tokenizer_sha256). */
    public static final String TOKENIZER_ROLE = "tokenizer";

    private Bundle() {}

    /** Parses {@code dir/manifest.json} (no file checks; see {@link #verify}). */
    public static ArtifactManifest loadManifest(File dir) throws BundleException {
        File path = new File(dir, MANIFEST_FILE);
        if (!path.isFile()) {
            throw new BundleException(path + ": not found; is " + dir + " a bundle written by `privtune export`?");
        }
        try {
            return ArtifactManifest.fromJson(AtomicFiles.readAll(path));
        } catch (IOException e) {
            throw new BundleException(path + ": cannot be read (" + e.getMessage() + ")", e);
        } catch (IllegalArgumentException e) {
            throw new BundleException(path + ": " + e.getMessage(), e);
        }
    }

    /** Backends every runtime needs: the tokenizer files and the base adapter. */
    private static final String[] SHARED_BACKENDS = {"tokenizer", "common"};

    /** The manifest, after checking every listed file's presence, size and sha256. */
    public static ArtifactManifest verify(File dir) throws BundleException {
        return verify(dir, null);
    }

    /**
     * The manifest, after checking presence, size and sha256 of the files a phone running
     * {@code runtime} ("ort" or "executorch") uses: that backend's files, the tokenizer and the base
     * adapter. Files of other backends are not read at all (a phone may be given only its runtime's
     * files; hashing the others would cost hundreds of MB of reads). {@code null} checks every file.
     *
     * @throws BundleException naming the missing or damaged file, or when no file of {@code runtime} is listed
     */
    public static ArtifactManifest verify(File dir, String runtime) throws BundleException {
        ArtifactManifest manifest = loadManifest(dir);
        boolean any = false;
        for (ArtifactFile entry : manifest.files()) {
            if (runtime != null && !entry.backend().equals(runtime) && !isShared(entry.backend())) {
                continue;
            }
            any |= runtime != null && entry.backend().equals(runtime);
            File path = file(dir, entry);
            if (!path.isFile()) {
                throw new BundleException(path + ": listed in the manifest (" + entry.backend() + ":" + entry.role() + ") but missing");
            }
            long size = path.length();
            if (size != entry.sizeBytes()) {
                throw new BundleException(path + ": " + size + " bytes, the manifest says " + entry.sizeBytes() + "; the bundle is damaged");
            }
            String found;
            try {
                found = Digests.sha256Hex(path);
            } catch (IOException e) {
                throw new BundleException(path + ": cannot be read (" + e.getMessage() + ")", e);
            }
            if (!found.equals(entry.sha256())) {
                throw new BundleException(path + ": sha256 " + found.substring(0, 16) + "... does not match the manifest's "
                        + entry.sha256().substring(0, 16) + "...");
            }
        }
        if (runtime != null && !any) {
            throw new BundleException(new File(dir, MANIFEST_FILE) + ": lists no file for runtime '" + runtime
                    + "'; export the bundle with that backend (privtune export --backends " + runtime + ")");
        }
        ArtifactFile tokenizer;
        try {
            tokenizer = manifest.file(TOKENIZER_ROLE, null);
        } catch (IllegalArgumentException e) {
            throw new BundleException(new File(dir, MANIFEST_FILE) + ": " + e.getMessage(), e);
        }
        if (!tokenizer.sha256().equals(manifest.tokenizerSha256())) {
            throw new BundleException(file(dir, tokenizer) + ": tokenizer hash disagrees with manifest.tokenizer_sha256");
        }
        return manifest;
    }

    private static boolean isShared(String backend) {
        for (String shared : SHARED_BACKENDS) {
            if (shared.equals(backend)) {
                return true;
            }
        }
        return false;
    }

    /** The on-disk file of a manifest entry (POSIX path resolved under {@code dir}). */
    public static File file(File dir, ArtifactFile entry) {
        File out = dir;
        for (String part : entry.path().split("/")) {
            out = new File(out, part);
        }
        return out;
    }
}
