package dev.privtune.demo.tools;

import dev.privtune.core.bundle.Bundle;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.protocol.ArtifactManifest;
import dev.privtune.core.protocol.Safetensors;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.demo.train.OrtCheckpointFile;
import java.io.File;
import java.util.Map;

/**
 * TEST TOOL for tests/e2e/test_android_apk.py, exercising {@link OrtCheckpointFile} on real ORT files:
 * <pre>
 *   CheckpointCli read  CKPT BUNDLE OUT.safetensors         trainable tensors of CKPT (manifest order)
 *   CheckpointCli patch SRC DST BUNDLE VALUES.safetensors   copy SRC to DST with VALUES written in
 * </pre>
 */
public final class CheckpointCli {
    private CheckpointCli() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 4 && "read".equals(args[0])) {
            ArtifactManifest manifest = Bundle.loadManifest(new File(args[2]));
            Map<String, Tensor> tensors = OrtCheckpointFile.readTensors(new File(args[1]), manifest.trainable());
            AtomicFiles.write(new File(args[3]), Safetensors.encode(tensors));
        } else if (args.length == 5 && "patch".equals(args[0])) {
            ArtifactManifest manifest = Bundle.loadManifest(new File(args[3]));
            Map<String, Tensor> values = Safetensors.decode(AtomicFiles.readAll(new File(args[4]))).tensors();
            OrtCheckpointFile.copyWith(new File(args[1]), new File(args[2]), values, manifest.trainable());
        } else {
            System.err.println("usage: read CKPT BUNDLE OUT | patch SRC DST BUNDLE VALUES");
            System.exit(2);
        }
    }
}
