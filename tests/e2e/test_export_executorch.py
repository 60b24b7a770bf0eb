"""The ExecuTorch programs of ``privtune export`` against eager PyTorch and the DP oracle.

The programs are the session bundle's (``bundle_dir`` in ``tests/conftest.py``, exported once per
session with the default options, the ones checked here). Its classifier (``classifier_dir``) has
its trainable tensors perturbed, so LoRA B is non-zero and its predictions are split between the
classes; this module loads it as ``classifier``, so eager PyTorch runs the very model the programs
were exported from. Only the int8-vs-fp32 agreement check exports programs of its own: the two
inference programs of that classifier after a little training (see ``trained_inference``).
Every comparison runs the real ExecuTorch runtime.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from export.bundle_types import ExportOptions, WrittenFile
from export.classifier import Classifier, load_classifier
from export.executorch_backend import PerExampleNet, export_executorch
from ondevice.bundle import load_manifest
from ondevice.data import LabelledTexts, load_tweeteval
from ondevice.dp_math import clip_and_sum, per_example_norms
from ondevice.et_runtime import EtInference, EtPerExampleGrads, EtTrainer, load_inference
from ondevice.protocol import ArtifactFile
from tests.dp_oracle import clipped_noised_sum, per_example_gradients

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_SEQ_LEN = 128
DP_BATCH = 8


@dataclass
class Exported:
    folder: Path
    files: list[ArtifactFile]
    """The bundle's ExecuTorch files, as its manifest lists them."""
    baked: dict[str, np.ndarray]
    """The classifier's trainable tensors, baked into the programs: perturbed by 0.05 and untrained
    (gradients of order 1: absolute 1e-5 tolerances)."""
    other: dict[str, np.ndarray]
    """``baked`` moved by another seeded 0.05 perturbation: a different adapter to hand the programs."""

    def path(self, role: str) -> Path:
        (match,) = [f for f in self.files if f.role == role]
        return self.folder / match.path


@pytest.fixture(scope="module")
def test_split(offensive_dir: Path) -> LabelledTexts:
    return load_tweeteval(offensive_dir, "test")


@pytest.fixture(scope="module")
def classifier(classifier_dir: Path) -> Classifier:
    """The classifier the session bundle was exported from (here in place of the session's fresh
    ``classifier``). Tests that change its weights restore them (``_holding``)."""
    torch.set_num_threads(2)
    clf = load_classifier(classifier_dir)
    clf.model.eval()
    return clf


@pytest.fixture(scope="module")
def exported(bundle_dir: Path, classifier: Classifier) -> Exported:
    """The session bundle's ExecuTorch programs; checks ``classifier`` holds the adapter baked into them."""
    manifest = load_manifest(bundle_dir)
    files = [f for f in manifest.files if f.backend == "executorch" or f.path.startswith("executorch/")]
    baked = classifier.trainable_state()
    adapter = load_file(str(bundle_dir / manifest.file("adapter").path))
    assert set(adapter) == set(baked), "the bundle's adapter and the classifier name different tensors"
    assert all(np.array_equal(adapter[n], baked[n]) for n in baked), "classifier_dir is not the bundle's classifier"
    lora_b = [n for n in baked if "lora_B" in n]
    assert lora_b and all(np.abs(baked[n]).max() > 0 for n in lora_b), "LoRA B must be non-zero for the checks to bite"
    rng = np.random.default_rng(7)
    other = {n: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for n, v in baked.items()}
    for f in files:
        print(f"\n[executorch] {f.role}: {f.size_bytes / 1e6:.1f} MB (session bundle)")
    return Exported(bundle_dir, files, baked, other)


def _train_briefly(clf: Classifier, data: LabelledTexts, steps: int = 30, batch: int = 32) -> None:
    """30 AdamW steps of head + LoRA on 128 tweets (mean cross-entropy), in place."""
    params = list(clf.trainable_parameters().values())
    optimizer = torch.optim.AdamW(params, lr=5e-3)
    order = np.random.default_rng(0).permutation(len(data))[:128]
    for step in range(steps):
        idx = [int(i) for i in order[(step * batch) % 128 : (step * batch) % 128 + batch]]
        tokens = clf.encode([data.texts[i] for i in idx])
        logits = clf.model(tokens["input_ids"], tokens["attention_mask"])  # [b, L]
        loss = F.cross_entropy(logits, torch.tensor([data.labels[i] for i in idx]))
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()


OPTIONS = ExportOptions(max_seq_len=MAX_SEQ_LEN, dp_batch_size=DP_BATCH, inference_max_batch=32)
WORKER_ROLES = ("inference_fp32",)  # exported in a second process: export is single-threaded Python


def _export_worker(classifier_dir: str, state_path: str, folder: str, result_path: str) -> None:
    """Subprocess entry: load the module's classifier, load the fixture's weights, export WORKER_ROLES."""
    torch.set_num_threads(1)
    clf = load_classifier(classifier_dir)  # as the module fixture
    clf.load_trainable_state(dict(np.load(state_path)))
    timings: dict[str, float] = {}
    files = export_executorch(clf, Path(folder), OPTIONS, roles=WORKER_ROLES, timings=timings)
    Path(result_path).write_text(json.dumps({"timings": timings, "files": [asdict(f) for f in files]}))


def _start_worker(classifier_dir: Path, folder: Path, state: dict[str, np.ndarray]) -> subprocess.Popen[bytes]:
    np.savez(folder / "state.npz", **state)  # type: ignore[arg-type]
    code = "import sys; from tests.e2e.test_export_executorch import _export_worker; _export_worker(*sys.argv[1:])"
    args = [str(classifier_dir), str(folder / "state.npz"), str(folder), str(folder / "worker.json")]
    with (folder / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )


@dataclass
class TrainedInference:
    folder: Path
    files: list[WrittenFile]

    def path(self, role: str) -> Path:
        (match,) = [f for f in self.files if f.role == role]
        return self.folder / match.path


@pytest.fixture(scope="module")
def trained_inference(
    classifier: Classifier, classifier_dir: Path, offensive_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainedInference:
    """fp32 and int8 inference programs of ``classifier`` after 30 AdamW steps (its weights restored after).

    The session adapter is untrained: its logit margins are so small that int8's ~2-3 % error flips
    ~1.5 % of the test split, below the 99 % agreement bar for reasons that say nothing about a
    classifier in use (training the head alone leaves it there too). Inference programs bake the
    adapter in, so this takes an export of its own.
    """
    saved = classifier.trainable_state()
    folder = tmp_path_factory.mktemp("trained")
    timings: dict[str, float] = {}
    try:
        _train_briefly(classifier, load_tweeteval(offensive_dir, "val"))
        classifier.model.eval()
        worker = _start_worker(classifier_dir, folder, classifier.trainable_state())
        try:
            mine = [r for r in ("inference_fp32", "inference_int8") if r not in WORKER_ROLES]
            files = export_executorch(classifier, folder, OPTIONS, roles=mine, timings=timings)
        finally:
            try:
                code = worker.wait(timeout=1500)
            except subprocess.TimeoutExpired:
                worker.kill()
                raise
    finally:
        classifier.load_trainable_state(saved)
    if code != 0:
        raise RuntimeError(f"export worker failed ({code}):\n{(folder / 'worker.log').read_text()[-3000:]}")
    result = json.loads((folder / "worker.json").read_text())
    timings |= result["timings"]
    files += [WrittenFile(**f) for f in result["files"]]
    for f in files:
        size = (folder / f.path).stat().st_size / 1e6
        print(f"\n[executorch] trained {f.role}: {size:.1f} MB, export {timings[f.role]:.1f} s (two in parallel)")
    return TrainedInference(folder, files)


@contextmanager
def _holding(clf: Classifier, state: dict[str, np.ndarray]) -> Iterator[Classifier]:
    """The classifier with ``state`` loaded; its previous weights are restored afterwards."""
    previous = clf.trainable_state()
    clf.load_trainable_state(state)
    try:
        yield clf
    finally:
        clf.load_trainable_state(previous)


def _eager_logits(clf: Classifier, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return clf.model(ids, mask).numpy()  # type: ignore[no-any-return]


def _lengths(clf: Classifier, texts: Sequence[str]) -> np.ndarray:
    return np.array([len(ids) for ids in clf.tokenizer(list(texts), truncation=False)["input_ids"]])


def test_writes_the_four_programs_with_roles(exported: Exported) -> None:
    roles = {f.role: f.path for f in exported.files}
    assert roles == {
        "inference_fp32": "executorch/inference_fp32.pte",
        "inference_int8": "executorch/inference_int8.pte",
        "training": "executorch/training.pte",
        "per_example_grads": "executorch/per_example_grads.pte",
    }
    assert all(f.backend == "executorch" for f in exported.files)
    sizes = {r: exported.path(r).stat().st_size for r in roles}
    # fp32 weights (~90 MB) stored once per program; int8 linears shrink the inference program.
    assert 80e6 < sizes["inference_fp32"] < 100e6
    assert sizes["inference_int8"] < 0.75 * sizes["inference_fp32"]


def test_fp32_inference_matches_eager_at_several_lengths(
    classifier: Classifier, exported: Exported, test_split: LabelledTexts
) -> None:
    runner = load_inference(exported.path("inference_fp32"))
    assert (runner.max_seq_len, runner.max_batch) == (MAX_SEQ_LEN, 32)
    lengths = _lengths(classifier, test_split.texts)
    order = np.argsort(lengths, kind="stable")
    near_64 = np.argsort(np.abs(lengths - 64), kind="stable")[:8]
    texts = list(test_split.texts)
    # The test split's longest tweet has 93 tokens: two long tweets joined make real text past max_seq_len.
    joined = [f"{texts[a]} {texts[b]}" for a, b in zip(order[-4:], order[-8:-4], strict=True)]
    assert min(_lengths(classifier, joined)) > MAX_SEQ_LEN, "these texts must be truncated"
    groups = [
        [texts[i] for i in order[:8]],  # short
        [texts[i] for i in near_64],  # ~64 tokens
        joined,  # truncated at max_seq_len
        [texts[order[100]]],  # batch of one
    ]
    worst, seen = 0.0, 0
    for group in groups:
        batch = classifier.encode(group)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        got = runner(ids, mask)  # [b, L]
        worst = max(worst, float(np.abs(got - _eager_logits(classifier, ids, mask)).max()))
        seen += len(group)
    print(f"\n[executorch] fp32 inference vs eager on {seen} tweets: max|Δ| = {worst:.2e}")
    assert seen >= 16
    assert worst <= 1e-4


def _macro_f1(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> float:
    scores = []
    for c in range(num_labels):
        tp = int(((preds == c) & (labels == c)).sum())
        fp = int(((preds == c) & (labels != c)).sum())
        fn = int(((preds != c) & (labels == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def _predict_all(clf: Classifier, runner: EtInference, texts: Sequence[str], batch: int = 32) -> np.ndarray:
    order = np.argsort(_lengths(clf, texts), kind="stable")
    preds = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        tokens = clf.encode([texts[i] for i in idx])
        preds[idx] = runner(tokens["input_ids"], tokens["attention_mask"]).argmax(axis=1)
    return preds


def test_int8_predictions_agree_with_fp32_on_the_test_split(
    classifier: Classifier, trained_inference: TrainedInference, test_split: LabelledTexts
) -> None:
    fp32 = load_inference(trained_inference.path("inference_fp32"))
    int8 = load_inference(trained_inference.path("inference_int8"))
    start = time.perf_counter()
    preds_fp32 = _predict_all(classifier, fp32, test_split.texts)
    middle = time.perf_counter()
    preds_int8 = _predict_all(classifier, int8, test_split.texts)
    end = time.perf_counter()
    labels = np.array(test_split.labels)
    agreement = float((preds_fp32 == preds_int8).mean())
    f1_fp32, f1_int8 = _macro_f1(labels, preds_fp32, 2), _macro_f1(labels, preds_int8, 2)
    print(
        f"\n[executorch] {len(labels)} test tweets: agreement {agreement:.4f}, macro-F1 fp32 {f1_fp32:.4f} "
        f"int8 {f1_int8:.4f}; fp32 predicts class 1 for {preds_fp32.mean():.3f}; "
        f"time fp32 {middle - start:.1f} s, int8 {end - middle:.1f} s"
    )
    assert len(labels) == 860
    assert 0.05 < preds_fp32.mean() < 0.95, "the classifier must not be trivial for agreement to mean anything"
    assert agreement >= 0.99


def test_per_example_net_with_zero_deltas_equals_eager(classifier: Classifier, test_split: LabelledTexts) -> None:
    texts, labels = list(test_split.texts[:DP_BATCH]), torch.tensor(test_split.labels[:DP_BATCH])
    batch = classifier.encode(texts)
    weight = torch.ones(DP_BATCH)
    weight[-1] = 0.0
    net = PerExampleNet(classifier, DP_BATCH)
    trainable = [p.detach() for p in classifier.trainable_parameters().values()]
    with torch.no_grad():
        ours = net(batch["input_ids"], batch["attention_mask"], labels, weight, *trainable)
        logits = classifier.model(batch["input_ids"], batch["attention_mask"])
        expected = (F.cross_entropy(logits, labels, reduction="none") * weight).sum()
    assert abs(float(ours) - float(expected)) <= 1e-5
    assert all(float(d.detach().abs().max()) == 0.0 for d in net.deltas())


def _oracle_compare(
    clf: Classifier,
    runner: EtPerExampleGrads,
    texts: list[str],
    labels: list[int],
    weight: np.ndarray,
    trainable: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Per-example grads from the program, and the oracle's for the real rows (clf must hold ``trainable``)."""
    batch = clf.encode(texts)
    got = runner(batch["input_ids"], batch["attention_mask"], labels, weight, trainable)
    real = [i for i in range(len(texts)) if weight[i] == 1.0]
    oracle = per_example_gradients(clf, [texts[i] for i in real], [labels[i] for i in real])
    worst = 0.0
    for k, i in enumerate(real):
        for name, value in oracle[k].items():
            assert got[name].shape == (DP_BATCH, *value.shape)
            delta = float(np.abs(got[name][i] - value).max())
            assert delta <= 1e-5, f"example {i} {name}: max|Δ| {delta:.2e}"
            worst = max(worst, delta)
    print(f"\n[executorch] per-example grads vs oracle ({len(real)} real rows of {len(texts)}): max|Δ| = {worst:.2e}")
    return got, oracle


def test_per_example_grads_match_the_oracle_then_clip_and_noise(
    classifier: Classifier, exported: Exported, test_split: LabelledTexts
) -> None:
    runner = EtPerExampleGrads(exported.path("per_example_grads"), classifier.trainable_specs())
    assert runner.batch_size == DP_BATCH
    lengths = _lengths(classifier, test_split.texts)
    picks = [int(i) for i in np.argsort(lengths, kind="stable")[::107][:DP_BATCH]]  # spread over lengths
    texts, labels = [test_split.texts[i] for i in picks], [test_split.labels[i] for i in picks]
    weight = np.ones(DP_BATCH, dtype=np.float32)
    # The classifier's untrained (perturbed) adapter, passed as program inputs: a trained one has gradients
    # of norm up to ~45, where float32 itself (the oracle vs a float64 run) differs by ~1.3e-5.
    with _holding(classifier, exported.baked):
        got, oracle = _oracle_compare(classifier, runner, texts, labels, weight, exported.baked)

    norms = per_example_norms(got)
    clip = float(np.median(norms))
    assert (norms > clip * 1.01).any() and (norms < clip * 0.99).any(), "some examples clipped, some not"
    rng = np.random.default_rng(3)
    noise = {s.name: rng.standard_normal(s.shape).astype(np.float32) * 0.1 for s in classifier.trainable_specs()}
    scale = 1.0 / DP_BATCH
    ours = {n: scale * (v + noise[n]) for n, v in clip_and_sum(got, clip, weight).items()}
    expected = clipped_noised_sum(oracle, clip, noise, scale)
    worst = max(float(np.abs(ours[n] - expected[n]).max()) for n in expected)
    print(f"\n[executorch] clipped+noised sum vs oracle: max|Δ| = {worst:.2e} (C = {clip:.3f})")
    assert worst <= 1e-5


def test_per_example_padding_rows_get_zero_and_trainables_are_inputs(
    classifier: Classifier, exported: Exported, test_split: LabelledTexts
) -> None:
    runner = EtPerExampleGrads(exported.path("per_example_grads"), classifier.trainable_specs())
    texts = list(test_split.texts[10 : 10 + DP_BATCH])
    labels = list(test_split.labels[10 : 10 + DP_BATCH])
    weight = np.ones(DP_BATCH, dtype=np.float32)
    weight[-2:] = 0.0  # two padding rows (real-looking tokens, weight 0)
    rng = np.random.default_rng(11)
    moved = {n: v + 0.02 * rng.standard_normal(v.shape).astype(np.float32) for n, v in exported.baked.items()}
    with _holding(classifier, moved):  # new tensors go in as inputs: no re-export
        got, _ = _oracle_compare(classifier, runner, texts, labels, weight, moved)
    for name, value in got.items():
        assert np.all(value[-2:] == 0.0), f"{name}: padding rows must get exactly zero gradient"
        assert np.abs(value[:-2]).max() > 0.0


def _eager_grads(clf: Classifier, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    params = clf.trainable_parameters()
    loss = F.cross_entropy(clf.model(ids, mask), labels)
    values = torch.autograd.grad(loss, list(params.values()))
    return {n: g.numpy() for n, g in zip(params, values, strict=True)} | {"loss": loss.detach().numpy()}


def test_training_program_gradients_and_sgd_step(
    classifier: Classifier, exported: Exported, test_split: LabelledTexts
) -> None:
    trainer = EtTrainer(exported.path("training"))
    with pytest.raises(RuntimeError, match="forward_backward once"):
        trainer.parameters()
    batch = classifier.encode(list(test_split.texts[20:28]))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = torch.tensor(test_split.labels[20:28])
    loss = trainer.forward_backward(ids, mask, labels)
    assert set(trainer.parameters()) == set(exported.baked)
    for name, value in trainer.parameters().items():
        np.testing.assert_array_equal(value, exported.baked[name])  # starts at the exported adapter
    assert abs(loss - float(_eager_grads(classifier, ids, mask, labels)["loss"])) <= 1e-5

    trainer.set_parameters(exported.other)  # host-side write (e.g. a new global adapter)
    for name, value in trainer.parameters().items():
        np.testing.assert_array_equal(value, exported.other[name])
    loss = trainer.forward_backward(ids, mask, labels)
    with _holding(classifier, exported.other):
        expected = _eager_grads(classifier, ids, mask, labels)
    assert abs(loss - float(expected["loss"])) <= 1e-5
    grads = trainer.gradients()
    assert set(grads) == set(exported.baked)
    worst = max(float(np.abs(grads[n] - expected[n]).max()) for n in grads)
    print(f"\n[executorch] training gradients vs eager: max|Δ| = {worst:.2e}")
    assert worst <= 1e-5

    lr = 0.1
    trainer.sgd_optimizer(lr)()  # the runtime's SGD, in place on the runtime's parameters
    after = trainer.parameters()
    step = max(float(np.abs(after[n] - (exported.other[n] - lr * grads[n])).max()) for n in after)
    assert step <= 1e-6
    assert all(not np.array_equal(after[n], exported.other[n]) for n in after)
    stepped_loss = trainer.forward_backward(ids, mask, labels)  # the runtime uses the stepped weights
    with _holding(classifier, after):
        assert abs(stepped_loss - float(_eager_grads(classifier, ids, mask, labels)["loss"])) <= 1e-5
    assert abs(stepped_loss - loss) > 1e-4


@pytest.mark.parametrize("length", [8, 33, 64, MAX_SEQ_LEN])
def test_dynamic_sequence_length(
    classifier: Classifier, exported: Exported, test_split: LabelledTexts, length: int
) -> None:
    batch = classifier.tokenizer(
        list(test_split.texts[:DP_BATCH]), padding="max_length", truncation=True, max_length=length, return_tensors="pt"
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (DP_BATCH, length)
    labels = torch.tensor(test_split.labels[:DP_BATCH])
    eager = _eager_grads(classifier, ids, mask, labels)

    expected = _eager_logits(classifier, ids[:2], mask[:2])
    fp32 = load_inference(exported.path("inference_fp32"))(ids[:2], mask[:2])
    assert np.abs(fp32 - expected).max() <= 1e-4
    int8 = load_inference(exported.path("inference_int8"))(ids[:2], mask[:2])
    # A sanity bound only (int8 logits are ~2-3 % off); int8 quality is the agreement test above.
    assert np.abs(int8 - expected).max() <= 0.05 * max(1.0, float(np.abs(expected).max()))
    trainer = EtTrainer(exported.path("training"))
    assert abs(trainer.forward_backward(ids, mask, labels) - float(eager["loss"])) <= 1e-5
    runner = EtPerExampleGrads(exported.path("per_example_grads"), classifier.trainable_specs())
    weight = np.ones(DP_BATCH, dtype=np.float32)
    with _holding(classifier, exported.other):
        eager = _eager_grads(classifier, ids, mask, labels)
    per_example = runner(ids, mask, labels, weight, exported.other)
    mean = {n: v.mean(axis=0) for n, v in per_example.items()}  # mean of per-example grads = batch gradient
    assert max(float(np.abs(mean[n] - eager[n]).max()) for n in mean) <= 1e-5


def test_runners_refuse_bad_shapes(classifier: Classifier, exported: Exported) -> None:
    runner = EtPerExampleGrads(exported.path("per_example_grads"), classifier.trainable_specs())
    ids = torch.ones((DP_BATCH - 1, 8), dtype=torch.long)
    with pytest.raises(ValueError, match="exactly 8 rows"):
        runner(ids, ids, [0] * 7, [1.0] * 7, classifier.trainable_state())
    with pytest.raises(ValueError, match="outside 2..128"):
        load_inference(exported.path("inference_fp32"))(
            torch.ones((1, 200), dtype=torch.long), torch.ones((1, 200), dtype=torch.long)
        )


def _median_ms(fn: Callable[[], object], repeats: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def test_report_latencies(classifier: Classifier, exported: Exported, test_split: LabelledTexts) -> None:
    """Observations only (printed; no timing asserts): the machine is shared."""
    torch.set_num_threads(2)
    ids = torch.randint(1000, 20000, (1, 64))
    mask = torch.ones_like(ids)
    fp32 = load_inference(exported.path("inference_fp32"))
    int8 = load_inference(exported.path("inference_int8"))
    lengths = _lengths(classifier, test_split.texts)
    picks = [int(i) for i in np.argsort(np.abs(lengths - 40), kind="stable")[:DP_BATCH]]
    batch = classifier.encode([test_split.texts[i] for i in picks])
    labels = [test_split.labels[i] for i in picks]
    weight = np.ones(DP_BATCH, dtype=np.float32)
    state = classifier.trainable_state()
    per_example = EtPerExampleGrads(exported.path("per_example_grads"), classifier.trainable_specs())
    trainer = EtTrainer(exported.path("training"))
    observed = {
        "inference fp32 1x64": _median_ms(lambda: fp32(ids, mask)),
        "inference int8 1x64": _median_ms(lambda: int8(ids, mask)),
        f"per-example grads {DP_BATCH}x{batch['input_ids'].shape[1]}": _median_ms(
            lambda: per_example(batch["input_ids"], batch["attention_mask"], labels, weight, state), repeats=5
        ),
        f"training step {DP_BATCH}x{batch['input_ids'].shape[1]}": _median_ms(
            lambda: trainer.forward_backward(batch["input_ids"], batch["attention_mask"], labels), repeats=5
        ),
    }
    for name, ms in observed.items():
        print(f"\n[executorch] {name}: {ms:.1f} ms (median)")


def test_export_refuses_bad_requests_before_any_work(classifier: Classifier, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="roles must be a non-empty subset"):
        export_executorch(classifier, tmp_path, ExportOptions(quantize=()), roles=["inference_int8"])
    with pytest.raises(ValueError, match="max_seq_len=256 exceeds"):
        export_executorch(classifier, tmp_path, ExportOptions(max_seq_len=256))
    assert not any(tmp_path.iterdir())
