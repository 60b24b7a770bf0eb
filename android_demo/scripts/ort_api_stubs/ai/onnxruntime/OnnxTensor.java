package ai.onnxruntime;

import java.nio.FloatBuffer;
import java.nio.LongBuffer;

/** COMPILE-CHECK STUB of ONNX Runtime's OnnxTensor (see ../../README.md). */
public class OnnxTensor extends OnnxTensorLike {
    public static OnnxTensor createTensor(OrtEnvironment env, Object data) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public static OnnxTensor createTensor(OrtEnvironment env, FloatBuffer data, long[] shape) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    public static OnnxTensor createTensor(OrtEnvironment env, LongBuffer data, long[] shape) throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    @Override
    public Object getValue() throws OrtException {
        throw new UnsupportedOperationException("compile-check stub");
    }

    @Override
    public void close() {
        throw new UnsupportedOperationException("compile-check stub");
    }
}
