package ai.onnxruntime;

import java.util.Map;

/** COMPILE-CHECK STUB of ONNX Runtime's OrtSession (see ../../README.md). */
public class OrtSession implements AutoCloseable {
    public Result run(Map<String, ? extends OnnxTensorLike> inputs) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    @Override
    public void close() throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public static class SessionOptions implements AutoCloseable {
        public SessionOptions() {
            throw new UnsupportedOperationException("compile-check stub");
        }

        public void setIntraOpNumThreads(int numThreads) throws OrtException {
            throw new UnsupportedOperationException("compile-check stub");
        }

        @Override
        public void close() {
            throw new UnsupportedOperationException("compile-check stub");
        }
    }

    public static class Result implements AutoCloseable {
        public OnnxValue get(int index) {
            throw new UnsupportedOperationException("compile-check stub");
        }

        public int size() {
            throw new UnsupportedOperationException("compile-check stub");
        }

        @Override
        public void close() {
            throw new UnsupportedOperationException("compile-check stub");
        }
    }
}
