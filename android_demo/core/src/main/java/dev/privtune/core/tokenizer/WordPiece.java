package dev.privtune.core.tokenizer;

/**
 * Greedy longest-match-first WordPiece ({@code tokenizers}' WordPiece model): a word becomes the
 * longest vocabulary prefix, then the longest "##"-prefixed continuation, and so on; a word with a
 * piece that matches nothing, or longer than {@link #MAX_INPUT_CHARS_PER_WORD} code points, becomes
 * one {@code [UNK]}.
 */
public final class WordPiece {
    /** Hugging Face's default for BERT tokenizers (tokenizer.json: max_input_chars_per_word). */
    public static final int MAX_INPUT_CHARS_PER_WORD = 100;
    /** Prefix of a piece that continues a word. */
    public static final String CONTINUING_PREFIX = "##";

    private final Vocabulary vocabulary;
    private final int unkId;

    /** @param unkId id of the unknown token */
    public WordPiece(Vocabulary vocabulary, int unkId) {
        this.vocabulary = vocabulary;
        this.unkId = unkId;
    }

    /** Appends the ids of {@code word} to {@code out}. */
    public void tokenize(String word, IntList out) {
        int chars = word.codePointCount(0, word.length());
        if (chars > MAX_INPUT_CHARS_PER_WORD) {
            out.add(unkId);
            return;
        }
        int mark = out.size();
        int start = 0;
        while (start < word.length()) {
            int end = word.length();
            int found = -1;
            while (start < end) {
                String piece = word.substring(start, end);
                if (start > 0) {
                    piece = CONTINUING_PREFIX + piece;
                }
                found = vocabulary.id(piece);
                if (found >= 0) {
                    break;
                }
                end = word.offsetByCodePoints(end, -1);
            }
            if (found < 0) {
                out.truncate(mark);
                out.add(unkId);
                return;
            }
            out.add(found);
            start = end;
        }
    }
}
