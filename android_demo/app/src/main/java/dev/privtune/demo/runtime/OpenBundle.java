package dev.privtune.demo.runtime;

import dev.privtune.core.bundle.Bundle;
import dev.privtune.core.bundle.BundleException;
import dev.privtune.core.protocol.ArtifactFile;
import dev.privtune.core.protocol.ArtifactManifest;
import dev.privtune.core.tokenizer.DeviceTokenizer;
import java.io.File;

/** A bundle folder whose every file was checked against its manifest, with its tokenizer loaded. */
public final class OpenBundle {
    private final File dir;
    private final ArtifactManifest manifest;
    private final DeviceTokenizer tokenizer;

    private OpenBundle(File dir, ArtifactManifest manifest, DeviceTokenizer tokenizer) {
        this.dir = dir;
        this.manifest = manifest;
        this.tokenizer = tokenizer;
    }

    /** The runtime this app runs (its files, the tokenizer and the base adapter are verified). */
    public static final String RUNTIME = "ort";

    /**
     * Verifies size and sha256 of every file the ORT phone uses ({@link Bundle#verify(File, String)}:
     * ORT programs, tokenizer, base adapter; ExecuTorch files are neither needed nor read) and loads the
     * tokenizer.
     *
     * @throws BundleException naming the missing or damaged file
     */
    public static OpenBundle verify(File dir) throws BundleException {
        ArtifactManifest manifest = Bundle.verify(dir, RUNTIME);
        return new OpenBundle(dir, manifest, DeviceTokenizer.fromBundle(dir, manifest));
    }

    /** The bundle folder. */
    public File dir() {
        return dir;
    }

    /** The verified manifest. */
    public ArtifactManifest manifest() {
        return manifest;
    }

    /** The bundle's WordPiece tokenizer. */
    public DeviceTokenizer tokenizer() {
        return tokenizer;
    }

    /**
     * The file of an ORT artifact by role (checkpoint, training_model, eval_model, optimizer_sgd, ...).
     *
     * @throws IllegalArgumentException when the bundle has no such ORT file
     */
    public File ortFile(String role) {
        ArtifactFile entry = manifest.file(role, "ort");
        return Bundle.file(dir, entry);
    }
}
