package dev.privtune.core.net;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.protocol.DType;
import dev.privtune.core.protocol.RejectionReason;
import dev.privtune.core.protocol.Safetensors;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.TensorSpec;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class AggregatorClientTest {
    static final byte[] SECRET = UploadClientTest.SECRET;
    static final String HASH = "ef00000000000000000000000000000000000000000000000000000000000000";
    static final String ROUND = "{\"protocol_version\":2,\"round_id\":3,\"manifest_hash\":\"" + HASH + "\",\"global_adapter_version\":2,"
            + "\"dp\":{\"clip_norm\":1.0,\"noise_multiplier\":1.1,\"sampling_rate\":0.25,\"local_steps\":4,\"learning_rate\":0.05,"
            + "\"optimizer\":\"sgd\",\"local_epsilon_budget\":8.0,\"local_delta\":1e-05,\"dp_sat_rho\":0.0,\"unit_sparsity\":0.0,"
            + "\"train_rank\":null},\"update_clip_norm\":1.0,\"deadline_unix\":1752345678.5,\"update_dtype\":\"float16\"}";

    private static AggregatorClient client(TestServer server) {
        return new AggregatorClient(server.url(), "phone-7", SECRET);
    }

    @Test
    public void checkInIsSignedAndParsed() throws Exception {
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(200, "{\"round\":" + ROUND + ",\"selected\":true,\"open_round_id\":3}"));
            CheckInResult result = client(server).checkIn();
            assertTrue(result.selected());
            assertEquals(3, result.roundConfig().roundId());
            assertEquals("float16", result.roundConfig().updateDtype());
            assertEquals(Long.valueOf(3), result.openRoundId());
            TestServer.Request r = server.requests.get(0);
            assertEquals("POST", r.method);
            assertEquals("/v1/checkin", r.path);
            assertEquals("{}", new String(r.body, StandardCharsets.UTF_8));
            assertEquals("application/json", r.header("Content-Type"));
            assertEquals(RequestSigner.sign(SECRET, "POST", "/v1/checkin", r.body, Long.parseLong(r.header("X-Privtune-Timestamp")),
                    r.header("X-Privtune-Nonce")), r.header("X-Privtune-Signature"));
        }
    }

    @Test
    public void notSelectedAndInconsistentAnswers() throws Exception {
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(200, "{\"round\":null,\"selected\":false,\"open_round_id\":3}"))
                    .then(new TestServer.Reply(200, "{\"round\":" + ROUND + ",\"selected\":false,\"open_round_id\":3}"))
                    .then(new TestServer.Reply(200, "{\"round\":" + ROUND + ",\"selected\":true,\"open_round_id\":4}"))
                    .then(new TestServer.Reply(200, "[]"))
                    .then(new TestServer.Reply(401, "{\"reason\":\"unknown_device\",\"message\":\"who?\"}"));
            CheckInResult none = client(server).checkIn();
            assertFalse(none.selected());
            assertNull(none.roundConfig());
            assertThrows(AggregatorException.class, () -> client(server).checkIn());
            assertThrows(AggregatorException.class, () -> client(server).checkIn());
            assertThrows(AggregatorException.class, () -> client(server).checkIn());
            AggregatorException e = assertThrows(AggregatorException.class, () -> client(server).checkIn());
            assertEquals(401, e.status());
            assertEquals(RejectionReason.UNKNOWN_DEVICE, e.error().reason());
        }
    }

    @Test
    public void adapterDownloadIsCheckedAgainstItsHashAndTheSpecs() throws Exception {
        Map<String, Tensor> tensors = new LinkedHashMap<String, Tensor>();
        tensors.put("b", new Tensor(new int[] {2}, DType.FLOAT32, new float[] {1f, 2f}));
        tensors.put("a", new Tensor(new int[] {1, 2}, DType.FLOAT32, new float[] {3f, 4f}));
        byte[] blob = Safetensors.encode(tensors, null);
        List<TensorSpec> specs = Arrays.asList(new TensorSpec("b", new int[] {2}, "float32"), new TensorSpec("a", new int[] {1, 2}, "float32"));
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(200, blob).header("X-Privtune-Params-Sha256", Digests.sha256Hex(blob)))
                    .then(new TestServer.Reply(200, blob).header("X-Privtune-Params-Sha256", Digests.sha256Hex(new byte[0])))
                    .then(new TestServer.Reply(200, blob).header("X-Privtune-Params-Sha256", Digests.sha256Hex(blob)))
                    .then(new TestServer.Reply(404, "{\"reason\":\"malformed\",\"message\":\"no version 9\"}"));
            Map<String, Tensor> got = client(server).fetchAdapter(2, specs);
            assertEquals(Arrays.asList("b", "a"), Arrays.asList(got.keySet().toArray()));
            assertArrayEquals(new float[] {3f, 4f}, got.get("a").values(), 0f);
            TestServer.Request r = server.requests.get(0);
            assertEquals("GET", r.method);
            assertEquals("/v1/adapters/2", r.path);
            assertEquals(0, r.body.length);
            assertTrue(assertThrows(AggregatorException.class, () -> client(server).fetchAdapter(2, specs)).getMessage()
                    .contains("does not match its X-Privtune-Params-Sha256"));
            List<TensorSpec> other = Arrays.asList(new TensorSpec("b", new int[] {3}, "float32"), specs.get(1));
            assertTrue(assertThrows(AggregatorException.class, () -> client(server).fetchAdapter(2, other)).getMessage()
                    .contains("has shape [2], expected [3]"));
            assertEquals(404, assertThrows(AggregatorException.class, () -> client(server).fetchAdapter(9, specs)).status());
        }
    }
}
