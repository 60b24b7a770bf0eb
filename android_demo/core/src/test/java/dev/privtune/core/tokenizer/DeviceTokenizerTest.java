package dev.privtune.core.tokenizer;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Hand-made vocabulary; expected ids follow from BERT WordPiece rules (the real vocabulary is checked by the golden tests). */
public class DeviceTokenizerTest {
    private static final String[] VOCAB = {
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "!", "un", "##aff", "##able", "cafe", "\u6211", "\u7231",
        "a", "##b", ",", "\u03c3", "naive", "##s",
    };

    private static Vocabulary vocab() throws Exception {
        StringBuilder text = new StringBuilder();
        for (String token : VOCAB) {
            text.append(token).append('\n');
        }
        return Vocabulary.read(new ByteArrayInputStream(text.toString().getBytes(StandardCharsets.UTF_8)));
    }

    private static Map<String, Object> config() {
        Map<String, Object> c = new LinkedHashMap<String, Object>();
        c.put("do_lower_case", Boolean.TRUE);
        c.put("tokenize_chinese_chars", Boolean.TRUE);
        c.put("strip_accents", null);
        c.put("pad_token", "[PAD]");
        c.put("unk_token", "[UNK]");
        c.put("cls_token", "[CLS]");
        c.put("sep_token", "[SEP]");
        c.put("mask_token", "[MASK]");
        return c;
    }

    private static DeviceTokenizer tokenizer(int maxSeqLen) throws Exception {
        return new DeviceTokenizer(vocab(), config(), maxSeqLen);
    }

    private static long[] ids(long... ids) {
        return ids;
    }

    @Test
    public void punctuationSplitsAndLowercases() throws Exception {
        assertArrayEquals(ids(2, 5, 16, 6, 7, 3), tokenizer(128).encode("Hello, World!"));
    }

    @Test
    public void greedyLongestMatchWordPiece() throws Exception {
        assertArrayEquals(ids(2, 8, 9, 10, 3), tokenizer(128).encode("unaffable"));
        assertArrayEquals(ids(2, 18, 19, 3), tokenizer(128).encode("NA\u00cfVES"));
    }

    @Test
    public void accentsAreStrippedAndCjkIsSplit() throws Exception {
        assertArrayEquals(ids(2, 11, 3), tokenizer(128).encode("Caf\u00e9"));
        assertArrayEquals(ids(2, 11, 3), tokenizer(128).encode("Cafe\u0301"));
        assertArrayEquals(ids(2, 12, 13, 3), tokenizer(128).encode("\u6211\u7231"));
    }

    @Test
    public void capitalSigmaLowercasesPerCodePointWithoutFinalForm() throws Exception {
        assertArrayEquals(ids(2, 17, 3), tokenizer(128).encode("\u03a3"));
        assertArrayEquals(ids(2, 5, 17, 3), tokenizer(128).encode("hello \u03a3"));
    }

    @Test
    public void controlAndFormatCharactersVanishAndWhitespaceSplits() throws Exception {
        // NUL and U+200B are dropped, so "hello" and "world" merge into one word that has no "##world" piece
        assertArrayEquals(ids(2, 1, 3), tokenizer(128).encode("hello\u0000\u200bworld"));
        assertArrayEquals(ids(2, 5, 6, 7, 3), tokenizer(128).encode("hello\tworld\u00a0!"));
    }

    @Test
    public void specialTokensWrittenInTheTextStayWhole() throws Exception {
        assertArrayEquals(ids(2, 5, 4, 6, 3), tokenizer(128).encode("hello [MASK] world"));
        assertArrayEquals(ids(2, 5, 4, 6, 3), tokenizer(128).encode("hello[MASK]world"));
        // lower-case [mask] is ordinary text: "[", "mask", "]" are unknown words
        assertArrayEquals(ids(2, 1, 1, 1, 3), tokenizer(128).encode("[mask]"));
    }

    @Test
    public void wordsOverOneHundredCodePointsAreUnknown() throws Exception {
        StringBuilder word = new StringBuilder("a");
        for (int i = 0; i < 99; i++) {
            word.append('b');
        }
        long[] hundred = tokenizer(128).encode(word.toString());
        assertEquals(102, hundred.length);
        assertEquals(14, hundred[1]);
        assertEquals(15, hundred[100]);
        assertArrayEquals(ids(2, 1, 3), tokenizer(128).encode(word + "b"));
    }

    @Test
    public void truncatesToMaxSeqLenKeepingClsAndSep() throws Exception {
        StringBuilder text = new StringBuilder();
        for (int i = 0; i < 10; i++) {
            text.append("hello ");
        }
        assertArrayEquals(ids(2, 5, 5, 5, 5, 5, 5, 3), tokenizer(8).encode(text.toString()));
    }

    @Test
    public void blankTextsAreRefusedLikePythonCheckTexts() throws Exception {
        DeviceTokenizer tokenizer = tokenizer(128);
        for (String blank : Arrays.asList("", "   ", "\u3000\n\t", "\u001c\u001f")) {
            assertThrows(IllegalArgumentException.class, () -> tokenizer.encode(blank));
        }
        assertThrows(IllegalArgumentException.class, () -> tokenizer.encode(Arrays.<String>asList()));
    }

    @Test
    public void padBatchRightPadsToTheLongest() throws Exception {
        DeviceTokenizer tokenizer = tokenizer(128);
        List<long[]> batch = tokenizer.encode(Arrays.asList("hello", "hello world !"));
        long[][][] padded = tokenizer.padBatch(batch);
        assertArrayEquals(ids(2, 5, 3, 0, 0), padded[0][0]);
        assertArrayEquals(ids(1, 1, 1, 0, 0), padded[1][0]);
        assertArrayEquals(ids(2, 5, 6, 7, 3), padded[0][1]);
        assertArrayEquals(ids(1, 1, 1, 1, 1), padded[1][1]);
    }

    @Test
    public void unsupportedConfigurationsAreRefused() throws Exception {
        Map<String, Object> cased = config();
        cased.put("do_lower_case", Boolean.FALSE);
        assertThrows(IllegalArgumentException.class, () -> new DeviceTokenizer(vocab(), cased, 128));
        Map<String, Object> noUnk = config();
        noUnk.remove("unk_token");
        assertThrows(IllegalArgumentException.class, () -> new DeviceTokenizer(vocab(), noUnk, 128));
        Map<String, Object> foreign = config();
        foreign.put("mask_token", "<mask>");
        assertThrows(IllegalArgumentException.class, () -> new DeviceTokenizer(vocab(), foreign, 128));
        assertThrows(IllegalArgumentException.class, () -> new DeviceTokenizer(vocab(), config(), 1));
    }
}
