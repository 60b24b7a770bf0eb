package dev.privtune.demo.round;

import dev.privtune.core.device.LocalTrainer;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.SecureRandomBytes;
import dev.privtune.core.net.AggregatorClient;
import dev.privtune.core.net.Outbox;
import dev.privtune.core.net.UploadClient;
import dev.privtune.demo.runtime.OnDeviceRuntime;
import dev.privtune.demo.runtime.OpenBundle;
import dev.privtune.demo.settings.AppFiles;
import dev.privtune.demo.settings.DeviceCredentials;
import dev.privtune.demo.train.ExampleStore;
import java.io.IOException;
import java.util.List;

/**
 * Wires one participation attempt from the app's settings and files: the user-initiated "learn from my
 * examples" action and the background job both call {@link #runOnce}. Attempts are serialised
 * process-wide (one writer per ledger and outbox).
 */
public final class Participation {
    private static final Object LOCK = new Object();

    private Participation() {}

    /**
     * Checks in and, when selected, trains on the stored examples and uploads.
     *
     * @param runtime the on-device runtime (from {@link dev.privtune.demo.runtime.RuntimeLookup})
     * @param deviceEpsilonBudget the device's own epsilon cap (infinity for none)
     * @throws Exception with the failing step's message (network, bundle, training, storage)
     */
    public static RoundOutcome runOnce(final DeviceCredentials credentials, final OpenBundle bundle, final AppFiles files,
            final OnDeviceRuntime runtime, final double deviceEpsilonBudget) throws Exception {
        synchronized (LOCK) {
            final ExampleStore examples = new ExampleStore(files.examples());
            if (examples.size() == 0) {
                throw new IllegalStateException("no labelled examples yet: add a few under 'My examples' first");
            }
            LocalLedger ledger = new LocalLedger(files.ledger());
            AggregatorClient aggregator = new AggregatorClient(credentials.serverUrl(), credentials.deviceId(), credentials.secret());
            UploadClient uploads = new UploadClient(credentials.serverUrl(), credentials.deviceId(), credentials.secret(),
                    new Outbox(files.outbox()));
            TrainerFactory trainers = new TrainerFactory() {
                @Override
                public LocalTrainer open() throws IOException {
                    List<long[]> ids = bundle.tokenizer().encode(examples.texts());
                    int[] labels = examples.labels(bundle.manifest().labels().size());
                    mkdirs(files.work());
                    mkdirs(files.models());
                    return runtime.openTrainer(bundle, ids, labels, files.work(), files.models(), new SecureRandomBytes(),
                            deviceEpsilonBudget);
                }
            };
            RoundRunner runner = new RoundRunner(aggregator, uploads, credentials.deviceId(), bundle, ledger, trainers,
                    deviceEpsilonBudget, RoundRunner.SYSTEM_CLOCK);
            return runner.runOnce();
        }
    }

    private static void mkdirs(java.io.File dir) throws IOException {
        if (!dir.isDirectory() && !dir.mkdirs()) {
            throw new IOException("cannot create " + dir);
        }
    }
}
