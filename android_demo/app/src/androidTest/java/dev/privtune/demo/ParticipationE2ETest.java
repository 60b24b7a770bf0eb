package dev.privtune.demo;

import android.os.Bundle;
import android.test.InstrumentationTestCase;
import android.test.InstrumentationTestRunner;
import android.content.Context;
import dev.privtune.core.device.Classifier;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.demo.round.RoundOutcome;
import dev.privtune.demo.settings.AppSettings;
import dev.privtune.demo.train.ExampleStore;
import java.util.Arrays;

/**
 * classify, then train, then upload against a real `privtune serve` on the host. Run by
 * android_demo/emulator/run_emulator_tests.sh with -e server_url/device_id/secret_hex/bundle_dir; it
 * FAILS without them (it never passes without having talked to a server), and needs the ORT flavour.
 */
public class ParticipationE2ETest extends InstrumentationTestCase {
    private String arg(Bundle args, String key) {
        String value = args == null ? null : args.getString(key);
        if (value == null || value.isEmpty()) {
            fail("instrumentation argument '" + key + "' missing: run this test through android_demo/emulator/run_emulator_tests.sh");
        }
        return value;
    }

    public void testClassifyTrainUpload() throws Exception {
        Bundle args = ((InstrumentationTestRunner) getInstrumentation()).getArguments();
        Context context = getInstrumentation().getTargetContext();
        AppSettings settings = AppSettings.of(context);
        settings.save(arg(args, "server_url"), arg(args, "device_id"), arg(args, "secret_hex"), arg(args, "bundle_dir"), "");
        AppServices.reset();
        assertTrue(AppServices.runtime().reason(), AppServices.runtime().available());

        Classifier classifier = AppServices.classifier(context);
        float[][] probs = classifier.classify(Arrays.asList("have a lovely day", "you are an idiot"));
        assertEquals(2, probs.length);
        for (float[] row : probs) {
            float sum = 0;
            for (float p : row) {
                sum += p;
            }
            assertEquals(1.0f, sum, 1e-4f);
        }

        ExampleStore store = new ExampleStore(AppServices.files(context).examples());
        store.clear();
        for (int i = 0; i < 12; i++) {
            store.add(i % 2 == 0 ? "thanks, that was kind of you " + i : "shut up you moron " + i, i % 2);
        }
        int before = new LocalLedger(AppServices.files(context).ledger()).steps().size();
        RoundOutcome outcome = AppServices.participate(context);
        assertEquals(outcome.summary(), RoundOutcome.Kind.UPLOADED, outcome.kind());
        assertNotNull(outcome.receipt());
        assertTrue(outcome.steps() > 0);
        int after = new LocalLedger(AppServices.files(context).ledger()).steps().size();
        assertEquals(before + outcome.steps(), after);
        assertTrue(outcome.localEpsilon() > 0 && !Double.isInfinite(outcome.localEpsilon()));
    }
}
