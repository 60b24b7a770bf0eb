package dev.privtune.core.protocol;

import java.util.Arrays;

/**
 * A dense, row-major tensor of float32 or float16 values (float16 values are held as the floats
 * they equal exactly). Immutable: the constructor and {@link #values()} copy.
 */
public final class Tensor {
    private final int[] shape;
    private final DType dtype;
    private final float[] values;

    /**
     * @param shape dimensions (at least one, each >= 0)
     * @param values row-major elements, {@code prod(shape)} of them
     * @throws IllegalArgumentException for a size mismatch, or float16 values that are not exact halves
     */
    public Tensor(int[] shape, DType dtype, float[] values) {
        this(shape.clone(), dtype, values.clone(), true);
    }

    private Tensor(int[] shape, DType dtype, float[] values, boolean check) {
        if (shape.length == 0) {
            throw new IllegalArgumentException("a tensor needs at least one dimension");
        }
        long n = 1;
        for (int dim : shape) {
            if (dim < 0) {
                throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            }
            n *= dim;
        }
        if (n != values.length) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " needs " + n + " values, found " + values.length);
        }
        if (dtype == DType.FLOAT16 && check) {
            for (int i = 0; i < values.length; i++) {
                if (!Fp16.isExact(values[i])) {
                    throw new IllegalArgumentException("value " + values[i] + " at " + i + " is not a float16; round with Fp16 first");
                }
            }
        }
        this.shape = shape;
        this.dtype = dtype;
        this.values = values;
    }

    /** Wraps arrays the caller hands over (no copy); for float16 the values must already be exact halves. */
    static Tensor adopt(int[] shape, DType dtype, float[] values) {
        return new Tensor(shape, dtype, values, false);
    }

    /** float32 tensor from doubles, each rounded to the nearest float (numpy's {@code astype(float32)}). */
    public static Tensor float32FromDoubles(int[] shape, double[] values) {
        float[] out = new float[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = (float) values[i];
        }
        return new Tensor(shape.clone(), DType.FLOAT32, out, false);
    }

    /** float16 tensor from doubles, each rounded directly to the nearest half (numpy's {@code astype(float16)}). */
    public static Tensor float16FromDoubles(int[] shape, double[] values) {
        float[] out = new float[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = Fp16.toFloat(Fp16.fromDouble(values[i]));
        }
        return new Tensor(shape.clone(), DType.FLOAT16, out, false);
    }

    /** A copy of the shape. */
    public int[] shape() {
        return shape.clone();
    }

    /** Number of dimensions. */
    public int ndim() {
        return shape.length;
    }

    /** Element type. */
    public DType dtype() {
        return dtype;
    }

    /** Number of elements. */
    public int size() {
        return values.length;
    }

    /** Element {@code i} of the row-major data. */
    public float get(int i) {
        return values[i];
    }

    /** A copy of the row-major data. */
    public float[] values() {
        return values.clone();
    }

    /** The data widened to doubles (exact). */
    public double[] toDoubles() {
        double[] out = new double[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = values[i];
        }
        return out;
    }

    /** True if every element is finite. */
    public boolean isFinite() {
        for (float v : values) {
            if (Float.isNaN(v) || Float.isInfinite(v)) {
                return false;
            }
        }
        return true;
    }

    @Override
    public boolean equals(Object other) {
        if (!(other instanceof Tensor)) {
            return false;
        }
        Tensor o = (Tensor) other;
        return dtype == o.dtype && Arrays.equals(shape, o.shape) && Arrays.equals(values, o.values);
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(shape) + Arrays.hashCode(values);
    }

    @Override
    public String toString() {
        return "Tensor(" + dtype.numpyName() + " " + Arrays.toString(shape) + ")";
    }
}
