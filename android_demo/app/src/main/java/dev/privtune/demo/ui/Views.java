package dev.privtune.demo.ui;

import android.app.Activity;
import android.text.InputType;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;

/** Small helpers to build the screens in code (a vertical, scrolling column of widgets). */
final class Views {
    private Views() {}

    /** A scrolling vertical column set as the activity's content. */
    static LinearLayout column(Activity activity) {
        ScrollView scroll = new ScrollView(activity);
        LinearLayout column = new LinearLayout(activity);
        column.setOrientation(LinearLayout.VERTICAL);
        int pad = (int) (16 * activity.getResources().getDisplayMetrics().density);
        column.setPadding(pad, pad, pad, pad);
        scroll.addView(column);
        activity.setContentView(scroll);
        return column;
    }

    static TextView text(LinearLayout parent, String value, float sizeSp) {
        TextView view = new TextView(parent.getContext());
        view.setText(value);
        view.setTextSize(sizeSp);
        view.setTextIsSelectable(true);
        parent.addView(view);
        return view;
    }

    static EditText input(LinearLayout parent, String hint, boolean multiLine) {
        EditText view = new EditText(parent.getContext());
        view.setHint(hint);
        view.setInputType(multiLine ? InputType.TYPE_CLASS_TEXT | InputType.TYPE_TEXT_FLAG_MULTI_LINE
                : InputType.TYPE_CLASS_TEXT | InputType.TYPE_TEXT_VARIATION_URI);
        parent.addView(view);
        return view;
    }

    static Button button(LinearLayout parent, String label, View.OnClickListener onClick) {
        Button view = new Button(parent.getContext());
        view.setText(label);
        view.setOnClickListener(onClick);
        parent.addView(view);
        return view;
    }
}
