"""The Android demo app (``android_demo/app``): what can be built and checked on this machine.

1. ``android_demo/build.sh`` builds the ORT-free shell APK offline (core + app shell, aapt2, javac, the
   app's JVM unit tests, dx at minSdk 21, zipalign, a fresh debug key, apksigner): it must report OK, and
   the APK must verify, carry the package / minSdk 21 / launchable activity / INTERNET permission, and
   its dex must define the core and app classes and none of ONNX Runtime's (excluded by design).
2. The app's pure-Java pieces against the Python implementation:
   * the phone-side epsilon (RDP of the Poisson-subsampled Gaussian at integer orders) equals
     ``ondevice.accounting.RdpAccountant`` over the same orders, and bounds Python's PLD figure;
   * the ORT checkpoint reader/patcher (ORT's Java API has no parameter get/set) against real
     onnxruntime-training 1.19.2 checkpoints, both directions;
   * one participation round of the app's real round logic (check-in, adapter download, local DP loop,
     ledger, clipping, outbox, upload) against the real aggregator, with a zero-gradient test double in
     place of ONNX Runtime (the only piece that cannot run here).
3. ``android_demo/emulator/run_emulator_tests.sh`` reports SKIPPED with status 77 where there is no
   emulator; where there is one, it runs for real and must pass.
4. The Gradle files (machine with internet) reference onnxruntime-training-android 1.19.2.

If apt is unreachable and the toolchain is missing, the build tests are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ondevice.accounting import LocalPrivacyLedger, PldAccountant, RdpAccountant, StepEvent
from ondevice.bundle import load_manifest
from ondevice.protocol import decode_update, sha256_hex
from server_aggregator.service import Aggregator
from tests.android_harness import REPO_ROOT, explain, run, toolchain_fixture
from tests.server_harness import LiveServer, admin, enroll, make_config

pytestmark = pytest.mark.slow

DEMO = REPO_ROOT / "android_demo"
BUILD_SH = DEMO / "build.sh"
EMULATOR_SH = DEMO / "emulator" / "run_emulator_tests.sh"
SKIPPED_STATUS = 77
PACKAGE = "dev.privtune.demo"
INTEGER_ORDERS = [float(a) for a in range(2, 64)] + [128.0, 256.0, 512.0, 1024.0]


toolchain = toolchain_fixture("ANDROID TOOLCHAIN MISSING AND APT UNREACHABLE, APK NOT built")


@dataclass(frozen=True)
class ApkBuild:
    out: Path
    apk: Path
    test_apk: Path
    stdout: str
    seconds: float

    @property
    def classpath(self) -> str:
        work = self.out / "work"
        return os.pathsep.join(str(work / d) for d in ("test-classes", "classes", "core"))


@pytest.fixture(scope="module")
def apk_build(toolchain: None, tmp_path_factory: pytest.TempPathFactory) -> ApkBuild:
    out = tmp_path_factory.mktemp("apk") / "build"
    start = time.monotonic()
    proc = run(["bash", str(BUILD_SH), str(out)], timeout=900)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"android_demo/build.sh failed: {explain(proc)}"
    return ApkBuild(
        out, out / "privtune-demo-shell.apk", out / "privtune-demo-shell-androidTest.apk", proc.stdout, seconds
    )


def java(build: ApkBuild, main: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run(["java", "-cp", build.classpath, f"dev.privtune.demo.tools.{main}", *args], timeout=timeout)


# --------------------------------------------------------------------------- 1. the offline APK


def test_build_reports_ok_runs_the_unit_tests_and_excludes_ort(apk_build: ApkBuild) -> None:
    out = apk_build.stdout
    assert "BUILD OK in" in out, out[-3000:]
    tests = re.search(r"^OK \((\d+) tests\)", out, re.MULTILINE)
    assert tests and int(tests.group(1)) >= 20, f"the app's JVM unit tests did not all run: {out[-3000:]}"
    assert "5 ORT classes type-check; NOT dexed" in out
    assert "NOT IN THIS APK (by design): app/src/ort" in out
    print(f"build.sh took {apk_build.seconds:.1f} s")  # reported, never asserted (timings go to bench/)


def test_build_fails_loudly_when_a_step_fails(toolchain: None, tmp_path: Path) -> None:
    """A build with the cached debs pointing nowhere must stop, name the step and exit non-zero."""
    env = {**os.environ, "PRIVTUNE_ANDROID_DEBS": str(tmp_path / "no-debs")}
    proc = run(["bash", str(BUILD_SH), str(tmp_path / "out")], env=env, timeout=120)
    assert proc.returncode != 0
    assert "BUILD FAILED at step: toolchain" in proc.stderr, explain(proc)
    assert not list((tmp_path / "out").glob("*.apk"))


def test_apk_is_signed_aligned_and_declares_the_app(apk_build: ApkBuild) -> None:
    for apk in (apk_build.apk, apk_build.test_apk):
        proc = run(["apksigner", "verify", "--verbose", "--print-certs", str(apk)])
        assert proc.returncode == 0 and proc.stdout.startswith("Verifies"), explain(proc)
        assert "Verified using v2 scheme (APK Signature Scheme v2): true" in proc.stdout
    certs = [
        re.findall(
            r"certificate SHA-256 digest: ([0-9a-f]+)", run(["apksigner", "verify", "--print-certs", str(a)]).stdout
        )
        for a in (apk_build.apk, apk_build.test_apk)
    ]
    assert certs[0] and certs[0] == certs[1], "the app and its test APK must share the (fresh) debug key"
    assert run(["zipalign", "-c", "-p", "4", str(apk_build.apk)]).returncode == 0

    badging = run(["aapt", "dump", "badging", str(apk_build.apk)]).stdout
    assert re.search(rf"^package: name='{PACKAGE}' versionCode='1'", badging, re.MULTILINE), badging
    assert "sdkVersion:'21'" in badging and "targetSdkVersion:'23'" in badging
    assert f"launchable-activity: name='{PACKAGE}.ui.MainActivity'" in badging
    assert "uses-permission: name='android.permission.INTERNET'" in badging
    manifest = run(["aapt", "dump", "xmltree", str(apk_build.apk), "AndroidManifest.xml"]).stdout
    assert "android.permission.BIND_JOB_SERVICE" in manifest and '".job.ParticipationJobService"' in manifest
    test_manifest = run(["aapt", "dump", "xmltree", str(apk_build.test_apk), "AndroidManifest.xml"]).stdout
    assert "android.test.InstrumentationTestRunner" in test_manifest and f'"{PACKAGE}"' in test_manifest
    assert not any(p.name.endswith((".keystore", ".jks")) for p in apk_build.out.rglob("*")), (
        "a keystore was left behind"
    )


def dex_class_names(dex: bytes) -> set[str]:
    """Descriptors of the classes a dex file DEFINES (class_defs), read from its header tables."""
    assert dex[:4] == b"dex\n", dex[:8]
    string_ids_size, string_ids_off, type_ids_size, type_ids_off = struct.unpack_from("<4I", dex, 0x38)
    class_defs_size, class_defs_off = struct.unpack_from("<2I", dex, 0x60)

    def string(index: int) -> str:
        (offset,) = struct.unpack_from("<I", dex, string_ids_off + 4 * index)
        while dex[offset] & 0x80:  # skip the uleb128 utf16 length
            offset += 1
        end = dex.index(b"\x00", offset + 1)
        return dex[offset + 1 : end].decode("utf-8", errors="replace")  # MUTF-8; class names here are ASCII

    assert type_ids_size > 0 and string_ids_size > 0
    names = set()
    for i in range(class_defs_size):
        (type_index,) = struct.unpack_from("<I", dex, class_defs_off + 32 * i)
        (descriptor_index,) = struct.unpack_from("<I", dex, type_ids_off + 4 * type_index)
        names.add(string(descriptor_index))
    return names


def test_dex_defines_core_and_app_classes_and_no_onnx_runtime(apk_build: ApkBuild) -> None:
    with zipfile.ZipFile(apk_build.apk) as apk:
        assert [n for n in apk.namelist() if n.endswith(".dex")] == ["classes.dex"]
        classes = dex_class_names(apk.read("classes.dex"))
    with zipfile.ZipFile(apk_build.test_apk) as apk:
        test_classes = dex_class_names(apk.read("classes.dex"))
    core = ["net/UploadClient", "net/AggregatorClient", "tokenizer/DeviceTokenizer", "dp/LocalLedger", "dp/Gaussian",
            "protocol/UpdateCodec", "bundle/Bundle", "device/Classifier", "device/LocalTrainer"]  # fmt: skip
    app = ["ui/MainActivity", "ui/ExamplesActivity", "ui/PrivacyActivity", "ui/SettingsActivity",
           "job/ParticipationJobService", "job/JobScheduling", "runtime/RuntimeLookup", "privacy/RdpAccountant",
           "train/LocalDpLoop", "train/OrtCheckpointFile", "round/RoundRunner", "round/Participation", "R"]  # fmt: skip
    missing = [f"Ldev/privtune/core/{c};" for c in core if f"Ldev/privtune/core/{c};" not in classes]
    missing += [
        f"L{PACKAGE.replace('.', '/')}/{c};" for c in app if f"L{PACKAGE.replace('.', '/')}/{c};" not in classes
    ]
    assert not missing, f"classes.dex lacks {missing}"
    excluded = ("Lai/onnxruntime/", "Ldev/privtune/demo/ort/", "Lorg/junit/", "Ldev/privtune/demo/tools/")
    forbidden = [c for c in classes if c.startswith((*excluded, "Ldev/privtune/core/tools/"))]
    assert not forbidden, f"the shell APK must not contain ORT, stubs, JUnit or test tools: {sorted(forbidden)[:5]}"
    assert "Ldev/privtune/demo/ParticipationE2ETest;" in test_classes
    assert "Ldev/privtune/demo/JobSchedulingTest;" in test_classes
    assert not any(c.startswith("Ldev/privtune/core/") for c in test_classes), "the test APK re-packs app classes"
    if shutil.which("dexdump"):  # cross-check the hand-written reader where the tool exists
        dump = run(["dexdump", str(apk_build.apk)]).stdout
        assert set(re.findall(r"Class descriptor\s+: '([^']+)'", dump)) == classes


def test_app_shell_sources_never_import_onnx_runtime() -> None:
    main = list((DEMO / "app/src/main/java").rglob("*.java"))
    assert len(main) > 20
    offenders = [str(p) for p in main if "ai.onnxruntime" in p.read_text()]
    assert not offenders, f"ORT imports in the ORT-free shell: {offenders}"
    ort = sorted(p.name for p in (DEMO / "app/src/ort/java").rglob("*.java"))
    assert {"OrtClassifier.java", "OrtLocalTrainer.java", "OrtRuntime.java", "OrtStepRunner.java"} <= set(ort)
    assert all("ai.onnxruntime" in (DEMO / "app/src/ort/java/dev/privtune/demo/ort" / n).read_text() for n in
               ("OrtClassifier.java", "OrtLocalTrainer.java", "OrtRuntime.java", "OrtStepRunner.java"))  # fmt: skip


# --------------------------------------------------------------------------- 2. against Python


def test_phone_epsilon_equals_python_rdp_at_integer_orders(apk_build: ApkBuild, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    cases: list[dict[str, Any]] = [
        {"delta": 1e-5, "events": [[0.1, 1.0, 10]]},  # the server's default local round
        {"delta": 1e-5, "events": [[0.1, 1.0, 1000]]},
        {"delta": 1e-6, "events": [[0.01, 0.6, 500], [0.2, 2.5, 30]]},
        {"delta": 1e-5, "events": [[1.0, 3.0, 5]]},  # q = 1: the plain Gaussian mechanism
        {"delta": 1e-3, "events": [[0.999, 0.5, 2]]},
        {"delta": 1e-5, "events": [[1e-4, 0.3, 20000]]},
    ]
    for _ in range(14):
        events = [[float(rng.uniform(0.001, 0.9)), float(rng.uniform(0.4, 6.0)), int(rng.integers(1, 400))]
                  for _ in range(int(rng.integers(1, 4)))]  # fmt: skip
        cases.append({"delta": float(10.0 ** -rng.uniform(3, 8)), "events": events})
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases}))
    proc = java(apk_build, "RdpCli", str(tmp_path / "cases.json"))
    assert proc.returncode == 0, explain(proc)
    got = [float(line) for line in proc.stdout.split()]
    assert len(got) == len(cases)
    for case, eps_java in zip(cases, got, strict=True):
        steps = [StepEvent(q, s, n) for q, s, n in case["events"]]
        eps_python = RdpAccountant(INTEGER_ORDERS).epsilon(steps, case["delta"])
        assert eps_java == pytest.approx(eps_python, rel=1e-12, abs=1e-12), case
        # the phone's figure is an upper bound of what Python reports from the same ledger
        assert eps_java >= RdpAccountant().epsilon(steps, case["delta"]) - 1e-12
        assert eps_java >= PldAccountant().epsilon(steps, case["delta"])


def test_checkpoint_patch_and_read_agree_with_onnxruntime_training(
    apk_build: ApkBuild, bundle_dir: Path, tmp_path: Path
) -> None:
    from onnxruntime.training.api import CheckpointState

    from ondevice.ort_runtime import OrtDpTrainer

    manifest = load_manifest(bundle_dir)
    ckpt = bundle_dir / "ort" / "checkpoint"
    rng = np.random.default_rng(3)
    values = {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in manifest.trainable}
    save_file(values, str(tmp_path / "values.safetensors"))

    # Java writes the global adapter into a copy; ORT loads it with exactly those values, frozen ones intact.
    patched = tmp_path / "patched.ckpt"
    proc = java(
        apk_build,
        "CheckpointCli",
        "patch",
        str(ckpt),
        str(patched),
        str(bundle_dir),
        str(tmp_path / "values.safetensors"),
    )
    assert proc.returncode == 0, explain(proc)
    assert patched.stat().st_size == ckpt.stat().st_size
    state, original = CheckpointState.load_checkpoint(str(patched)), CheckpointState.load_checkpoint(str(ckpt))
    for spec in manifest.trainable:
        np.testing.assert_array_equal(state.parameters[spec.name].data, values[spec.name])
    frozen = [name for name, _ in original.parameters if name not in values]
    assert len(frozen) > 50
    for name in frozen:
        np.testing.assert_array_equal(state.parameters[name].data, original.parameters[name].data)
    # ...and a training session built on the patched file sees the global adapter.
    from_patch = OrtDpTrainer(bundle_dir / "ort", manifest.trainable, "sgd", checkpoint=patched)
    got = from_patch.get_parameters()
    assert all(np.array_equal(got[k], values[k]) for k in values)

    # ORT trains and saves (with AdamW state); Java reads back exactly the trained adapter.
    trainer = OrtDpTrainer(bundle_dir / "ort", manifest.trainable, "adamw", learning_rate=1e-2, checkpoint=patched)
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    noise = rng.standard_normal(trainer.num_params).astype(np.float32)
    trainer.accumulate(ids, np.ones_like(ids), 1, 1.0, noise, 0.5)
    trainer.step()
    trained = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(trained)
    proc = java(apk_build, "CheckpointCli", "read", str(trained), str(bundle_dir), str(tmp_path / "read.safetensors"))
    assert proc.returncode == 0, explain(proc)
    read = load_file(str(tmp_path / "read.safetensors"))
    expected = trainer.get_parameters()
    assert set(read) == set(expected)
    assert any(not np.array_equal(expected[k], values[k]) for k in values), "the step changed nothing"
    for name, value in expected.items():
        np.testing.assert_array_equal(read[name], value)

    # a file that is not a checkpoint is refused with the reason
    proc = java(
        apk_build,
        "CheckpointCli",
        "read",
        str(bundle_dir / "ort" / "eval_model.onnx"),
        str(bundle_dir),
        str(tmp_path / "x"),
    )
    assert proc.returncode != 0 and "not an ONNX Runtime training checkpoint" in proc.stderr, explain(proc)


def round_once(
    build: ApkBuild, url: str, device: str, secret: bytes, bundle: Path, state: Path, *extra: str
) -> dict[str, Any]:
    proc = java(build, "RoundOnceCli", url, device, secret.hex(), str(bundle), str(state), "12", *extra, timeout=300)
    assert proc.returncode == 0, explain(proc)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_a_round_of_the_app_logic_against_the_real_aggregator(
    apk_build: ApkBuild, tmp_path: Path, bundle_dir: Path, classifier_dir: Path
) -> None:
    config = make_config(
        tmp_path, bundle_dir, classifier_dir, update_dtype="float16", update_clip_norm=0.5, epsilon_budget=100.0
    )
    service = Aggregator(config)
    try:
        with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
            phone, secret = enroll(http, "app-phone-1")
            capped, capped_secret = enroll(http, "app-phone-2")
            admin(http, "POST", "/v1/admin/rounds").raise_for_status()  # q = min(1, 10 / 2): both selected

            state = tmp_path / "phone1"
            result = round_once(apk_build, server.url, phone, secret, bundle_dir, state)
            assert result["kind"] == "UPLOADED", result
            ledger = LocalPrivacyLedger(state / "ledger.json", delta=1e-5)
            steps = ledger.steps()
            assert result["steps"] == len(steps) > 0 and {s.round_id for s in steps} == {result["round_id"]}
            body = (state / "outbox" / f"round-{result['round_id']}.update").read_bytes()
            assert sha256_hex(body) == result["receipt_sha256"]
            update = decode_update(body)  # the app's bytes through Python's decoder
            assert update.device_id == phone and update.dtype == "float16"
            assert update.manifest_hash == load_manifest(bundle_dir).manifest_hash()
            assert 0 < update.l2_norm() <= 0.5
            eps_python = RdpAccountant(INTEGER_ORDERS).epsilon(ledger.step_events(), update.local_delta)
            assert update.local_epsilon == pytest.approx(eps_python, rel=1e-12) == result["epsilon"]
            assert update.local_epsilon >= ledger.epsilon("pld")

            again = round_once(apk_build, server.url, phone, secret, bundle_dir, state)  # same round: no retraining
            assert again["kind"] == "UPLOADED" and again["steps"] == 0, again
            assert again["receipt_sha256"] == result["receipt_sha256"]
            assert len(LocalPrivacyLedger(state / "ledger.json", delta=1e-5).steps()) == len(steps)

            refused = round_once(apk_build, server.url, capped, capped_secret, bundle_dir, tmp_path / "phone2", "0.01")
            assert refused["kind"] == "BUDGET_EXHAUSTED", refused
            assert "budget" in refused["detail"] and not (tmp_path / "phone2" / "ledger.json").exists()

            status = admin(http, "GET", "/v1/status").json()
            assert status["accepted_total"] == 1 and status["rejected_total"] == 0, status
    finally:
        service.close()


def test_the_app_refuses_a_class_weighted_round_before_any_step(
    apk_build: ApkBuild, tmp_path: Path, bundle_dir: Path, classifier_dir: Path
) -> None:
    """The app parses ``class_weights`` (the wire contract) but does not implement them: it must say so and
    train nothing, rather than train without the weights the server asked for."""
    from server_aggregator.config import DEFAULT_LOCAL_DP

    local_dp = replace(DEFAULT_LOCAL_DP, class_weights=(0.5, 1.0))
    config = make_config(tmp_path, bundle_dir, classifier_dir, local_dp=local_dp, epsilon_budget=100.0)
    service = Aggregator(config)
    try:
        with LiveServer(service) as server, httpx.Client(base_url=server.url) as http:
            phone, secret = enroll(http, "app-phone-weighted")
            admin(http, "POST", "/v1/admin/rounds").raise_for_status()
            state = tmp_path / "phone"
            result = round_once(apk_build, server.url, phone, secret, bundle_dir, state)
            assert result["kind"] == "NOT_SUPPORTED", result
            assert "class weights [0.5, 1.0]" in result["detail"], result
            assert not (state / "ledger.json").exists()
    finally:
        service.close()


# --------------------------------------------------------------------------- 3. emulator


def test_emulator_script_skips_visibly_without_an_emulator(bundle_dir: Path, classifier_dir: Path) -> None:
    has_sdk = bool(shutil.which("adb") and shutil.which("emulator")) or bool(
        os.environ.get("ANDROID_SDK_ROOT") or os.environ.get("ANDROID_HOME")
    )
    env = {**os.environ, "PRIVTUNE_BUNDLE": str(bundle_dir), "PRIVTUNE_CLASSIFIER": str(classifier_dir)}
    proc = run(["bash", str(EMULATOR_SH)], env=env, timeout=3600)
    if proc.returncode == SKIPPED_STATUS:
        assert proc.stdout.startswith("SKIPPED: no Android emulator/SDK on this machine ("), explain(proc)
        assert "NOT run" in proc.stdout and "PASSED" not in proc.stdout
        if not has_sdk:  # the script behaved; the emulator tests themselves did not run: say so as a skip
            pytest.skip(f"EMULATOR TESTS SKIPPED (no Android emulator/SDK here): {proc.stdout.strip()[:300]}")
        pytest.skip(f"EMULATOR TESTS NOT RUN: an SDK is configured but unusable here: {proc.stdout.strip()}")
    # An emulator exists: the script ran for real (classify -> train -> upload) and must have passed.
    assert proc.returncode == 0, explain(proc)
    assert "PASSED: OK (" in proc.stdout and "server accepted" in proc.stdout


# --------------------------------------------------------------------------- 4. Gradle (elsewhere)


def test_gradle_files_build_the_ort_flavour_with_onnxruntime_training_1_19_2() -> None:
    app = (DEMO / "app" / "build.gradle.kts").read_text()
    assert re.search(r'"ortImplementation"\("com\.microsoft\.onnxruntime:onnxruntime-training-android:1\.19\.2"\)', app)
    assert 'implementation(project(":core"))' in app
    assert re.search(r"minSdk = 21\b", app) and 'namespace = "dev.privtune.demo"' in app
    assert 'testInstrumentationRunner = "android.test.InstrumentationTestRunner"' in app
    assert 'create("ort")' in app and 'create("shell")' in app
    settings = (DEMO / "settings.gradle.kts").read_text()
    assert 'include(":core")' in settings and 'include(":app")' in settings
    root = (DEMO / "build.gradle.kts").read_text()
    assert 'id("com.android.application")' in root and 'apply(plugin = "java-library")' in root
    assert not (DEMO / "core" / "build.gradle.kts").exists()  # core/ stays Maven-only
    assert not re.search(r'"androidx\.[\w.]+:', app + root + settings), "no androidx dependency (not needed)"
    rules = (DEMO / "app" / "proguard-rules.pro").read_text()
    assert "dev.privtune.demo.ort.OrtRuntime" in rules
