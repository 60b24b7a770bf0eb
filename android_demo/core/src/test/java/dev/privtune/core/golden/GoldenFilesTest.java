package dev.privtune.core.golden;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.privtune.core.bundle.Bundle;
import dev.privtune.core.bundle.BundleException;
import dev.privtune.core.crypto.Digests;
import dev.privtune.core.crypto.Hex;
import dev.privtune.core.dp.Gaussian;
import dev.privtune.core.dp.LedgerStep;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.Norms;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import dev.privtune.core.json.PyFloat;
import dev.privtune.core.net.RequestSigner;
import dev.privtune.core.protocol.AdapterUpdate;
import dev.privtune.core.protocol.ArtifactManifest;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.UpdateCodec;
import dev.privtune.core.tokenizer.DeviceTokenizer;
import dev.privtune.core.tools.FixedStreamBytes;
import dev.privtune.core.tools.GoldenInputs;
import dev.privtune.core.tools.GoldenWriter;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Assume;
import org.junit.BeforeClass;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * The JVM core against files the Python implementation wrote ({@code android_demo/golden/make_golden.py}).
 * Run with {@code -Dprivtune.golden=DIR}; without it every test here is skipped (and
 * {@code tests/e2e/test_android_core.py} fails if any was skipped when it passed a folder).
 *
 * <p>Failure messages name the text's index, never its content: the tweets stand for private data.
 */
public class GoldenFilesTest {
    private static GoldenInputs golden;

    @Rule
    public TemporaryFolder tmp = new TemporaryFolder();

    @BeforeClass
    public static void locate() {
        String dir = System.getProperty("privtune.golden", "");
        Assume.assumeTrue("no -Dprivtune.golden=DIR given: golden tests skipped", !dir.isEmpty());
        golden = new GoldenInputs(new File(dir));
        assertTrue(dir + " is not a golden folder (run make_golden.py)", golden.file("tokens_inputs.json").isFile());
    }

    private static List<String> lines(String name) throws Exception {
        String text = new String(AtomicFiles.readAll(golden.file(name)), StandardCharsets.US_ASCII);
        List<String> out = new ArrayList<String>();
        for (String line : text.split("\n")) {
            out.add(line);
        }
        return out;
    }

    @Test
    public void tweetsAndEdgeCasesGetPythonsTokenIds() throws Exception {
        DeviceTokenizer tokenizer = golden.tokenizer();
        List<String> texts = golden.texts();
        List<String> expected = lines("tokens_expected.txt");
        assertEquals(texts.size(), expected.size());
        int tweets = ((Number) golden.json("tokens_inputs.json").get("num_tweets")).intValue();
        assertTrue("expected real tweets in the golden folder, found " + tweets, tweets >= 100);
        for (int i = 0; i < texts.size(); i++) {
            String got = GoldenInputs.idsLine(tokenizer.encode(texts.get(i)));
            if (!got.equals(expected.get(i))) {
                fail("text " + i + (i < tweets ? " (a tweet)" : " (edge case " + (i - tweets) + ")") + ": ids differ\n python "
                        + expected.get(i) + "\n java   " + got);
            }
        }
    }

    @Test
    public void everyCodePointOfPlanes0To3And14TokenisesLikePython() throws Exception {
        DeviceTokenizer tokenizer = golden.tokenizer();
        List<String> expected = lines("codepoints_expected.txt");
        List<Integer> cps = GoldenInputs.codepoints();
        assertEquals(cps.size(), expected.size());
        List<String> mismatches = new ArrayList<String>();
        int count = 0;
        for (int i = 0; i < cps.size(); i++) {
            int cp = cps.get(i).intValue();
            String got = Integer.toHexString(cp) + " " + GoldenInputs.idsLine(tokenizer.encode(GoldenInputs.codepointText(cp)));
            if (!got.equals(expected.get(i)) && count++ < 20) {
                mismatches.add("python " + expected.get(i) + " | java " + got);
            }
        }
        assertTrue(count + " code points differ, e.g.\n" + String.join("\n", mismatches), count == 0);
    }

    @Test
    public void floatsPrintAsPythonsRepr() throws Exception {
        Map<String, Object> spec = golden.json("floats.json");
        List<Object> bits = Json.asArray(spec.get("bits"), "bits");
        List<Object> reprs = Json.asArray(spec.get("repr"), "repr");
        assertTrue(bits.size() > 8000);
        for (int i = 0; i < bits.size(); i++) {
            assertEquals("bits " + bits.get(i), reprs.get(i), PyFloat.repr(GoldenInputs.fromBits((String) bits.get(i))));
        }
    }

    @Test
    public void jsonIsWrittenAsPythonWritesIt() throws Exception {
        Map<String, Object> spec = golden.json("json_cases.json");
        List<Object> values = Json.asArray(spec.get("values"), "values");
        List<Object> canonical = Json.asArray(spec.get("canonical"), "canonical");
        List<Object> indented = Json.asArray(spec.get("indented"), "indented");
        for (int i = 0; i < values.size(); i++) {
            assertEquals("case " + i, canonical.get(i), JsonWriter.canonical(values.get(i)));
            assertEquals("case " + i, indented.get(i), JsonWriter.indented(values.get(i), 1));
        }
    }

    @Test
    public void noiseFromTheSameBytesMatches() throws Exception {
        Map<String, Object> spec = golden.json("noise.json");
        int n = ((Number) spec.get("n")).intValue();
        byte[] raw = new byte[16 * ((n + 1) / 2)];
        new FixedStreamBytes((String) spec.get("seed")).nextBytes(raw);
        double[] uniforms = Gaussian.uniformsFromBytes(raw);
        List<Object> bits = Json.asArray(spec.get("uniform_bits"), "uniform_bits");
        assertEquals(bits.size(), uniforms.length);
        for (int i = 0; i < uniforms.length; i++) {
            assertEquals("uniform " + i, bits.get(i), GoldenInputs.toBits(uniforms[i])); // bit for bit
        }
        double[] expected = GoldenInputs.doubles(spec.get("normals"));
        double[] normals = Gaussian.boxMuller(uniforms);
        for (int i = 0; i < n; i++) {
            assertEquals("normal " + i, expected[i], normals[i], 1e-12); // libm may differ in the last ulp
        }
        double std = ((Number) spec.get("noise_std")).doubleValue();
        float[] noise = Gaussian.noiseFromAnySource(new FixedStreamBytes((String) spec.get("noise_seed")), n, std);
        double[] expectedNoise = GoldenInputs.doubles(spec.get("noise_f32"));
        for (int i = 0; i < n; i++) {
            assertEquals("noise " + i, expectedNoise[i], noise[i], Math.ulp((float) expectedNoise[i]));
        }
    }

    @Test
    public void clippingAndNoisingMatch() throws Exception {
        Map<String, Object> spec = golden.json("dp.json");
        Map<String, double[]> java = GoldenWriter.computeDp(spec);
        assertArrayEquals(GoldenInputs.doubles(spec.get("norms")), java.get("norms"), 0.0); // pairwise sums: bit for bit
        assertArrayEquals(GoldenInputs.doubles(spec.get("factors")), java.get("factors"), 0.0);
        double[] factors = java.get("factors");
        assertTrue("one example must be clipped", factors[2] < 0.1);
        assertEquals(1.0, factors[4], 0.0);
        for (String key : new String[] {"sums", "noised"}) {
            double[] expected = GoldenInputs.doubles(spec.get(key));
            double[] got = java.get(key);
            assertEquals(expected.length, got.length);
            for (int i = 0; i < got.length; i++) {
                assertEquals(key + " " + i, expected[i], got[i], 1e-12 * Math.max(1, Math.abs(expected[i]))); // BLAS order in numpy
            }
        }
    }

    @Test
    public void updatesEncodeToPythonsExactBytes() throws Exception {
        Map<String, Object> spec = golden.json("update_cases.json");
        byte[] secret = Hex.decode((String) spec.get("secret_hex"));
        List<Object> cases = Json.asArray(spec.get("cases"), "cases");
        assertEquals(4, cases.size());
        for (Object item : cases) {
            Map<String, Object> c = Json.asObject(item, "case");
            String name = (String) c.get("name");
            byte[] python = AtomicFiles.readAll(golden.file("update_" + name + ".bin"));
            AdapterUpdate update = GoldenWriter.buildUpdate(golden, c);
            byte[] java = UpdateCodec.encode(update);
            assertEquals(name + ": sha256 of the encoded update", c.get("sha256"), Digests.sha256Hex(java));
            assertArrayEquals(name, python, java);
            assertEquals(name, c.get("mac"), UpdateCodec.mac(java, secret));
            List<double[]> values = new ArrayList<double[]>();
            for (Tensor t : update.tensors().values()) {
                values.add(t.toDoubles());
            }
            assertEquals(name, ((Number) c.get("l2_norm")).doubleValue(), Norms.globalNorm(values), 0.0);
            // Python's bytes decode in Java and re-encode to themselves
            assertArrayEquals(name, python, UpdateCodec.encode(UpdateCodec.decode(python)));
        }
    }

    @Test
    public void manifestHashesAndBundleVerificationMatch() throws Exception {
        Map<String, Object> spec = golden.json("manifests.json");
        for (String name : new String[] {"bundle/manifest.json", "bundle_small/manifest.json"}) {
            ArtifactManifest m = ArtifactManifest.fromJson(AtomicFiles.readAll(golden.file(name)));
            assertEquals(name, spec.get(name), m.manifestHash());
        }
        ArtifactManifest small = Bundle.verify(golden.file("bundle_small"));
        assertEquals(((Number) spec.get("small_trainable_numel")).longValue(), small.trainableNumel());
        // a copy with one flipped byte must fail, naming the file
        File copy = tmp.newFolder("bundle_small");
        for (dev.privtune.core.protocol.ArtifactFile f : small.files()) {
            AtomicFiles.write(Bundle.file(copy, f), AtomicFiles.readAll(Bundle.file(golden.file("bundle_small"), f)));
        }
        AtomicFiles.write(new File(copy, "manifest.json"), AtomicFiles.readAll(golden.file("bundle_small/manifest.json")));
        Bundle.verify(copy);
        byte[] vocab = AtomicFiles.readAll(new File(copy, "tokenizer/vocab.txt"));
        vocab[0] ^= 1;
        AtomicFiles.write(new File(copy, "tokenizer/vocab.txt"), vocab);
        BundleException e = assertThrows(BundleException.class, () -> Bundle.verify(copy));
        assertTrue(e.getMessage(), e.getMessage().contains("vocab.txt: sha256"));
    }

    @Test
    public void ledgerFilesAreInterchangeable() throws Exception {
        File mine = new File(tmp.getRoot(), "ledger.json");
        LocalLedger ledger = new LocalLedger(mine);
        List<Object> steps = Json.asArray(golden.json("ledger_steps.json").get("steps"), "steps");
        for (Object item : steps) {
            List<Object> s = Json.asArray(item, "step");
            ledger.recordStep(((Number) s.get(0)).longValue(), ((Number) s.get(1)).longValue(), ((Number) s.get(2)).doubleValue(),
                    ((Number) s.get(3)).doubleValue());
        }
        ledger.recordStep(0, 1, 0.25, 1.1);
        assertEquals(new String(AtomicFiles.readAll(golden.file("ledger.json")), StandardCharsets.UTF_8),
                new String(AtomicFiles.readAll(mine), StandardCharsets.UTF_8));
        List<LedgerStep> python = new LocalLedger(golden.file("ledger.json")).steps();
        assertEquals(ledger.steps(), python);
    }

    @Test
    public void requestSignaturesAndMacsMatch() throws Exception {
        Map<String, Object> spec = golden.json("auth.json");
        byte[] secret = Hex.decode((String) spec.get("secret_hex"));
        String device = (String) spec.get("device_id");
        for (Object item : Json.asArray(spec.get("cases"), "cases")) {
            Map<String, Object> c = Json.asObject(item, "case");
            byte[] body = Hex.decode((String) c.get("body_hex"));
            String method = (String) c.get("method");
            String path = (String) c.get("path");
            long timestamp = ((Number) c.get("timestamp")).longValue();
            String nonce = (String) c.get("nonce");
            assertEquals(c.get("canonical"), RequestSigner.canonicalRequest(method, path, Digests.sha256Hex(body), timestamp, nonce));
            assertEquals(c.get("signature"), RequestSigner.sign(secret, method, path, body, timestamp, nonce));
            assertEquals(c.get("headers"), new java.util.LinkedHashMap<String, Object>(
                    RequestSigner.signedHeaders(device, secret, method, path, body, timestamp, nonce)));
            assertEquals(c.get("update_mac"), UpdateCodec.mac(body, secret));
        }
    }
}
