package dev.privtune.demo.train;

import java.io.IOException;
import java.util.List;

/**
 * One private optimizer step inside a training runtime, the calls a phone's ORT Training API has
 * ({@code ondevice.train_backends.OrtTrainingBackend.private_step}): reset the gradient buffers, one
 * batch-1 TrainStep per sampled example with the bundle's in-graph clipping inputs (clip norm C, the
 * step's noise on the first example and zeros on the others, scale), then OptimizerStep. The
 * accumulated gradient is {@code scale * (sum_i clip_C(g_i) + noise)}. An empty batch is a noise-only
 * step: one TrainStep on {@code [CLS] [SEP]} with clip norm {@link LocalDpLoop#NOISE_ONLY_CLIP}.
 */
public interface DpStepRunner {
    /**
     * Runs one private step.
     *
     * @param examples token ids of the sampled examples ([CLS] ... [SEP]); may be empty
     * @param labels their labels, same length
     * @param clipNorm per-example clip norm C
     * @param noise N(0, (sigma C)^2) per trainable coordinate, in the manifest's flat order
     * @param scale 1 / (q n)
     * @return mean cross-entropy over the examples before the step, NaN for an empty batch
     * @throws IOException when the runtime fails (the message says which call)
     */
    double privateStep(List<long[]> examples, int[] labels, double clipNorm, float[] noise, double scale) throws IOException;
}
