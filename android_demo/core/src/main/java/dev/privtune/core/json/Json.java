package dev.privtune.core.json;

import java.math.BigInteger;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A strict JSON reader that keeps what Python's {@code json.loads} keeps.
 *
 * <p>Objects become {@link LinkedHashMap} (document order; a repeated key keeps its last value, as
 * in Python), arrays {@link ArrayList}, strings {@link String}, {@code true/false} {@link Boolean},
 * {@code null} Java {@code null}. Numbers keep Python's int/float distinction, which the canonical
 * JSON of the protocol depends on: a number without fraction or exponent is a {@link Long} (or a
 * {@link BigInteger} when it does not fit), any other number a {@link Double}. {@code NaN} and
 * {@code Infinity} are refused (the protocol refuses them too); a literal too large for a double
 * becomes an infinite Double, as in Python, and the protocol's range checks reject it.
 */
public final class Json {
    private static final int MAX_DEPTH = 512;

    private final String text;
    private int pos;
    private int depth;

    private Json(String text) {
        this.text = text;
    }

    /**
     * Parses one JSON document (surrounding whitespace allowed).
     *
     * @throws JsonException naming the offset of the first problem
     */
    public static Object parse(String text) {
        if (text == null) {
            throw new JsonException("JSON text is null");
        }
        Json reader = new Json(text);
        reader.skipWhitespace();
        Object value = reader.readValue();
        reader.skipWhitespace();
        if (reader.pos != text.length()) {
            throw reader.error("extra data after the JSON value");
        }
        return value;
    }

    /**
     * Parses UTF-8 bytes (a leading byte-order mark is refused, as Python's json.loads does for str).
     *
     * @throws JsonException when the bytes are not valid UTF-8 or not JSON
     */
    public static Object parse(byte[] utf8) {
        return parse(decodeUtf8(utf8));
    }

    /** Strict UTF-8 decoding (malformed input is an error, never replaced). */
    public static String decodeUtf8(byte[] utf8) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(utf8))
                    .toString();
        } catch (CharacterCodingException e) {
            throw new JsonException("not valid UTF-8: " + e);
        }
    }

    /** The value as a JSON object, or a {@link JsonException} naming {@code what}. */
    @SuppressWarnings("unchecked")
    public static Map<String, Object> asObject(Object value, String what) {
        if (!(value instanceof Map)) {
            throw new JsonException(what + " must be a JSON object, found " + typeName(value));
        }
        return (Map<String, Object>) value;
    }

    /** The value as a JSON array, or a {@link JsonException} naming {@code what}. */
    @SuppressWarnings("unchecked")
    public static List<Object> asArray(Object value, String what) {
        if (!(value instanceof List)) {
            throw new JsonException(what + " must be a JSON array, found " + typeName(value));
        }
        return (List<Object>) value;
    }

    /** A short name of the JSON type of {@code value} for error messages. */
    public static String typeName(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof Map) {
            return "object";
        }
        if (value instanceof List) {
            return "array";
        }
        if (value instanceof String) {
            return "string";
        }
        if (value instanceof Boolean) {
            return "boolean";
        }
        if (value instanceof Double) {
            return "float";
        }
        if (value instanceof Long || value instanceof BigInteger) {
            return "int";
        }
        return value.getClass().getSimpleName();
    }

    private JsonException error(String message) {
        return new JsonException("invalid JSON at offset " + pos + ": " + message);
    }

    private void skipWhitespace() {
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
                pos++;
            } else {
                return;
            }
        }
    }

    private Object readValue() {
        if (pos >= text.length()) {
            throw error("expected a value, found the end of the text");
        }
        char c = text.charAt(pos);
        switch (c) {
            case '{':
                return readObject();
            case '[':
                return readArray();
            case '"':
                return readString();
            case 't':
                return readLiteral("true", Boolean.TRUE);
            case 'f':
                return readLiteral("false", Boolean.FALSE);
            case 'n':
                return readLiteral("null", null);
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    return readNumber();
                }
                throw error("unexpected character '" + c + "' (NaN and Infinity are not accepted)");
        }
    }

    private Object readLiteral(String word, Object value) {
        if (!text.startsWith(word, pos)) {
            throw error("expected '" + word + "'");
        }
        pos += word.length();
        return value;
    }

    private void enter() {
        if (++depth > MAX_DEPTH) {
            throw error("nested deeper than " + MAX_DEPTH + " levels");
        }
    }

    private Map<String, Object> readObject() {
        enter();
        pos++; // '{'
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        skipWhitespace();
        if (pos < text.length() && text.charAt(pos) == '}') {
            pos++;
            depth--;
            return out;
        }
        while (true) {
            skipWhitespace();
            if (pos >= text.length() || text.charAt(pos) != '"') {
                throw error("expected a string key");
            }
            String key = readString();
            skipWhitespace();
            expect(':');
            skipWhitespace();
            Object value = readValue();
            out.remove(key); // Python keeps the last value and its position
            out.put(key, value);
            skipWhitespace();
            if (pos < text.length() && text.charAt(pos) == ',') {
                pos++;
                continue;
            }
            expect('}');
            depth--;
            return out;
        }
    }

    private List<Object> readArray() {
        enter();
        pos++; // '['
        List<Object> out = new ArrayList<Object>();
        skipWhitespace();
        if (pos < text.length() && text.charAt(pos) == ']') {
            pos++;
            depth--;
            return out;
        }
        while (true) {
            skipWhitespace();
            out.add(readValue());
            skipWhitespace();
            if (pos < text.length() && text.charAt(pos) == ',') {
                pos++;
                continue;
            }
            expect(']');
            depth--;
            return out;
        }
    }

    private void expect(char c) {
        if (pos >= text.length() || text.charAt(pos) != c) {
            throw error("expected '" + c + "'");
        }
        pos++;
    }

    private String readString() {
        pos++; // opening quote
        StringBuilder out = new StringBuilder();
        while (true) {
            if (pos >= text.length()) {
                throw error("unterminated string");
            }
            char c = text.charAt(pos++);
            if (c == '"') {
                return out.toString();
            }
            if (c < 0x20) {
                throw error("control character U+" + hex4(c) + " inside a string");
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            if (pos >= text.length()) {
                throw error("unterminated escape");
            }
            char e = text.charAt(pos++);
            switch (e) {
                case '"':
                    out.append('"');
                    break;
                case '\\':
                    out.append('\\');
                    break;
                case '/':
                    out.append('/');
                    break;
                case 'b':
                    out.append('\b');
                    break;
                case 'f':
                    out.append('\f');
                    break;
                case 'n':
                    out.append('\n');
                    break;
                case 'r':
                    out.append('\r');
                    break;
                case 't':
                    out.append('\t');
                    break;
                case 'u':
                    out.append(readHex4());
                    break;
                default:
                    throw error("invalid escape '\\" + e + "'");
            }
        }
    }

    private char readHex4() {
        if (pos + 4 > text.length()) {
            throw error("truncated \\u escape");
        }
        int value = 0;
        for (int i = 0; i < 4; i++) {
            char h = text.charAt(pos + i);
            int digit = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (digit < 0) {
                throw error("invalid \\u escape");
            }
            value = value * 16 + digit;
        }
        pos += 4;
        return (char) value;
    }

    private static String hex4(int c) {
        String h = Integer.toHexString(c);
        return "0000".substring(h.length()) + h;
    }

    private Object readNumber() {
        int start = pos;
        if (text.charAt(pos) == '-') {
            pos++;
        }
        if (pos >= text.length() || !isDigit(text.charAt(pos))) {
            throw error("expected a digit");
        }
        if (text.charAt(pos) == '0') {
            pos++;
        } else {
            while (pos < text.length() && isDigit(text.charAt(pos))) {
                pos++;
            }
        }
        boolean isFloat = false;
        if (pos < text.length() && text.charAt(pos) == '.' && pos + 1 < text.length() && isDigit(text.charAt(pos + 1))) {
            isFloat = true;
            pos++;
            while (pos < text.length() && isDigit(text.charAt(pos))) {
                pos++;
            }
        }
        if (pos < text.length() && (text.charAt(pos) == 'e' || text.charAt(pos) == 'E')) {
            int mark = pos;
            pos++;
            if (pos < text.length() && (text.charAt(pos) == '+' || text.charAt(pos) == '-')) {
                pos++;
            }
            if (pos < text.length() && isDigit(text.charAt(pos))) {
                isFloat = true;
                while (pos < text.length() && isDigit(text.charAt(pos))) {
                    pos++;
                }
            } else {
                pos = mark; // like Python: "1e" is the number 1 followed by junk
            }
        }
        String token = text.substring(start, pos);
        if (isFloat) {
            return Double.valueOf(Double.parseDouble(token));
        }
        BigInteger big = new BigInteger(token);
        return big.bitLength() < 64 ? (Object) Long.valueOf(big.longValue()) : big;
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }
}
