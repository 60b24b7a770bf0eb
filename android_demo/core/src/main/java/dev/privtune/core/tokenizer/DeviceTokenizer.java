package dev.privtune.core.tokenizer;

import dev.privtune.core.bundle.Bundle;
import dev.privtune.core.bundle.BundleException;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.core.protocol.ArtifactManifest;
import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The phone-side BERT WordPiece tokenizer, giving the same ids as Python's {@code DeviceTokenizer}
 * ({@code tokenizers} with the bundle's tokenizer.json): special tokens written literally in the text
 * ({@code [CLS]}, {@code [MASK]}, ...) are kept whole, the rest is normalised ({@link BertNormalizer}),
 * split ({@link BertPreTokenizer}) and cut into WordPiece ids; the ids are truncated to
 * {@code max_seq_len - 2} and wrapped in [CLS] ... [SEP]. No padding here: {@link #padBatch} pads a
 * batch to its own longest text.
 *
 * <p>Supports the configuration the exporter writes (uncased BERT: lower-casing, accent stripping,
 * CJK splitting); any other tokenizer_config.json is refused rather than tokenised differently.
 */
public final class DeviceTokenizer {
    /** Manifest role of vocab.txt. */
    public static final String VOCAB_ROLE = "tokenizer_vocab";
    /** Manifest role of tokenizer_config.json. */
    public static final String CONFIG_ROLE = "tokenizer_tokenizer_config";

    private final Vocabulary vocabulary;
    private final BertNormalizer normalizer = new BertNormalizer();
    private final BertPreTokenizer preTokenizer = new BertPreTokenizer();
    private final WordPiece wordPiece;
    private final String[] specialTokens;
    private final int[] specialIds;
    private final int clsId;
    private final int sepId;
    private final int padId;
    private final int maxSeqLen;

    /**
     * @param config the parsed tokenizer_config.json
     * @param maxSeqLen the manifest's max_seq_len (>= 2), [CLS] and [SEP] included
     * @throws IllegalArgumentException for an unsupported configuration or special tokens missing from the vocabulary
     */
    public DeviceTokenizer(Vocabulary vocabulary, Map<String, Object> config, int maxSeqLen) {
        if (maxSeqLen < 2) {
            throw new IllegalArgumentException("max_seq_len must be an int >= 2, found " + maxSeqLen);
        }
        requireSetting(config, "do_lower_case", Boolean.TRUE, true);
        requireSetting(config, "tokenize_chinese_chars", Boolean.TRUE, true);
        requireSetting(config, "strip_accents", null, true);
        this.vocabulary = vocabulary;
        this.maxSeqLen = maxSeqLen;
        String[] keys = {"pad_token", "unk_token", "cls_token", "sep_token", "mask_token"};
        List<String> tokens = new ArrayList<String>();
        for (String key : keys) {
            Object token = config.get(key);
            if (!(token instanceof String)) {
                throw new IllegalArgumentException("tokenizer_config.json names no " + key + "; is this a BERT tokenizer?");
            }
            tokens.add((String) token);
        }
        specialTokens = tokens.toArray(new String[0]);
        specialIds = new int[specialTokens.length];
        for (int i = 0; i < specialTokens.length; i++) {
            specialIds[i] = vocabulary.requireId(specialTokens[i]);
        }
        padId = specialIds[0];
        clsId = specialIds[2];
        sepId = specialIds[3];
        wordPiece = new WordPiece(vocabulary, specialIds[1]);
    }

    private static void requireSetting(Map<String, Object> config, String key, Object expected, boolean absentOk) {
        if (!config.containsKey(key) && absentOk) {
            return;
        }
        Object found = config.get(key);
        if (expected == null ? found != null : !expected.equals(found)) {
            throw new IllegalArgumentException("tokenizer_config.json has " + key + "=" + found + "; this tokenizer implements "
                    + key + "=" + expected + " only (uncased BERT, as `privtune export` writes)");
        }
    }

    /** The tokenizer of a bundle whose files were verified ({@link Bundle#verify}). */
    public static DeviceTokenizer fromBundle(File bundleDir, ArtifactManifest manifest) throws BundleException {
        File vocab = Bundle.file(bundleDir, manifest.file(VOCAB_ROLE, "tokenizer"));
        File config = Bundle.file(bundleDir, manifest.file(CONFIG_ROLE, "tokenizer"));
        return fromFiles(vocab, config, manifest.maxSeqLen());
    }

    /** The tokenizer from a vocab.txt and a tokenizer_config.json. */
    public static DeviceTokenizer fromFiles(File vocab, File config, int maxSeqLen) throws BundleException {
        try {
            Map<String, Object> parsed = Json.asObject(Json.parse(AtomicFiles.readAll(config)), config.getName());
            return new DeviceTokenizer(Vocabulary.read(vocab), parsed, maxSeqLen);
        } catch (IOException e) {
            throw new BundleException(vocab + " / " + config + ": cannot be read (" + e.getMessage() + ")", e);
        } catch (IllegalArgumentException e) {
            throw new BundleException(config + ": " + e.getMessage(), e);
        }
    }

    /**
     * Token ids of one text: [CLS] ... [SEP], at most max_seq_len of them.
     *
     * @throws IllegalArgumentException for an empty or whitespace-only text (as Python's check_texts)
     */
    public long[] encode(String text) {
        checkText(text, 0);
        return encodeUnchecked(text);
    }

    /** Token ids of each text (see {@link #encode}). */
    public List<long[]> encode(List<String> texts) {
        if (texts.isEmpty()) {
            throw new IllegalArgumentException("texts is empty; give at least one text");
        }
        for (int i = 0; i < texts.size(); i++) {
            checkText(texts.get(i), i);
        }
        List<long[]> out = new ArrayList<long[]>(texts.size());
        for (String text : texts) {
            out.add(encodeUnchecked(text));
        }
        return out;
    }

    /** Token ids without the non-empty check (any string, e.g. for golden comparisons). */
    public long[] encodeUnchecked(String text) {
        IntList ids = new IntList();
        int start = 0;
        while (start <= text.length()) {
            int[] match = nextSpecial(text, start);
            int end = match == null ? text.length() : match[0];
            if (end > start) {
                for (String word : preTokenizer.split(normalizer.normalize(text.substring(start, end)))) {
                    wordPiece.tokenize(word, ids);
                }
            }
            if (match == null) {
                break;
            }
            ids.add(specialIds[match[1]]);
            start = end + specialTokens[match[1]].length();
        }
        int body = Math.min(ids.size(), maxSeqLen - 2);
        long[] out = new long[body + 2];
        out[0] = clsId;
        for (int i = 0; i < body; i++) {
            out[i + 1] = ids.get(i);
        }
        out[body + 1] = sepId;
        return out;
    }

    /** The leftmost (then longest) special token at or after {@code from}: {index, which}, or null. */
    private int[] nextSpecial(String text, int from) {
        int bestAt = -1;
        int best = -1;
        for (int i = 0; i < specialTokens.length; i++) {
            int at = text.indexOf(specialTokens[i], from);
            if (at >= 0 && (bestAt < 0 || at < bestAt
                    || (at == bestAt && specialTokens[i].length() > specialTokens[best].length()))) {
                bestAt = at;
                best = i;
            }
        }
        return best < 0 ? null : new int[] {bestAt, best};
    }

    /**
     * Right-pads to the batch's longest sequence: {input_ids, attention_mask}, each [B][T].
     *
     * @throws IllegalArgumentException for an empty batch or only empty sequences
     */
    public long[][][] padBatch(List<long[]> ids) {
        if (ids.isEmpty()) {
            throw new IllegalArgumentException("pad_batch needs at least one sequence");
        }
        int longest = 0;
        for (long[] row : ids) {
            longest = Math.max(longest, row.length);
        }
        if (longest == 0) {
            throw new IllegalArgumentException("pad_batch got only empty sequences");
        }
        long[][] inputIds = new long[ids.size()][longest];
        long[][] mask = new long[ids.size()][longest];
        for (int b = 0; b < ids.size(); b++) {
            long[] row = ids.get(b);
            for (int t = 0; t < longest; t++) {
                inputIds[b][t] = t < row.length ? row[t] : padId;
                mask[b][t] = t < row.length ? 1 : 0;
            }
        }
        return new long[][][] {inputIds, mask};
    }

    /** The padding id. */
    public int padId() {
        return padId;
    }

    /** Token limit, [CLS] and [SEP] included. */
    public int maxSeqLen() {
        return maxSeqLen;
    }

    /** The vocabulary. */
    public Vocabulary vocabulary() {
        return vocabulary;
    }

    /** Python's check_texts for one text: at least one character that Python's str.strip() keeps. */
    static void checkText(String text, int index) {
        if (text == null) {
            throw new IllegalArgumentException("text " + index + " must be a string, found null");
        }
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            if (!isPythonSpace(cp)) {
                return;
            }
            i += Character.charCount(cp);
        }
        throw new IllegalArgumentException("text " + index + " is empty or whitespace-only; the classifier needs at least one character");
    }

    /** Python's str.isspace for one code point (White_Space plus the separators U+001C-U+001F). */
    static boolean isPythonSpace(int cp) {
        if ((cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680
                || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000) {
            return true;
        }
        return false;
    }
}
