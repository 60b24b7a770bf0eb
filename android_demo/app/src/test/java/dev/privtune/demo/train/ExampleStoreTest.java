package dev.privtune.demo.train;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.util.Arrays;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class ExampleStoreTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    @Test
    public void examplesSurviveAReopen() throws IOException {
        File file = new File(tmp.getRoot(), "examples.json");
        ExampleStore store = new ExampleStore(file);
        store.add("you are wonderful", 0);
        store.add("caf\u00e9 \ud83d\ude00 idiots", 1);
        ExampleStore again = new ExampleStore(file);
        assertEquals(Arrays.asList("you are wonderful", "caf\u00e9 \ud83d\ude00 idiots"), again.texts());
        assertArrayEquals(new int[] {0, 1}, again.labels(2));
        again.clear();
        assertEquals(0, new ExampleStore(file).size());
    }

    @Test
    public void labelsBeyondTheBundlesAreRefused() throws IOException {
        ExampleStore store = new ExampleStore(new File(tmp.getRoot(), "e.json"));
        store.add("text", 2);
        try {
            store.labels(2);
            fail("label 2 of 2 accepted");
        } catch (IllegalArgumentException e) {
            assertEquals("example 0 has label 2 but the bundle has 2 labels", e.getMessage());
        }
    }

    @Test(expected = IOException.class)
    public void aDamagedFileIsNotSilentlyReplaced() throws IOException {
        File file = new File(tmp.getRoot(), "bad.json");
        FileOutputStream out = new FileOutputStream(file);
        out.write("{\"format\": 1".getBytes("UTF-8"));
        out.close();
        new ExampleStore(file);
    }

    @Test(expected = IllegalArgumentException.class)
    public void blankTextsAreRefused() throws IOException {
        new ExampleStore(new File(tmp.getRoot(), "e.json")).add("  \n", 0);
    }
}
