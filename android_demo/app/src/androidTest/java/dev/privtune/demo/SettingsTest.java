package dev.privtune.demo;

import android.test.AndroidTestCase;
import dev.privtune.demo.settings.AppSettings;
import dev.privtune.demo.settings.DeviceCredentials;

/** Settings round-trip through SharedPreferences and are validated on use. */
public class SettingsTest extends AndroidTestCase {
    public void testSavedSettingsComeBackValidated() {
        AppSettings settings = AppSettings.of(getContext());
        String url = settings.serverUrl();
        String id = settings.deviceId();
        String secret = settings.secretHex();
        String dir = settings.bundleDir().getPath();
        double budget = settings.deviceEpsilonBudget();
        try {
            settings.save("http://10.0.2.2:8700", "test-phone", "00112233445566778899aabbccddeeff", "", "4.5");
            DeviceCredentials c = settings.credentials();
            assertEquals("test-phone", c.deviceId());
            assertEquals(4.5, settings.deviceEpsilonBudget(), 0.0);
            assertTrue(settings.bundleDir().getPath().endsWith(AppSettings.DEFAULT_BUNDLE_FOLDER));
            try {
                settings.save("http://10.0.2.2:8700", "test-phone", "00", "", "-1");
                fail("a negative budget was stored");
            } catch (IllegalArgumentException expected) {
                assertEquals(4.5, settings.deviceEpsilonBudget(), 0.0);
            }
        } finally {
            settings.save(url, id, secret, dir, Double.isInfinite(budget) ? "" : Double.toString(budget));
        }
    }
}
