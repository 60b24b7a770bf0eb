package dev.privtune.core.protocol;

import dev.privtune.core.json.Json;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Pattern;

/** Validators of JSON-decoded fields with Python's messages ("Owner.field must be ..., found ..."). */
final class Fields {
    private Fields() {}

    static ProtocolException fail(String owner, String name, String message, Object value) {
        return new ProtocolException(owner + "." + name + " " + message + ", found " + repr(value));
    }

    /** A Python-like repr for messages. */
    static String repr(Object value) {
        if (value == null) {
            return "None";
        }
        if (value instanceof String) {
            return "'" + value + "'";
        }
        if (value instanceof Boolean) {
            return ((Boolean) value).booleanValue() ? "True" : "False";
        }
        return String.valueOf(value);
    }

    static boolean isInt(Object value) {
        return value instanceof Long || value instanceof Integer || value instanceof BigInteger;
    }

    static long requireInt(String owner, String name, Object value, long minimum) {
        if (!isInt(value)) {
            throw fail(owner, name, "must be an int", value);
        }
        if (value instanceof BigInteger) {
            throw fail(owner, name, "is out of range for this client", value);
        }
        long v = ((Number) value).longValue();
        if (v < minimum) {
            throw fail(owner, name, "must be >= " + minimum, value);
        }
        return v;
    }

    /** Checks a number field and returns it unchanged (an int stays an int, so its JSON form is kept). */
    static Number requireFloat(String owner, String name, Object value, Double low, Double high, boolean lowOpen) {
        if (!(value instanceof Number) || value instanceof BigInteger && ((BigInteger) value).bitLength() > 1023) {
            throw fail(owner, name, "must be a number", value);
        }
        double v = ((Number) value).doubleValue();
        if (Double.isNaN(v) || Double.isInfinite(v)) {
            throw fail(owner, name, "must be finite", value);
        }
        if (low != null && (lowOpen ? v <= low.doubleValue() : v < low.doubleValue())) {
            throw fail(owner, name, "must be " + (lowOpen ? ">" : ">=") + " " + low, value);
        }
        if (high != null && v > high.doubleValue()) {
            throw fail(owner, name, "must be <= " + high, value);
        }
        return (Number) value;
    }

    static String requireStr(String owner, String name, Object value, Pattern pattern) {
        if (!(value instanceof String) || ((String) value).isEmpty()) {
            throw fail(owner, name, "must be a non-empty string", value);
        }
        if (pattern != null && !pattern.matcher((String) value).matches()) {
            throw fail(owner, name, "must match " + pattern.pattern(), value);
        }
        return (String) value;
    }

    static String requireSha256(String owner, String name, Object value) {
        if (!(value instanceof String) || !Protocol.SHA256.matcher((String) value).matches()) {
            throw fail(owner, name, "must be a lowercase hex sha256 (64 characters)", value);
        }
        return (String) value;
    }

    static String requireChoice(String owner, String name, Object value, String[] choices) {
        for (String choice : choices) {
            if (choice.equals(value)) {
                return choice;
            }
        }
        throw fail(owner, name, "must be one of " + Arrays.toString(choices), value);
    }

    static List<String> requireStrList(String owner, String name, Object value) {
        if (!(value instanceof List) || ((List<?>) value).isEmpty()) {
            throw fail(owner, name, "must be a non-empty list of strings", value);
        }
        List<String> out = new ArrayList<String>();
        for (Object item : (List<?>) value) {
            if (!(item instanceof String) || ((String) item).isEmpty()) {
                throw fail(owner, name, "must hold non-empty strings only", value);
            }
            if (out.contains(item)) {
                throw fail(owner, name, "must not repeat entries", value);
            }
            out.add((String) item);
        }
        return Collections.unmodifiableList(out);
    }

    static void requireVersion(String owner, Object value) {
        if (!isInt(value)) {
            throw fail(owner, "protocol_version", "must be an int", value);
        }
        if (!(value instanceof Long || value instanceof Integer) || ((Number) value).longValue() != Protocol.PROTOCOL_VERSION) {
            throw new ProtocolException(owner + ".protocol_version " + repr(value) + " is not supported by this build (speaks "
                    + Protocol.PROTOCOL_VERSION + "); update privtune on the older side");
        }
    }

    /**
     * A list of at least two numbers, each in (0, 1] (Python's {@code DpConfig.class_weights}); the numbers keep
     * the JSON kind they arrived with, because the update's metadata repeats them in signed canonical form.
     */
    static List<Number> requireUnitWeights(String owner, String name, Object value) {
        if (!(value instanceof List) || ((List<?>) value).size() < 2) {
            throw fail(owner, name, "must be a list with one weight per label (>= 2)", value);
        }
        List<Number> out = new ArrayList<Number>();
        for (Object item : (List<?>) value) {
            out.add(requireFloat(owner, name, item, 0.0, 1.0, true));
        }
        return Collections.unmodifiableList(out);
    }

    /** Keys {@code required} must be present, and keys in {@code optional} may be (Python's _check_keys). */
    static Map<String, Object> checkKeys(String owner, Object data, Set<String> required, Set<String> optional) {
        if (!(data instanceof Map)) {
            throw new ProtocolException(owner + " must be a JSON object, found " + Json.typeName(data));
        }
        Map<String, Object> map = Json.asObject(data, owner);
        Set<String> missing = new TreeSet<String>(required);
        missing.removeAll(map.keySet());
        Set<String> unknown = new TreeSet<String>(map.keySet());
        unknown.removeAll(required);
        unknown.removeAll(optional);
        if (!missing.isEmpty()) {
            throw new ProtocolException(owner + " is missing field(s) " + missing);
        }
        if (!unknown.isEmpty()) {
            throw new ProtocolException(owner + " has unknown field(s) " + unknown);
        }
        return map;
    }

    /** Exactly the keys {@code required} must be present (Python's _check_keys with no optional keys). */
    static Map<String, Object> checkKeys(String owner, Object data, Set<String> required) {
        return checkKeys(owner, data, required, Collections.<String>emptySet());
    }

    static Set<String> keys(String... names) {
        Set<String> out = new TreeSet<String>();
        Collections.addAll(out, names);
        return out;
    }

    /** Parses JSON text for a contract type, mapping JSON errors to ProtocolException. */
    static Object parseJson(byte[] utf8, String owner) {
        try {
            return Json.parse(utf8);
        } catch (IllegalArgumentException e) {
            throw new ProtocolException(owner + " is not valid UTF-8 JSON: " + e.getMessage(), e);
        }
    }
}
