package dev.privtune.core.crypto;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class DigestsTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    @Test
    public void sha256FipsVectors() throws Exception {
        assertEquals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Digests.sha256Hex(new byte[0]));
        assertEquals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Digests.sha256Hex("abc"));
        File f = tmp.newFile();
        FileOutputStream out = new FileOutputStream(f);
        out.write("abc".getBytes(StandardCharsets.US_ASCII));
        out.close();
        assertEquals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Digests.sha256Hex(f));
    }

    @Test
    public void hmacSha256Rfc4231() {
        // test case 1: key = 20 x 0x0b, data = "Hi There"
        byte[] key = new byte[20];
        java.util.Arrays.fill(key, (byte) 0x0b);
        assertEquals("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                Digests.hmacSha256Hex(key, "Hi There".getBytes(StandardCharsets.US_ASCII)));
        // test case 2: key = "Jefe"
        assertEquals("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                Digests.hmacSha256Hex("Jefe".getBytes(StandardCharsets.US_ASCII),
                        "what do ya want for nothing?".getBytes(StandardCharsets.US_ASCII)));
    }

    @Test
    public void hexRoundTripAndValidation() {
        byte[] bytes = {0, 1, 127, (byte) 128, (byte) 255};
        assertEquals("00017f80ff", Hex.encode(bytes));
        assertArrayEquals(bytes, Hex.decode("00017F80ff"));
        assertThrows(IllegalArgumentException.class, () -> Hex.decode("abc"));
        assertThrows(IllegalArgumentException.class, () -> Hex.decode("zz"));
        assertTrue(Hex.isLowerHex("00ff", 4, 4));
        assertFalse(Hex.isLowerHex("00FF", 4, 4));
    }

    @Test
    public void constantTimeEquals() {
        assertTrue(Digests.constantTimeEquals("abc", "abc"));
        assertFalse(Digests.constantTimeEquals("abc", "abd"));
        assertFalse(Digests.constantTimeEquals("abc", "ab"));
    }
}
