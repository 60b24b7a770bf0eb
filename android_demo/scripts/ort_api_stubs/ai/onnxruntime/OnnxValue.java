package ai.onnxruntime;

/** COMPILE-CHECK STUB of ONNX Runtime's OnnxValue (see ../../README.md). */
public interface OnnxValue extends AutoCloseable {
    Object getValue() throws OrtException;

    @Override
    void close();
}
