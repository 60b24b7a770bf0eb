package ai.onnxruntime;

import java.nio.file.Path;
import java.util.Map;
import java.util.Set;

/** COMPILE-CHECK STUB of ONNX Runtime's OrtTrainingSession (see ../../README.md). */
public final class OrtTrainingSession implements AutoCloseable {
    public Set<String> getTrainInputNames() {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public OrtSession.Result trainStep(Map<String, ? extends OnnxTensorLike> inputs) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public void lazyResetGrad() throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public void optimizerStep() throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public void setLearningRate(float learningRate) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public void saveCheckpoint(Path outputPath, boolean saveOptimizer) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public void exportModelForInference(Path outputPath, String[] outputNames) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    @Override
    public void close() {
        throw new UnsupportedOperationException("compile-check stub");
    }
}
