package dev.privtune.core.protocol;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.Test;

public class UpdateCodecTest {
    static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes(java.nio.charset.StandardCharsets.US_ASCII);

    static AdapterUpdate update(DType dtype) {
        Map<String, Tensor> tensors = new LinkedHashMap<String, Tensor>();
        tensors.put("layer.lora_B.weight", Tensor.float32FromDoubles(new int[] {2, 2}, new double[] {0.5, -0.25, 0, 1}));
        tensors.put("layer.lora_A.weight", Tensor.float32FromDoubles(new int[] {2, 3}, new double[] {1, 2, 3, 4, 5, 6}));
        if (dtype == DType.FLOAT16) {
            Map<String, Tensor> halves = new LinkedHashMap<String, Tensor>();
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
                halves.put(e.getKey(), Tensor.float16FromDoubles(e.getValue().shape(), e.getValue().toDoubles()));
            }
            tensors = halves;
        }
        RoundConfig round = RoundConfig.of(5, ProtocolTypesTest.HASH, 4, DpConfig.of(1.0, 1.1, 0.25, 4, 0.05, "sgd"), 1.0,
                1.7e9, dtype.numpyName());
        return new AdapterUpdate(round.roundId(), "phone-1", round.manifestHash(), round.globalAdapterVersion(), tensors,
                round.dp(), 1.25, 1e-5, "00112233445566778899aabbccddeeff");
    }

    @Test
    public void encodeDecodeRoundTripIsByteStable() {
        for (DType dtype : DType.values()) {
            byte[] blob = UpdateCodec.encode(update(dtype));
            AdapterUpdate back = UpdateCodec.decode(blob);
            assertEquals(dtype, back.dtype());
            assertFalse(back.metadataMap().containsKey("num_examples"));
            assertEquals("phone-1", back.deviceId());
            assertEquals(update(dtype).tensors().get("layer.lora_A.weight"), back.tensors().get("layer.lora_A.weight"));
            assertArrayEquals(blob, UpdateCodec.encode(back));
        }
    }

    @Test
    public void metadataIsCanonicalJsonUnderThePrivtuneKey() {
        byte[] blob = UpdateCodec.encode(update(DType.FLOAT32));
        String meta = Safetensors.decode(blob).metadata().get("privtune");
        assertEquals(JsonWriter.canonical(Json.parse(meta)), meta);
        assertTrue(meta.contains("\"local_delta\":1e-05"));
        assertTrue(meta.contains("\"nonce\":\"00112233445566778899aabbccddeeff\""));
    }

    @Test
    public void macVerifiesOnlyTheExactBytes() {
        byte[] blob = UpdateCodec.encode(update(DType.FLOAT32));
        String mac = UpdateCodec.mac(blob, SECRET);
        assertTrue(UpdateCodec.verifyMac(blob, SECRET, mac));
        blob[blob.length - 1] ^= 1;
        assertFalse(UpdateCodec.verifyMac(blob, SECRET, mac));
        assertThrows(ProtocolException.class, () -> UpdateCodec.mac(blob, new byte[15]));
    }

    @Test
    public void invalidUpdatesAreRefused() {
        AdapterUpdate ok = update(DType.FLOAT32);
        Map<String, Tensor> nan = new LinkedHashMap<String, Tensor>();
        nan.put("w", new Tensor(new int[] {1}, DType.FLOAT32, new float[] {Float.NaN}));
        assertThrows(ProtocolException.class, () -> new AdapterUpdate(0, "p", ok.manifestHash(), 0, nan, ok.dp(), 0, 0, ok.nonce()));
        Map<String, Tensor> mixed = new LinkedHashMap<String, Tensor>(ok.tensors());
        mixed.put("h", new Tensor(new int[] {1}, DType.FLOAT16, new float[] {1f}));
        assertThrows(ProtocolException.class, () -> new AdapterUpdate(0, "p", ok.manifestHash(), 0, mixed, ok.dp(), 0, 0, ok.nonce()));
        assertThrows(ProtocolException.class, () -> new AdapterUpdate(0, "p", ok.manifestHash(), 0, ok.tensors(), ok.dp(), 0, 0, "xyz"));
        assertThrows(ProtocolException.class, () -> new AdapterUpdate(0, "bad id", ok.manifestHash(), 0, ok.tensors(), ok.dp(), 0, 0,
                ok.nonce()));
        assertEquals(32, UpdateCodec.newNonce().length());
    }

    @Test
    public void decodeRefusesMissingMetadataAndWrongVersion() {
        Map<String, Tensor> t = new LinkedHashMap<String, Tensor>();
        t.put("w", new Tensor(new int[] {1}, DType.FLOAT32, new float[] {1f}));
        assertThrows(ProtocolException.class, () -> UpdateCodec.decode(Safetensors.encode(t, null)));
        String meta = JsonWriter.canonical(update(DType.FLOAT32).metadataMap()).replace("\"protocol_version\":2", "\"protocol_version\":9");
        byte[] blob = Safetensors.encode(t, java.util.Collections.singletonMap("privtune", meta));
        ProtocolException e = assertThrows(ProtocolException.class, () -> UpdateCodec.decode(blob));
        assertTrue(e.getMessage().contains("not supported by this build"));
        Map<String, Object> withCount = new LinkedHashMap<String, Object>(update(DType.FLOAT32).metadataMap());
        withCount.put("num_examples", Long.valueOf(12)); // protocol 1's field: no longer part of an update
        byte[] counted = Safetensors.encode(t, java.util.Collections.singletonMap("privtune", JsonWriter.canonical(withCount)));
        ProtocolException unknown = assertThrows(ProtocolException.class, () -> UpdateCodec.decode(counted));
        assertTrue(unknown.getMessage(), unknown.getMessage().contains("num_examples"));
    }
}
