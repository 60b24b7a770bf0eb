"""The Android demo's pure-JVM core (``android_demo/core``) against the Python implementation.

1. The JUnit tests run with offline Maven (toolchain from ``scripts/android_toolchain.sh``), including
   the golden tests against files ``android_demo/golden/make_golden.py`` writes here, from the bundle's
   tokenizer and 300 real tweets (in a temp folder: the tweets stand for private data, never committed).
2. The reverse direction: ``GoldenWriter`` computes the same outputs in Java; they must equal Python's.
3. The core compiles against Android's API 23 ``android.jar`` and dexes at minSdk 21 (no invokedynamic).
4. ``UploadOnce`` (the JVM client only) checks in to the real aggregator on loopback, downloads the
   global adapter, uploads a clipped update that is accepted, and a tampered one that is refused.

If apt is unreachable and the toolchain is missing, the tests are skipped with that reason (never
passed); any other toolchain problem fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ondevice.accounting import LocalPrivacyLedger
from ondevice.bundle import load_manifest
from ondevice.protocol import decode_update, sha256_hex
from server_aggregator.service import Aggregator
from tests.android_harness import REPO_ROOT, TOOLCHAIN, explain, run, toolchain_fixture
from tests.server_harness import LiveServer, admin, enroll, make_config

pytestmark = pytest.mark.slow

CORE = REPO_ROOT / "android_demo" / "core"
MAKE_GOLDEN = REPO_ROOT / "android_demo" / "golden" / "make_golden.py"
ANDROID_DEBS = REPO_ROOT.parent / "shared" / "tools" / "android-debs"
MAVEN = ["mvn", "-o", "-B", "-q", "-Dstyle.color=never", "-Dmaven.repo.local=/usr/share/maven-repo"]
JUNIT_CLASSES = 17  # test classes under android_demo/core/src/test (a class that stops running fails the count)


toolchain = toolchain_fixture("JVM TOOLCHAIN MISSING AND APT UNREACHABLE, android core NOT tested")


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, offensive_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("golden") / "golden"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, str(MAKE_GOLDEN), str(out), "--bundle", str(bundle_dir)]
    proc = run([*args, "--tweets", str(offensive_dir / "test_text.txt")], env=env)
    assert proc.returncode == 0, f"make_golden.py failed: {explain(proc)}"
    return out


@dataclass(frozen=True)
class JvmBuild:
    classes: Path
    reports: Path
    seconds: float


@pytest.fixture(scope="module")
def jvm_build(toolchain: None, golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> JvmBuild:
    """``mvn test`` with the golden folder, built into a temp folder (the repo stays clean)."""
    target = tmp_path_factory.mktemp("jvm") / "target"
    start = time.monotonic()
    proc = run([*MAVEN, f"-DbuildDir={target}", f"-Dprivtune.golden={golden_dir}", "test"], cwd=CORE)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"mvn test failed: {explain(proc)}"
    return JvmBuild(target / "classes", target / "surefire-reports", seconds)


def java(build: JvmBuild, main: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run(["java", "-cp", str(build.classes), f"dev.privtune.core.tools.{main}", *args], timeout=timeout)


def test_junit_suite_with_golden_files_passes(jvm_build: JvmBuild) -> None:
    suites = [ET.parse(path).getroot() for path in sorted(jvm_build.reports.glob("TEST-*.xml"))]
    counts = {key: sum(int(s.get(key, "0")) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    by_class = {s.get("name", ""): s for s in suites}
    assert len(suites) == JUNIT_CLASSES, f"expected {JUNIT_CLASSES} JUnit classes, surefire ran {sorted(by_class)}"
    assert counts["tests"] > 80 and counts["failures"] == 0 and counts["errors"] == 0, counts
    assert counts["skipped"] == 0, f"JUnit tests were skipped (the golden folder not seen?): {counts}"
    golden = by_class["dev.privtune.core.golden.GoldenFilesTest"]
    assert int(golden.get("tests", "0")) >= 10 and int(golden.get("skipped", "0")) == 0
    junit_seconds = sum(float(s.get("time", "0")) for s in suites)  # reported, never asserted (timings go to bench/)
    print(f"JUnit: {counts['tests']} tests in {junit_seconds:.1f} s (mvn total {jvm_build.seconds:.1f} s)")


def float32_close(python: list[float], java: list[float]) -> bool:
    a, b = np.asarray(python, np.float32), np.asarray(java, np.float32)
    return bool(np.all(np.abs(a - b) <= np.spacing(np.abs(a))))


def test_java_outputs_equal_python_outputs(jvm_build: JvmBuild, golden_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "java"
    proc = java(jvm_build, "GoldenWriter", str(golden_dir), str(out))
    assert proc.returncode == 0, explain(proc)
    for python_file, java_file in (
        ("tokens_expected.txt", "tokens.txt"),
        ("codepoints_expected.txt", "codepoints.txt"),
    ):
        expected = (golden_dir / python_file).read_text().splitlines()
        got = (out / java_file).read_text().splitlines()
        bad = [i for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g]
        assert not bad, f"{java_file}: {len(bad)} of {len(expected)} lines differ (first at line {bad[0]})"
    results = json.loads((out / "java_results.json").read_text())

    floats = json.loads((golden_dir / "floats.json").read_text())
    assert results["floats"] == floats["repr"]
    cases = json.loads((golden_dir / "json_cases.json").read_text())
    assert results["canonical"] == cases["canonical"] and results["indented"] == cases["indented"]

    noise = json.loads((golden_dir / "noise.json").read_text())
    assert results["uniform_bits"] == noise["uniform_bits"]  # bit for bit
    np.testing.assert_allclose(results["normals"], noise["normals"], rtol=0, atol=1e-12)  # libm: last ulp may differ
    assert float32_close(noise["noise_f32"], results["noise_f32"])

    dp = json.loads((golden_dir / "dp.json").read_text())
    assert results["dp"]["norms"] == dp["norms"] and results["dp"]["factors"] == dp["factors"]  # pairwise sums
    for key in ("sums", "noised"):  # numpy's tensordot goes through BLAS: order unspecified
        np.testing.assert_allclose(results["dp"][key], dp[key], rtol=1e-12, atol=1e-15)

    updates = json.loads((golden_dir / "update_cases.json").read_text())
    for case in updates["cases"]:
        name = case["name"]
        body = (out / f"update_{name}.bin").read_bytes()
        assert body == (golden_dir / f"update_{name}.bin").read_bytes(), f"{name}: Java's update bytes differ"
        assert results["updates"][name] == {"sha256": case["sha256"], "mac": case["mac"]}
        assert decode_update(body).nonce == case["nonce"]

    manifests = json.loads((golden_dir / "manifests.json").read_text())
    for name, digest in results["manifest_hashes"].items():
        assert digest == manifests[name], name
    assert set(results["manifest_hashes"]) == {"bundle/manifest.json", "bundle_small/manifest.json"}
    assert results["bundle_small_verified_hash"] == manifests["bundle_small/manifest.json"]

    assert (out / "ledger.json").read_bytes() == (golden_dir / "ledger.json").read_bytes()
    reread = LocalPrivacyLedger(out / "ledger.json", delta=1e-5)
    assert [(s.round_id, s.step) for s in reread.steps()] == [(0, 0), (0, 1), (1, 0), (2, 3), (10, 7)]

    auth = json.loads((golden_dir / "auth.json").read_text())
    for python, ours in zip(auth["cases"], results["auth"], strict=True):
        assert {k: python[k] for k in ("canonical", "signature", "headers", "update_mac")} == ours


def test_core_builds_for_android_api_and_dexes(toolchain: None, tmp_path: Path) -> None:
    """Compile core against API 23's android.jar (catches Java 8 APIs Android lacks) and dex it at minSdk 21."""
    if not ANDROID_DEBS.is_dir():
        pytest.skip(f"ANDROID API CHECK NOT RUN: {ANDROID_DEBS} (the cached Debian 11 debs) is absent on this machine")
    proc = run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=ANDROID_DEBS)
    assert proc.returncode == 0, f"the cached debs do not match their SHA256SUMS: {explain(proc)}"
    root = tmp_path / "android-root"
    for prefix in ("libandroid-23-java", "dalvik-exchange"):
        (deb,) = ANDROID_DEBS.glob(f"{prefix}_*.deb")
        proc = run(["dpkg-deb", "-x", str(deb), str(root)])
        assert proc.returncode == 0, explain(proc)
    (android_jar,) = root.glob("usr/share/java/com.android.android-23.jar")
    dx_jar = root / "usr/share/java/com.android.dx.jar"
    classes = tmp_path / "classes"
    sources = sorted(str(p) for p in (CORE / "src/main/java").rglob("*.java"))
    javac = ["javac", "-source", "8", "-target", "8", "-Xlint:-options", "-bootclasspath", str(android_jar)]
    proc = run([*javac, "-d", str(classes), *sources])
    assert proc.returncode == 0, f"core does not compile against Android API 23: {explain(proc)}"
    dex = tmp_path / "classes.dex"
    proc = run(["java", "-cp", str(dx_jar), "com.android.dx.command.Main", "--dex", "--min-sdk-version=21",
                f"--output={dex}", str(classes)])  # fmt: skip
    assert proc.returncode == 0, f"dx refused core at minSdk 21: {explain(proc)}"
    assert dex.stat().st_size > 10_000


def upload_once(build: JvmBuild, url: str, device: str, secret: bytes, bundle: Path, state: Path, *extra: str) -> Any:
    proc = java(build, "UploadOnce", "--url", url, "--device", device, "--secret-hex", secret.hex(),
                "--bundle", str(bundle), "--state", str(state), *extra, timeout=180)  # fmt: skip
    assert proc.returncode in (0, 3), f"UploadOnce failed: {explain(proc)}"
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_jvm_client_against_the_real_aggregator(
    jvm_build: JvmBuild, tmp_path: Path, bundle_dir: Path, classifier_dir: Path
) -> None:
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, update_dtype="float16", update_clip_norm=0.5, epsilon_budget=100.0
    )
    service = Aggregator(config)
    try:
        with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
            honest, honest_secret = enroll(http, "jvm-phone-1")
            tamper, tamper_secret = enroll(http, "jvm-phone-2")
            admin(http, "POST", "/v1/admin/rounds").raise_for_status()  # q = min(1, 10 / 2): both selected

            rc, result = upload_once(jvm_build, server.url, honest, honest_secret, bundle_dir, tmp_path / "p1")
            assert rc == 0 and result["status"] == "accepted", result
            assert result["redeliver_same_receipt"] is True
            body = (tmp_path / "p1" / "outbox" / f"round-{result['round_id']}.update").read_bytes()
            assert sha256_hex(body) == result["sha256"] == result["receipt_sha256"]
            update = decode_update(body)  # Java's bytes through Python's decoder
            assert update.device_id == honest and update.dtype == "float16"
            assert update.manifest_hash == load_manifest(bundle_dir).manifest_hash()
            assert 0 < update.l2_norm() <= 0.5
            status = admin(http, "GET", "/v1/status").json()
            assert status["accepted_total"] == 1 and status["rejected_total"] == 0, status

            rc, result = upload_once(
                jvm_build, server.url, tamper, tamper_secret, bundle_dir, tmp_path / "p2", "--tamper"
            )
            assert rc == 3 and result["status"] == "rejected", result
            assert (result["http_status"], result["reason"]) == (401, "bad_signature"), result
            assert result["message"] == "update MAC does not verify" and result["outbox_rejection"] == "bad_signature"
            status = admin(http, "GET", "/v1/status").json()
            assert status["accepted_total"] == 1, status
            assert status["rejected_by_reason"] == {"bad_signature": 1}, status
    finally:
        service.close()


def test_toolchain_script_reports_ready(toolchain: None) -> None:
    proc = run(["bash", str(TOOLCHAIN), "--check"])
    assert proc.returncode == 0 and "ready" in proc.stdout, explain(proc)
    assert shutil.which("mvn") and shutil.which("javac")
