package dev.privtune.core.dp;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.io.AtomicFiles;
import java.io.File;
import java.nio.charset.StandardCharsets;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class LocalLedgerTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    @Test
    public void stepsAreRecordedOnceAndSurviveAReopen() throws Exception {
        File file = new File(tmp.getRoot(), "state/ledger.json");
        LocalLedger ledger = new LocalLedger(file);
        assertTrue(ledger.recordStep(0, 0, 0.25, 1.1));
        assertTrue(ledger.recordStep(0, 1, 0.25, 1.1));
        assertFalse(ledger.recordStep(0, 1, 0.25, 1.1));
        assertThrows(IllegalArgumentException.class, () -> ledger.recordStep(0, 1, 0.5, 1.1));
        LocalLedger reopened = new LocalLedger(file);
        assertEquals(ledger.steps(), reopened.steps());
        assertEquals(2, reopened.steps().size());
        // Python's json.dumps(indent=1): floats as repr, one space per level
        String text = new String(AtomicFiles.readAll(file), StandardCharsets.UTF_8);
        assertTrue(text, text.startsWith("{\n \"format\": \"privtune-local-privacy-ledger\",\n \"version\": 1,"));
        assertTrue(text, text.contains("  {\n   \"round_id\": 0,\n   \"step\": 1,\n   \"sampling_rate\": 0.25,\n   \"noise_multiplier\": 1.1\n  }"));
    }

    @Test
    public void anUnreadableLedgerIsNeverReset() throws Exception {
        File file = tmp.newFile("ledger.json");
        AtomicFiles.write(file, "{\"format\": \"something-else\"}".getBytes(StandardCharsets.UTF_8));
        assertThrows(LocalLedger.LedgerCorruptedException.class, () -> new LocalLedger(file));
        AtomicFiles.write(file, "not json".getBytes(StandardCharsets.UTF_8));
        assertThrows(LocalLedger.LedgerCorruptedException.class, () -> new LocalLedger(file));
    }

    @Test
    public void invalidStepsAreRefused() throws Exception {
        LocalLedger ledger = new LocalLedger(new File(tmp.getRoot(), "l.json"));
        assertThrows(IllegalArgumentException.class, () -> ledger.recordStep(0, 0, 0.0, 1.0));
        assertThrows(IllegalArgumentException.class, () -> ledger.recordStep(0, 0, 1.5, 1.0));
        assertThrows(IllegalArgumentException.class, () -> ledger.recordStep(-1, 0, 0.5, 1.0));
        assertThrows(IllegalArgumentException.class, () -> ledger.recordStep(0, 0, 0.5, Double.NaN));
        assertFalse(new File(tmp.getRoot(), "l.json").exists());
    }
}
