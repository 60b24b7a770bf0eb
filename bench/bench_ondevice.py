"""Phone-runtime DP local step vs Opacus and vs each runtime's own non-private step; peak RSS; upload size.

Step cost (1 and 2 threads: torch, ORT intra-op and ExecuTorch's XNNPACK pool all set to the same count),
two workloads, every case measured in the same process, interleaved (one call of each case per round,
so a change of machine load hits every case alike; the 2-core machine is shared):

* ``batch8x64``: one batch of 8 × 64 random token ids (seeded; ``[CLS] … [SEP]`` framed);
* ``tweets``: 4 batches of 8 real TweetEval-offensive train tweets, each padded only to its own longest
  (``DeviceTokenizer.pad_batch``); the DP paths get the unpadded ids (ORT runs each example at its own
  length, ExecuTorch pads each chunk of 8 to its longest).

Cases (one call = one step per batch of the workload; σ = 1, C = 1, SGD):

``opacus_dp_step``        baseline: Opacus hooks mode (``GradSampleModule`` + ``DPOptimizer``) on the eager
                          classifier with the bundle's adapter — per-sample grads, clip, torch noise, SGD step
``torch_plain_step``      eager forward + backward + SGD step on the batch (no DP)
``ort_dp_step``           ``make_training_backend("ort")``: 8 batch-1 in-graph-clipped TrainSteps + OptimizerStep;
                          secure noise (``SecureRandomSource`` + ``gaussian_noise``) drawn inside the timing
``ort_plain_step``        ``OrtDpTrainer.plain_step``: one TrainStep on the whole batch, no clipping, no noise
``executorch_dp_step``    ``make_training_backend("executorch")``: per-example gradient program, host clipping,
                          secure noise (timed), numpy SGD
``executorch_plain_step`` ``training.pte`` forward_backward on the batch + the runtime's SGD step

Results: ``ondevice_dp_step_<workload>-<n>t.json`` (ratios to Opacus from ``build_result``; each runtime's
dp / plain ratio and the targets ≤ 0.6× Opacus, ≤ 1.15× own plain step under ``derived``, as data — never
asserted) and ``ondevice_footprint-2t.json`` (peak RSS of a fresh subprocess per runtime doing 5 private
steps; upload bytes per round for fp32 / fp16 and server-fixed ranks; target ≤ 80 KB = 80,000 bytes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import RESULTS_DIR, Timing, bench_round_config, build_result, machine_info, write_result
from ondevice.bundle import MANIFEST_FILE, verify_bundle
from ondevice.data import load_tweeteval, tweeteval_task_dir
from ondevice.protocol import ArtifactManifest, DpConfig, canonical_name, encode_update
from ondevice.randomness import SecureRandomSource, gaussian_noise
from ondevice.tokenizer import DeviceTokenizer
from ondevice.update import build_update

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ENV = "PRIVTUNE_BENCH_BUNDLE"
THREADS_ENV = "PRIVTUNE_BENCH_THREADS"
DEFAULT_BUNDLE = REPO_ROOT / "build" / "bench-bundle"

BATCH = 8
SEQ_LEN = 64
TWEET_BATCHES = 4
CLIP_NORM = 1.0
NOISE_MULTIPLIER = 1.0
LEARNING_RATE = 1e-3  # small: timing only; the parameters should stay in a normal range over ~30 steps
THREAD_COUNTS = (1, 2)
RUNTIMES = ("ort", "executorch")
REPEATS = {"batch8x64": 7, "tweets": 5}
WARMUP = 2
MAX_ATTEMPTS = 3
STABLE_SPREAD = 1.5
RSS_STEPS = 5
RSS_THREADS = 2

TARGET_VS_OPACUS = 0.6
TARGET_VS_OWN_PLAIN = 1.15
TARGET_UPLOAD_BYTES = 80_000

BASELINE = "opacus_dp_step"
DP_CASES = {"ort": ("ort_dp_step", "ort_plain_step"), "executorch": ("executorch_dp_step", "executorch_plain_step")}

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # ids [B, T], mask [B, T], labels [B]
StepFn = Callable[[Batch, list[np.ndarray]], object]  # (padded batch, its unpadded examples) → one step


def bench_bundle() -> Path:
    """``$PRIVTUNE_BENCH_BUNDLE`` if set, else ``build/bench-bundle`` (exported once here if missing)."""
    configured = os.environ.get(BUNDLE_ENV)
    if configured:
        path = Path(configured)
        if not (path / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"{BUNDLE_ENV}={configured} has no {MANIFEST_FILE}; export a bundle there first")
        return path
    if not (DEFAULT_BUNDLE / MANIFEST_FILE).is_file():
        from export.bundle import export_bundle
        from export.bundle_types import ExportOptions
        from export.classifier import build_classifier

        print(f"exporting a benchmark bundle to {DEFAULT_BUNDLE} (takes ~8 min, once)", flush=True)
        DEFAULT_BUNDLE.parent.mkdir(parents=True, exist_ok=True)
        export_bundle(build_classifier(seed=0), DEFAULT_BUNDLE, ExportOptions())
    return DEFAULT_BUNDLE


def load_adapter(bundle: Path, manifest: ArtifactManifest) -> dict[str, np.ndarray]:
    """The bundle's exported trainable tensors (float32, canonical names)."""
    from safetensors.numpy import load_file

    adapter = load_file(str(bundle / manifest.file("adapter").path))
    return {s.name: np.asarray(adapter[s.name], dtype=np.float32) for s in manifest.trainable}


def worst_spread(timings: Sequence[Timing]) -> float:
    """max over cases of median / min: ~1 on a quiet machine; large when other jobs took the cores."""
    return max(t.median_s / t.min_s for t in timings)


def interleaved_timings(
    cases: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int = WARMUP
) -> list[Timing]:
    """``warmup`` untimed calls per case, then ``repeats`` rounds timing one call of every case in turn."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return [Timing(name, tuple(values)) for name, values in samples.items()]


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """Padded batches for the plain paths and the same examples unpadded for the DP paths."""

    name: str
    batches: tuple[Batch, ...]
    description: str

    def examples(self, index: int) -> list[np.ndarray]:
        """Batch ``index`` as unpadded 1-D id arrays."""
        ids, mask, _ = self.batches[index]
        return [row[m.astype(bool)] for row, m in zip(ids, mask, strict=True)]


def synthetic_workload(tokenizer: DeviceTokenizer, vocab_size: int) -> Workload:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab_size, size=(BATCH, SEQ_LEN), dtype=np.int64)  # [B, T]
    framed = tokenizer.encode(["a"])[0]  # [CLS] a [SEP]
    ids[:, 0], ids[:, -1] = framed[0], framed[-1]
    labels = rng.integers(0, 2, size=BATCH, dtype=np.int64)  # [B]
    return Workload(
        "batch8x64", ((ids, np.ones_like(ids), labels),), f"{BATCH} x {SEQ_LEN} random ids in [1000, {vocab_size})"
    )


def tweet_workload(tokenizer: DeviceTokenizer) -> Workload:
    data = load_tweeteval(tweeteval_task_dir("offensive"), "train")
    count = BATCH * TWEET_BATCHES
    encoded = tokenizer.encode(list(data.texts[:count]))
    batches = []
    for start in range(0, count, BATCH):
        ids, mask = tokenizer.pad_batch(encoded[start : start + BATCH])  # [B, T_own]
        batches.append((ids, mask, np.asarray(data.labels[start : start + BATCH], dtype=np.int64)))
    return Workload(
        "tweets", tuple(batches), f"tweeteval/offensive train[:{count}] in {TWEET_BATCHES} batches of {BATCH}"
    )


# --------------------------------------------------------------------------- runtimes


@dataclass
class TorchCases:
    """Eager classifiers with the bundle's adapter: one wrapped by Opacus, one plain."""

    opacus_step: Callable[[Batch], None]
    plain_step: Callable[[Batch], None]
    per_sample_check: dict[str, Any]
    plain_gradients: Callable[[Batch], dict[str, np.ndarray]]
    reset: Callable[[], None]  # both classifiers back to the adapter (the timed steps move them)


def torch_cases(adapter: Mapping[str, np.ndarray], check_batch: Batch) -> TorchCases:
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from export.classifier import build_classifier

    private_clf, plain_clf = build_classifier(seed=0), build_classifier(seed=0)

    def reset() -> None:
        for clf in (private_clf, plain_clf):
            clf.load_trainable_state(dict(adapter))
            clf.model.train()  # Opacus captures activations in train mode only; dropout is 0 in this classifier

    reset()
    plain_model = plain_clf.model
    gsm = GradSampleModule(private_clf.model, batch_first=True, loss_reduction="mean")
    trainable = [p for p in gsm.parameters() if p.requires_grad]
    dp_optimizer = DPOptimizer(
        torch.optim.SGD(trainable, lr=LEARNING_RATE),
        noise_multiplier=NOISE_MULTIPLIER,
        max_grad_norm=CLIP_NORM,
        expected_batch_size=BATCH,
    )
    plain_params = {n: p for n, p in plain_model.named_parameters() if p.requires_grad}
    plain_optimizer = torch.optim.SGD(plain_params.values(), lr=LEARNING_RATE)

    def tensors(batch: Batch) -> tuple[Any, Any, Any]:
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in batch)  # type: ignore[return-value]

    def opacus_step(batch: Batch) -> None:
        ids, mask, labels = tensors(batch)
        dp_optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(gsm(ids, mask), labels).backward()  # type: ignore[no-untyped-call]
        dp_optimizer.step()

    def plain_step(batch: Batch) -> None:
        ids, mask, labels = tensors(batch)
        plain_optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(plain_model(ids, mask), labels).backward()  # type: ignore[no-untyped-call]
        plain_optimizer.step()

    def plain_gradients(batch: Batch) -> dict[str, np.ndarray]:
        ids, mask, labels = tensors(batch)
        plain_model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(plain_model(ids, mask), labels).backward()  # type: ignore[no-untyped-call]
        grads = {canonical_name(n): p.grad.detach().numpy().copy() for n, p in plain_params.items()}  # type: ignore[union-attr]
        plain_model.zero_grad(set_to_none=True)
        return grads

    # Opacus + PEFT can silently compute wrong per-sample grads (opacus #820): check 3 of them against
    # batch-1 autograd on the plain twin (same weights) before timing anything.
    ids, mask, labels = tensors(check_batch)
    dp_optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(gsm(ids[:3], mask[:3]), labels[:3]).backward()  # type: ignore[no-untyped-call]
    samples = {
        n.removeprefix("_module."): p.grad_sample.detach().clone() for n, p in gsm.named_parameters() if p.requires_grad
    }
    dp_optimizer.zero_grad(set_to_none=True)
    worst = 0.0
    for b in range(3):
        plain_model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(plain_model(ids[b : b + 1], mask[b : b + 1]), labels[b : b + 1])
        loss.backward()  # type: ignore[no-untyped-call]
        for name, param in plain_params.items():
            worst = max(worst, float((param.grad - samples[name][b]).abs().max()))
    plain_model.zero_grad(set_to_none=True)
    check = {"examples": 3, "tensors_with_grad_sample": len(samples), "max_abs_diff_vs_batch1_autograd": worst}
    return TorchCases(opacus_step, plain_step, check, plain_gradients, reset)


def _flat(tensors: Mapping[str, np.ndarray], manifest: ArtifactManifest) -> np.ndarray:
    return np.concatenate([np.asarray(tensors[s.name], dtype=np.float64).reshape(-1) for s in manifest.trainable])


def runtime_cases(
    bundle: Path,
    manifest: ArtifactManifest,
    threads: int,
    adapter: Mapping[str, np.ndarray],
    torch_side: TorchCases,
    check_batch: Batch,
) -> tuple[dict[str, StepFn], dict[str, Any]]:
    """Step functions (batch, its unpadded examples) per case for both runtimes, plus gradient checks
    of each plain step against eager PyTorch (the same mean-loss gradient, at the adapter)."""
    from ondevice.et_runtime import EtTrainer, set_threads
    from ondevice.ort_runtime import OrtDpTrainer
    from ondevice.train_backends import make_training_backend

    secure = SecureRandomSource()
    num_params = manifest.trainable_numel
    ort_dp = make_training_backend("ort", bundle, manifest, "sgd", LEARNING_RATE, threads)
    et_dp = make_training_backend("executorch", bundle, manifest, "sgd", LEARNING_RATE, threads)
    ort_plain = OrtDpTrainer(bundle / "ort", manifest.trainable, "sgd", LEARNING_RATE, threads)
    et_plain = EtTrainer(bundle / manifest.file("training", "executorch").path)
    set_threads(threads)

    torch_side.reset()
    expected = _flat(torch_side.plain_gradients(check_batch), manifest)
    ort_plain.set_learning_rate(1.0)
    ort_plain.set_parameters(adapter)
    ort_plain.plain_step(*check_batch)
    ort_grad = _flat(adapter, manifest) - _flat(ort_plain.get_parameters(), manifest)  # lr 1: Δθ = g
    ort_plain.set_parameters(adapter)
    ort_plain.set_learning_rate(LEARNING_RATE)
    et_plain.forward_backward(*check_batch)
    et_grad = _flat(et_plain.gradients(), manifest)
    et_sgd = et_plain.sgd_optimizer(LEARNING_RATE)
    checks = {
        "ort_plain_step_max_abs_diff_vs_torch_gradient": float(np.max(np.abs(ort_grad - expected))),
        "executorch_plain_step_max_abs_diff_vs_torch_gradient": float(np.max(np.abs(et_grad - expected))),
        "torch_gradient_max_abs": float(np.max(np.abs(expected))),
    }

    def dp_step(backend: Any) -> StepFn:
        def run(batch: Batch, examples: list[np.ndarray]) -> None:
            noise = gaussian_noise(secure, num_params, NOISE_MULTIPLIER * CLIP_NORM)  # [P], secure, timed
            backend.private_step(examples, [int(y) for y in batch[2]], CLIP_NORM, noise, 1.0 / BATCH)

        return run

    def et_plain_step(batch: Batch, _: list[np.ndarray]) -> None:
        et_plain.forward_backward(*batch)
        et_sgd()

    steps: dict[str, StepFn] = {
        BASELINE: lambda batch, _: torch_side.opacus_step(batch),
        "torch_plain_step": lambda batch, _: torch_side.plain_step(batch),
        "ort_dp_step": dp_step(ort_dp),
        "ort_plain_step": lambda batch, _: ort_plain.plain_step(*batch),
        "executorch_dp_step": dp_step(et_dp),
        "executorch_plain_step": et_plain_step,
    }
    return steps, checks


# --------------------------------------------------------------------------- step benchmark


def derived_fields(result: Mapping[str, Any], steps_per_call: int) -> dict[str, Any]:
    """Per-step times, dp/plain ratios per runtime, and the targets with whether each is met."""
    cases = result["cases"]

    def ratio(num: str, den: str, stat: str = "median_s") -> float:
        return float(cases[num][stat] / cases[den][stat])

    pairs = {"torch (opacus vs plain)": (BASELINE, "torch_plain_step")}
    pairs.update({runtime: DP_CASES[runtime] for runtime in RUNTIMES})
    targets: dict[str, Any] = {}
    for runtime in RUNTIMES:
        dp, plain = DP_CASES[runtime]
        vs_opacus, vs_plain = ratio(dp, BASELINE), ratio(dp, plain)
        vs_opacus_min, vs_plain_min = ratio(dp, BASELINE, "min_s"), ratio(dp, plain, "min_s")
        targets[runtime] = {
            "dp_vs_opacus": vs_opacus,
            "dp_vs_opacus_met": vs_opacus <= TARGET_VS_OPACUS,
            "dp_vs_own_plain": vs_plain,
            "dp_vs_own_plain_met": vs_plain <= TARGET_VS_OWN_PLAIN,
            "dp_vs_opacus_of_min": vs_opacus_min,
            "dp_vs_opacus_met_of_min": vs_opacus_min <= TARGET_VS_OPACUS,
            "dp_vs_own_plain_of_min": vs_plain_min,
            "dp_vs_own_plain_met_of_min": vs_plain_min <= TARGET_VS_OWN_PLAIN,
        }
    return {
        "steps_per_call": steps_per_call,
        "per_step_ms_median": {name: 1000 * c["median_s"] / steps_per_call for name, c in cases.items()},
        "per_step_ms_min": {name: 1000 * c["min_s"] / steps_per_call for name, c in cases.items()},
        "dp_over_plain": {label: ratio(dp, plain) for label, (dp, plain) in pairs.items()},
        "dp_over_plain_of_min": {label: ratio(dp, plain, "min_s") for label, (dp, plain) in pairs.items()},
        "ratio_to_baseline_of_min": {name: ratio(name, BASELINE, "min_s") for name in cases},
        "targets": {
            "dp_vs_opacus_max": TARGET_VS_OPACUS,
            "dp_vs_own_plain_max": TARGET_VS_OWN_PLAIN,
            "basis": "ratio of medians in this run (the *_of_min fields use the fastest sample instead)",
            "by_runtime": targets,
        },
    }


def step_benchmark(
    workload: Workload,
    threads: int,
    steps: Mapping[str, StepFn],
    checks: Mapping[str, Any],
) -> dict[str, Any]:
    examples = [workload.examples(i) for i in range(len(workload.batches))]

    def call(step: StepFn) -> Callable[[], None]:
        def run() -> None:
            for batch, batch_examples in zip(workload.batches, examples, strict=True):
                step(batch, batch_examples)

        return run

    cases = {name: call(fn) for name, fn in steps.items()}
    attempts: list[dict[str, Any]] = []

    def measure() -> list[Timing]:
        load_before = os.getloadavg()
        timings = interleaved_timings(cases, repeats=REPEATS[workload.name])
        attempts.append(
            {
                "loadavg_1_before": load_before[0],
                "loadavg_1_after": os.getloadavg()[0],
                "worst_median_over_min": worst_spread(timings),
                "median_ms": {t.case: 1000 * t.median_s for t in timings},
            }
        )
        return timings

    best = measure()
    while worst_spread(best) > STABLE_SPREAD and len(attempts) < MAX_ATTEMPTS:
        spread = attempts[-1]["worst_median_over_min"]
        print(f"   unstable timings (worst median/min {spread:.2f} > {STABLE_SPREAD}); again", flush=True)
        again = measure()
        if worst_spread(again) < worst_spread(best):
            best = again
    result = build_result(
        f"ondevice_dp_step_{workload.name}",
        best,
        baseline=BASELINE,
        threads=threads,
        params={
            "workload": workload.description,
            "batches_per_call": len(workload.batches),
            "padded_shapes": [list(b[0].shape) for b in workload.batches],
            "real_tokens_per_batch": [int(b[1].sum()) for b in workload.batches],
            "clip_norm": CLIP_NORM,
            "noise_multiplier": NOISE_MULTIPLIER,
            "optimizer": "sgd",
            "learning_rate": LEARNING_RATE,
            "scale": 1.0 / BATCH,
            "timing": f"interleaved rounds, {WARMUP} warm-up calls per case, perf_counter",
            "threads_set": "torch.set_num_threads, ORT intra_op_num_threads (inter-op 1), ExecuTorch set_threads",
        },
    )
    result["derived"] = derived_fields(result, len(workload.batches))
    result["derived"]["stability"] = {
        "criterion": f"every case's median / min <= {STABLE_SPREAD}; up to {MAX_ATTEMPTS} attempts, the attempt "
        "with the smallest worst spread is reported in 'cases' (chosen by spread, not by the ratios)",
        "stable": worst_spread(best) <= STABLE_SPREAD,
        "attempts": attempts,
    }
    result["checks"] = dict(checks)
    result["notes"] = [
        "Opacus adds noise from torch's default (non-cryptographic) generator; the ort/executorch DP steps draw "
        "secure noise (os.urandom + Box-Muller, 74,498 coordinates) inside the timed call.",
        "ort_dp_step runs 8 batch-1 TrainSteps (each example at its own length); ort_plain_step one batch-8 "
        "TrainStep. executorch_dp_step always runs the fixed Bfix=8 per-example program.",
        "The machine has 2 cores shared with other jobs: compare ratios within this file and check "
        "derived.stability. While developing this bench, contention hit 2-thread eager PyTorch (OpenMP) 10-15x "
        "(0.2 s -> 3 s per step) but ORT / ExecuTorch only 2-3x, which flatters their ratios to Opacus; the "
        "*_of_min ratios are the less load-sensitive reading.",
    ]
    return result


def print_step_table(result: Mapping[str, Any]) -> None:
    derived = result["derived"]
    stable = "stable" if derived["stability"]["stable"] else "UNSTABLE (machine busy)"
    print(f"-- {result['benchmark']} ({result['threads']} thread(s)); ms per step, median (min); {stable}")
    for name, case in result["cases"].items():
        print(
            f"   {name:24s} {derived['per_step_ms_median'][name]:8.1f} ({derived['per_step_ms_min'][name]:7.1f})"
            f"   x{case['ratio_to_baseline']:.2f} of opacus"
        )
    for runtime, target in derived["targets"]["by_runtime"].items():
        print(
            f"   {runtime}: dp/opacus {target['dp_vs_opacus']:.2f} (target <= {TARGET_VS_OPACUS}: "
            f"{'met' if target['dp_vs_opacus_met'] else 'NOT met'}), dp/plain {target['dp_vs_own_plain']:.2f} "
            f"(target <= {TARGET_VS_OWN_PLAIN}: {'met' if target['dp_vs_own_plain_met'] else 'NOT met'}); "
            f"of min: {target['dp_vs_opacus_of_min']:.2f} / {target['dp_vs_own_plain_of_min']:.2f}"
        )


# --------------------------------------------------------------------------- peak RSS (fresh processes)

_RSS_CHILD = r"""
import json, resource, sys
import numpy as np

def peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

def vm_hwm_kib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

runtime, bundle, threads, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stages = {"python_numpy": peak_kib()}
rng = np.random.default_rng(0)
if runtime == "opacus":
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from export.classifier import build_classifier
    stages["after_imports"] = peak_kib()
    torch.set_num_threads(threads)
    clf = build_classifier(seed=0)
    clf.model.train()
    gsm = GradSampleModule(clf.model, batch_first=True, loss_reduction="mean")
    params = [p for p in gsm.parameters() if p.requires_grad]
    opt = DPOptimizer(torch.optim.SGD(params, lr=1e-3), noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=8)
    stages["after_load"] = peak_kib()
    ids = torch.from_numpy(rng.integers(1000, 30000, size=(8, 64)))
    mask, labels = torch.ones_like(ids), torch.from_numpy(rng.integers(0, 2, size=8))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(gsm(ids, mask), labels).backward()
        opt.step()
else:
    from ondevice.bundle import verify_bundle
    from ondevice.randomness import SecureRandomSource, gaussian_noise
    from ondevice.train_backends import make_training_backend
    if runtime == "ort":
        import onnxruntime.training.api  # what OrtDpTrainer imports
    else:
        import ondevice.et_runtime  # imports torch: the ExecuTorch Python bindings take torch tensors
        import executorch.extension.training
    stages["after_imports"] = peak_kib()
    manifest = verify_bundle(bundle)
    backend = make_training_backend(runtime, bundle, manifest, "sgd", 1e-3, threads)
    stages["after_load"] = peak_kib()
    examples = [rng.integers(1000, 30000, size=64) for _ in range(8)]
    labels = [int(y) for y in rng.integers(0, 2, size=8)]
    source = SecureRandomSource()
    for _ in range(steps):
        noise = gaussian_noise(source, manifest.trainable_numel, 1.0)
        backend.private_step(examples, labels, 1.0, noise, 1.0 / 8)
stages["after_steps"] = peak_kib()
print(json.dumps({"stages_peak_kib": stages, "vm_hwm_kib": vm_hwm_kib(), "torch_imported": "torch" in sys.modules,
                  "onnxruntime_imported": "onnxruntime" in sys.modules}))
"""


def peak_rss(bundle: Path) -> dict[str, Any]:
    """ru_maxrss of a fresh interpreter per runtime (imports, load, RSS_STEPS private steps of 8 × 64).

    Run it while this process is still small: on Linux a fork+exec child starts with its parent's
    ru_maxrss (the parent's high-water mark is copied at fork and kept across exec), so a big parent
    would mask the child's own peak. ``vm_hwm_kib`` (/proc VmHWM of the exec'd image) cross-checks it.
    """
    import resource

    out: dict[str, Any] = {"parent_ru_maxrss_kib_at_spawn": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    for runtime in (*RUNTIMES, "opacus"):
        done = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, runtime, str(bundle), str(RSS_THREADS), str(RSS_STEPS)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"RSS child for {runtime} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        report["peak_rss_mib"] = report["stages_peak_kib"]["after_steps"] / 1024
        report["vm_hwm_mib"] = report["vm_hwm_kib"] / 1024 if report["vm_hwm_kib"] is not None else None
        report["ru_maxrss_masked_by_parent"] = (
            report["stages_peak_kib"]["after_steps"] <= out["parent_ru_maxrss_kib_at_spawn"]
        )
        out[runtime] = report
        print(
            f"   peak RSS {runtime:10s} {report['peak_rss_mib']:7.0f} MiB (VmHWM {report['vm_hwm_mib']:.0f}),"
            f" torch loaded: {report['torch_imported']}",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- upload size


def upload_sizes(manifest: ArtifactManifest, adapter: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Bytes of ``encode_update(build_update(...))`` per dtype / server-fixed rank (values do not change sizes)."""
    rng = np.random.default_rng(0)
    local = {k: v + (1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in adapter.items()}
    variants = {
        "fp32_full_rank": ("float32", None),
        "fp16_full_rank": ("float16", None),
        "fp16_train_rank_4": ("float16", 4),
        "fp16_train_rank_2": ("float16", 2),
    }
    sizes: dict[str, Any] = {}
    for label, (dtype, rank) in variants.items():
        dp = DpConfig(CLIP_NORM, NOISE_MULTIPLIER, 0.05, 40, 0.1, train_rank=rank)
        round_config = bench_round_config(manifest.manifest_hash(), dp, update_dtype=dtype)
        update = build_update(round_config, "bench-device-0001", adapter, local, 1.23, 1e-5)
        blob = encode_update(update)
        numel = sum(int(t.size) for t in update.tensors.values())
        sizes[label] = {
            "bytes": len(blob),
            "tensor_values": numel,
            "tensor_bytes": sum(int(t.nbytes) for t in update.tensors.values()),
            "header_and_metadata_bytes": len(blob) - sum(int(t.nbytes) for t in update.tensors.values()),
            "within_target": len(blob) <= TARGET_UPLOAD_BYTES,
        }
        print(f"   upload {label:18s} {len(blob):8d} bytes ({numel} values)")
    return {"target_bytes": TARGET_UPLOAD_BYTES, "target_note": "80 KB read as 80,000 bytes", "variants": sizes}


# --------------------------------------------------------------------------- main


def step_benchmarks(bundle: Path, threads: int) -> None:
    """Every step case at one thread count (run in its own process: see ``main``)."""
    manifest = verify_bundle(bundle)
    adapter = load_adapter(bundle, manifest)

    import torch
    from tokenizers import Tokenizer

    from ondevice.et_runtime import set_threads

    tokenizer = DeviceTokenizer.from_bundle(bundle, manifest)
    vocab_size = Tokenizer.from_file(str(bundle / manifest.file("tokenizer").path)).get_vocab_size()
    workloads = (synthetic_workload(tokenizer, vocab_size), tweet_workload(tokenizer))
    torch.set_num_threads(threads)
    set_threads(threads)  # before any ExecuTorch program loads: the pool is process-wide
    torch_side = torch_cases(adapter, workloads[0].batches[0])
    print(f"   opacus per-sample check: {torch_side.per_sample_check}")
    steps, checks = runtime_cases(bundle, manifest, threads, adapter, torch_side, workloads[0].batches[0])
    checks = {**checks, "opacus_per_sample_gradients": torch_side.per_sample_check}
    print(f"   plain-step gradient checks ({threads}t): {checks}")
    for workload in workloads:
        result = step_benchmark(workload, threads, steps, checks)
        print_step_table(result)
        print(write_result(result))


def main() -> None:
    bundle = bench_bundle()
    if THREADS_ENV in os.environ:  # the child process of one thread count
        step_benchmarks(bundle, int(os.environ[THREADS_ENV]))
        return
    manifest = verify_bundle(bundle)
    adapter = load_adapter(bundle, manifest)
    rss = peak_rss(bundle)  # first, while this process is small (see peak_rss)
    for threads in THREAD_COUNTS:
        # One process per thread count: ExecuTorch's XNNPACK pool is process-wide and must not be
        # resized under loaded programs (ondevice.et_runtime.set_threads refuses to).
        env = {**os.environ, THREADS_ENV: str(threads), BUNDLE_ENV: str(bundle)}
        subprocess.run([sys.executable, "-m", "bench", "bench_ondevice"], env=env, check=True, cwd=REPO_ROOT)
    footprint = {
        "benchmark": "ondevice_footprint",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "threads": RSS_THREADS,
        "params": {"bundle": str(bundle), "rss_steps": RSS_STEPS, "rss_batch": f"{BATCH} x {SEQ_LEN}"},
        "peak_rss": rss,
        "upload": upload_sizes(manifest, adapter),
        "notes": [
            "Peak RSS = resource.getrusage(RUSAGE_SELF).ru_maxrss of a fresh python per runtime, after imports, "
            "bundle load (verify_bundle hashes every file, streaming) and private steps; KiB on Linux.",
            "`import onnxruntime` imports torch when torch is installed in the environment (RUNTIME-NOTES), so "
            "the ort figure includes torch here; a phone's ORT has no torch. The ExecuTorch Python bindings take "
            "torch tensors, so that figure includes torch too.",
            "Upload sizes do not depend on the tensor values: fixed-size safetensors plus JSON metadata.",
        ],
    }
    path = RESULTS_DIR / "ondevice_footprint-2t.json"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(footprint, indent=2) + "\n")
    print(path)


if __name__ == "__main__":
    main()
