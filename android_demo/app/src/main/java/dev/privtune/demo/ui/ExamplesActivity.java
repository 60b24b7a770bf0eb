package dev.privtune.demo.ui;

import android.app.Activity;
import android.os.Bundle;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.RadioButton;
import android.widget.RadioGroup;
import android.widget.TextView;
import dev.privtune.demo.AppServices;
import dev.privtune.demo.round.RoundOutcome;
import dev.privtune.demo.runtime.OpenBundle;
import dev.privtune.demo.train.ExampleStore;
import java.io.IOException;
import java.util.List;

/**
 * The user's labelled examples and the "learn from my examples" action: one participation attempt now
 * (check in; if this device is selected, local DP steps on these examples with the round's parameters,
 * then the clipped, noised update is uploaded). The examples never leave the phone.
 */
public final class ExamplesActivity extends Activity {
    private EditText input;
    private RadioGroup labels;
    private TextView list;
    private TextView status;
    private Button learn;
    private ExampleStore store;
    private List<String> labelNames;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        LinearLayout column = Views.column(this);
        Views.text(column, "My examples", 20);
        Views.text(column, "Label a few texts. Learning runs differentially private steps on them on this phone"
                + " with the server's round parameters; only a clipped, noised adapter update is uploaded.", 13);
        input = Views.input(column, "A text you saw", true);
        labels = new RadioGroup(this);
        column.addView(labels);
        Views.button(column, "Add example", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                add();
            }
        });
        learn = Views.button(column, "Learn from my examples now", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                learn();
            }
        });
        learn.setEnabled(AppServices.runtime().available());
        status = Views.text(column, AppServices.runtime().available() ? "" : AppServices.runtime().reason(), 14);
        Views.button(column, "Delete all my examples", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                try {
                    store.clear();
                    refresh();
                } catch (IOException e) {
                    status.setText("Could not delete: " + Background.describe(e));
                }
            }
        });
        list = Views.text(column, "", 13);
        try {
            store = new ExampleStore(AppServices.files(this).examples());
        } catch (IOException e) {
            status.setText(Background.describe(e));
            return;
        }
        loadLabels();
        refresh();
    }

    private void loadLabels() {
        Background.run(this, new Background.Task<List<String>>() {
            @Override
            public List<String> run() throws Exception {
                OpenBundle bundle = AppServices.bundle(getApplicationContext());
                return bundle.manifest().labels();
            }
        }, new Background.Done<List<String>>() {
            @Override
            public void ok(List<String> value) {
                labelNames = value;
                for (int i = 0; i < value.size(); i++) {
                    RadioButton button = new RadioButton(ExamplesActivity.this);
                    button.setId(i + 1);
                    button.setText(value.get(i));
                    labels.addView(button);
                }
                refresh();
            }

            @Override
            public void failed(Exception error) {
                status.setText("Bundle not usable (see Settings): " + Background.describe(error));
            }
        });
    }

    private void add() {
        String text = input.getText().toString();
        int checked = labels.getCheckedRadioButtonId();
        if (labelNames == null) {
            status.setText("The bundle's labels are not loaded yet.");
            return;
        }
        if (text.trim().isEmpty() || checked < 1) {
            status.setText("Type a text and pick its label.");
            return;
        }
        try {
            store.add(text, checked - 1);
            input.setText("");
            refresh();
        } catch (IOException e) {
            status.setText("Could not save: " + Background.describe(e));
        }
    }

    private void learn() {
        learn.setEnabled(false);
        status.setText("Checking in with the server...");
        Background.run(this, new Background.Task<RoundOutcome>() {
            @Override
            public RoundOutcome run() throws Exception {
                return AppServices.participate(getApplicationContext());
            }
        }, new Background.Done<RoundOutcome>() {
            @Override
            public void ok(RoundOutcome value) {
                status.setText(value.summary());
                learn.setEnabled(true);
            }

            @Override
            public void failed(Exception error) {
                status.setText("Learning failed: " + Background.describe(error));
                learn.setEnabled(true);
            }
        });
    }

    private void refresh() {
        List<ExampleStore.Example> all = store.all();
        StringBuilder out = new StringBuilder(all.size() + " example(s) on this phone");
        for (int i = Math.max(0, all.size() - 20); i < all.size(); i++) {
            ExampleStore.Example e = all.get(i);
            String label = labelNames != null && e.label() < labelNames.size() ? labelNames.get(e.label()) : "#" + e.label();
            out.append("\n[").append(label).append("] ").append(e.text());
        }
        list.setText(out.toString());
    }
}
