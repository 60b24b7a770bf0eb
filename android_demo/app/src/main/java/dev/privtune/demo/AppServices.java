package dev.privtune.demo;

import android.content.Context;
import dev.privtune.core.bundle.BundleException;
import dev.privtune.core.device.Classifier;
import dev.privtune.demo.round.Participation;
import dev.privtune.demo.round.RoundOutcome;
import dev.privtune.demo.runtime.OpenBundle;
import dev.privtune.demo.runtime.RuntimeLookup;
import dev.privtune.demo.settings.AppFiles;
import dev.privtune.demo.settings.AppSettings;
import java.io.File;
import java.io.IOException;

/**
 * Process-wide objects the screens and the background job share: the verified bundle (hashing every
 * file takes seconds, so it is done once per folder per process), the runtime lookup and the
 * classifier. Every method that may block must be called off the UI thread.
 */
public final class AppServices {
    private static RuntimeLookup runtime;
    private static OpenBundle bundle;
    private static File bundleDirOpened;
    private static Classifier classifier;

    private AppServices() {}

    /** The ONNX Runtime lookup (cached). */
    public static synchronized RuntimeLookup runtime() {
        if (runtime == null) {
            runtime = RuntimeLookup.find();
        }
        return runtime;
    }

    /** The app's state files. */
    public static AppFiles files(Context context) {
        return new AppFiles(context.getFilesDir());
    }

    /**
     * The bundle of the configured folder, verified once per process (blocking).
     *
     * @throws BundleException naming a missing or damaged file
     */
    public static synchronized OpenBundle bundle(Context context) throws BundleException {
        File dir = AppSettings.of(context).bundleDir();
        if (bundle == null || !dir.equals(bundleDirOpened)) {
            classifier = null;
            bundle = OpenBundle.verify(dir);
            bundleDirOpened = dir;
        }
        return bundle;
    }

    /**
     * The classifier (blocking on first use).
     *
     * @throws IllegalStateException when this build has no runtime
     */
    public static synchronized Classifier classifier(Context context) throws IOException, BundleException {
        OpenBundle b = bundle(context);
        if (classifier == null) {
            classifier = runtime().runtime().openClassifier(b, files(context).models());
        }
        return classifier;
    }

    /**
     * One participation attempt with the current settings (blocking); the classifier is reopened
     * afterwards so it picks up a newly exported global model.
     */
    public static RoundOutcome participate(Context context) throws Exception {
        AppSettings settings = AppSettings.of(context);
        OpenBundle b = bundle(context);
        RoundOutcome outcome = Participation.runOnce(settings.credentials(), b, files(context), runtime().runtime(),
                settings.deviceEpsilonBudget());
        if (outcome.kind() == RoundOutcome.Kind.UPLOADED) {
            settings.setDisplayDelta(outcome.localDelta());
        }
        synchronized (AppServices.class) {
            classifier = null;
        }
        return outcome;
    }

    /** Forgets the cached bundle and classifier (after the settings change). */
    public static synchronized void reset() {
        bundle = null;
        bundleDirOpened = null;
        classifier = null;
    }
}
