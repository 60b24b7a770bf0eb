"""Writes the cross-language golden files the JVM core is checked against, computed by the Python
implementation (``ondevice``) at test time.

Usage::

    .venv/bin/python android_demo/golden/make_golden.py OUT_DIR --bundle BUNDLE_DIR --tweets TEST_TEXT_TXT

Nothing here is committed: the tweets stand for private user data, so the folder is written into a
temporary directory by ``tests/e2e/test_android_core.py`` and read by the JUnit tests
(``-Dprivtune.golden=OUT_DIR``) and by the Python side of the reverse check (``GoldenWriter``).

Every expected value comes from Python code (the bundle's ``DeviceTokenizer``, ``canonical_json``,
``uniforms_from_bytes``/``box_muller``, ``dp_math``, ``build_update``/``encode_update``/``update_mac``,
``ArtifactManifest.manifest_hash``/``verify_bundle``, ``LocalPrivacyLedger``, ``sign_request``). The
random inputs are a fixed byte stream both languages generate: sha256(seed ‖ counter as 8-byte
big-endian), counter = 0, 1, 2, … concatenated.

Files (all JSON unless noted):
  tokens_inputs.json      {"texts": [...]}: the first N tweets, then hand-written edge cases
  tokens_expected.txt     one line per text: the ids, space-separated
  codepoints_expected.txt one line per code point cp of CODEPOINT_RANGES: "hex ids…" of chr(cp)+" a"+chr(cp)+"b"
  floats.json             {"bits": [hex of float64 bits], "repr": [Python repr]}
  json_cases.json         {"values": [...], "canonical": [...], "indented": [...]}
  noise.json              fixed-stream uniforms (bits), normals, float32 gaussian_noise
  dp.json                 per-example clipping + noise inputs and outputs
  update_cases.json       + update_global.safetensors, update_local.safetensors, update_<case>.bin
  manifests.json          manifest hashes of bundle/ and bundle_small/ (a tiny verifiable bundle)
  ledger_steps.json       + ledger.json (a LocalPrivacyLedger file)
  auth.json               request signatures and update MACs
  bundle/                 the bundle's manifest.json and tokenizer/ files (public model files, no weights)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from ondevice.accounting import LocalPrivacyLedger
from ondevice.auth import canonical_request, sign_request, signed_headers
from ondevice.bundle import load_manifest, verify_bundle
from ondevice.dp_math import clip_and_sum, clip_factors, per_example_norms
from ondevice.protocol import (
    ArtifactFile,
    ArtifactManifest,
    DpConfig,
    LoraSpec,
    RoundConfig,
    TensorSpec,
    canonical_json,
    encode_update,
    sha256_hex,
    update_mac,
)
from ondevice.randomness import box_muller, gaussian_noise, uniforms_from_bytes
from ondevice.tokenizer import DeviceTokenizer
from ondevice.update import build_update

NUM_TWEETS = 300
CODEPOINT_RANGES = ((0x0, 0x3FFFF), (0xE0000, 0xE0FFF))  # planes 0-3 and 14, surrogates skipped
SECRET = bytes(range(1, 33))  # 32-byte device secret for MACs and signatures
DEVICE_ID = "golden-phone-1"

EDGE_CASES: tuple[str, ...] = (
    "Hello World!",
    "you are great 😂😂😂 love it ❤️",
    "👩‍👩‍👧‍👦 family 👍🏽 thumbs 🇫🇷 flag 🥺 pleading 🫠 melting",
    "我爱北京天安门 and 日本語のテキスト、カタカナ。한국어 문장",
    "check https://example.com/path?q=1&x=%20y#frag and www.test.org/a_b",
    "@user @user_2 #hashtag #MAGA RT: http://t.co/AbC123",
    "café naïve Ångström crème brûlée façade jalapeño",
    "ΟΔΟΣ Σίσυφος İstanbul straße ﬁnance ＡＢＣ１２３ 𝐀𝐁𝐂",
    "e\u0301 a\u0308 combining and decomposed o\u0302\u0323",
    "zero\u200bwidth soft\xadhyphen bom\ufeffhere nbsp\xa0space",
    "ctrl\x00nul\x07bell\ttab\nnewline\r\nwindows\x1cfs\x85nel",
    "special [MASK] token [CLS] inside [SEP] and [mask] lower a[UNK]b [PAD]",
    "¯\\_(ツ)_/¯ don't can't won't 3.14159 1,000,000 $5 50% a&b <tag>",
    "مرحبا بالعالم שלום עולם नमस्ते दुनिया สวัสดีชาวโลก",
    "private use \ue000 replacement \ufffd noncharacter \ufdd0 tag \U000e0041 end",
    "supercalifragilisticexpialidocious " + "x" * 99 + " " + "y" * 100 + " " + "z" * 101,
    "🤬" * 40,
    " ".join(["word"] * 300),
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "UPPER lower MiXeD 123abc abc123 a1b2c3 ...!!!???",
    "a",
)


class FixedStream:
    """sha256(seed ‖ counter₈ᵦₑ) blocks, concatenated: a reproducible (NOT secure) byte stream."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += hashlib.sha256(self._seed + struct.pack(">Q", self._counter)).digest()
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


class FixedStreamSource:
    """``SecureRandomSource`` with the OS CSPRNG replaced by a ``FixedStream`` (same transform)."""

    name = "fixed-stream"
    secure = False

    def __init__(self, seed: bytes) -> None:
        self._stream = FixedStream(seed)

    def uniform(self, size: int) -> np.ndarray:
        return uniforms_from_bytes(self._stream.read(8 * size))

    def standard_normal(self, size: int) -> np.ndarray:
        pairs = (size + 1) // 2
        return box_muller(self.uniform(2 * pairs))[:size]


def bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=True, allow_nan=False) + "\n", encoding="ascii")


def ids_line(ids: np.ndarray) -> str:
    return " ".join(str(int(i)) for i in ids)


def codepoint_text(cp: int) -> str:
    c = chr(cp)
    return c + " a" + c + "b"


def codepoints() -> list[int]:
    return [cp for lo, hi in CODEPOINT_RANGES for cp in range(lo, hi + 1) if not 0xD800 <= cp <= 0xDFFF]


def copy_tokenizer_part(out: Path, bundle: Path) -> None:
    """manifest.json and the tokenizer role files, so the Java side tokenises from the same files."""
    manifest = load_manifest(bundle)
    (out / "bundle").mkdir()
    shutil.copyfile(bundle / "manifest.json", out / "bundle" / "manifest.json")
    for entry in manifest.files:
        if entry.backend == "tokenizer":
            target = out / "bundle" / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / entry.path, target)


def write_tokens(out: Path, bundle: Path, tweets: Path) -> None:
    manifest = load_manifest(bundle)
    tokenizer = DeviceTokenizer.from_bundle(bundle, manifest)
    lines = tweets.read_text(encoding="utf-8").split("\n")[:NUM_TWEETS]
    texts = [*lines, *EDGE_CASES]
    write_json(out / "tokens_inputs.json", {"num_tweets": len(lines), "texts": texts})
    encoded = tokenizer.encode(texts)
    (out / "tokens_expected.txt").write_text("".join(ids_line(ids) + "\n" for ids in encoded), encoding="ascii")
    cps = codepoints()
    swept = tokenizer.encode([codepoint_text(cp) for cp in cps])
    (out / "codepoints_expected.txt").write_text(
        "".join(f"{cp:x} {ids_line(ids)}\n" for cp, ids in zip(cps, swept, strict=True)), encoding="ascii"
    )


def float_cases() -> list[float]:
    stream = FixedStream(b"floats")
    values = [0.0, -0.0, 1.0, -1.0, 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 1e-5, 1e-4, 1e-3, 1e-05 * 3, 0.0001, 0.00012]
    values += [1e15, 1e16, 1e17, 1234567890123456.0, 12345678901234567.0, 9007199254740993.0, 1e22, 1e23, 1e300]
    values += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, math.pi, math.e, 16.0, 0.05, 0.9999]
    values += [1752345678.123456, 1.1, 8.0, 2.5e-07, 123.456, 100.0, 1e2, 1.5e-10]
    values += [math.ldexp(1.0, e) for e in range(-1074, 1024)]  # every power of two (asymmetric rounding gaps)
    for _ in range(3000):  # random bit patterns (finite ones)
        (x,) = struct.unpack("<d", stream.read(8))
        if math.isfinite(x):
            values.append(x)
    for _ in range(3000):  # random short decimals across the exponent range
        (word,) = struct.unpack("<Q", stream.read(8))
        digits = 1 + word % 17
        mantissa = (word >> 8) % (10**digits)
        exponent = int((word >> 60) % 16) - 8 + int((word >> 40) % 40) - 20
        values.append(float(f"{mantissa}e{exponent}"))
    return values


def write_floats(out: Path) -> None:
    values = float_cases()
    write_json(out / "floats.json", {"bits": [bits(v) for v in values], "repr": [repr(v) for v in values]})
    cases: list[dict[str, Any]] = [
        {"b": 1, "a": [1.0, 2, -0.0, 1e-05, 1e16, True, False, None], "é": "ünïcödé ✓", "\U0001f600": "astral key"},
        {"\ue000": 1, "\U00010000": 2, "z": 3, "A": 4, "_": 5},  # code-point order, not UTF-16 order
        {"escapes": 'quote" backslash\\ nl\n cr\r tab\t bs\b ff\f nul\x00 us\x1f del\x7f ls\u2028 é 😀'},
        {"big": 12345678901234567890123, "neg": -42, "float": 1752345678.123456, "tiny": 5e-324},
        {"empty_list": [], "empty_obj": {}},
        {"nested": {"list": [{"x": []}, {}], "deep": [[[0.5]]]}},
    ]
    write_json(
        out / "json_cases.json",
        {
            "values": cases,
            "canonical": [canonical_json(c) for c in cases],
            "indented": [json.dumps(c, indent=1, allow_nan=False) for c in cases],
        },
    )


def write_noise(out: Path) -> None:
    n, std = 1001, 0.75
    stream = FixedStream(b"noise")
    raw = stream.read(16 * ((n + 1) // 2))
    uniforms = uniforms_from_bytes(raw)
    normals = box_muller(uniforms)[:n]
    noise = gaussian_noise(FixedStreamSource(b"noise-f32"), n, std)
    write_json(
        out / "noise.json",
        {
            "seed": "noise",
            "n": n,
            "uniform_bits": [bits(float(u)) for u in uniforms],
            "normals": [float(z) for z in normals],
            "noise_seed": "noise-f32",
            "noise_std": std,
            "noise_f32": [float(z) for z in noise],
        },
    )


def write_dp(out: Path) -> None:
    shapes = {"t.a": (4, 8), "t.b": (8,), "t.c": (3, 5)}
    batch, clip, sigma, q, n_examples = 6, 1.0, 1.1, 0.25, 24
    source = FixedStreamSource(b"dp-grads")
    grads: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        g = source.standard_normal(batch * math.prod(shape)).reshape(batch, *shape) * 0.3
        g[2] *= 100.0  # one example far over the clip norm
        g[4] = 0.0  # one all-zero example
        grads[name] = g
    weights = np.array([1, 1, 1, 1, 1, 0], dtype=np.float64)  # last row is padding
    norms = per_example_norms(grads)
    factors = clip_factors(norms, clip)
    sums = clip_and_sum(grads, clip, weights)
    total = sum(math.prod(s) for s in shapes.values())
    z = FixedStreamSource(b"dp-noise").standard_normal(total)
    flat_sum = np.concatenate([sums[k].reshape(-1) for k in shapes])
    noised = (flat_sum + sigma * clip * z) * (1.0 / (q * n_examples))
    write_json(
        out / "dp.json",
        {
            "shapes": {k: list(v) for k, v in shapes.items()},
            "grads": {k: [float(x) for x in v.reshape(-1)] for k, v in grads.items()},
            "batch": batch,
            "weights": [float(w) for w in weights],
            "clip_norm": clip,
            "noise_multiplier": sigma,
            "sampling_rate": q,
            "num_examples": n_examples,
            "noise_seed": "dp-noise",
            "norms": [float(x) for x in norms],
            "factors": [float(x) for x in factors],
            "sums": [float(x) for x in flat_sum],
            "noised": [float(x) for x in noised],
        },
    )


def write_updates(out: Path, bundle: Path) -> None:
    manifest = load_manifest(bundle)
    source = FixedStreamSource(b"update-tensors")
    global_params = {
        s.name: (source.standard_normal(s.numel) * 0.02).reshape(s.shape).astype(np.float32) for s in manifest.trainable
    }
    local_params = {
        k: (v + source.standard_normal(v.size).reshape(v.shape) * 0.01).astype(np.float32)
        for k, v in global_params.items()
    }
    safetensors.numpy.save_file(global_params, str(out / "update_global.safetensors"))
    safetensors.numpy.save_file(local_params, str(out / "update_local.safetensors"))
    mhash = manifest.manifest_hash()
    dp_plain = DpConfig(clip_norm=1.0, noise_multiplier=1.1, sampling_rate=0.25, local_steps=4, learning_rate=0.05)
    dp_int = DpConfig(
        clip_norm=1, noise_multiplier=0.8, sampling_rate=0.1, local_steps=2, learning_rate=0.01, optimizer="adamw",
        local_epsilon_budget=4, local_delta=1e-06, dp_sat_rho=0.05, unit_sparsity=0.25, train_rank=4,
    )  # fmt: skip
    dp_weighted = DpConfig(
        clip_norm=1.0, noise_multiplier=1.1, sampling_rate=0.25, local_steps=4, learning_rate=0.05,
        class_weights=(0.4877193646379043, 1),
    )  # fmt: skip
    rounds = {
        "f32_clipped": RoundConfig(3, mhash, 2, dp_plain, 1.0, 1752345678.123456, "float32"),
        "f32_class_weighted": RoundConfig(4, mhash, 3, dp_weighted, 1.0, 1752345679.5, "float32"),
        "f16_rank4": RoundConfig(7, mhash, 6, dp_int, 0.5, 1800000000.0, "float16"),
        "f32_unclipped": RoundConfig(0, mhash, 0, dp_plain, 1000.0, 1.5, "float32"),
    }
    cases = []
    for i, (name, config) in enumerate(rounds.items()):
        nonce = hashlib.sha256(f"nonce-{name}".encode()).hexdigest()[:32]
        update = build_update(
            config, DEVICE_ID, global_params, local_params,
            local_epsilon=[1.2345678901234567, 0.5, 0.0, 8.0][i], local_delta=1e-05, nonce=nonce,
        )  # fmt: skip
        body = encode_update(update)
        (out / f"update_{name}.bin").write_bytes(body)
        cases.append(
            {
                "name": name,
                "round_config": config.to_dict(),
                "device_id": DEVICE_ID,
                "local_epsilon": update.local_epsilon,
                "local_delta": update.local_delta,
                "nonce": nonce,
                "sha256": sha256_hex(body),
                "mac": update_mac(body, SECRET),
                "l2_norm": update.l2_norm(),
            }
        )
    write_json(
        out / "update_cases.json",
        {"order": [s.name for s in manifest.trainable], "secret_hex": SECRET.hex(), "cases": cases},
    )


def small_bundle(root: Path) -> ArtifactManifest:
    """A tiny bundle that ``verify_bundle`` accepts: three tokenizer files and an adapter."""
    contents = {
        ("tokenizer/tokenizer.json", "tokenizer", "tokenizer"): b'{"version": "1.0"}\n',
        ("tokenizer/vocab.txt", "tokenizer", "tokenizer_vocab"): b"[PAD]\n[UNK]\nhello\n",
        ("tokenizer/tokenizer_config.json", "tokenizer", "tokenizer_tokenizer_config"): b'{"do_lower_case": true}\n',
        ("adapter/adapter.safetensors", "common", "adapter"): safetensors.numpy.save({"w": np.ones(4, np.float32)}),
    }
    files = []
    for (path, backend, role), data in contents.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        files.append(ArtifactFile(path, sha256_hex(data), backend, role, len(data)))
    manifest = ArtifactManifest(
        base_model_id="modèle/测试-mini",
        base_model_sha256="0" * 64,
        lora=LoraSpec(rank=2, alpha=16.5, targets=("query", "value"), dropout=0.05),
        trainable=(TensorSpec("layer.0.lora_A.weight", (2, 4)), TensorSpec("classifier.weight", (2, 4), "float16")),
        max_seq_len=32,
        labels=("safe", "unsafe"),
        tokenizer_sha256=files[0].sha256,
        files=tuple(files),
        privtune_version="0.1.0+golden",
    )
    (root / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def write_manifests(out: Path, bundle: Path) -> None:
    small = out / "bundle_small"
    small.mkdir()
    manifest = small_bundle(small)
    verified = verify_bundle(small)  # Python accepts it, so Java must too
    write_json(
        out / "manifests.json",
        {
            "bundle/manifest.json": load_manifest(bundle).manifest_hash(),
            "bundle_small/manifest.json": verified.manifest_hash(),
            "small_trainable_numel": sum(t.numel for t in manifest.trainable),
        },
    )


def write_ledger(out: Path) -> None:
    steps = [(0, 0, 0.25, 1.1), (0, 1, 0.25, 1.1), (1, 0, 0.5, 1.0), (2, 3, 1, 2), (10, 7, 0.015625, 0.7)]
    with tempfile.TemporaryDirectory() as tmp:
        ledger = LocalPrivacyLedger(Path(tmp) / "ledger.json", delta=1e-5)
        for round_id, step, q, sigma in steps:
            ledger.record_step(round_id, step, q, sigma)
        ledger.record_step(0, 1, 0.25, 1.1)  # a repeat is a no-op
        shutil.copyfile(ledger.path, out / "ledger.json")
    write_json(out / "ledger_steps.json", {"steps": [list(s) for s in steps]})


def write_auth(out: Path) -> None:
    cases = []
    bodies = [b"", b"{}", bytes(range(256)), "ünïcödé".encode()]
    for i, body in enumerate(bodies):
        method = "GET" if i == 0 else "POST"
        path = ["/v1/adapters/3", "/v1/checkin", "/v1/rounds/12/updates", "/prefix/v1/a%20b/x"][i]
        timestamp = [0, 1752345678, 4102444800, 1][i]
        nonce = hashlib.sha256(f"req-{i}".encode()).hexdigest()[: 32 + 16 * (i % 3)]
        headers = signed_headers(DEVICE_ID, SECRET, method, path, body, now=float(timestamp), nonce=nonce)
        cases.append(
            {
                "method": method,
                "path": path,
                "body_hex": body.hex(),
                "timestamp": timestamp,
                "nonce": nonce,
                "canonical": canonical_request(method, path, body, timestamp, nonce),
                "signature": sign_request(SECRET, method, path, body, timestamp, nonce),
                "headers": headers,
                "update_mac": update_mac(body, SECRET),
            }
        )
    write_json(out / "auth.json", {"device_id": DEVICE_ID, "secret_hex": SECRET.hex(), "cases": cases})


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the JVM core's golden files (computed by Python).")
    parser.add_argument("out", type=Path, help="folder to write (created; must be empty if it exists)")
    parser.add_argument(
        "--bundle", type=Path, required=True, help="an exported bundle (for the tokenizer and manifest)"
    )
    parser.add_argument("--tweets", type=Path, required=True, help="tweeteval/offensive/test_text.txt")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    copy_tokenizer_part(args.out, args.bundle)
    write_tokens(args.out, args.bundle, args.tweets)
    write_floats(args.out)
    write_noise(args.out)
    write_dp(args.out)
    write_updates(args.out, args.bundle)
    write_manifests(args.out, args.bundle)
    write_ledger(args.out)
    write_auth(args.out)
    print(f"golden files written to {args.out}")


if __name__ == "__main__":
    main()
