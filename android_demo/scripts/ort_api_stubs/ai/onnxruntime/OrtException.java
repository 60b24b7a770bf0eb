package ai.onnxruntime;

/** COMPILE-CHECK STUB of ONNX Runtime's OrtException (see ../../README.md). */
public class OrtException extends Exception {
    public OrtException(String message) {
        super(message);
    }
}
