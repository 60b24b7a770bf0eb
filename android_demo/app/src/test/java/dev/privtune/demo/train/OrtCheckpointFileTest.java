package dev.privtune.demo.train;

import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** Refusals; reading and patching real ORT 1.19.2 checkpoints is checked against Python in tests/e2e/test_android_apk.py. */
public class OrtCheckpointFileTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    private File write(byte[] data) throws IOException {
        File f = tmp.newFile();
        FileOutputStream out = new FileOutputStream(f);
        out.write(data);
        out.close();
        return f;
    }

    @Test
    public void aFileThatIsNotAnOrtCheckpointIsRefused() throws IOException {
        byte[] data = new byte[64];
        data[4] = 'O';
        data[5] = 'N';
        data[6] = 'N';
        data[7] = 'X';
        try {
            OrtCheckpointFile.open(write(data), false);
            fail("accepted a non-checkpoint");
        } catch (IOException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("not an ONNX Runtime training checkpoint"));
        }
    }

    @Test
    public void offsetsOutsideTheFileAreReportedAsDamage() throws IOException {
        byte[] data = new byte[32];
        data[0] = (byte) 0xf0; // root table offset beyond the end
        data[4] = 'O';
        data[5] = 'D';
        data[6] = 'T';
        data[7] = 'C';
        try {
            OrtCheckpointFile.open(write(data), false);
            fail("accepted a damaged checkpoint");
        } catch (IOException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("damaged"));
        }
    }
}
