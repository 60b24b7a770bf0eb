package ai.onnxruntime;

/** COMPILE-CHECK STUB of ONNX Runtime's OrtEnvironment (see ../../README.md). */
public final class OrtEnvironment implements AutoCloseable {
    public static OrtEnvironment getEnvironment() {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public OrtSession createSession(String modelPath, OrtSession.SessionOptions options) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public OrtTrainingSession createTrainingSession(String checkpointPath, String trainPath, String evalPath,
            String optimizerPath, OrtSession.SessionOptions options) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public boolean isTrainingEnabled() {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public String getVersion() {
        throw new UnsupportedOperationException("compile-check stub");
    }

    @Override
    public void close() {
        throw new UnsupportedOperationException("compile-check stub");
    }
}
