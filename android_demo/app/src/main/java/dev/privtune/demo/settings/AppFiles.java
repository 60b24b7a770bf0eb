package dev.privtune.demo.settings;

import java.io.File;

/** Where the app keeps its state under its private files folder. */
public final class AppFiles {
    private final File root;

    /** @param root the app's private files folder ({@code Context.getFilesDir()}) */
    public AppFiles(File root) {
        this.root = root;
    }

    /** The local privacy ledger (Python's LocalPrivacyLedger format). */
    public File ledger() {
        return new File(root, "ledger.json");
    }

    /** Encoded updates waiting for (or done with) delivery. */
    public File outbox() {
        return new File(root, "outbox");
    }

    /** The user's labelled examples. */
    public File examples() {
        return new File(root, "examples.json");
    }

    /** Per-round checkpoints (deleted after each round). */
    public File work() {
        return new File(root, "work");
    }

    /** Inference models exported for the current global adapter. */
    public File models() {
        return new File(root, "models");
    }
}
