package dev.privtune.core.protocol;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A device's clipped adapter delta for one round, with the DP parameters it used (Python's
 * {@code AdapterUpdate}). Encoded by {@link UpdateCodec} as one safetensors blob whose header
 * metadata carries the JSON fields; the HMAC over the encoded bytes travels beside it. The
 * device's example count is not sent (the server does not use it, and it would be sent in clear).
 */
public final class AdapterUpdate {
    private static final String OWNER = "AdapterUpdate";
    private final long roundId;
    private final String deviceId;
    private final String manifestHash;
    private final long globalAdapterVersion;
    private final Map<String, Tensor> tensors;
    private final DpConfig dp;
    private final Number localEpsilon;
    private final Number localDelta;
    private final String nonce;

    /**
     * @param tensors name to tensor (float32 or float16, all one dtype, finite, rank >= 1)
     * @param localEpsilon the device's local epsilon, computed by an accountant (the JVM core does
     *     not compute epsilon: PLD accounting stays in Python/the server, see LocalLedger)
     * @param nonce 32-128 lowercase hex characters (128 random bits: {@link UpdateCodec#newNonce()})
     * @throws ProtocolException naming the first invalid field
     */
    public AdapterUpdate(long roundId, String deviceId, String manifestHash, long globalAdapterVersion,
            Map<String, Tensor> tensors, DpConfig dp, double localEpsilon, double localDelta, String nonce) {
        this(roundId, deviceId, manifestHash, globalAdapterVersion, tensors, dp,
                Double.valueOf(localEpsilon), Double.valueOf(localDelta), nonce);
    }

    AdapterUpdate(long roundId, String deviceId, String manifestHash, long globalAdapterVersion,
            Map<String, Tensor> tensors, DpConfig dp, Number localEpsilon, Number localDelta, String nonce) {
        this.roundId = Fields.requireInt(OWNER, "round_id", Long.valueOf(roundId), 0);
        this.deviceId = Fields.requireStr(OWNER, "device_id", deviceId, Protocol.ID);
        this.manifestHash = Fields.requireSha256(OWNER, "manifest_hash", manifestHash);
        this.globalAdapterVersion = Fields.requireInt(OWNER, "global_adapter_version", Long.valueOf(globalAdapterVersion), 0);
        if (dp == null) {
            throw Fields.fail(OWNER, "dp", "must be a DpConfig", null);
        }
        this.dp = dp;
        this.localEpsilon = Fields.requireFloat(OWNER, "local_epsilon", localEpsilon, 0.0, null, false);
        this.localDelta = Fields.requireFloat(OWNER, "local_delta", localDelta, 0.0, 1.0, false);
        this.nonce = Fields.requireStr(OWNER, "nonce", nonce, Protocol.NONCE);
        if (tensors == null || tensors.isEmpty()) {
            throw Fields.fail(OWNER, "tensors", "must be a non-empty mapping name -> ndarray", tensors);
        }
        DType dtype = null;
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            Fields.requireStr(OWNER, "tensors", e.getKey(), null);
            Tensor t = e.getValue();
            if (t == null) {
                throw Fields.fail(OWNER, "tensors", "['" + e.getKey() + "'] must be a tensor", null);
            }
            if (!t.isFinite()) {
                throw Fields.fail(OWNER, "tensors", "['" + e.getKey() + "'] must be finite", "NaN or inf");
            }
            if (dtype != null && dtype != t.dtype()) {
                throw Fields.fail(OWNER, "tensors", "must all share one dtype", "[float16, float32]");
            }
            dtype = t.dtype();
        }
        this.tensors = Collections.unmodifiableMap(new LinkedHashMap<String, Tensor>(tensors));
    }

    /** Round id. */
    public long roundId() {
        return roundId;
    }

    /** Uploading device. */
    public String deviceId() {
        return deviceId;
    }

    /** Manifest hash of the bundle trained. */
    public String manifestHash() {
        return manifestHash;
    }

    /** Global adapter version the delta starts from. */
    public long globalAdapterVersion() {
        return globalAdapterVersion;
    }

    /** The delta tensors, in insertion order. */
    public Map<String, Tensor> tensors() {
        return tensors;
    }

    /** The round's DP parameters, repeated. */
    public DpConfig dp() {
        return dp;
    }

    /** Local epsilon reported. */
    public double localEpsilon() {
        return localEpsilon.doubleValue();
    }

    /** Local delta reported. */
    public double localDelta() {
        return localDelta.doubleValue();
    }

    /** The update's nonce (hex). */
    public String nonce() {
        return nonce;
    }

    /** The tensors' shared dtype. */
    public DType dtype() {
        return tensors.values().iterator().next().dtype();
    }

    /** Python's {@code metadata_dict()}: what goes, as canonical JSON, into the safetensors metadata. */
    public Map<String, Object> metadataMap() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("protocol_version", Long.valueOf(Protocol.PROTOCOL_VERSION));
        m.put("round_id", Long.valueOf(roundId));
        m.put("device_id", deviceId);
        m.put("manifest_hash", manifestHash);
        m.put("global_adapter_version", Long.valueOf(globalAdapterVersion));
        m.put("dp", dp.toMap());
        m.put("local_epsilon", localEpsilon);
        m.put("local_delta", localDelta);
        m.put("nonce", nonce);
        return m;
    }
}
