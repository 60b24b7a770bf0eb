package dev.privtune.demo.ort;

import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import dev.privtune.core.device.Classifier;
import dev.privtune.core.device.LocalTrainer;
import dev.privtune.core.dp.RandomBytes;
import dev.privtune.demo.runtime.OnDeviceRuntime;
import dev.privtune.demo.runtime.OpenBundle;
import java.io.File;
import java.io.IOException;
import java.util.List;

/**
 * ONNX Runtime (onnxruntime-training-android 1.19.2) behind {@link OnDeviceRuntime}; found by
 * {@link dev.privtune.demo.runtime.RuntimeLookup} through its class name, so keep the no-argument
 * constructor (and the ProGuard keep rule in app/proguard-rules.pro).
 */
public final class OrtRuntime implements OnDeviceRuntime {
    /** Intra-op threads for inference and training (phones: 2 leaves the UI responsive). */
    static final int THREADS = 2;

    private final OrtEnvironment env;

    /** Loads the native library (throws a LinkageError when it is missing for this ABI). */
    public OrtRuntime() {
        env = OrtEnvironment.getEnvironment();
    }

    @Override
    public String description() {
        return "ONNX Runtime " + env.getVersion() + (env.isTrainingEnabled() ? " (training)" : " (NO training support)");
    }

    @Override
    public Classifier openClassifier(OpenBundle bundle, File modelDir) throws IOException {
        File model = ExportedModels.newest(modelDir);
        if (model == null) {
            model = bundle.ortFile("inference_model");
        }
        try {
            return new OrtClassifier(env, model, bundle.tokenizer(), bundle.manifest().labels(), THREADS);
        } catch (OrtException e) {
            throw new IOException("ONNX Runtime cannot load " + model + ": " + e.getMessage(), e);
        }
    }

    @Override
    public LocalTrainer openTrainer(OpenBundle bundle, List<long[]> examples, int[] labels, File workDir, File modelDir,
            RandomBytes random, double deviceEpsilonBudget) throws IOException {
        if (!env.isTrainingEnabled()) {
            throw new IOException("this ONNX Runtime build has no training support (need onnxruntime-training-android)");
        }
        return new OrtLocalTrainer(env, bundle, examples, labels, workDir, modelDir, random, deviceEpsilonBudget);
    }
}
