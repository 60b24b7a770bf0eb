package dev.privtune.core.tools;

import dev.privtune.core.bundle.Bundle;
import dev.privtune.core.bundle.BundleException;
import dev.privtune.core.crypto.Digests;
import dev.privtune.core.io.AtomicFiles;
import dev.privtune.core.json.Json;
import dev.privtune.core.protocol.ArtifactFile;
import dev.privtune.core.protocol.ArtifactManifest;
import dev.privtune.core.tokenizer.DeviceTokenizer;
import java.io.File;
import java.io.IOException;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Reads the inputs of a golden folder written by {@code android_demo/golden/make_golden.py}; shared by
 * the JUnit golden tests and {@link GoldenWriter}.
 */
public final class GoldenInputs {
    /** Code point ranges swept (planes 0-3 and 14), as in make_golden.py. */
    public static final int[][] CODEPOINT_RANGES = {{0x0, 0x3FFFF}, {0xE0000, 0xE0FFF}};

    private final File dir;

    /** @param dir the folder make_golden.py wrote */
    public GoldenInputs(File dir) {
        this.dir = dir;
    }

    /** The folder. */
    public File dir() {
        return dir;
    }

    /** A file of the folder. */
    public File file(String name) {
        return new File(dir, name);
    }

    /** A JSON file of the folder, as an object. */
    public Map<String, Object> json(String name) throws IOException {
        return Json.asObject(Json.parse(AtomicFiles.readAll(file(name))), name);
    }

    /** The tokenizer of the golden folder's bundle/ (manifest + tokenizer files, each checked against the manifest). */
    public DeviceTokenizer tokenizer() throws IOException, BundleException {
        File bundle = file("bundle");
        ArtifactManifest manifest = Bundle.loadManifest(bundle);
        for (ArtifactFile entry : manifest.files()) {
            if ("tokenizer".equals(entry.backend()) && !Digests.sha256Hex(Bundle.file(bundle, entry)).equals(entry.sha256())) {
                throw new BundleException(Bundle.file(bundle, entry) + ": sha256 does not match the manifest");
            }
        }
        return DeviceTokenizer.fromBundle(bundle, manifest);
    }

    /** The texts to tokenise (tweets, then edge cases). */
    public List<String> texts() throws IOException {
        List<String> out = new ArrayList<String>();
        for (Object text : Json.asArray(json("tokens_inputs.json").get("texts"), "texts")) {
            out.add((String) text);
        }
        return out;
    }

    /** Every code point swept, ascending, surrogates skipped. */
    public static List<Integer> codepoints() {
        List<Integer> out = new ArrayList<Integer>();
        for (int[] range : CODEPOINT_RANGES) {
            for (int cp = range[0]; cp <= range[1]; cp++) {
                if (cp < 0xD800 || cp > 0xDFFF) {
                    out.add(Integer.valueOf(cp));
                }
            }
        }
        return out;
    }

    /** The text tokenised for code point {@code cp}: c + " a" + c + "b". */
    public static String codepointText(int cp) {
        String c = new String(Character.toChars(cp));
        return c + " a" + c + "b";
    }

    /** A float64 from the golden files' big-endian hex bits. */
    public static double fromBits(String hex) {
        return Double.longBitsToDouble(new BigInteger(hex, 16).longValue());
    }

    /** Big-endian hex bits of a float64 (as Python's struct.pack(">d").hex()). */
    public static String toBits(double x) {
        String h = Long.toHexString(Double.doubleToRawLongBits(x));
        return "0000000000000000".substring(h.length()) + h;
    }

    /** A JSON list of numbers as doubles. */
    public static double[] doubles(Object list) {
        List<Object> items = Json.asArray(list, "numbers");
        double[] out = new double[items.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = ((Number) items.get(i)).doubleValue();
        }
        return out;
    }

    /** Token ids as one space-separated line. */
    public static String idsLine(long[] ids) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < ids.length; i++) {
            if (i > 0) {
                out.append(' ');
            }
            out.append(ids[i]);
        }
        return out.toString();
    }
}
