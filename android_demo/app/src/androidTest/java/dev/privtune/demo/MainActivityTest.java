package dev.privtune.demo;

import android.test.ActivityInstrumentationTestCase2;
import android.view.View;
import android.view.ViewGroup;
import android.widget.Button;
import android.widget.TextView;
import dev.privtune.demo.runtime.RuntimeLookup;
import dev.privtune.demo.ui.MainActivity;

/** The main screen starts; without ORT it shows the absence and offers no check button. */
public class MainActivityTest extends ActivityInstrumentationTestCase2<MainActivity> {
    public MainActivityTest() {
        super(MainActivity.class);
    }

    public void testScreenReflectsTheRuntime() {
        MainActivity activity = getActivity();
        View root = activity.getWindow().getDecorView();
        Button check = find(root, Button.class, "Check text");
        assertNotNull("no 'Check text' button", check);
        boolean available = AppServices.runtime().available();
        assertEquals(available, check.isEnabled());
        if (!available) {
            assertNotNull("the screen does not say ONNX Runtime is absent",
                    find(root, TextView.class, "No verdict: ONNX Runtime not in this build."));
            assertEquals(RuntimeLookup.NOT_IN_BUILD, AppServices.runtime().reason());
        }
    }

    private static <T extends TextView> T find(View view, Class<T> type, String text) {
        if (type.isInstance(view) && text.contentEquals(((TextView) view).getText())) {
            return type.cast(view);
        }
        if (view instanceof ViewGroup) {
            ViewGroup group = (ViewGroup) view;
            for (int i = 0; i < group.getChildCount(); i++) {
                T hit = find(group.getChildAt(i), type, text);
                if (hit != null) {
                    return hit;
                }
            }
        }
        return null;
    }
}
