package dev.privtune.demo.settings;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.junit.Test;

public class DeviceCredentialsTest {
    static final String SECRET = "00112233445566778899aabbccddeeff";

    @Test
    public void goodSettingsParse() {
        DeviceCredentials c = DeviceCredentials.parse(" http://10.0.2.2:8700/ ", "phone-1", SECRET.toUpperCase());
        assertEquals("http://10.0.2.2:8700/", c.serverUrl());
        assertEquals("phone-1", c.deviceId());
        assertEquals(16, c.secret().length);
    }

    @Test
    public void eachBadSettingIsNamed() {
        expect("", "phone-1", SECRET, "server URL is not set");
        expect("ftp://x", "phone-1", SECRET, "http(s) URL");
        expect("http://h:1", "", SECRET, "device id is not set");
        expect("http://h:1", "bad id!", SECRET, "device");
        expect("http://h:1", "phone-1", "zz", "hex");
        expect("http://h:1", "phone-1", "0011", "16");
    }

    private static void expect(String url, String id, String secret, String fragment) {
        try {
            DeviceCredentials.parse(url, id, secret);
            fail("accepted " + url + " / " + id + " / " + secret);
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage() + " lacks " + fragment, e.getMessage().contains(fragment));
        }
    }
}
