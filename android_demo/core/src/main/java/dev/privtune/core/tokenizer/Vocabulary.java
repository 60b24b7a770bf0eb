package dev.privtune.core.tokenizer;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

/** A WordPiece vocabulary: {@code vocab.txt}, one token per line, the id is the line number (from 0). */
public final class Vocabulary {
    private final Map<String, Integer> ids;
    private final int size;

    private Vocabulary(Map<String, Integer> ids, int size) {
        this.ids = ids;
        this.size = size;
    }

    /**
     * Reads a UTF-8 {@code vocab.txt} (a repeated token keeps its last line, as in Hugging Face's loader).
     *
     * @throws IOException when the file cannot be read or is not UTF-8
     */
    public static Vocabulary read(File file) throws IOException {
        InputStream in = new FileInputStream(file);
        try {
            return read(in);
        } finally {
            in.close();
        }
    }

    /** Reads a vocabulary from a UTF-8 stream (see {@link #read(File)}); the stream is not closed. */
    public static Vocabulary read(InputStream in) throws IOException {
        BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)));
        Map<String, Integer> ids = new HashMap<String, Integer>(40000);
        int line = 0;
        String token;
        while ((token = reader.readLine()) != null) {
            ids.put(token, Integer.valueOf(line++));
        }
        if (line == 0) {
            throw new IOException("the vocabulary is empty; is this a WordPiece vocab.txt?");
        }
        return new Vocabulary(ids, line);
    }

    /** The id of {@code token}, or -1 if it is not in the vocabulary. */
    public int id(String token) {
        Integer id = ids.get(token);
        return id == null ? -1 : id.intValue();
    }

    /**
     * The id of a token that must exist (special tokens).
     *
     * @throws IllegalArgumentException naming the missing token
     */
    public int requireId(String token) {
        int id = id(token);
        if (id < 0) {
            throw new IllegalArgumentException("token " + token + " is not in the vocabulary; the tokenizer files do not belong together");
        }
        return id;
    }

    /** Number of lines (ids 0 .. size-1). */
    public int size() {
        return size;
    }
}
