package dev.privtune.core.tools;

import dev.privtune.core.bundle.Bundle;
import dev.privtune.core.bundle.BundleException;
import dev.privtune.core.crypto.Digests;
import dev.privtune.core.crypto.Hex;
import dev.privtune.core.dp.DpMath;
import dev.privtune.core.dp.Gaussian;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.UpdateBuilder;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.core.json.JsonWriter;
import dev.privtune.core.json.PyFloat;
import dev.privtune.core.net.RequestSigner;
import dev.privtune.core.protocol.AdapterUpdate;
import dev.privtune.core.protocol.ArtifactManifest;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Safetensors;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.UpdateCodec;
import dev.privtune.core.tokenizer.DeviceTokenizer;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The reverse direction of the golden check: computes, with the Java core, every output
 * {@code make_golden.py} computed with Python, from the same inputs, and writes them for the Python
 * test to compare ({@code tests/e2e/test_android_core.py}).
 *
 * <pre>
 *   java -cp CLASSES dev.privtune.core.tools.GoldenWriter GOLDEN_DIR OUT_DIR
 * </pre>
 *
 * Writes {@code tokens.txt}, {@code codepoints.txt} (same line format as the expected files),
 * {@code update_<case>.bin}, {@code ledger.json} and {@code java_results.json} (floats' reprs,
 * canonical/indented JSON, noise, DP clipping, update hashes and MACs, manifest hashes, signatures).
 */
public final class GoldenWriter {
    private final GoldenInputs golden;
    private final File out;

    private GoldenWriter(GoldenInputs golden, File out) {
        this.golden = golden;
        this.out = out;
    }

    /** Entry point; exits 2 on bad arguments. */
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: GoldenWriter GOLDEN_DIR OUT_DIR");
            System.exit(2);
        }
        File out = new File(args[1]);
        if (!out.isDirectory() && !out.mkdirs()) {
            throw new IOException(out + ": cannot create the output folder");
        }
        long start = System.nanoTime();
        new GoldenWriter(new GoldenInputs(new File(args[0])), out).writeAll();
        System.out.printf("GoldenWriter: wrote %s in %.2f s%n", out, (System.nanoTime() - start) / 1e9);
    }

    private void writeAll() throws Exception {
        Map<String, Object> results = new LinkedHashMap<String, Object>();
        writeTokens();
        floats(results);
        json(results);
        noise(results);
        dp(results);
        updates(results);
        manifests(results);
        ledger();
        auth(results);
        AtomicFiles.write(new File(out, "java_results.json"), JsonWriter.indented(results, 1).getBytes(StandardCharsets.US_ASCII));
    }

    private void writeTokens() throws IOException, BundleException {
        DeviceTokenizer tokenizer = golden.tokenizer();
        Writer tokens = new OutputStreamWriter(new FileOutputStream(new File(out, "tokens.txt")), StandardCharsets.US_ASCII);
        try {
            for (long[] ids : tokenizer.encode(golden.texts())) {
                tokens.write(GoldenInputs.idsLine(ids) + "\n");
            }
        } finally {
            tokens.close();
        }
        Writer sweep = new OutputStreamWriter(new FileOutputStream(new File(out, "codepoints.txt")), StandardCharsets.US_ASCII);
        try {
            for (Integer cp : GoldenInputs.codepoints()) {
                long[] ids = tokenizer.encode(GoldenInputs.codepointText(cp.intValue()));
                sweep.write(Integer.toHexString(cp.intValue()) + " " + GoldenInputs.idsLine(ids) + "\n");
            }
        } finally {
            sweep.close();
        }
    }

    private void floats(Map<String, Object> results) throws IOException {
        List<Object> reprs = new ArrayList<Object>();
        for (Object bits : Json.asArray(golden.json("floats.json").get("bits"), "bits")) {
            reprs.add(PyFloat.repr(GoldenInputs.fromBits((String) bits)));
        }
        results.put("floats", reprs);
    }

    private void json(Map<String, Object> results) throws IOException {
        List<Object> canonical = new ArrayList<Object>();
        List<Object> indented = new ArrayList<Object>();
        for (Object value : Json.asArray(golden.json("json_cases.json").get("values"), "values")) {
            canonical.add(JsonWriter.canonical(value));
            indented.add(JsonWriter.indented(value, 1));
        }
        results.put("canonical", canonical);
        results.put("indented", indented);
    }

    private void noise(Map<String, Object> results) throws IOException {
        Map<String, Object> spec = golden.json("noise.json");
        int n = ((Number) spec.get("n")).intValue();
        byte[] raw = new byte[16 * ((n + 1) / 2)];
        new FixedStreamBytes((String) spec.get("seed")).nextBytes(raw);
        double[] uniforms = Gaussian.uniformsFromBytes(raw);
        double[] normals = Gaussian.boxMuller(uniforms);
        List<Object> bits = new ArrayList<Object>();
        for (double u : uniforms) {
            bits.add(GoldenInputs.toBits(u));
        }
        List<Object> z = new ArrayList<Object>();
        for (int i = 0; i < n; i++) {
            z.add(Double.valueOf(normals[i]));
        }
        double std = ((Number) spec.get("noise_std")).doubleValue();
        float[] noise = Gaussian.noiseFromAnySource(new FixedStreamBytes((String) spec.get("noise_seed")), n, std);
        List<Object> noiseList = new ArrayList<Object>();
        for (float v : noise) {
            noiseList.add(Double.valueOf(v));
        }
        results.put("uniform_bits", bits);
        results.put("normals", z);
        results.put("noise_f32", noiseList);
    }

    /** The dp.json computation, shared with the JUnit golden test. */
    public static Map<String, double[]> computeDp(Map<String, Object> spec) {
        int batch = ((Number) spec.get("batch")).intValue();
        Map<String, double[][]> grads = new LinkedHashMap<String, double[][]>();
        Map<String, Object> flat = Json.asObject(spec.get("grads"), "grads");
        for (Map.Entry<String, Object> e : flat.entrySet()) {
            double[] all = GoldenInputs.doubles(e.getValue());
            int per = all.length / batch;
            double[][] rows = new double[batch][per];
            for (int b = 0; b < batch; b++) {
                System.arraycopy(all, b * per, rows[b], 0, per);
            }
            grads.put(e.getKey(), rows);
        }
        double clip = ((Number) spec.get("clip_norm")).doubleValue();
        double sigma = ((Number) spec.get("noise_multiplier")).doubleValue();
        double q = ((Number) spec.get("sampling_rate")).doubleValue();
        int nExamples = ((Number) spec.get("num_examples")).intValue();
        double[] norms = DpMath.perExampleNorms(grads);
        double[] factors = DpMath.clipFactors(norms, clip);
        Map<String, double[]> sums = DpMath.clipAndSum(grads, clip, GoldenInputs.doubles(spec.get("weights")));
        double[] flatSum = DpMath.flatten(sums);
        double[] z = Gaussian.standardNormal(new FixedStreamBytes((String) spec.get("noise_seed")), flatSum.length);
        double[] noise = new double[z.length];
        for (int i = 0; i < z.length; i++) {
            noise[i] = sigma * clip * z[i];
        }
        double[] noised = DpMath.flatten(DpMath.noiseAndScale(sums, noise, 1.0 / (q * nExamples)));
        Map<String, double[]> outputs = new LinkedHashMap<String, double[]>();
        outputs.put("norms", norms);
        outputs.put("factors", factors);
        outputs.put("sums", flatSum);
        outputs.put("noised", noised);
        return outputs;
    }

    private void dp(Map<String, Object> results) throws IOException {
        Map<String, Object> dp = new LinkedHashMap<String, Object>();
        for (Map.Entry<String, double[]> e : computeDp(golden.json("dp.json")).entrySet()) {
            List<Object> values = new ArrayList<Object>();
            for (double v : e.getValue()) {
                values.add(Double.valueOf(v));
            }
            dp.put(e.getKey(), values);
        }
        results.put("dp", dp);
    }

    /** Builds the update of one update_cases.json case from the golden tensors (shared with the JUnit test). */
    public static AdapterUpdate buildUpdate(GoldenInputs golden, Map<String, Object> testCase) throws IOException {
        List<Object> order = Json.asArray(golden.json("update_cases.json").get("order"), "order");
        Map<String, Tensor> global = ordered(Safetensors.decode(AtomicFiles.readAll(golden.file("update_global.safetensors"))).tensors(), order);
        Map<String, Tensor> local = ordered(Safetensors.decode(AtomicFiles.readAll(golden.file("update_local.safetensors"))).tensors(), order);
        RoundConfig round = RoundConfig.fromMap(testCase.get("round_config"));
        return UpdateBuilder.build(round, (String) testCase.get("device_id"), global, local,
                ((Number) testCase.get("local_epsilon")).doubleValue(),
                ((Number) testCase.get("local_delta")).doubleValue(), (String) testCase.get("nonce"));
    }

    private static Map<String, Tensor> ordered(Map<String, Tensor> tensors, List<Object> order) {
        Map<String, Tensor> out = new LinkedHashMap<String, Tensor>();
        for (Object name : order) {
            out.put((String) name, tensors.get(name));
        }
        return out;
    }

    private void updates(Map<String, Object> results) throws IOException {
        Map<String, Object> spec = golden.json("update_cases.json");
        byte[] secret = Hex.decode((String) spec.get("secret_hex"));
        Map<String, Object> updates = new LinkedHashMap<String, Object>();
        for (Object item : Json.asArray(spec.get("cases"), "cases")) {
            Map<String, Object> testCase = Json.asObject(item, "case");
            String name = (String) testCase.get("name");
            byte[] body = UpdateCodec.encode(buildUpdate(golden, testCase));
            AtomicFiles.write(new File(out, "update_" + name + ".bin"), body);
            Map<String, Object> r = new LinkedHashMap<String, Object>();
            r.put("sha256", Digests.sha256Hex(body));
            r.put("mac", UpdateCodec.mac(body, secret));
            updates.put(name, r);
        }
        results.put("updates", updates);
    }

    private void manifests(Map<String, Object> results) throws IOException, BundleException {
        Map<String, Object> hashes = new LinkedHashMap<String, Object>();
        for (String name : Json.asObject(golden.json("manifests.json"), "manifests").keySet()) {
            if (name.endsWith(".json")) {
                hashes.put(name, ArtifactManifest.fromJson(AtomicFiles.readAll(golden.file(name))).manifestHash());
            }
        }
        results.put("manifest_hashes", hashes);
        results.put("bundle_small_verified_hash", Bundle.verify(golden.file("bundle_small")).manifestHash());
    }

    private void ledger() throws IOException {
        File file = new File(out, "ledger.json");
        if (file.exists() && !file.delete()) {
            throw new IOException(file + ": cannot replace");
        }
        LocalLedger ledger = new LocalLedger(file);
        for (Object item : Json.asArray(golden.json("ledger_steps.json").get("steps"), "steps")) {
            List<Object> s = Json.asArray(item, "step");
            ledger.recordStep(((Number) s.get(0)).longValue(), ((Number) s.get(1)).longValue(),
                    ((Number) s.get(2)).doubleValue(), ((Number) s.get(3)).doubleValue());
        }
        ledger.recordStep(0, 1, 0.25, 1.1); // a repeat is a no-op, as in make_golden.py
    }

    private void auth(Map<String, Object> results) throws IOException {
        Map<String, Object> spec = golden.json("auth.json");
        byte[] secret = Hex.decode((String) spec.get("secret_hex"));
        String device = (String) spec.get("device_id");
        List<Object> cases = new ArrayList<Object>();
        for (Object item : Json.asArray(spec.get("cases"), "cases")) {
            Map<String, Object> c = Json.asObject(item, "case");
            byte[] body = Hex.decode((String) c.get("body_hex"));
            String method = (String) c.get("method");
            String path = (String) c.get("path");
            long timestamp = ((Number) c.get("timestamp")).longValue();
            String nonce = (String) c.get("nonce");
            Map<String, Object> r = new LinkedHashMap<String, Object>();
            r.put("canonical", RequestSigner.canonicalRequest(method, path, Digests.sha256Hex(body), timestamp, nonce));
            r.put("signature", RequestSigner.sign(secret, method, path, body, timestamp, nonce));
            r.put("headers", new LinkedHashMap<String, Object>(
                    RequestSigner.signedHeaders(device, secret, method, path, body, timestamp, nonce)));
            r.put("update_mac", UpdateCodec.mac(body, secret));
            cases.add(r);
        }
        results.put("auth", cases);
    }
}
