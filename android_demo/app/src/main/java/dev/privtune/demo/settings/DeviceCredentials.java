package dev.privtune.demo.settings;

import dev.privtune.core.crypto.Hex;
import dev.privtune.core.net.AggregatorClient;

/**
 * The aggregator URL and this device's enrolment (id and shared secret, from {@code privtune enroll}),
 * validated: the URL must be http(s) with a host, the id a protocol id, the secret at least 16 bytes
 * given as hex.
 */
public final class DeviceCredentials {
    private final String serverUrl;
    private final String deviceId;
    private final byte[] secret;

    private DeviceCredentials(String serverUrl, String deviceId, byte[] secret) {
        this.serverUrl = serverUrl;
        this.deviceId = deviceId;
        this.secret = secret;
    }

    /**
     * Parses and validates the three settings.
     *
     * @throws IllegalArgumentException naming the first bad setting
     */
    public static DeviceCredentials parse(String serverUrl, String deviceId, String secretHex) {
        if (serverUrl == null || serverUrl.trim().isEmpty()) {
            throw new IllegalArgumentException("server URL is not set (e.g. http://10.0.2.2:8700 from the emulator)");
        }
        if (deviceId == null || deviceId.trim().isEmpty()) {
            throw new IllegalArgumentException("device id is not set (from `privtune enroll`)");
        }
        if (secretHex == null || secretHex.trim().isEmpty()) {
            throw new IllegalArgumentException("device secret is not set (from `privtune enroll`)");
        }
        byte[] secret;
        try {
            secret = Hex.decode(secretHex.trim().toLowerCase(java.util.Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("device secret must be hex: " + e.getMessage(), e);
        }
        String url = serverUrl.trim();
        String id = deviceId.trim();
        new AggregatorClient(url, id, secret); // validates URL, id and secret length the way the client will
        return new DeviceCredentials(url, id, secret);
    }

    /** Aggregator base URL. */
    public String serverUrl() {
        return serverUrl;
    }

    /** Enrolled device id. */
    public String deviceId() {
        return deviceId;
    }

    /** The shared secret (a copy). */
    public byte[] secret() {
        return secret.clone();
    }
}
