package dev.privtune.core.json;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.math.BigInteger;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class JsonTest {
    @Test
    public void numbersKeepPythonsIntFloatDistinction() {
        List<Object> values = Json.asArray(Json.parse("[1, 1.0, -0, 1e2, 1E-2, 12345678901234567890123, -5]"), "v");
        assertEquals(Long.valueOf(1), values.get(0));
        assertEquals(Double.valueOf(1.0), values.get(1));
        assertEquals(Long.valueOf(0), values.get(2));
        assertEquals(Double.valueOf(100.0), values.get(3));
        assertEquals(Double.valueOf(0.01), values.get(4));
        assertEquals(new BigInteger("12345678901234567890123"), values.get(5));
        assertEquals(Long.valueOf(-5), values.get(6));
        assertEquals("[1,1.0,0,100.0,0.01,12345678901234567890123,-5]", JsonWriter.canonical(values));
    }

    @Test
    public void stringsUnescapeIncludingSurrogatePairs() {
        Object s = Json.parse("\"a\\\"b\\\\c\\/d\\n\\t\\u00e9\\ud83d\\ude00\"");
        assertEquals("a\"b\\c/d\n\t\u00e9\ud83d\ude00", s);
    }

    @Test
    public void repeatedKeyKeepsTheLastValueLikePython() {
        Map<String, Object> m = Json.asObject(Json.parse("{\"a\": 1, \"b\": 2, \"a\": 3}"), "m");
        assertEquals(Long.valueOf(3), m.get("a"));
        assertEquals(2, m.size());
    }

    @Test
    public void nullTrueFalse() {
        List<Object> values = Json.asArray(Json.parse(" [null, true, false] "), "v");
        assertNull(values.get(0));
        assertEquals(Boolean.TRUE, values.get(1));
        assertEquals(Boolean.FALSE, values.get(2));
    }

    @Test
    public void refusesWhatPythonRefusesAndNonFiniteConstants() {
        for (String bad : Arrays.asList("NaN", "[Infinity]", "-Infinity", "[1,]", "{\"a\":1,}", "01", "1.", "\"a\u0001\"", "[1 2]",
                "{'a': 1}", "\"\\x41\"", "", "[", "{\"a\"}", "\"\\u12G4\"", "tru")) {
            assertThrows(bad, JsonException.class, () -> Json.parse(bad));
        }
    }

    @Test
    public void refusesDeepNesting() {
        StringBuilder deep = new StringBuilder();
        for (int i = 0; i < 600; i++) {
            deep.append('[');
        }
        assertThrows(JsonException.class, () -> Json.parse(deep.toString()));
    }

    @Test
    public void refusesInvalidUtf8() {
        assertThrows(JsonException.class, () -> Json.parse(new byte[] {'"', (byte) 0xC3, '"'}));
    }

    @Test
    public void canonicalSortsByCodePointAndEscapesLikePython() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("b", 1L);
        m.put("a", Arrays.<Object>asList(1.0, 2L, null, true));
        m.put("\u00e9", "x\u2028\"\\\n\u0001\u007f");
        // json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False) in Python 3.11
        assertEquals("{\"a\":[1.0,2,null,true],\"b\":1,\"\u00e9\":\"x\u2028\\\"\\\\\\n\\u0001\u007f\"}", JsonWriter.canonical(m));
    }

    @Test
    public void codePointOrderDiffersFromUtf16OrderAboveTheBmp() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("\ud800\udc00", 2L); // U+10000
        m.put("\ue000", 1L); // U+E000 < U+10000 by code point, > by UTF-16 unit
        assertEquals("{\"\ue000\":1,\"\ud800\udc00\":2}", JsonWriter.canonical(m));
    }

    @Test
    public void indentedMatchesPythonsIndentOne() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("b", 1L);
        m.put("a", Arrays.<Object>asList(1.0, new LinkedHashMap<String, Object>(), Arrays.asList()));
        m.put("\u00e9", "\u007f\ud83d\ude00");
        // json.dumps(..., indent=1) in Python 3.11
        String expected = "{\n \"b\": 1,\n \"a\": [\n  1.0,\n  {},\n  []\n ],\n \"\\u00e9\": \"\\u007f\\ud83d\\ude00\"\n}";
        assertEquals(expected, JsonWriter.indented(m, 1));
    }

    @Test
    public void writerRefusesNonFiniteAndUnknownTypes() {
        assertThrows(JsonException.class, () -> JsonWriter.canonical(Double.NaN));
        assertThrows(JsonException.class, () -> JsonWriter.canonical(Double.POSITIVE_INFINITY));
        assertThrows(JsonException.class, () -> JsonWriter.canonical(new Object()));
        assertTrue(JsonWriter.canonical(new LinkedHashMap<String, Object>()).equals("{}"));
    }
}
