package dev.privtune.core.bundle;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import dev.privtune.core.crypto.Digests;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.protocol.ArtifactManifest;
import java.io.File;
import java.nio.charset.StandardCharsets;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class BundleTest {
    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    private static final String ZERO = "0000000000000000000000000000000000000000000000000000000000000000";

    private File bundle(String tokenizerText, String manifestTokenizerSha) throws Exception {
        return bundle(tokenizerText, manifestTokenizerSha, "");
    }

    /** {@code extraFiles}: more manifest entries (JSON objects with a leading comma), written by the caller. */
    private File bundle(String tokenizerText, String manifestTokenizerSha, String extraFiles) throws Exception {
        File dir = tmp.newFolder();
        byte[] tokenizer = tokenizerText.getBytes(StandardCharsets.UTF_8);
        byte[] adapter = new byte[] {1, 2, 3};
        AtomicFiles.write(new File(dir, "tokenizer/tokenizer.json"), tokenizer);
        AtomicFiles.write(new File(dir, "adapter/adapter.safetensors"), adapter);
        String tokSha = Digests.sha256Hex(tokenizer);
        String manifest = "{\"protocol_version\":2,\"base_model_id\":\"m\",\"base_model_sha256\":\"" + ZERO + "\","
                + "\"lora\":{\"rank\":2,\"alpha\":16.0,\"targets\":[\"query\"],\"dropout\":0.0},"
                + "\"trainable\":[{\"name\":\"w\",\"shape\":[2,3],\"dtype\":\"float32\"}],\"max_seq_len\":16,"
                + "\"labels\":[\"safe\",\"unsafe\"],\"tokenizer_sha256\":\"" + (manifestTokenizerSha == null ? tokSha : manifestTokenizerSha)
                + "\",\"files\":[{\"path\":\"tokenizer/tokenizer.json\",\"sha256\":\"" + tokSha + "\",\"backend\":\"tokenizer\","
                + "\"role\":\"tokenizer\",\"size_bytes\":" + tokenizer.length + "},{\"path\":\"adapter/adapter.safetensors\",\"sha256\":\""
                + Digests.sha256Hex(adapter) + "\",\"backend\":\"common\",\"role\":\"adapter\",\"size_bytes\":3}" + extraFiles + "],"
                + "\"privtune_version\":\"0.1.0\"}";
        AtomicFiles.write(new File(dir, "manifest.json"), manifest.getBytes(StandardCharsets.UTF_8));
        return dir;
    }

    @Test
    public void anIntactBundleVerifies() throws Exception {
        ArtifactManifest m = Bundle.verify(bundle("{}", null));
        assertEquals(6, m.trainableNumel());
        assertEquals("adapter/adapter.safetensors", m.file("adapter", "common").path());
        assertEquals(64, m.manifestHash().length());
    }

    @Test
    public void aChangedByteIsFoundAndNamed() throws Exception {
        File dir = bundle("{}", null);
        AtomicFiles.write(new File(dir, "adapter/adapter.safetensors"), new byte[] {1, 2, 4});
        BundleException e = assertThrows(BundleException.class, () -> Bundle.verify(dir));
        assertTrue(e.getMessage(), e.getMessage().contains("adapter.safetensors: sha256"));
    }

    @Test
    public void aMissingOrResizedFileIsNamed() throws Exception {
        File dir = bundle("{}", null);
        AtomicFiles.write(new File(dir, "adapter/adapter.safetensors"), new byte[] {1, 2});
        assertTrue(assertThrows(BundleException.class, () -> Bundle.verify(dir)).getMessage().contains("2 bytes, the manifest says 3"));
        assertTrue(new File(dir, "adapter/adapter.safetensors").delete());
        assertTrue(assertThrows(BundleException.class, () -> Bundle.verify(dir)).getMessage().contains("but missing"));
    }

    @Test
    public void tokenizerHashMustAgreeAndManifestMustExist() throws Exception {
        File dir = bundle("{}", ZERO);
        assertTrue(assertThrows(BundleException.class, () -> Bundle.verify(dir)).getMessage().contains("tokenizer hash disagrees"));
        assertTrue(assertThrows(BundleException.class, () -> Bundle.verify(tmp.newFolder())).getMessage().contains("not found"));
        File bad = bundle("{}", null);
        AtomicFiles.write(new File(bad, "manifest.json"), "{\"protocol_version\":2}".getBytes(StandardCharsets.UTF_8));
        assertTrue(assertThrows(BundleException.class, () -> Bundle.loadManifest(bad)).getMessage().contains("missing field(s)"));
    }

    private static String entry(String path, byte[] data, String backend, String role) throws Exception {
        return ",{\"path\":\"" + path + "\",\"sha256\":\"" + Digests.sha256Hex(data) + "\",\"backend\":\"" + backend
                + "\",\"role\":\"" + role + "\",\"size_bytes\":" + data.length + "}";
    }

    @Test
    public void aRuntimeScopedCheckReadsOnlyThatRuntimesFiles() throws Exception {
        byte[] ort = new byte[] {7, 7};
        byte[] et = new byte[] {9, 9, 9};
        File dir = bundle("{}", null, entry("ort/training_model.onnx", ort, "ort", "training_model")
                + entry("executorch/training.pte", et, "executorch", "training"));
        AtomicFiles.write(new File(dir, "ort/training_model.onnx"), ort);
        // the ExecuTorch file was never copied to this phone: the full check refuses, the ORT check passes
        assertTrue(assertThrows(BundleException.class, () -> Bundle.verify(dir)).getMessage().contains("training.pte"));
        assertEquals(4, Bundle.verify(dir, "ort").files().size());
        // a damaged ORT file or tokenizer is still found by the ORT check
        AtomicFiles.write(new File(dir, "ort/training_model.onnx"), new byte[] {7, 8});
        assertTrue(assertThrows(BundleException.class, () -> Bundle.verify(dir, "ort")).getMessage().contains("training_model.onnx: sha256"));
        AtomicFiles.write(new File(dir, "ort/training_model.onnx"), ort);
        AtomicFiles.write(new File(dir, "tokenizer/tokenizer.json"), "{ }".getBytes(StandardCharsets.UTF_8));
        assertTrue(assertThrows(BundleException.class, () -> Bundle.verify(dir, "ort")).getMessage().contains("tokenizer.json"));
        // a runtime the bundle has no files for is refused with what to do
        AtomicFiles.write(new File(dir, "tokenizer/tokenizer.json"), "{}".getBytes(StandardCharsets.UTF_8));
        BundleException none = assertThrows(BundleException.class, () -> Bundle.verify(dir, "tflite"));
        assertTrue(none.getMessage(), none.getMessage().contains("--backends tflite"));
    }
}
