package dev.privtune.core.dp;

import java.util.LinkedHashMap;
import java.util.Map;

/** One recorded local DP step, keyed by (round_id, step): Poisson rate q and noise multiplier sigma. */
public final class LedgerStep {
    private final long roundId;
    private final long step;
    private final double samplingRate;
    private final double noiseMultiplier;

    /**
     * @throws IllegalArgumentException for a negative round or step, q outside (0, 1], or a negative or non-finite sigma
     */
    public LedgerStep(long roundId, long step, double samplingRate, double noiseMultiplier) {
        if (roundId < 0 || step < 0) {
            throw new IllegalArgumentException("LedgerStep.round_id and .step must be ints >= 0, found " + roundId + ", " + step);
        }
        if (!(samplingRate > 0 && samplingRate <= 1)) {
            throw new IllegalArgumentException("LedgerStep.sampling_rate must be a number in (0, 1], found " + samplingRate);
        }
        if (!(noiseMultiplier >= 0) || Double.isInfinite(noiseMultiplier)) {
            throw new IllegalArgumentException("LedgerStep.noise_multiplier must be a finite number >= 0, found " + noiseMultiplier);
        }
        this.roundId = roundId;
        this.step = step;
        this.samplingRate = samplingRate;
        this.noiseMultiplier = noiseMultiplier;
    }

    /** Round id. */
    public long roundId() {
        return roundId;
    }

    /** Step index within the round. */
    public long step() {
        return step;
    }

    /** Poisson sampling rate q. */
    public double samplingRate() {
        return samplingRate;
    }

    /** Noise multiplier sigma. */
    public double noiseMultiplier() {
        return noiseMultiplier;
    }

    /** The ledger file's JSON object for this step (Python's {@code LedgerStep.to_dict()}). */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("round_id", Long.valueOf(roundId));
        m.put("step", Long.valueOf(step));
        m.put("sampling_rate", Double.valueOf(samplingRate));
        m.put("noise_multiplier", Double.valueOf(noiseMultiplier));
        return m;
    }

    @Override
    public boolean equals(Object other) {
        if (!(other instanceof LedgerStep)) {
            return false;
        }
        LedgerStep o = (LedgerStep) other;
        return roundId == o.roundId && step == o.step && samplingRate == o.samplingRate && noiseMultiplier == o.noiseMultiplier;
    }

    @Override
    public int hashCode() {
        return (int) (roundId * 31 + step);
    }

    @Override
    public String toString() {
        return "LedgerStep(round " + roundId + ", step " + step + ", q=" + samplingRate + ", sigma=" + noiseMultiplier + ")";
    }
}
