package dev.privtune.core.tools;

import dev.privtune.core.bundle.Bundle;
import dev.privtune.core.crypto.Digests;
import dev.privtune.core.crypto.Hex;
import dev.privtune.core.dp.Gaussian;
import dev.privtune.core.dp.Norms;
import dev.privtune.core.dp.SecureRandomBytes;
import dev.privtune.core.dp.UpdateBuilder;
import dev.privtune.core.json.JsonWriter;
import dev.privtune.core.net.AggregatorClient;
import dev.privtune.core.net.CheckInResult;
import dev.privtune.core.net.HttpResponse;
import dev.privtune.core.net.HttpTransport;
import dev.privtune.core.net.Outbox;
import dev.privtune.core.net.RetryPolicy;
import dev.privtune.core.net.Sleeper;
import dev.privtune.core.net.UploadClient;
import dev.privtune.core.net.UploadRejectedException;
import dev.privtune.core.net.UrlConnectionTransport;
import dev.privtune.core.protocol.AdapterUpdate;
import dev.privtune.core.protocol.ArtifactManifest;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.UpdateCodec;
import dev.privtune.core.protocol.UpdateReceipt;
import java.io.File;
import java.io.IOException;
import java.net.URL;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One device's round trip against a real aggregator, with the JVM client only: check in, download the
 * global adapter, build a clipped update from a small random perturbation (no training: the point is
 * the protocol), upload it through the outbox, print the outcome as one JSON line.
 *
 * <pre>
 *   java -cp CLASSES dev.privtune.core.tools.UploadOnce --url URL --device ID --secret-hex HEX
 *       --bundle BUNDLE_DIR --state DIR [--scale 0.01] [--tamper]
 * </pre>
 *
 * {@code --tamper} flips the last byte of the encoded update and sends it with request headers
 * (signature, Idempotency-Key) computed by the client over the bytes sent, but with the update MAC of
 * the original bytes: the aggregator must refuse it (bad_signature, "update MAC does not verify").
 * Exit status: 0 accepted, 3 rejected, 1 on any other error. The sent body is kept in the outbox
 * ({@code STATE/outbox/round-N.update}).
 */
public final class UploadOnce {
    private UploadOnce() {}

    /** Entry point. */
    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parse(args);
        String url = require(opts, "--url");
        String device = require(opts, "--device");
        byte[] secret = Hex.decode(require(opts, "--secret-hex"));
        File bundle = new File(require(opts, "--bundle"));
        File state = new File(require(opts, "--state"));
        double scale = Double.parseDouble(opts.containsKey("--scale") ? opts.get("--scale") : "0.01");
        boolean tamper = opts.containsKey("--tamper");

        ArtifactManifest manifest = Bundle.loadManifest(bundle);
        AggregatorClient api = new AggregatorClient(url, device, secret);
        CheckInResult checkIn = api.checkIn();
        RoundConfig round = checkIn.roundConfig();
        if (round == null) {
            fail("not selected for a round (selected=" + checkIn.selected() + ", open round " + checkIn.openRoundId() + ")");
        }
        if (!round.manifestHash().equals(manifest.manifestHash())) {
            fail("the round trains manifest " + round.manifestHash() + ", the bundle is " + manifest.manifestHash());
        }
        Map<String, Tensor> global = api.fetchAdapter(round.globalAdapterVersion(), manifest.trainable());
        Map<String, Tensor> local = perturb(global, scale);
        AdapterUpdate update = UpdateBuilder.build(round, device, global, local, 0.0, round.dp().localDelta(), null);
        byte[] body = UpdateCodec.encode(update);
        String originalMac = UpdateCodec.mac(body, secret);
        HttpTransport transport = new UrlConnectionTransport(30000);
        if (tamper) {
            body = body.clone();
            body[body.length - 1] ^= 0x01;
            transport = new MacOverride(transport, originalMac);
        }
        Outbox outbox = new Outbox(new File(state, "outbox"));
        outbox.put(round.roundId(), body);
        UploadClient client = new UploadClient(url, device, secret, outbox, transport, RetryPolicy.defaults(), Sleeper.REAL,
                UploadClient.SYSTEM_CLOCK);
        Map<String, Object> result = new LinkedHashMap<String, Object>();
        result.put("round_id", Long.valueOf(round.roundId()));
        result.put("sha256", Digests.sha256Hex(body));
        result.put("norm", Double.valueOf(norm(update)));
        result.put("dtype", update.dtype().numpyName());
        result.put("bytes", Long.valueOf(body.length));
        try {
            UpdateReceipt receipt = client.deliver(round.roundId());
            result.put("status", "accepted");
            result.put("receipt_sha256", receipt.updateSha256());
            // a second delivery is answered from the outbox, without a request
            result.put("redeliver_same_receipt", Boolean.valueOf(client.deliver(round.roundId()).equals(receipt)));
            System.out.println(JsonWriter.canonical(result));
        } catch (UploadRejectedException e) {
            result.put("status", "rejected");
            result.put("http_status", Long.valueOf(e.status()));
            result.put("reason", e.error().reason().code());
            result.put("message", e.error().message());
            result.put("outbox_rejection", outbox.rejection(round.roundId()).reason().code());
            System.out.println(JsonWriter.canonical(result));
            System.exit(3);
        }
    }

    private static Map<String, Tensor> perturb(Map<String, Tensor> global, double scale) {
        SecureRandomBytes random = new SecureRandomBytes();
        Map<String, Tensor> out = new LinkedHashMap<String, Tensor>();
        for (Map.Entry<String, Tensor> e : global.entrySet()) {
            Tensor g = e.getValue();
            double[] z = Gaussian.standardNormal(random, g.size());
            double[] v = new double[g.size()];
            for (int i = 0; i < v.length; i++) {
                v[i] = g.get(i) + scale * z[i];
            }
            out.put(e.getKey(), Tensor.float32FromDoubles(g.shape(), v));
        }
        return out;
    }

    private static double norm(AdapterUpdate update) {
        List<double[]> values = new ArrayList<double[]>();
        for (Tensor t : update.tensors().values()) {
            values.add(t.toDoubles());
        }
        return Norms.globalNorm(values);
    }

    /** Replaces the update MAC header of every request (the tamper case). */
    private static final class MacOverride implements HttpTransport {
        private final HttpTransport inner;
        private final String mac;

        MacOverride(HttpTransport inner, String mac) {
            this.inner = inner;
            this.mac = mac;
        }

        @Override
        public HttpResponse send(String method, URL url, Map<String, String> headers, byte[] body, int maxResponseBytes)
                throws IOException {
            Map<String, String> changed = new LinkedHashMap<String, String>(headers);
            changed.put(UploadClient.UPDATE_MAC_HEADER, mac);
            return inner.send(method, url, changed, body, maxResponseBytes);
        }
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new LinkedHashMap<String, String>();
        for (int i = 0; i < args.length; i++) {
            if ("--tamper".equals(args[i])) {
                opts.put(args[i], "");
            } else if (args[i].startsWith("--") && i + 1 < args.length) {
                opts.put(args[i], args[++i]);
            } else {
                usage("unexpected argument " + args[i]);
            }
        }
        return opts;
    }

    private static String require(Map<String, String> opts, String name) {
        String value = opts.get(name);
        if (value == null) {
            usage("missing " + name);
        }
        return value;
    }

    private static void usage(String problem) {
        System.err.println("UploadOnce: " + problem + "\nusage: UploadOnce --url URL --device ID --secret-hex HEX "
                + "--bundle BUNDLE_DIR --state DIR [--scale 0.01] [--tamper]");
        System.exit(2);
    }

    private static void fail(String problem) {
        System.err.println("UploadOnce: " + problem);
        System.exit(1);
    }
}
