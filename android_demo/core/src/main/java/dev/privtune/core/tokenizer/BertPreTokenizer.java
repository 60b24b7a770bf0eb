package dev.privtune.core.tokenizer;

import java.util.ArrayList;
import java.util.List;

/**
 * Splits normalised text into words like {@code tokenizers}' BertPreTokenizer: whitespace separates
 * words and is dropped; every punctuation character (ASCII punctuation and Unicode P* as the Python
 * library classifies them) becomes a word of its own.
 */
public final class BertPreTokenizer {
    /** The words of {@code normalized}, in order. */
    public List<String> split(String normalized) {
        List<String> words = new ArrayList<String>();
        StringBuilder current = new StringBuilder();
        for (int i = 0; i < normalized.length(); ) {
            int cp = normalized.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == ' ' || BertUnicodeTables.contains(BertUnicodeTables.SPLIT_WHITESPACE, cp)) {
                flush(current, words);
            } else if (BertUnicodeTables.contains(BertUnicodeTables.PUNCTUATION, cp)) {
                flush(current, words);
                words.add(new String(Character.toChars(cp)));
            } else {
                current.appendCodePoint(cp);
            }
        }
        flush(current, words);
        return words;
    }

    private static void flush(StringBuilder current, List<String> words) {
        if (current.length() > 0) {
            words.add(current.toString());
            current.setLength(0);
        }
    }
}
