package dev.privtune.core.net;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.json.Json;
import dev.privtune.core.protocol.DType;
import dev.privtune.core.protocol.ErrorBody;
import dev.privtune.core.protocol.Protocol;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Safetensors;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.TensorSpec;
import java.io.IOException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The device's read side of the aggregator protocol ({@code ondevice/server_client.py}): signed
 * check-in ({@code POST /v1/checkin}, body {@code {}}) and global adapter download
 * ({@code GET /v1/adapters/{version}}, checked against its {@code X-Privtune-Params-Sha256} header
 * and the manifest's tensor names and shapes). Uploads go through {@link UploadClient}.
 */
public final class AggregatorClient {
    /** Check-in path. */
    public static final String CHECKIN_PATH = "/v1/checkin";
    /** Header with the sha256 of a downloaded adapter. */
    public static final String PARAMS_SHA_HEADER = "X-Privtune-Params-Sha256";
    /** Cap on a downloaded adapter. */
    public static final int MAX_ADAPTER_BYTES = 64 * 1024 * 1024;

    private final String baseUrl;
    private final String deviceId;
    private final byte[] secret;
    private final HttpTransport transport;
    private final UploadClient.Clock clock;

    /** @throws IllegalArgumentException for a bad URL, device id or secret */
    public AggregatorClient(String baseUrl, String deviceId, byte[] secret, HttpTransport transport, UploadClient.Clock clock) {
        this.baseUrl = UploadClient.checkBaseUrl(baseUrl);
        this.deviceId = Protocol.validateDeviceId(deviceId);
        RequestSigner.checkSecret(secret);
        this.secret = secret.clone();
        this.transport = transport;
        this.clock = clock;
    }

    /** A client with the real transport (30 s timeout) and clock. */
    public AggregatorClient(String baseUrl, String deviceId, byte[] secret) {
        this(baseUrl, deviceId, secret, new UrlConnectionTransport(30000), UploadClient.SYSTEM_CLOCK);
    }

    private HttpResponse request(String method, String path, byte[] body, int maxBytes) throws AggregatorException {
        URL url;
        try {
            url = new URL(baseUrl + path);
        } catch (IOException e) {
            throw new AggregatorException("bad URL " + baseUrl + path, -1, null, e);
        }
        Map<String, String> headers = new LinkedHashMap<String, String>(
                RequestSigner.signedHeaders(deviceId, secret, method, url.getPath(), body, clock.nowSeconds(), null));
        if (body.length > 0) {
            headers.put("Content-Type", "application/json");
        }
        HttpResponse response;
        try {
            response = transport.send(method, url, headers, "GET".equals(method) ? null : body, maxBytes);
        } catch (IOException e) {
            throw new AggregatorException(method + " " + url + ": " + e.getClass().getSimpleName() + ": " + e.getMessage(), -1, null, e);
        }
        if (response.status() >= 400) {
            ErrorBody error = null;
            try {
                error = ErrorBody.fromMap(Json.parse(response.body()));
            } catch (IllegalArgumentException e) {
                error = null;
            }
            String message = error != null ? error.reason().code() + ": " + error.message() : UploadClient.snippet(response.body());
            throw new AggregatorException(message, response.status(), error, null);
        }
        return response;
    }

    /** Asks for the open round; the server draws this device's selection once per round. */
    public CheckInResult checkIn() throws AggregatorException {
        HttpResponse response = request("POST", CHECKIN_PATH, "{}".getBytes(StandardCharsets.UTF_8), 1 << 20);
        Map<String, Object> data;
        RoundConfig config;
        Object selected;
        Object open;
        try {
            data = Json.asObject(Json.parse(response.body()), "check-in answer");
            if (!data.containsKey("round") || !data.containsKey("selected")) {
                throw new IllegalArgumentException("missing 'round' or 'selected'");
            }
            config = data.get("round") == null ? null : RoundConfig.fromMap(data.get("round"));
            selected = data.get("selected");
            open = data.get("open_round_id");
        } catch (IllegalArgumentException e) {
            throw new AggregatorException("check-in answer is not a round announcement: " + e.getMessage(), response.status(), null, e);
        }
        if (!(selected instanceof Boolean) || (config != null && !((Boolean) selected).booleanValue())
                || (open != null && !(open instanceof Long))
                || (config != null && open != null && ((Long) open).longValue() != config.roundId())) {
            throw new AggregatorException("check-in answer is inconsistent: " + UploadClient.snippet(response.body()),
                    response.status(), null, null);
        }
        return new CheckInResult(config, ((Boolean) selected).booleanValue(), (Long) open);
    }

    /**
     * Downloads global adapter {@code version}: its sha256 and every tensor's name and shape are
     * checked; tensors come back as float32 in the order of {@code trainable}.
     */
    public Map<String, Tensor> fetchAdapter(long version, List<TensorSpec> trainable) throws AggregatorException {
        HttpResponse response = request("GET", "/v1/adapters/" + version, new byte[0], MAX_ADAPTER_BYTES);
        byte[] blob = response.body();
        String claimed = response.header(PARAMS_SHA_HEADER);
        if (claimed == null || !claimed.equals(Digests.sha256Hex(blob))) {
            throw new AggregatorException("adapter v" + version + " does not match its " + PARAMS_SHA_HEADER + " header",
                    response.status(), null, null);
        }
        Safetensors.Contents contents;
        try {
            contents = Safetensors.decode(blob);
        } catch (IllegalArgumentException e) {
            throw new AggregatorException("adapter v" + version + " is not safetensors: " + e.getMessage(), response.status(), null, e);
        }
        Map<String, Tensor> out = new LinkedHashMap<String, Tensor>();
        Set<String> expected = new HashSet<String>();
        for (TensorSpec spec : trainable) {
            expected.add(spec.name());
            Tensor value = contents.tensors().get(spec.name());
            if (value == null || !Arrays.equals(value.shape(), spec.shape())) {
                throw new AggregatorException("adapter v" + version + ": " + spec.name() + " has shape "
                        + (value == null ? "None" : Arrays.toString(value.shape())) + ", expected " + Arrays.toString(spec.shape()),
                        response.status(), null, null);
            }
            out.put(spec.name(), new Tensor(value.shape(), DType.FLOAT32, value.values()));
        }
        Set<String> extra = new HashSet<String>(contents.tensors().keySet());
        extra.removeAll(expected);
        if (!extra.isEmpty()) {
            throw new AggregatorException("adapter v" + version + " holds unexpected tensors " + extra, response.status(), null, null);
        }
        return out;
    }
}
