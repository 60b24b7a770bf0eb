package dev.privtune.demo;

import android.test.AndroidTestCase;
import dev.privtune.demo.runtime.RuntimeLookup;

/** The APK either has a working ONNX Runtime or says it has none; never anything in between. */
public class RuntimeStateTest extends AndroidTestCase {
    public void testRuntimeIsPresentAndLoadsOrReportedAbsent() {
        boolean ortClassesInApk;
        try {
            Class.forName(RuntimeLookup.ORT_RUNTIME_CLASS);
            ortClassesInApk = true;
        } catch (ClassNotFoundException e) {
            ortClassesInApk = false;
        }
        RuntimeLookup lookup = RuntimeLookup.find();
        if (ortClassesInApk) {
            assertTrue("ORT classes are in the APK but failed: " + lookup.reason(), lookup.available());
            assertTrue(lookup.runtime().description(), lookup.runtime().description().startsWith("ONNX Runtime"));
        } else {
            assertFalse(lookup.available());
            assertEquals(RuntimeLookup.NOT_IN_BUILD, lookup.reason());
        }
    }
}
