package dev.privtune.demo.runtime;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.privtune.core.device.Classifier;
import dev.privtune.core.device.LocalTrainer;
import dev.privtune.core.dp.RandomBytes;
import java.io.File;
import java.util.List;
import org.junit.Test;

public class RuntimeLookupTest {
    /** TEST DOUBLE: a runtime class the lookup can find (it can do nothing). */
    public static final class Findable implements OnDeviceRuntime {
        @Override
        public String description() {
            return "test runtime";
        }

        @Override
        public Classifier openClassifier(OpenBundle bundle, File modelDir) {
            throw new UnsupportedOperationException();
        }

        @Override
        public LocalTrainer openTrainer(OpenBundle bundle, List<long[]> examples, int[] labels, File workDir, File modelDir,
                RandomBytes random, double deviceEpsilonBudget) {
            throw new UnsupportedOperationException();
        }
    }

    @Test
    public void withoutTheOrtClassesTheLookupSaysSoAndOffersNothing() {
        RuntimeLookup lookup = RuntimeLookup.find();
        assertFalse("this JVM test classpath has no ORT classes", lookup.available());
        assertEquals(RuntimeLookup.NOT_IN_BUILD, lookup.reason());
        assertTrue(lookup.reason().startsWith("ONNX Runtime is not in this build"));
        try {
            lookup.runtime();
            fail("a missing runtime was handed out");
        } catch (IllegalStateException e) {
            assertEquals(RuntimeLookup.NOT_IN_BUILD, e.getMessage());
        }
    }

    @Test
    public void aPresentRuntimeClassIsFound() {
        RuntimeLookup lookup = RuntimeLookup.find(Findable.class.getName());
        assertTrue(lookup.available());
        assertEquals("test runtime", lookup.runtime().description());
    }

    @Test
    public void aClassOfTheWrongTypeIsNotAccepted() {
        RuntimeLookup lookup = RuntimeLookup.find(String.class.getName());
        assertFalse(lookup.available());
        assertTrue(lookup.reason().contains("does not implement OnDeviceRuntime"));
    }
}
