package dev.privtune.demo.settings;

import android.content.Context;
import android.content.SharedPreferences;
import java.io.File;

/**
 * The app's settings in private SharedPreferences: aggregator URL, device id and secret (from
 * {@code privtune enroll}), the bundle folder, background participation and the device's own epsilon
 * cap. The secret is stored as given (app-private storage, not the Android Keystore).
 */
public final class AppSettings {
    /** SharedPreferences file name. */
    public static final String PREFS = "privtune";
    static final String SERVER_URL = "server_url";
    static final String DEVICE_ID = "device_id";
    static final String SECRET_HEX = "secret_hex";
    static final String BUNDLE_DIR = "bundle_dir";
    static final String PARTICIPATE = "participate";
    static final String EPSILON_BUDGET = "device_epsilon_budget";
    static final String DISPLAY_DELTA = "display_delta";
    /** Default folder name under the app's external files dir, where {@code adb push} puts the bundle. */
    public static final String DEFAULT_BUNDLE_FOLDER = "bundle";

    private final SharedPreferences prefs;
    private final File defaultBundleDir;

    private AppSettings(SharedPreferences prefs, File defaultBundleDir) {
        this.prefs = prefs;
        this.defaultBundleDir = defaultBundleDir;
    }

    /** The settings of this app. */
    public static AppSettings of(Context context) {
        File external = context.getExternalFilesDir(null);
        File base = external != null ? external : context.getFilesDir();
        return new AppSettings(context.getSharedPreferences(PREFS, Context.MODE_PRIVATE), new File(base, DEFAULT_BUNDLE_FOLDER));
    }

    /** Aggregator base URL ("" when unset). */
    public String serverUrl() {
        return prefs.getString(SERVER_URL, "");
    }

    /** Enrolled device id ("" when unset). */
    public String deviceId() {
        return prefs.getString(DEVICE_ID, "");
    }

    /** Device secret as hex ("" when unset). */
    public String secretHex() {
        return prefs.getString(SECRET_HEX, "");
    }

    /** The bundle folder (default: {@code <external files>/bundle}). */
    public File bundleDir() {
        String path = prefs.getString(BUNDLE_DIR, "");
        return path.isEmpty() ? defaultBundleDir : new File(path);
    }

    /** Whether background participation is switched on. */
    public boolean participate() {
        return prefs.getBoolean(PARTICIPATE, false);
    }

    /** The device's own epsilon cap (infinity when unset). */
    public double deviceEpsilonBudget() {
        String v = prefs.getString(EPSILON_BUDGET, "");
        return v.isEmpty() ? Double.POSITIVE_INFINITY : Double.parseDouble(v);
    }

    /** The delta at which the privacy screen states epsilon (the last round's local_delta; 1e-5 before any). */
    public double displayDelta() {
        return Double.parseDouble(prefs.getString(DISPLAY_DELTA, "1e-5"));
    }

    /**
     * The validated credentials.
     *
     * @throws IllegalArgumentException naming what is missing or malformed
     */
    public DeviceCredentials credentials() {
        return DeviceCredentials.parse(serverUrl(), deviceId(), secretHex());
    }

    /**
     * Stores the connection settings; blank bundle path means the default folder.
     *
     * @param epsilonBudget "" for no device cap, else a number &gt; 0
     * @throws IllegalArgumentException for a malformed budget (nothing is stored then)
     */
    public void save(String serverUrl, String deviceId, String secretHex, String bundleDir, String epsilonBudget) {
        String budget = epsilonBudget == null ? "" : epsilonBudget.trim();
        if (!budget.isEmpty()) {
            double b;
            try {
                b = Double.parseDouble(budget);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("device epsilon budget must be a number, found '" + budget + "'", e);
            }
            if (!(b > 0) || Double.isInfinite(b)) {
                throw new IllegalArgumentException("device epsilon budget must be a finite number > 0, found " + budget);
            }
        }
        prefs.edit().putString(SERVER_URL, serverUrl.trim()).putString(DEVICE_ID, deviceId.trim())
                .putString(SECRET_HEX, secretHex.trim()).putString(BUNDLE_DIR, bundleDir.trim())
                .putString(EPSILON_BUDGET, budget).commit();
    }

    /** Switches background participation on or off (the caller schedules or cancels the job). */
    public void setParticipate(boolean on) {
        prefs.edit().putBoolean(PARTICIPATE, on).commit();
    }

    /** Remembers the delta of the last round for the privacy screen. */
    public void setDisplayDelta(double delta) {
        prefs.edit().putString(DISPLAY_DELTA, Double.toString(delta)).commit();
    }
}
