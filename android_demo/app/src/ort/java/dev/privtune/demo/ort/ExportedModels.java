package dev.privtune.demo.ort;

import java.io.File;

/** Inference models exported from the training session for a global adapter version: {@code global-v<N>.onnx}. */
final class ExportedModels {
    private ExportedModels() {}

    /** The model file for global adapter {@code version}. */
    static File forVersion(File dir, long version) {
        return new File(dir, "global-v" + version + ".onnx");
    }

    /** The highest-version exported model in {@code dir}, or null. */
    static File newest(File dir) {
        File[] files = dir.listFiles();
        File best = null;
        long bestVersion = -1;
        if (files == null) {
            return null;
        }
        for (File f : files) {
            String name = f.getName();
            if (name.startsWith("global-v") && name.endsWith(".onnx")) {
                try {
                    long v = Long.parseLong(name.substring("global-v".length(), name.length() - ".onnx".length()));
                    if (v > bestVersion) {
                        bestVersion = v;
                        best = f;
                    }
                } catch (NumberFormatException e) {
                    // not one of ours
                }
            }
        }
        return best;
    }

    /** Deletes every exported model except {@code keep}. */
    static void deleteAllBut(File dir, File keep) {
        File[] files = dir.listFiles();
        if (files == null) {
            return;
        }
        for (File f : files) {
            if (f.getName().startsWith("global-v") && !f.equals(keep) && !f.delete()) {
                f.deleteOnExit();
            }
        }
    }
}
