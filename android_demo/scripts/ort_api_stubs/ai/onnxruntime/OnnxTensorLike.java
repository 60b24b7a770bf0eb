package ai.onnxruntime;

/** COMPILE-CHECK STUB of ONNX Runtime's OnnxTensorLike (see ../../README.md). */
public abstract class OnnxTensorLike implements OnnxValue {
}
