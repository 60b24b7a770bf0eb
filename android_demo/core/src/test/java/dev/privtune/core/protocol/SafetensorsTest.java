package dev.privtune.core.protocol;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.Test;

public class SafetensorsTest {
    private static Map<String, Tensor> tensors() {
        Map<String, Tensor> m = new LinkedHashMap<String, Tensor>();
        m.put("zb", new Tensor(new int[] {3}, DType.FLOAT16, new float[] {0f, 1f, 2f}));
        m.put("a.x", new Tensor(new int[] {2, 2}, DType.FLOAT16, new float[] {1f, 1f, 1f, 1f}));
        return m;
    }

    @Test
    public void headerLayoutMatchesTheRustLibrary() {
        byte[] blob = Safetensors.encode(tensors(), Collections.singletonMap("privtune", "{\"a\":\"\u00e9\\n\"}"));
        long n = ByteBuffer.wrap(blob, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, n % 8);
        String header = new String(blob, 8, (int) n, StandardCharsets.UTF_8);
        // safetensors.numpy.save: metadata first, then tensors sorted by name, compact JSON, space padding
        String expected = "{\"__metadata__\":{\"privtune\":\"{\\\"a\\\":\\\"\u00e9\\\\n\\\"}\"},"
                + "\"a.x\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                + "\"zb\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[8,14]}}";
        assertEquals(expected, header.trim());
        assertEquals(8 + n + 14, blob.length);
        // 1.0 in half is 0x3C00, little-endian
        assertEquals(0x00, blob[(int) (8 + n)] & 0xff);
        assertEquals(0x3c, blob[(int) (8 + n) + 1] & 0xff);
    }

    @Test
    public void roundTrip() {
        Map<String, Tensor> in = new LinkedHashMap<String, Tensor>();
        in.put("w", new Tensor(new int[] {2, 3}, DType.FLOAT32, new float[] {1.5f, -2f, 3.25f, Float.MIN_VALUE, 0f, -0f}));
        Safetensors.Contents out = Safetensors.decode(Safetensors.encode(in, null));
        assertEquals(in, out.tensors());
        assertTrue(out.metadata().isEmpty());
    }

    @Test
    public void malformedBlobsAreRefused() {
        byte[] good = Safetensors.encode(tensors(), null);
        assertThrows(ProtocolException.class, () -> Safetensors.decode(new byte[4]));
        byte[] truncated = java.util.Arrays.copyOf(good, good.length - 1);
        assertThrows(ProtocolException.class, () -> Safetensors.decode(truncated));
        byte[] extra = java.util.Arrays.copyOf(good, good.length + 2);
        assertThrows(ProtocolException.class, () -> Safetensors.decode(extra));
        byte[] hugeHeader = good.clone();
        hugeHeader[7] = 0x7f;
        assertThrows(ProtocolException.class, () -> Safetensors.decode(hugeHeader));
    }

    @Test
    public void fp16RoundsDirectlyFromDoubleLikeNumpy() {
        assertEquals(0x3c00, Fp16.fromDouble(1.0) & 0xffff);
        assertEquals(0x7bff, Fp16.fromDouble(65504.0) & 0xffff);
        assertEquals(0x7bff, Fp16.fromDouble(65519.99) & 0xffff);
        assertEquals(0x7c00, Fp16.fromDouble(65520.0) & 0xffff); // tie rounds to even: overflow
        assertEquals(0x0001, Fp16.fromDouble(0x1p-24) & 0xffff);
        assertEquals(0x0000, Fp16.fromDouble(0x1p-25) & 0xffff); // tie to even (0)
        assertEquals(0x0002, Fp16.fromDouble(0x1.8p-24 * 1.0000001) & 0xffff);
        assertEquals(0x0400, Fp16.fromDouble(0x1p-14) & 0xffff);
        assertEquals(0x8000, Fp16.fromDouble(-0.0) & 0xffff);
        assertEquals(0x3c00, Fp16.fromDouble(1 + 0x1p-11) & 0xffff); // halfway: to even
        assertEquals(0x3c02, Fp16.fromDouble(1 + 3 * 0x1p-11) & 0xffff); // halfway: to even (up)
        // just above the halfway point: a double rounds up, while double -> float -> half would hit the tie and round down
        double x = 1 + 0x1p-11 + 0x1p-40;
        assertEquals(0x3c01, Fp16.fromDouble(x) & 0xffff);
        assertEquals(0x3c00, Fp16.fromDouble((float) x) & 0xffff);
        for (int bits = 0; bits < 0x7c00; bits++) {
            float v = Fp16.toFloat((short) bits);
            assertEquals(bits, Fp16.fromDouble(v) & 0xffff);
        }
    }

    @Test
    public void float16TensorsRefuseInexactValues() {
        assertThrows(IllegalArgumentException.class, () -> new Tensor(new int[] {1}, DType.FLOAT16, new float[] {0.1f}));
        Tensor t = Tensor.float16FromDoubles(new int[] {2}, new double[] {0.1, 1.0});
        assertArrayEquals(new float[] {Fp16.toFloat(Fp16.fromDouble(0.1)), 1f}, t.values(), 0f);
    }
}
