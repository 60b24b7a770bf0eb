package dev.privtune.demo.ui;

import android.app.Activity;
import android.os.Bundle;
import android.widget.LinearLayout;
import android.widget.TextView;
import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.demo.AppServices;
import dev.privtune.demo.privacy.PrivacyReport;
import dev.privtune.demo.settings.AppSettings;
import java.util.List;

/** The device's local privacy spend: the ledger's steps and the epsilon they add up to. */
public final class PrivacyActivity extends Activity {
    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        LinearLayout column = Views.column(this);
        Views.text(column, "Local privacy", 20);
        final TextView body = Views.text(column, "Reading the ledger...", 14);
        final AppSettings settings = AppSettings.of(this);
        Background.run(this, new Background.Task<String>() {
            @Override
            public String run() throws Exception {
                LocalLedger ledger = new LocalLedger(AppServices.files(getApplicationContext()).ledger());
                List<LedgerStep> steps = ledger.steps();
                return PrivacyReport.text(steps, settings.displayDelta(), settings.deviceEpsilonBudget())
                        + "\n\nLedger file: " + ledger.file();
            }
        }, new Background.Done<String>() {
            @Override
            public void ok(String value) {
                body.setText(value);
            }

            @Override
            public void failed(Exception error) {
                body.setText("Cannot read the privacy ledger: " + Background.describe(error));
            }
        });
    }
}
