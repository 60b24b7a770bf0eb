package dev.privtune.demo.runtime;

/** Softmax of classifier logits, computed in double and rounded to float per row. */
public final class Probabilities {
    private Probabilities() {}

    /**
     * Row-wise softmax.
     *
     * @throws IllegalArgumentException for a non-finite logit
     */
    public static float[][] softmax(float[][] logits) {
        float[][] out = new float[logits.length][];
        for (int b = 0; b < logits.length; b++) {
            float[] row = logits[b];
            double max = Double.NEGATIVE_INFINITY;
            for (float v : row) {
                if (Float.isNaN(v) || Float.isInfinite(v)) {
                    throw new IllegalArgumentException("logit row " + b + " holds a non-finite value " + v);
                }
                max = Math.max(max, v);
            }
            double sum = 0;
            double[] e = new double[row.length];
            for (int i = 0; i < row.length; i++) {
                e[i] = Math.exp(row[i] - max);
                sum += e[i];
            }
            out[b] = new float[row.length];
            for (int i = 0; i < row.length; i++) {
                out[b][i] = (float) (e[i] / sum);
            }
        }
        return out;
    }
}
