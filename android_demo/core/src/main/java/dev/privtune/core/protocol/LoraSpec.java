package dev.privtune.core.protocol;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Low-rank adapter shape: {@code W' = W + (alpha / rank) * B A} on each target module. */
public final class LoraSpec {
    private static final String OWNER = "LoraSpec";
    private final long rank;
    private final Number alpha;
    private final List<String> targets;
    private final Number dropout;

    private LoraSpec(long rank, Number alpha, List<String> targets, Number dropout) {
        this.rank = rank;
        this.alpha = alpha;
        this.targets = targets;
        this.dropout = dropout;
    }

    /** Validates a decoded JSON object (exactly rank, alpha, targets, dropout). */
    public static LoraSpec fromMap(Object data) {
        Map<String, Object> map = Fields.checkKeys(OWNER, data, Fields.keys("rank", "alpha", "targets", "dropout"));
        long rank = Fields.requireInt(OWNER, "rank", map.get("rank"), 1);
        Number alpha = Fields.requireFloat(OWNER, "alpha", map.get("alpha"), 0.0, null, true);
        List<String> targets = Fields.requireStrList(OWNER, "targets", map.get("targets"));
        Number dropout = Fields.requireFloat(OWNER, "dropout", map.get("dropout"), 0.0, 0.99, false);
        return new LoraSpec(rank, alpha, targets, dropout);
    }

    /** The adapter rank r. */
    public long rank() {
        return rank;
    }

    /** alpha / rank. */
    public double scaling() {
        return alpha.doubleValue() / rank;
    }

    /** Module names the adapter wraps. */
    public List<String> targets() {
        return targets;
    }

    /** Python's {@code to_dict()} (numbers keep their int/float kind). */
    public Map<String, Object> toMap() {
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("rank", Long.valueOf(rank));
        out.put("alpha", alpha);
        out.put("targets", new ArrayList<Object>(targets));
        out.put("dropout", dropout);
        return out;
    }
}
