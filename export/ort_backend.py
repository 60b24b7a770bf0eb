"""ONNX Runtime Training backend of ``privtune export`` (all ORT / ONNX graph code lives here).

Files written under ``<bundle>/ort/`` (onnxruntime-training 1.19.2; IR ≤ 10, opset 17):

    training_model.onnx    forward + cross-entropy + gradients + in-graph DP clipping + accumulators
    eval_model.onnx        forward + cross-entropy (no gradients)
    optimizer_<name>.onnx  one per ``ExportOptions.optimizers``: ``adamw`` (ORT's onnxblock defaults:
                           betas 0.9/0.999, eps 1e-6, weight decay 0, bias correction) or ``sgd`` (plain
                           p ← p − lr·g); the learning rate is set at run time (SetLearningRate)
    checkpoint             every parameter: the 26 LoRA + head tensors trainable, the rest frozen
    inference.onnx         logits only, with the EXPORTED adapter weights baked in as constants; to
                           classify with trained weights, re-export or run ExportModelForInferencing
                           on the eval model (``OrtDpTrainer.export_for_inferencing``)

Graph contract (the device must follow it):

* ``training_model.onnx`` user inputs, in this order: ``input_ids`` int64 [B, T],
  ``attention_mask`` int64 [B, T], ``labels`` int64 [B], ``dp_clip_norm`` float32 [1] (C),
  ``dp_noise`` float32 [P] (P = 74,498: the trainable tensors flattened row-major and concatenated in
  the canonical order of ``Classifier.trainable_parameters()`` = ``ondevice.dp_math.flat_to_tensors``),
  ``dp_scale`` float32 [1]. Output: ``loss`` float32 [] (mean cross-entropy over the batch). B and T
  are dynamic; the contract is T ≤ ``ExportOptions.max_seq_len`` (the graph itself accepts up to the
  encoder's 512 positions). Call it with B = 1: per TrainStep it accumulates, for each trainable p,
  ``g'_p = (g_p · min(1, C / (‖g‖ + 1e-6)) + noise_p) · scale``, ‖g‖ the global L2 norm of that step's
  gradient over all trainable tensors. Pass the real noise on one step of a batch and zeros on the
  others; after B steps the accumulated gradient is ``scale · (Σ_i clip(g_i) + noise)``; OptimizerStep
  applies it, then LazyResetGrad. (With B > 1 the clip would apply to the batch-mean gradient.)
* ``eval_model.onnx`` inputs ``input_ids``, ``attention_mask``, ``labels`` → ``loss``.
* ``inference.onnx`` inputs ``input_ids``, ``attention_mask`` int64 [B, T] → ``logits`` float32 [B, L].

Names and order: every parameter carries its canonical name (``export.classifier.canonical_name``:
``encoder.layer.0.attention.self.query.lora_A.weight``, ``head.weight``, frozen
``embeddings.word_embeddings.weight``, ...) in the graphs and the checkpoint. The trainable tensors are
the first parameter inputs of the training / eval graphs, in canonical order, so ORT's contiguous
trainable buffer (which follows training-graph input order) IS the canonical flat layout (tested).
``CheckpointState`` lists parameters sorted by name (observed: lexicographic, e.g. ``head.bias`` before
``head.weight``, unlike the canonical order): address them by name, never by position.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.bundle_types import ExportOptions, WrittenFile
from ondevice.dp_math import CLIP_EPS
from ondevice.ort_runtime import (  # noqa: F401  (re-exported: the graph contract lives with the runner)
    ATTENTION_MASK,
    BACKEND,
    CHECKPOINT,
    DP_CLIP_NORM,
    DP_NOISE,
    DP_SCALE,
    EVAL_MODEL,
    INFERENCE_MODEL,
    INPUT_IDS,
    LABELS,
    LOGITS,
    LOSS,
    OPTIMIZER_FILES,
    TRAINING_MODEL,
    TRAINING_USER_INPUTS,
    OrtDpTrainer,
)
from ondevice.protocol import TensorSpec

if TYPE_CHECKING:
    from torch import nn

    from export.classifier import Classifier

EXPORT_OPSET = 17
MAX_IR_VERSION = 10
MAX_OPSET = 21
TRAINABLE_ORDER_KEY = "privtune.trainable_specs"
"""metadata_props key of training_model.onnx: JSON list of the trainable TensorSpecs (canonical order)."""

_GRAD_SUFFIX = "_grad"
_ACCUMULATOR_OP = "InPlaceAccumulatorV2"
_DP_PREFIX = "dp_clip/"


class OrtExportError(RuntimeError):
    """The ORT export produced something that violates the bundle contract; the message says what."""


# --------------------------------------------------------------------------- torch → ONNX


def _export_net(clf: Classifier) -> nn.Module:
    """The classifier with the peft wrapper peeled off (BertModel + LoRA layers + head), same forward."""
    from torch import nn

    from export.classifier import additive_attention_mask, mean_pool

    class _ExportNet(nn.Module):
        def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = head

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            mask = additive_attention_mask(attention_mask)  # [B, 1, 1, T]
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [B, T, H]
            return self.head(mean_pool(hidden, attention_mask))  # [B, L]

    return _ExportNet(clf.model.encoder.get_base_model(), clf.model.head)


def _example_inputs(max_seq_len: int) -> tuple[Any, Any]:
    """A [2, T] batch with one padded row, so nothing about B, T or the mask gets specialised."""
    import torch

    seq = min(16, max_seq_len)
    ids = torch.arange(1000, 1000 + 2 * seq, dtype=torch.int64).reshape(2, seq)  # [2, T]
    mask = torch.ones(2, seq, dtype=torch.int64)  # [2, T]
    mask[1, seq // 2 :] = 0
    return ids, mask


def _torch_to_onnx(net: nn.Module, max_seq_len: int, *, training: bool) -> onnx.ModelProto:
    """TorchScript export with dynamic B and T. ``training=True`` keeps every parameter an initializer
    (EVAL mode + constant folding merges identical LoRA tensors, fine only for the inference model)."""
    import torch

    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    dynamic_axes = {INPUT_IDS: {0: "batch", 1: "seq"}, ATTENTION_MASK: {0: "batch", 1: "seq"}, LOGITS: {0: "batch"}}
    net.train(training)
    try:
        with tempfile.TemporaryDirectory(prefix="privtune-onnx-") as tmp, warnings.catch_warnings():
            # The embeddings are frozen: ONNX's missing padding_idx gradient rule does not matter.
            warnings.filterwarnings("ignore", message=".*padding_idx.*")
            path = Path(tmp) / "forward.onnx"
            torch.onnx.export(
                net,
                _example_inputs(max_seq_len),
                str(path),
                dynamo=False,
                training=mode,
                do_constant_folding=not training,
                opset_version=EXPORT_OPSET,
                input_names=[INPUT_IDS, ATTENTION_MASK],
                output_names=[LOGITS],
                dynamic_axes=dynamic_axes,
            )
            return onnx.load(str(path))
    finally:
        net.eval()


def _canonical_initializer_names(net: nn.Module, clf: Classifier) -> dict[str, str]:
    """Exported parameter name → canonical name (``canonical_name`` of the classifier's parameter, so
    frozen tensors get the same scheme: ``embeddings.word_embeddings.weight``), matched by identity."""
    from ondevice.protocol import canonical_name

    canonical_by_id = {id(p): canonical_name(name) for name, p in clf.model.named_parameters()}
    return {name: canonical_by_id[id(p)] for name, p in net.named_parameters() if id(p) in canonical_by_id}


def _replace_nodes(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto]) -> None:
    """Set ``graph.node`` to copies of ``nodes`` (copied first: they may be elements of graph.node)."""
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a value everywhere in a (flat) graph: initializers, inputs, outputs, node edges."""
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _canonicalise_parameters(model: onnx.ModelProto, renames: Mapping[str, str], order: Sequence[str]) -> None:
    """Rename parameter initializers to canonical names and move the trainable ones first, in canonical
    order (onnxblock turns initializers into graph inputs in initializer order)."""
    for old, new in renames.items():
        _rename_tensor(model.graph, old, new)
    by_name = {init.name: init for init in model.graph.initializer}
    missing = [name for name in order if name not in by_name]
    if missing:
        raise OrtExportError(
            f"the exported graph lost {len(missing)} of {len(order)} trainable tensors (e.g. {missing[:2]}); "
            "was it exported in EVAL mode or with constant folding?"
        )
    wanted = set(order)
    ordered = [by_name[name] for name in order] + [i for i in model.graph.initializer if i.name not in wanted]
    copies = [onnx.TensorProto() for _ in ordered]
    for copy, init in zip(copies, ordered, strict=True):
        copy.CopyFrom(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(copies)


def _drop_unused_initializers(model: onnx.ModelProto) -> int:
    """Remove initializers no node reads (the exporter's dropout constants; ORT warns about each one)."""
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    dropped = len(model.graph.initializer) - len(keep)
    if dropped:
        copies = [onnx.TensorProto() for _ in keep]
        for copy, init in zip(copies, keep, strict=True):
            copy.CopyFrom(init)
        del model.graph.initializer[:]
        model.graph.initializer.extend(copies)
    return dropped


def _constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of ``name`` if a Constant node or an initializer defines it, else None."""
    for init in graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return onnx.numpy_helper.to_array(attr.t)
    return None


def _remove_zero_dropout(model: onnx.ModelProto) -> int:
    """Bypass every Dropout node (all have ratio 0 here: the classifier disables dropout so per-example
    gradients are deterministic); a non-zero ratio is an error. Returns how many were removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumed = {name for node in graph.node for name in node.input}
    dropouts = [n for n in graph.node if n.op_type == "Dropout"]
    for node in dropouts:
        ratio = _constant_value(graph, node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if ratio is None or float(ratio) != 0.0:
            raise OrtExportError(f"{node.name}: dropout ratio {ratio} is not 0; the DP export needs dropout off")
        if node.output[0] in outputs or (len(node.output) > 1 and node.output[1] in consumed):
            raise OrtExportError(f"{node.name}: cannot bypass a dropout whose output is a graph output or mask")
        for other in graph.node:
            for i, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[i] = node.input[0]
    _replace_nodes(graph, [n for n in graph.node if n.op_type != "Dropout"])
    return len(dropouts)


def _prune_unused_constants(model: onnx.ModelProto) -> None:
    """Remove Constant nodes and initializers nothing reads (ORT warns about each one at load)."""
    graph = model.graph
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        kept = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
        if len(kept) == len(graph.node):
            break
        _replace_nodes(graph, kept)
    _drop_unused_initializers(model)


def _add_layernorm_outputs(model: onnx.ModelProto) -> int:
    """Give every LayerNormalization its optional Mean / InvStdDev outputs (onnxruntime #19427:
    the gradient builder indexes them). Returns how many nodes were changed."""
    changed = 0
    for index, node in enumerate(model.graph.node):
        if node.op_type == "LayerNormalization" and len(node.output) == 1:
            stem = node.name or f"LayerNormalization_{index}"
            node.output.extend([f"{stem}/saved_mean", f"{stem}/saved_inv_std_dev"])
            changed += 1
    return changed


# --------------------------------------------------------------------------- artifacts


@contextlib.contextmanager
def _captured_stderr() -> Iterator[None]:
    """Capture fd-level stderr (onnxruntime's gradient builder logs every graph pass at INFO level
    through a session whose options generate_artifacts does not expose). On an exception, the
    captured log is attached to it as a note; on success it is discarded."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException as error:
            sys.stderr.flush()
            os.dup2(saved, 2)
            sink.seek(0)
            log = sink.read().decode(errors="replace")
            error.add_note("onnxruntime log (last 4000 chars):\n" + log[-4000:])
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _generate_training_artifacts(
    forward: onnx.ModelProto, trainable: Sequence[str], frozen: Sequence[str], out: Path
) -> None:
    """training_model.onnx, eval_model.onnx and checkpoint via onnxruntime.training (no optimizer)."""
    from onnxruntime.training import artifacts

    with _captured_stderr():
        artifacts.generate_artifacts(
            forward,
            requires_grad=list(trainable),
            frozen_params=list(frozen),
            loss=artifacts.LossType.CrossEntropyLoss,
            optimizer=None,
            artifact_directory=str(out),
        )


def _write_optimizer(name: str, trainable: Sequence[onnx.TensorProto], opset: int, path: Path) -> None:
    """One optimizer model for the trainable parameters (what generate_artifacts writes, without
    rebuilding the gradient graph once per optimizer)."""
    from onnxruntime.training import onnxblock

    blocks = {"adamw": onnxblock.optim.AdamW, "sgd": onnxblock.optim.SGD}
    if name not in blocks:
        raise ValueError(f"optimizer must be one of {sorted(blocks)}, found {name!r}")
    block = blocks[name]()
    with onnxblock.empty_base(opset_version=opset):
        block((list(trainable), []))
        model = block.to_model_proto()
    onnx.save(model, str(path))


# --------------------------------------------------------------------------- in-graph DP clipping


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=onnx.numpy_helper.from_array(array, name))


def _dp_clipping_nodes(specs: Sequence[TensorSpec]) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """Nodes computing g'_p = (g_p · min(1, C / (‖g‖ + eps)) + noise_p) · scale for every trainable p.

    Returns the nodes (topologically ordered) and a map gradient name → clipped-gradient name.
    """
    p = _DP_PREFIX
    nodes = [
        _const(f"{p}eps", np.array(CLIP_EPS, dtype=np.float32)),
        _const(f"{p}one", np.ones([1], dtype=np.float32)),
        _const(f"{p}split_sizes", np.array([s.numel for s in specs], dtype=np.int64)),
    ]
    squares = []
    for spec in specs:
        grad = spec.name + _GRAD_SUFFIX
        squares.append(f"{p}{grad}/sq")  # [] sum of squares of one tensor
        nodes.append(helper.make_node("ReduceSumSquare", [grad], [squares[-1]], name=squares[-1], keepdims=0))
    nodes += [
        helper.make_node("Sum", squares, [f"{p}sq_total"], name=f"{p}sq_total"),  # []
        helper.make_node("Sqrt", [f"{p}sq_total"], [f"{p}norm"], name=f"{p}norm"),  # []
        helper.make_node("Add", [f"{p}norm", f"{p}eps"], [f"{p}norm_eps"], name=f"{p}norm_eps"),  # []
        helper.make_node("Div", [DP_CLIP_NORM, f"{p}norm_eps"], [f"{p}ratio"], name=f"{p}ratio"),  # [1]
        helper.make_node("Min", [f"{p}ratio", f"{p}one"], [f"{p}factor"], name=f"{p}factor"),  # [1]
    ]
    noise_parts = [f"{p}{s.name}/noise_flat" for s in specs]
    nodes.append(helper.make_node("Split", [DP_NOISE, f"{p}split_sizes"], noise_parts, name=f"{p}split", axis=0))
    clipped: dict[str, str] = {}
    for spec, flat in zip(specs, noise_parts, strict=True):
        grad, stem = spec.name + _GRAD_SUFFIX, f"{p}{spec.name}"
        nodes += [
            _const(f"{stem}/shape", np.array(spec.shape, dtype=np.int64)),
            helper.make_node("Reshape", [flat, f"{stem}/shape"], [f"{stem}/noise"], name=f"{stem}/noise"),  # [*shape]
            helper.make_node("Mul", [grad, f"{p}factor"], [f"{stem}/clipped"], name=f"{stem}/clipped"),
            helper.make_node("Add", [f"{stem}/clipped", f"{stem}/noise"], [f"{stem}/noised"], name=f"{stem}/noised"),
            helper.make_node("Mul", [f"{stem}/noised", DP_SCALE], [f"{stem}/scaled"], name=f"{stem}/scaled"),
        ]
        clipped[grad] = f"{stem}/scaled"
    return nodes, clipped


def add_dp_clipping(model: onnx.ModelProto, specs: Sequence[TensorSpec]) -> None:
    """Edit a generate_artifacts training model in place: insert per-step global-norm clipping, the
    host-supplied noise and the scale between each trainable gradient and its accumulator, and add the
    ``dp_clip_norm`` [1], ``dp_noise`` [P], ``dp_scale`` [1] float32 inputs right after the user inputs."""
    graph = model.graph
    accumulators = [n for n in graph.node if n.op_type == _ACCUMULATOR_OP]
    fed = {n.input[1] for n in accumulators}
    wanted = {s.name + _GRAD_SUFFIX for s in specs}
    if fed != wanted:
        raise OrtExportError(
            f"gradient accumulators feed {len(fed)} gradients, expected the {len(wanted)} trainable ones; "
            f"differences {sorted(fed ^ wanted)[:4]}"
        )
    if any(i.name in (DP_CLIP_NORM, DP_NOISE, DP_SCALE) for i in graph.input):
        raise OrtExportError("the training model already has DP inputs; refusing to clip twice")
    new_nodes, clipped = _dp_clipping_nodes(specs)
    for acc in accumulators:
        acc.input[1] = clipped[acc.input[1]]
    first_acc = next(i for i, n in enumerate(graph.node) if n.op_type == _ACCUMULATOR_OP)
    produced = {name for node in graph.node[:first_acc] for name in node.output}
    if not wanted <= produced:
        raise OrtExportError(f"gradients {sorted(wanted - produced)[:3]} are computed after the first accumulator")
    _replace_nodes(graph, [*graph.node[:first_acc], *new_nodes, *graph.node[first_acc:]])

    total = sum(s.numel for s in specs)
    dp_inputs = [
        helper.make_tensor_value_info(DP_CLIP_NORM, TensorProto.FLOAT, [1]),
        helper.make_tensor_value_info(DP_NOISE, TensorProto.FLOAT, [total]),
        helper.make_tensor_value_info(DP_SCALE, TensorProto.FLOAT, [1]),
    ]
    inputs = [onnx.ValueInfoProto() for _ in graph.input]
    for copy, value in zip(inputs, graph.input, strict=True):
        copy.CopyFrom(value)
    after = max(i for i, v in enumerate(inputs) if v.name in (INPUT_IDS, ATTENTION_MASK, LABELS)) + 1
    del graph.input[:]
    graph.input.extend([*inputs[:after], *dp_inputs, *inputs[after:]])
    helper.set_model_props(model, {TRAINABLE_ORDER_KEY: json.dumps([s.to_dict() for s in specs])})


# --------------------------------------------------------------------------- checks + entry point


def _default_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_versions(path: Path) -> tuple[int, int]:
    """(IR version, default-domain opset) of an ONNX file; raises if above what ORT 1.19 mobile loads."""
    model = onnx.load(str(path), load_external_data=False)
    ir, opset = model.ir_version, _default_opset(model)
    if ir > MAX_IR_VERSION or opset > MAX_OPSET:
        raise OrtExportError(f"{path.name}: IR {ir} / opset {opset}, the ORT 1.19 runtime takes IR ≤ 10, opset ≤ 21")
    return ir, opset


def _check_max_seq_len(clf: Classifier, options: ExportOptions) -> None:
    table = int(clf.model.encoder.get_base_model().config.max_position_embeddings)
    if options.max_seq_len > table:
        raise ValueError(f"max_seq_len {options.max_seq_len} exceeds the encoder's position table ({table})")


def _export_training(clf: Classifier, options: ExportOptions, out: Path) -> None:
    """training/eval models, checkpoint, optimizers and the in-graph DP clipping, into ``out``."""
    net = _export_net(clf)
    forward = _torch_to_onnx(net, options.max_seq_len, training=True)
    specs = clf.trainable_specs()
    order = [s.name for s in specs]
    renames = _canonical_initializer_names(net, clf)
    _canonicalise_parameters(forward, renames, order)
    _remove_zero_dropout(forward)
    _prune_unused_constants(forward)
    _add_layernorm_outputs(forward)
    exported = {init.name for init in forward.graph.initializer}
    frozen = [name for name in renames.values() if name not in set(order) and name in exported]
    with tempfile.TemporaryDirectory(prefix="privtune-ort-") as tmp:
        _generate_training_artifacts(forward, order, frozen, Path(tmp))
        for name in (TRAINING_MODEL, EVAL_MODEL, CHECKPOINT):
            shutil.move(str(Path(tmp) / name), str(out / name))
    trainable_protos = [i for i in forward.graph.initializer if i.name in set(order)]
    for name in options.optimizers:
        _write_optimizer(name, trainable_protos, _default_opset(forward), out / OPTIMIZER_FILES[name])
    training = onnx.load(str(out / TRAINING_MODEL))
    add_dp_clipping(training, specs)
    _finish_graph(training, out / TRAINING_MODEL)
    _finish_graph(onnx.load(str(out / EVAL_MODEL)), out / EVAL_MODEL)


def _finish_graph(model: onnx.ModelProto, path: Path) -> None:
    """Name the loss output ``loss``, drop unused constants, save."""
    if len(model.graph.output) == 0:
        raise OrtExportError(f"{path.name} has no outputs")
    loss = model.graph.output[0].name
    if loss != LOSS:
        _rename_tensor(model.graph, loss, LOSS)
    _prune_unused_constants(model)
    onnx.save(model, str(path))


def export_ort(clf: Classifier, bundle_dir: Path, options: ExportOptions) -> list[WrittenFile]:
    """Write the ORT training artifacts and the inference model under ``bundle_dir/ort/``."""
    _check_max_seq_len(clf, options)
    out = Path(bundle_dir) / BACKEND
    out.mkdir(parents=True, exist_ok=True)
    saved_mode = clf.model.training
    try:
        _export_training(clf, options, out)
        inference = _torch_to_onnx(_export_net(clf), options.max_seq_len, training=False)
        onnx.save(inference, str(out / INFERENCE_MODEL))
    finally:
        clf.model.train(saved_mode)
    roles = [
        (TRAINING_MODEL, "training_model"),
        (EVAL_MODEL, "eval_model"),
        *[(OPTIMIZER_FILES[o], f"optimizer_{o}") for o in options.optimizers],
        (CHECKPOINT, "checkpoint"),
        (INFERENCE_MODEL, "inference_model"),
    ]
    for name, _ in roles:
        if name.endswith(".onnx"):
            check_versions(out / name)
    return [WrittenFile(f"{BACKEND}/{name}", BACKEND, role) for name, role in roles]


# --------------------------------------------------------------------------- host-side trainer


def read_trainable_specs(training_model: Path) -> tuple[TensorSpec, ...]:
    """The canonical trainable order recorded in training_model.onnx's metadata."""
    model = onnx.load(str(training_model), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if TRAINABLE_ORDER_KEY not in props:
        raise OrtExportError(f"{training_model} has no {TRAINABLE_ORDER_KEY} metadata; was it exported by privtune?")
    return tuple(TensorSpec.from_dict(d) for d in json.loads(props[TRAINABLE_ORDER_KEY]))
