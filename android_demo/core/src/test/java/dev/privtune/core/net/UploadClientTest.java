package dev.privtune.core.net;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.protocol.RejectionReason;
import dev.privtune.core.protocol.UpdateCodec;
import dev.privtune.core.protocol.UpdateReceipt;
import java.io.File;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class UploadClientTest {
    static final byte[] SECRET = "device-secret-0123456789abcdef!!".getBytes(StandardCharsets.US_ASCII);
    static final byte[] BODY = "pretend these are safetensors bytes".getBytes(StandardCharsets.US_ASCII);
    static final String DEVICE = "phone-7";

    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    final List<Double> sleeps = new ArrayList<Double>();
    final Sleeper recorder = new Sleeper() {
        @Override
        public void sleep(double seconds) {
            sleeps.add(seconds);
        }
    };

    private UploadClient client(String url, int attempts, double max) throws Exception {
        Outbox outbox = new Outbox(new File(tmp.getRoot(), "outbox"));
        outbox.put(4, BODY);
        return new UploadClient(url, DEVICE, SECRET, outbox, new UrlConnectionTransport(5000),
                new RetryPolicy(attempts, 0.5, max, new Random(3)), recorder, UploadClient.SYSTEM_CLOCK);
    }

    static String receipt(String sha) {
        return "{\"protocol_version\":2,\"round_id\":4,\"device_id\":\"" + DEVICE + "\",\"update_sha256\":\"" + sha
                + "\",\"accepted_at_unix\":1752345678.5}";
    }

    static String error(String reason) {
        return "{\"reason\":\"" + reason + "\",\"message\":\"the server says " + reason + "\"}";
    }

    @Test
    public void serverErrorsAreRetriedWithTheSameBytesUntilAReceipt() throws Exception {
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(503, "busy")).then(new TestServer.Reply(502, ""))
                    .then(new TestServer.Reply(201, receipt(Digests.sha256Hex(BODY))));
            UploadClient client = client(server.url(), 6, 30);
            UpdateReceipt receipt = client.deliver(4);
            assertEquals(Digests.sha256Hex(BODY), receipt.updateSha256());
            assertEquals(3, server.requests.size());
            assertEquals(2, sleeps.size());
            assertTrue(sleeps.get(0) >= 0 && sleeps.get(0) <= 0.5); // full jitter: U(0, base)
            assertTrue(sleeps.get(1) >= 0 && sleeps.get(1) <= 1.0); // U(0, 2 base)
            HashSet<String> nonces = new HashSet<String>();
            for (TestServer.Request r : server.requests) {
                assertEquals("POST", r.method);
                assertEquals("/v1/rounds/4/updates", r.path);
                assertArrayEquals(BODY, r.body);
                assertEquals("application/octet-stream", r.header("Content-Type"));
                assertEquals(Digests.sha256Hex(BODY), r.header("Idempotency-Key"));
                assertEquals(UpdateCodec.mac(BODY, SECRET), r.header("X-Privtune-Update-Mac"));
                assertEquals(DEVICE, r.header("X-Privtune-Device"));
                String expected = RequestSigner.sign(SECRET, "POST", r.path, r.body, Long.parseLong(r.header("X-Privtune-Timestamp")),
                        r.header("X-Privtune-Nonce"));
                assertEquals(expected, r.header("X-Privtune-Signature"));
                nonces.add(r.header("X-Privtune-Nonce"));
            }
            assertEquals(3, nonces.size()); // a fresh nonce per attempt
            assertEquals(receipt, client.outbox().receipt(4));
            assertTrue(client.outbox().pending().isEmpty());
            assertEquals(receipt, client.deliver(4)); // answered from the outbox
            assertEquals(3, server.requests.size());
        }
    }

    @Test
    public void retryAfterIsHonouredAndCapped() throws Exception {
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(429, "").header("Retry-After", "7"))
                    .then(new TestServer.Reply(408, "").header("Retry-After", "7"))
                    .then(new TestServer.Reply(201, receipt(Digests.sha256Hex(BODY))));
            client(server.url(), 6, 5).deliver(4);
            assertEquals(Arrays.asList(5.0, 5.0), sleeps);
        }
    }

    @Test
    public void clientErrorsAreRejectionsWithTheServersReasonAndAreNotRetried() throws Exception {
        String[][] cases = {{"400", "malformed"}, {"401", "bad_signature"}, {"403", "not_selected"}, {"409", "duplicate_conflict"}};
        for (String[] c : cases) {
            sleeps.clear();
            try (TestServer server = new TestServer()) {
                server.then(new TestServer.Reply(Integer.parseInt(c[0]), error(c[1])));
                UploadClient client = client(server.url(), 6, 30);
                UploadRejectedException e = assertThrows(UploadRejectedException.class, () -> client.deliver(4));
                assertEquals(RejectionReason.fromCode(c[1]), e.error().reason());
                assertEquals(Integer.parseInt(c[0]), e.status());
                assertEquals(1, server.requests.size());
                assertTrue(sleeps.isEmpty());
                assertEquals(RejectionReason.fromCode(c[1]), client.outbox().rejection(4).reason());
                assertTrue(client.outbox().pending().isEmpty());
                assertNotNull(client.outbox().get(4)); // the bytes stay
            }
            tmp.delete();
            tmp.create();
        }
    }

    @Test
    public void aHugeErrorPageOfARetryableStatusIsRetriedButAHugeReceiptIsNot() throws Exception {
        byte[] page = new byte[UploadClient.MAX_RESPONSE_BYTES + 1000];
        java.util.Arrays.fill(page, (byte) 'x');
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(503, page)).then(new TestServer.Reply(201, receipt(Digests.sha256Hex(BODY))));
            client(server.url(), 6, 30).deliver(4);
            assertEquals(2, server.requests.size());
        }
        tmp.delete();
        tmp.create();
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(200, page));
            UploadClient client = client(server.url(), 6, 30);
            UploadException e = assertThrows(UploadException.class, () -> client.deliver(4));
            assertTrue(e.getMessage(), e.getMessage().contains("over 65536 bytes"));
            assertEquals(1, server.requests.size());
        }
    }

    @Test
    public void ownReplayedNonceIsRetriedWithAFreshOne() throws Exception {
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(401, error("replayed_nonce"))).then(new TestServer.Reply(200, receipt(Digests.sha256Hex(BODY))));
            client(server.url(), 6, 30).deliver(4);
            assertEquals(2, server.requests.size());
            assertNotEquals(server.requests.get(0).header("X-Privtune-Nonce"), server.requests.get(1).header("X-Privtune-Nonce"));
        }
    }

    @Test
    public void unreachableServerLeavesTheUpdatePending() throws Exception {
        int port;
        try (ServerSocket socket = new ServerSocket(0)) {
            port = socket.getLocalPort();
        }
        UploadClient client = client("http://127.0.0.1:" + port, 3, 30);
        UploadUnavailableException e = assertThrows(UploadUnavailableException.class, () -> client.deliver(4));
        assertTrue(e.getMessage(), e.getMessage().contains("after 3 attempt(s)"));
        assertEquals(2, sleeps.size());
        assertEquals(Arrays.asList(4L), client.outbox().pending());
    }

    @Test
    public void aReceiptForOtherBytesIsNotAcceptedAsDelivery() throws Exception {
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(201, receipt(Digests.sha256Hex(new byte[] {1}))));
            UploadClient client = client(server.url(), 6, 30);
            UploadException e = assertThrows(UploadException.class, () -> client.deliver(4));
            assertTrue(e.getMessage(), e.getMessage().contains("not marked delivered"));
            assertNull(client.outbox().receipt(4));
            assertEquals(Arrays.asList(4L), client.outbox().pending());
        }
    }

    @Test
    public void anErrorWithoutAReasonCodeBreaksTheContract() throws Exception {
        try (TestServer server = new TestServer()) {
            server.then(new TestServer.Reply(404, "<html>not found</html>"));
            UploadClient client = client(server.url(), 6, 30);
            UploadException e = assertThrows(UploadException.class, () -> client.deliver(4));
            assertTrue(e.getMessage(), e.getMessage().contains("not a valid ErrorBody"));
            assertEquals(Arrays.asList(4L), client.outbox().pending());
        }
    }

    @Test
    public void outboxKeepsOneUpdatePerRound() throws Exception {
        Outbox outbox = new Outbox(tmp.newFolder("o"));
        outbox.put(1, BODY);
        outbox.put(1, BODY.clone()); // same bytes: no-op
        assertThrows(OutboxConflictException.class, () -> outbox.put(1, new byte[] {1, 2}));
        assertThrows(IllegalArgumentException.class, () -> outbox.put(2, new byte[0]));
        assertEquals(Arrays.asList(1L), new Outbox(outbox.directory()).pending());
    }

    @Test
    public void badConfigurationIsRefusedEarly() throws Exception {
        Outbox outbox = new Outbox(tmp.newFolder("p"));
        RetryPolicy retry = RetryPolicy.defaults();
        UrlConnectionTransport t = new UrlConnectionTransport(1000);
        assertThrows(IllegalArgumentException.class,
                () -> new UploadClient("ftp://x", DEVICE, SECRET, outbox, t, retry, recorder, UploadClient.SYSTEM_CLOCK));
        assertThrows(IllegalArgumentException.class,
                () -> new UploadClient("http://x/?q=1", DEVICE, SECRET, outbox, t, retry, recorder, UploadClient.SYSTEM_CLOCK));
        assertThrows(IllegalArgumentException.class,
                () -> new UploadClient("http://x", "bad id", SECRET, outbox, t, retry, recorder, UploadClient.SYSTEM_CLOCK));
        assertThrows(IllegalArgumentException.class,
                () -> new UploadClient("http://x", DEVICE, new byte[8], outbox, t, retry, recorder, UploadClient.SYSTEM_CLOCK));
        assertThrows(IllegalArgumentException.class, () -> new RetryPolicy(0, 0.5, 30, null));
        assertThrows(IllegalArgumentException.class, () -> new RetryPolicy(3, 5, 1, null));
    }
}
