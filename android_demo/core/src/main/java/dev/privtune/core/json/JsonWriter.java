package dev.privtune.core.json;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * Writes JSON exactly as Python's {@code json.dumps} does, in the two forms the protocol uses.
 *
 * <ul>
 *   <li>{@link #canonical}: {@code json.dumps(v, sort_keys=True, separators=(",", ":"),
 *       allow_nan=False, ensure_ascii=False)} — privtune's {@code canonical_json}, the form that is
 *       hashed and signed (manifest hash, update metadata).
 *   <li>{@link #indented}: {@code json.dumps(v, indent=n, allow_nan=False)} (keys in map order,
 *       ASCII only) — the local privacy ledger's file format.
 * </ul>
 *
 * <p>Accepted values: {@link Map} with String keys, {@link List}, {@link String}, {@link Boolean},
 * {@code null}, integers ({@link Integer}, {@link Long}, {@link BigInteger}) and finite
 * {@link Double}/{@link Float} (printed with {@link PyFloat#repr}; a Float is widened first).
 */
public final class JsonWriter {
    private static final Comparator<String> CODE_POINT_ORDER = new Comparator<String>() {
        @Override
        public int compare(String a, String b) {
            return compareCodePoints(a, b);
        }
    };

    private final boolean sortKeys;
    private final boolean asciiOnly;
    private final int indent; // < 0: compact

    private JsonWriter(boolean sortKeys, boolean asciiOnly, int indent) {
        this.sortKeys = sortKeys;
        this.asciiOnly = asciiOnly;
        this.indent = indent;
    }

    /** privtune's canonical JSON (sorted keys, no whitespace, UTF-8 characters unescaped). */
    public static String canonical(Object value) {
        StringBuilder out = new StringBuilder();
        new JsonWriter(true, false, -1).write(value, out, 0);
        return out.toString();
    }

    /** {@code json.dumps(value, indent=indent)}: keys in map order, non-ASCII as \\u escapes. */
    public static String indented(Object value, int indent) {
        if (indent < 0) {
            throw new IllegalArgumentException("indent must be >= 0, found " + indent);
        }
        StringBuilder out = new StringBuilder();
        new JsonWriter(false, true, indent).write(value, out, 0);
        return out.toString();
    }

    /** Python's str ordering: by Unicode code point (not by UTF-16 unit, which differs above U+FFFF). */
    public static int compareCodePoints(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return ca < cb ? -1 : 1;
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        boolean aLeft = i < a.length();
        boolean bLeft = j < b.length();
        return aLeft == bLeft ? 0 : (aLeft ? 1 : -1);
    }

    private void newline(StringBuilder out, int level) {
        out.append('\n');
        for (int i = 0; i < indent * level; i++) {
            out.append(' ');
        }
    }

    private void write(Object value, StringBuilder out, int level) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof String) {
            writeString((String) value, out);
        } else if (value instanceof Boolean) {
            out.append(((Boolean) value).booleanValue() ? "true" : "false");
        } else if (value instanceof Integer || value instanceof Long || value instanceof BigInteger
                || value instanceof Short || value instanceof Byte) {
            out.append(value.toString());
        } else if (value instanceof Double || value instanceof Float) {
            out.append(PyFloat.repr(((Number) value).doubleValue()));
        } else if (value instanceof Map) {
            writeObject((Map<?, ?>) value, out, level);
        } else if (value instanceof List) {
            writeArray((List<?>) value, out, level);
        } else {
            throw new JsonException("Object of type " + value.getClass().getName() + " is not JSON serializable");
        }
    }

    private void writeObject(Map<?, ?> map, StringBuilder out, int level) {
        if (map.isEmpty()) {
            out.append("{}");
            return;
        }
        List<String> keys = new ArrayList<String>(map.size());
        for (Object key : map.keySet()) {
            if (!(key instanceof String)) {
                throw new JsonException("JSON object keys must be strings, found " + key);
            }
            keys.add((String) key);
        }
        if (sortKeys) {
            Collections.sort(keys, CODE_POINT_ORDER);
        }
        out.append('{');
        boolean first = true;
        for (String key : keys) {
            if (!first) {
                out.append(',');
            }
            first = false;
            if (indent >= 0) {
                newline(out, level + 1);
            }
            writeString(key, out);
            out.append(indent >= 0 ? ": " : ":");
            write(map.get(key), out, level + 1);
        }
        if (indent >= 0) {
            newline(out, level);
        }
        out.append('}');
    }

    private void writeArray(List<?> list, StringBuilder out, int level) {
        if (list.isEmpty()) {
            out.append("[]");
            return;
        }
        out.append('[');
        boolean first = true;
        for (Object item : list) {
            if (!first) {
                out.append(',');
            }
            first = false;
            if (indent >= 0) {
                newline(out, level + 1);
            }
            write(item, out, level + 1);
        }
        if (indent >= 0) {
            newline(out, level);
        }
        out.append(']');
    }

    private void writeString(String s, StringBuilder out) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"':
                    out.append("\\\"");
                    break;
                case '\\':
                    out.append("\\\\");
                    break;
                case '\n':
                    out.append("\\n");
                    break;
                case '\r':
                    out.append("\\r");
                    break;
                case '\t':
                    out.append("\\t");
                    break;
                case '\b':
                    out.append("\\b");
                    break;
                case '\f':
                    out.append("\\f");
                    break;
                default:
                    if (c < 0x20 || (asciiOnly && c > 0x7e)) {
                        // Python escapes each UTF-16 unit (a surrogate pair as two escapes), lowercase hex
                        String h = Integer.toHexString(c);
                        out.append("\\u").append("0000", 0, 4 - h.length()).append(h);
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }
}
