package dev.privtune.core.device;

import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.protocol.Tensor;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** What a round of local DP training produced: the trained tensors and the steps it recorded. */
public final class TrainingResult {
    private final Map<String, Tensor> localParams;
    private final List<LedgerStep> steps;
    private final long numExamples;

    /**
     * @param localParams the trained tensors, same names and shapes as the global adapter
     * @param steps the ledger steps recorded for this round (each before its noised gradient existed)
     * @param numExamples local examples available to the sampler
     */
    public TrainingResult(Map<String, Tensor> localParams, List<LedgerStep> steps, long numExamples) {
        if (localParams == null || localParams.isEmpty()) {
            throw new IllegalArgumentException("localParams must hold the trained tensors");
        }
        if (numExamples < 0) {
            throw new IllegalArgumentException("numExamples must be >= 0, found " + numExamples);
        }
        this.localParams = Collections.unmodifiableMap(new LinkedHashMap<String, Tensor>(localParams));
        this.steps = Collections.unmodifiableList(new ArrayList<LedgerStep>(steps));
        this.numExamples = numExamples;
    }

    /** The trained tensors. */
    public Map<String, Tensor> localParams() {
        return localParams;
    }

    /** Ledger steps recorded during this round. */
    public List<LedgerStep> steps() {
        return steps;
    }

    /** Local examples available to the sampler. */
    public long numExamples() {
        return numExamples;
    }
}
