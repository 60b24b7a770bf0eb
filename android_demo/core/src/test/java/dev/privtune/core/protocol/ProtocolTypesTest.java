package dev.privtune.core.protocol;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import java.util.Map;
import org.junit.Test;

public class ProtocolTypesTest {
    static final String HASH = "ab" + "0000000000000000000000000000000000000000000000000000000000000000".substring(2);

    static String roundJson(String clipNorm) {
        return "{\"protocol_version\":2,\"round_id\":3,\"manifest_hash\":\"" + HASH + "\",\"global_adapter_version\":2,"
                + "\"dp\":{\"clip_norm\":" + clipNorm + ",\"noise_multiplier\":1.1,\"sampling_rate\":0.25,\"local_steps\":4,"
                + "\"learning_rate\":0.05,\"optimizer\":\"sgd\",\"local_epsilon_budget\":8.0,\"local_delta\":1e-05,"
                + "\"dp_sat_rho\":0.0,\"unit_sparsity\":0.0,\"train_rank\":null},"
                + "\"update_clip_norm\":1.0,\"deadline_unix\":1752345678.123456,\"update_dtype\":\"float32\"}";
    }

    @Test
    public void roundConfigRoundTripsToTheSameCanonicalJson() {
        String json = roundJson("1.0");
        RoundConfig round = RoundConfig.fromJson(json);
        assertEquals(JsonWriter.canonical(Json.parse(json)), round.toJson());
        assertEquals(3, round.roundId());
        assertEquals(1.1, round.dp().noiseMultiplier(), 0.0);
        assertNull(round.dp().trainRank());
    }

    @Test
    public void anIntegerStaysAnIntegerInTheSignedForm() {
        // Python keeps clip_norm=1 an int through from_dict/to_dict; so must Java, or the metadata bytes differ
        assertTrue(RoundConfig.fromJson(roundJson("1")).toJson().contains("\"clip_norm\":1,"));
        assertTrue(RoundConfig.fromJson(roundJson("1.0")).toJson().contains("\"clip_norm\":1.0,"));
    }

    @Test
    public void invalidFieldsAreRefusedWithTheFieldName() {
        assertMessage(roundJson("0.0"), "DpConfig.clip_norm must be > 0.0");
        assertMessage(roundJson("true"), "DpConfig.clip_norm must be a number");
        assertMessage(roundJson("\"1\""), "DpConfig.clip_norm must be a number");
        assertMessage(roundJson("1.0").replace("\"optimizer\":\"sgd\"", "\"optimizer\":\"adam\""), "DpConfig.optimizer must be one of");
        assertMessage(roundJson("1.0").replace("\"protocol_version\":2", "\"protocol_version\":1"), "not supported by this build");
        assertMessage(roundJson("1.0").replace("\"round_id\":3,", ""), "RoundConfig is missing field(s) [round_id]");
        assertMessage(roundJson("1.0").replace("\"round_id\":3,", "\"round_id\":3,\"extra\":1,"), "RoundConfig has unknown field(s) [extra]");
        assertMessage(roundJson("1.0").replace("\"round_id\":3", "\"round_id\":3.0"), "RoundConfig.round_id must be an int");
        assertMessage(roundJson("1.0").replace("\"float32\"", "\"bfloat16\""), "RoundConfig.update_dtype must be one of");
        assertMessage(roundJson("1.0").replace(HASH, "AB" + HASH.substring(2)), "RoundConfig.manifest_hash must be a lowercase hex sha256");
    }

    @Test
    public void classWeightsAreOptionalAndKeepTheirJsonForm() {
        String weighted = roundJson("1.0").replace("\"train_rank\":null}", "\"train_rank\":null,\"class_weights\":[0.25,1]}");
        RoundConfig round = RoundConfig.fromJson(weighted);
        assertEquals(JsonWriter.canonical(Json.parse(weighted)), round.toJson());
        assertEquals(2, round.dp().classWeights().size());
        assertEquals(0.25, round.dp().classWeights().get(0).doubleValue(), 0.0);
        assertNull(RoundConfig.fromJson(roundJson("1.0")).dp().classWeights());
        assertTrue(!RoundConfig.fromJson(roundJson("1.0")).toJson().contains("class_weights"));
        assertMessage(weighted.replace("[0.25,1]", "[0.25,1.5]"), "DpConfig.class_weights must be <= 1.0");
        assertMessage(weighted.replace("[0.25,1]", "[0,1]"), "DpConfig.class_weights must be > 0.0");
        assertMessage(weighted.replace("[0.25,1]", "[1]"), "DpConfig.class_weights must be a list with one weight per label");
        assertMessage(weighted.replace("[0.25,1]", "0.5"), "DpConfig.class_weights must be a list");
        assertMessage(weighted.replace("\"class_weights\"", "\"class_weight\""), "DpConfig has unknown field(s) [class_weight]");
    }

    private static void assertMessage(String json, String expected) {
        ProtocolException e = assertThrows(ProtocolException.class, () -> RoundConfig.fromJson(json));
        assertTrue(e.getMessage(), e.getMessage().contains(expected));
    }

    @Test
    public void dpConfigOfUsesPythonDefaults() {
        DpConfig dp = DpConfig.of(1.0, 1.1, 0.25, 4, 0.05, "sgd");
        Map<String, Object> m = dp.toMap();
        assertEquals(8.0, m.get("local_epsilon_budget"));
        assertEquals(1e-5, m.get("local_delta"));
        assertTrue(m.containsKey("train_rank") && m.get("train_rank") == null);
        assertThrows(ProtocolException.class, () -> DpConfig.of(1.0, 1.1, 1.5, 4, 0.05, "sgd"));
    }

    @Test
    public void errorBodyAndReceipt() {
        ErrorBody error = ErrorBody.fromMap(Json.parse("{\"reason\":\"bad_signature\",\"message\":\"update MAC does not verify\"}"));
        assertEquals(RejectionReason.BAD_SIGNATURE, error.reason());
        assertThrows(ProtocolException.class, () -> ErrorBody.fromMap(Json.parse("{\"reason\":\"nope\",\"message\":\"x\"}")));
        UpdateReceipt receipt = UpdateReceipt.fromMap(Json.parse("{\"protocol_version\":2,\"round_id\":0,\"device_id\":\"p-1\","
                + "\"update_sha256\":\"" + HASH + "\",\"accepted_at_unix\":1.5}"));
        assertEquals("p-1", receipt.deviceId());
        assertThrows(ProtocolException.class, () -> UpdateReceipt.fromMap(Json.parse("{\"protocol_version\":2,\"round_id\":0,"
                + "\"device_id\":\"bad id\",\"update_sha256\":\"" + HASH + "\",\"accepted_at_unix\":1.5}")));
    }
}
