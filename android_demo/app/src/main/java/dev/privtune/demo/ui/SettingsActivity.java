package dev.privtune.demo.ui;

import android.app.Activity;
import android.app.job.JobInfo;
import android.os.Bundle;
import android.view.View;
import android.widget.CheckBox;
import android.widget.CompoundButton;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.TextView;
import dev.privtune.demo.AppServices;
import dev.privtune.demo.job.JobScheduling;
import dev.privtune.demo.settings.AppSettings;

/**
 * Connection settings (from {@code privtune enroll}), the bundle folder, the device's epsilon cap and
 * background participation (JobScheduler: charging, idle, unmetered network).
 */
public final class SettingsActivity extends Activity {
    private AppSettings settings;
    private EditText url;
    private EditText deviceId;
    private EditText secret;
    private EditText bundleDir;
    private EditText budget;
    private TextView status;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        settings = AppSettings.of(this);
        LinearLayout column = Views.column(this);
        Views.text(column, "Settings", 20);
        Views.text(column, "Aggregator URL (emulator: http://10.0.2.2:8700)", 13);
        url = Views.input(column, "http://10.0.2.2:8700", false);
        url.setText(settings.serverUrl());
        Views.text(column, "Device id and secret (hex), from `privtune enroll`", 13);
        deviceId = Views.input(column, "device id", false);
        deviceId.setText(settings.deviceId());
        secret = Views.input(column, "secret (hex)", false);
        secret.setText(settings.secretHex());
        Views.text(column, "Bundle folder (blank: " + AppSettings.of(this).bundleDir() + ")", 13);
        bundleDir = Views.input(column, "bundle folder", false);
        bundleDir.setText(settings.bundleDir().getPath());
        Views.text(column, "Device epsilon cap (blank: none beyond the round's)", 13);
        budget = Views.input(column, "e.g. 8", false);
        double b = settings.deviceEpsilonBudget();
        budget.setText(Double.isInfinite(b) ? "" : Double.toString(b));
        Views.button(column, "Save", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                save();
            }
        });
        CheckBox participate = new CheckBox(this);
        participate.setText("Take part in the background (only while charging, idle and on Wi-Fi)");
        participate.setChecked(settings.participate());
        participate.setOnCheckedChangeListener(new CompoundButton.OnCheckedChangeListener() {
            @Override
            public void onCheckedChanged(CompoundButton button, boolean on) {
                setParticipation(on);
            }
        });
        column.addView(participate);
        status = Views.text(column, jobState(), 13);
    }

    private void save() {
        try {
            settings.save(url.getText().toString(), deviceId.getText().toString(), secret.getText().toString(),
                    bundleDir.getText().toString(), budget.getText().toString());
            AppServices.reset();
            settings.credentials();
            status.setText("Saved. " + jobState());
        } catch (IllegalArgumentException e) {
            status.setText("Saved, but not usable yet: " + Background.describe(e));
        }
    }

    private void setParticipation(boolean on) {
        try {
            if (on) {
                JobScheduling.schedule(this);
            } else {
                JobScheduling.cancel(this);
            }
            settings.setParticipate(on);
            status.setText(jobState());
        } catch (IllegalStateException e) {
            status.setText(Background.describe(e));
        }
    }

    private String jobState() {
        JobInfo job = JobScheduling.pending(this);
        if (job == null) {
            return "Background participation: off.";
        }
        return "Background participation: scheduled every " + job.getIntervalMillis() / 60000 + " min, requires charging="
                + job.isRequireCharging() + ", idle=" + job.isRequireDeviceIdle() + ", network type=" + job.getNetworkType() + ".";
    }
}
