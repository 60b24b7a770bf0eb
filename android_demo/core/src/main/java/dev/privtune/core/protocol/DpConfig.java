package dev.privtune.core.protocol;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Local DP-SGD parameters the server dictates for a round (a device never picks its own).
 *
 * <p>Each local step Poisson-samples the device's examples with rate {@code sampling_rate}, clips
 * every per-example gradient to {@code clip_norm}, sums, adds N(0, (noise_multiplier * clip_norm)^2)
 * per coordinate and divides by the expected batch size. {@code dp_sat_rho}, {@code unit_sparsity}
 * and {@code train_rank} are the round's seed methods (see the Python docstring). {@code class_weights}
 * (optional, one per label in (0, 1]) weights each clipped per-example gradient by its label's weight; it is
 * parsed and re-serialized here, and the demo app refuses such rounds ({@code RoundSupport}).
 *
 * <p>Numbers keep the JSON kind they arrived with (an int stays an int), because the update's
 * metadata repeats this object and is signed in canonical form.
 */
public final class DpConfig {
    private static final String OWNER = "DpConfig";
    private final Number clipNorm;
    private final Number noiseMultiplier;
    private final Number samplingRate;
    private final long localSteps;
    private final Number learningRate;
    private final String optimizer;
    private final Number localEpsilonBudget;
    private final Number localDelta;
    private final Number dpSatRho;
    private final Number unitSparsity;
    private final Long trainRank;
    private final List<Number> classWeights;

    private DpConfig(Map<String, Object> m) {
        clipNorm = Fields.requireFloat(OWNER, "clip_norm", m.get("clip_norm"), 0.0, null, true);
        noiseMultiplier = Fields.requireFloat(OWNER, "noise_multiplier", m.get("noise_multiplier"), 0.0, null, false);
        samplingRate = Fields.requireFloat(OWNER, "sampling_rate", m.get("sampling_rate"), 0.0, 1.0, true);
        localSteps = Fields.requireInt(OWNER, "local_steps", m.get("local_steps"), 1);
        learningRate = Fields.requireFloat(OWNER, "learning_rate", m.get("learning_rate"), 0.0, null, true);
        optimizer = Fields.requireChoice(OWNER, "optimizer", m.get("optimizer"), Protocol.OPTIMIZERS);
        localEpsilonBudget = Fields.requireFloat(OWNER, "local_epsilon_budget", m.get("local_epsilon_budget"), 0.0, null, true);
        localDelta = Fields.requireFloat(OWNER, "local_delta", m.get("local_delta"), 0.0, 0.1, true);
        dpSatRho = Fields.requireFloat(OWNER, "dp_sat_rho", m.get("dp_sat_rho"), 0.0, null, false);
        unitSparsity = Fields.requireFloat(OWNER, "unit_sparsity", m.get("unit_sparsity"), 0.0, 0.95, false);
        Object rank = m.get("train_rank");
        trainRank = rank == null ? null : Long.valueOf(Fields.requireInt(OWNER, "train_rank", rank, 1));
        classWeights = m.containsKey("class_weights")
                ? Fields.requireUnitWeights(OWNER, "class_weights", m.get("class_weights"))
                : null;
    }

    /**
     * Validates a decoded JSON object with the eleven fields of Python's {@code DpConfig.to_dict()} and, when the
     * round sets it, {@code class_weights}.
     */
    public static DpConfig fromMap(Object data) {
        return new DpConfig(Fields.checkKeys(OWNER, data, Fields.keys("clip_norm", "noise_multiplier", "sampling_rate",
                "local_steps", "learning_rate", "optimizer", "local_epsilon_budget", "local_delta", "dp_sat_rho",
                "unit_sparsity", "train_rank"), Fields.keys("class_weights")));
    }

    /**
     * A config built in code (floats as Python floats); the seed methods default to off and the
     * budget and delta to Python's defaults (8.0, 1e-5).
     */
    public static DpConfig of(double clipNorm, double noiseMultiplier, double samplingRate, long localSteps,
            double learningRate, String optimizer) {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("clip_norm", clipNorm);
        m.put("noise_multiplier", noiseMultiplier);
        m.put("sampling_rate", samplingRate);
        m.put("local_steps", localSteps);
        m.put("learning_rate", learningRate);
        m.put("optimizer", optimizer);
        m.put("local_epsilon_budget", 8.0);
        m.put("local_delta", 1e-5);
        m.put("dp_sat_rho", 0.0);
        m.put("unit_sparsity", 0.0);
        m.put("train_rank", null);
        return fromMap(m);
    }

    /** Per-example clip norm C. */
    public double clipNorm() {
        return clipNorm.doubleValue();
    }

    /** Noise multiplier sigma (noise std = sigma * C). */
    public double noiseMultiplier() {
        return noiseMultiplier.doubleValue();
    }

    /** Poisson sampling rate q. */
    public double samplingRate() {
        return samplingRate.doubleValue();
    }

    /** Local steps per round. */
    public long localSteps() {
        return localSteps;
    }

    /** Learning rate. */
    public double learningRate() {
        return learningRate.doubleValue();
    }

    /** "sgd" or "adamw". */
    public String optimizer() {
        return optimizer;
    }

    /** The round's cap on the device's local epsilon. */
    public double localEpsilonBudget() {
        return localEpsilonBudget.doubleValue();
    }

    /** The delta local epsilon is reported at. */
    public double localDelta() {
        return localDelta.doubleValue();
    }

    /** DP-SAT radius (0: off). */
    public double dpSatRho() {
        return dpSatRho.doubleValue();
    }

    /** Fraction of LoRA units frozen (0: off). */
    public double unitSparsity() {
        return unitSparsity.doubleValue();
    }

    /** Trained rank r', or null for the bundle's full rank. */
    public Long trainRank() {
        return trainRank;
    }

    /** The per-label weights on clipped gradients, or null when the round sets none. */
    public List<Number> classWeights() {
        return classWeights == null ? null : Collections.unmodifiableList(classWeights);
    }

    /** Python's {@code to_dict()}. */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("clip_norm", clipNorm);
        m.put("noise_multiplier", noiseMultiplier);
        m.put("sampling_rate", samplingRate);
        m.put("local_steps", Long.valueOf(localSteps));
        m.put("learning_rate", learningRate);
        m.put("optimizer", optimizer);
        m.put("local_epsilon_budget", localEpsilonBudget);
        m.put("local_delta", localDelta);
        m.put("dp_sat_rho", dpSatRho);
        m.put("unit_sparsity", unitSparsity);
        m.put("train_rank", trainRank);
        if (classWeights != null) {
            m.put("class_weights", classWeights);
        }
        return m;
    }
}
