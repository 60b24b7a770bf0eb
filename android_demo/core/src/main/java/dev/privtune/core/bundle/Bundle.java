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

    /** The manifest, after checking every listed file's presence, size and sha256. */
    public static ArtifactManifest verify(File dir) throws BundleException {
        ArtifactManifest manifest = loadManifest(dir);
        for (ArtifactFile entry : manifest.files()) {
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

    /** The on-disk file of a manifest entry (POSIX path resolved under {@code dir}). */
    public static File file(File dir, ArtifactFile entry) {
        File out = dir;
        for (String part : entry.path().split("/")) {
            out = new File(out, part);
        }
        return out;
    }
}
