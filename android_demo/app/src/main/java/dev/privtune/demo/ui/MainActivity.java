package dev.privtune.demo.ui;

import android.app.Activity;
import android.content.Intent;
import android.os.Bundle;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.TextView;
import dev.privtune.core.device.Classifier;
import dev.privtune.demo.AppServices;
import dev.privtune.demo.runtime.RuntimeLookup;
import java.util.Collections;
import java.util.List;
import java.util.Locale;

/**
 * Type a text, see the safety verdict. Without ONNX Runtime in the build the screen says so and the
 * check button stays disabled: no verdict is ever shown that a model did not compute.
 */
public final class MainActivity extends Activity {
    private EditText input;
    private TextView verdict;
    private Button check;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        LinearLayout column = Views.column(this);
        Views.text(column, "privtune: is this text offensive?", 20);
        RuntimeLookup lookup = AppServices.runtime();
        Views.text(column, lookup.available() ? "Runtime: " + lookup.runtime().description()
                : "Runtime: " + lookup.reason(), 13);
        input = Views.input(column, "Type or paste a text", true);
        check = Views.button(column, "Check text", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                classify();
            }
        });
        check.setEnabled(lookup.available());
        verdict = Views.text(column, lookup.available() ? "" : "No verdict: ONNX Runtime not in this build.", 16);
        Views.button(column, "My examples: learn privately", open(ExamplesActivity.class));
        Views.button(column, "Privacy: steps and local epsilon", open(PrivacyActivity.class));
        Views.button(column, "Settings", open(SettingsActivity.class));
    }

    private View.OnClickListener open(final Class<? extends Activity> screen) {
        return new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                startActivity(new Intent(MainActivity.this, screen));
            }
        };
    }

    private void classify() {
        final String text = input.getText().toString();
        if (text.trim().isEmpty()) {
            verdict.setText("Type a text first.");
            return;
        }
        check.setEnabled(false);
        verdict.setText("Checking...");
        Background.run(this, new Background.Task<String>() {
            @Override
            public String run() throws Exception {
                Classifier classifier = AppServices.classifier(getApplicationContext());
                float[] probs = classifier.classify(Collections.singletonList(text))[0];
                return format(classifier.labels(), probs);
            }
        }, new Background.Done<String>() {
            @Override
            public void ok(String value) {
                verdict.setText(value);
                check.setEnabled(true);
            }

            @Override
            public void failed(Exception error) {
                verdict.setText("Could not classify: " + Background.describe(error));
                check.setEnabled(true);
            }
        });
    }

    /** "Verdict: label (p)" then every label's probability. */
    static String format(List<String> labels, float[] probs) {
        int best = 0;
        for (int i = 1; i < probs.length; i++) {
            if (probs[i] > probs[best]) {
                best = i;
            }
        }
        StringBuilder out = new StringBuilder(String.format(Locale.ROOT, "Verdict: %s (%.2f)", labels.get(best), probs[best]));
        for (int i = 0; i < probs.length; i++) {
            out.append(String.format(Locale.ROOT, "\n  %s: %.3f", labels.get(i), probs[i]));
        }
        return out.toString();
    }
}
