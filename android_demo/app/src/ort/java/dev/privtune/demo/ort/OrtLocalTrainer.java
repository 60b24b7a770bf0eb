package dev.privtune.demo.ort;

import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.OrtTrainingSession;
import android.os.Build;
import dev.privtune.core.device.LocalTrainer;
import dev.privtune.core.device.TrainingResult;
import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.RandomBytes;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.demo.runtime.OpenBundle;
import dev.privtune.demo.train.LocalDpLoop;
import dev.privtune.demo.train.OrtCheckpointFile;
import dev.privtune.demo.train.PrivacyBudgetExceededException;
import dev.privtune.demo.train.RoundNotSupportedException;
import dev.privtune.demo.train.RoundSupport;
import java.io.File;
import java.io.IOException;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;

/**
 * {@link LocalTrainer} on ONNX Runtime Training. ORT's Java API can neither set nor read parameters,
 * so a round (1) writes the global adapter into a copy of the bundle's checkpoint
 * ({@link OrtCheckpointFile}), (2) opens a training session on it with the round's optimizer model,
 * exports an inference model for the global adapter (the classifier's next model), (3) runs
 * {@link LocalDpLoop} with {@link OrtStepRunner}, (4) saves the checkpoint and reads the trained
 * adapter back from it. Saving and exporting take a {@code java.nio.file.Path}, which Android has from
 * API 26 (Android 8.0): older phones can classify but not train.
 */
final class OrtLocalTrainer implements LocalTrainer {
    /** Lowest Android API level the ORT Java training calls work on (java.nio.file). */
    static final int MIN_TRAINING_API = 26;

    private final OrtEnvironment env;
    private final OpenBundle bundle;
    private final List<long[]> examples;
    private final int[] labels;
    private final File workDir;
    private final File modelDir;
    private final RandomBytes random;
    private final double deviceEpsilonBudget;

    OrtLocalTrainer(OrtEnvironment env, OpenBundle bundle, List<long[]> examples, int[] labels, File workDir, File modelDir,
            RandomBytes random, double deviceEpsilonBudget) throws IOException {
        if (Build.VERSION.SDK_INT < MIN_TRAINING_API) {
            throw new IOException("on-device training needs Android 8.0 (API " + MIN_TRAINING_API + ")+: ORT's Java"
                    + " training API saves checkpoints through java.nio.file; this phone runs API " + Build.VERSION.SDK_INT);
        }
        this.env = env;
        this.bundle = bundle;
        this.examples = examples;
        this.labels = labels.clone();
        this.workDir = workDir;
        this.modelDir = modelDir;
        this.random = random;
        this.deviceEpsilonBudget = deviceEpsilonBudget;
    }

    @Override
    public TrainingResult train(RoundConfig round, Map<String, Tensor> global, LocalLedger ledger) throws IOException {
        try {
            RoundSupport.check(round, bundle.manifest(), System.currentTimeMillis() / 1000.0);
        } catch (RoundNotSupportedException e) {
            throw new IOException(e.getMessage(), e);
        }
        File start = new File(workDir, "round-" + round.roundId() + "-start.ckpt");
        File trained = new File(workDir, "round-" + round.roundId() + "-trained.ckpt");
        try {
            OrtCheckpointFile.copyWith(bundle.ortFile("checkpoint"), start, global, bundle.manifest().trainable());
            OrtSession.SessionOptions options = new OrtSession.SessionOptions();
            options.setIntraOpNumThreads(OrtRuntime.THREADS);
            OrtTrainingSession session = env.createTrainingSession(start.getPath(),
                    bundle.ortFile("training_model").getPath(), bundle.ortFile("eval_model").getPath(),
                    bundle.ortFile("optimizer_" + round.dp().optimizer()).getPath(), options);
            try {
                exportGlobalModel(session, round.globalAdapterVersion());
                session.setLearningRate((float) round.dp().learningRate());
                long[] noiseOnly = bundle.tokenizer().encodeUnchecked("");
                OrtStepRunner runner = new OrtStepRunner(env, session, noiseOnly, (int) bundle.manifest().trainableNumel());
                List<LedgerStep> steps = LocalDpLoop.run(round, (int) bundle.manifest().trainableNumel(), examples, labels,
                        ledger, random, runner, deviceEpsilonBudget, null);
                delete(trained);
                session.saveCheckpoint(Paths.get(trained.getPath()), false);
                Map<String, Tensor> local = OrtCheckpointFile.readTensors(trained, bundle.manifest().trainable());
                return new TrainingResult(local, steps, examples.size());
            } finally {
                session.close();
            }
        } catch (OrtException e) {
            throw new IOException("ONNX Runtime training failed: " + e.getMessage(), e);
        } catch (PrivacyBudgetExceededException e) {
            throw new IOException(e.getMessage(), e);
        } finally {
            delete(start);
            delete(trained);
        }
    }

    /** ExportModelForInferencing with the (still untrained) global adapter, once per version. */
    private void exportGlobalModel(OrtTrainingSession session, long version) throws OrtException, IOException {
        File target = ExportedModels.forVersion(modelDir, version);
        if (!target.isFile()) {
            File tmp = new File(modelDir, target.getName() + ".tmp");
            delete(tmp);
            session.exportModelForInference(Paths.get(tmp.getPath()), new String[] {"logits"});
            if (!tmp.renameTo(target)) {
                throw new IOException("cannot rename " + tmp + " to " + target);
            }
        }
        ExportedModels.deleteAllBut(modelDir, target);
    }

    private static void delete(File f) throws IOException {
        if (f.exists() && !f.delete()) {
            throw new IOException("cannot delete " + f);
        }
    }
}
