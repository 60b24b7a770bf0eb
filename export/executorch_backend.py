"""ExecuTorch backend of ``privtune export``: four .pte programs plus host-side runners.

Written under ``<bundle>/executorch/`` (all programs lowered to XNNPACK; every tensor
input/output is listed positionally, the runtime has no input names):

``inference_fp32.pte`` (role ``inference_fp32``), method ``forward``
    inputs ``input_ids`` int64 [B, T], ``attention_mask`` int64 [B, T] (1 = token, 0 = pad)
    → ``logits`` float32 [B, L]. B and T are both DYNAMIC (torch.export Dims, one program, no
    length buckets): 1 ≤ B ≤ ``inference_max_batch``, 2 ≤ T ≤ ``max_seq_len``; pad each batch
    only to its own longest text.
``inference_int8.pte`` (role ``inference_int8``, when ``"int8"`` in ``quantize``)
    the same signature; the frozen encoder's linear layers dynamically quantized to int8
    (XNNPACKQuantizer: symmetric, per-channel weights, dynamic activations). The adapter
    (LoRA linears and head) stays fp32.

    Both inference programs BAKE THE ADAPTER IN AS CONSTANTS (LoRA A/B and the head): a
    device cannot change them; the publisher re-exports these files whenever the global
    adapter changes. Trainable weights used for training live in the programs below.

``training.pte`` (role ``training``), method ``forward`` (a forward+backward program)
    inputs ``input_ids`` int64 [B, T], ``attention_mask`` int64 [B, T], ``labels`` int64 [B]
    → output 0 ``loss`` float32 scalar (mean cross-entropy), then the gradients and the
    parameters (the runtime's ``TrainingModule`` slices them). B (1..``inference_max_batch``)
    and T (2..``max_seq_len``) are dynamic. Only the 26 LoRA + head tensors require grad;
    their ExecuTorch FQNs are ``model.<peft name>`` (``canonical_fqn`` maps them to canonical
    names). Parameters start at the exported adapter and live in runtime memory only:
    ``EtTrainer.set_parameters`` writes new values in place, ``EtTrainer.parameters`` reads them.
``per_example_grads.pte`` (role ``per_example_grads``), method ``forward``
    inputs ``input_ids`` int64 [Bfix, T], ``attention_mask`` int64 [Bfix, T], ``labels`` int64
    [Bfix], ``example_weight`` float32 [Bfix] (1 real row, 0 padding row), then the 26
    trainable tensors float32 in canonical order (``Classifier.trainable_specs()``)
    → output 0 ``loss`` = Σ_b w_b · CE_b. Bfix = ``dp_batch_size`` is FIXED, T is dynamic.
    The program's only parameters are zero "delta" tensors ``delta_00`` … ``delta_25``
    of shape [Bfix, *shape_k] added per example to trainable tensor k, so the gradient
    the runtime returns for ``delta_kk`` is [Bfix, *shape_k]: row b is w_b · (example b's
    gradient of tensor k). Never step an optimizer on this program (deltas must stay 0).

Every program also has constant methods ``get_max_seq_len`` and ``get_max_batch`` (the
per-example program: ``get_batch_size``), each returning one int.

Every program stores the frozen encoder weights once (~90 MB fp32). Dynamic shapes: XNNPACK
reshapes take at most one dynamic dimension, so reshapes/unsqueezes with two (e.g. [B, T, 384])
run on the portable kernels between XNNPACK partitions. Two edge passes turn chained views
and views with one dynamic dimension into XNNPACK-lowerable ones, and the unsqueeze rule is
narrowed (unnarrowed it fails at lowering: "XNNPACK reshape only supports 1 dynamic
dimension"). The training programs also leave softmax on the portable kernels ("Output node
'aten__softmax_default' is already in the inputs" otherwise) and keep fp32 linear weights
non-static so gradients can flow. Each export takes one to three minutes on this machine.

Private / experimental toolchain APIs (``torch.export.experimental._export_forward_backward``,
``executorch.extension.training``) are used only in this module.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from export.bundle_types import ExportOptions, WrittenFile
from export.classifier import Classifier, additive_attention_mask, mean_pool
from ondevice.et_runtime import (  # noqa: F401  (re-exported for export-side callers and tests)
    DELTA_PREFIX,
    METHOD,
    MIN_SEQ_LEN,
    TRAIN_FQN_PREFIX,
    EtInference,
    EtPerExampleGrads,
    EtTrainer,
    canonical_fqn,
    delta_name,
    load_inference,
    set_threads,
)
from ondevice.protocol import TensorSpec

BACKEND = "executorch"
ROLE_INFERENCE_FP32 = "inference_fp32"
ROLE_INFERENCE_INT8 = "inference_int8"
ROLE_TRAINING = "training"
ROLE_PER_EXAMPLE = "per_example_grads"
FILE_NAMES = {
    ROLE_INFERENCE_FP32: "inference_fp32.pte",
    ROLE_INFERENCE_INT8: "inference_int8.pte",
    ROLE_TRAINING: "training.pte",
    ROLE_PER_EXAMPLE: "per_example_grads.pte",
}
EXAMPLE_SEQ_LEN = 16  # example inputs: neither 0/1 nor a bound, so torch.export keeps the axes symbolic

# Dynamic quantization computes activation scales at run time; calibration only has to run
# the observers, so a few tweet-like texts of varied lengths suffice.
DEFAULT_CALIBRATION_TEXTS = (
    "@user thank you so much, this made my day!",
    "@user shut up, nobody asked for your stupid opinion",
    "ok",
    "What a game last night #football #win",
    "@user @user you are a disgrace and everyone knows it. go away and never come back to this country",
    "Just finished my coffee. Monday again...",
    "@user lol that is hilarious 😂😂",
    "I can't believe they let people like you vote. pathetic.",
    "Reminder: the meeting moved to 3pm tomorrow, bring the slides and the printed handouts for everyone",
    "@user URL",
    "she is the best teacher i ever had, honestly",
    "this is the worst service I have ever experienced, absolutely useless idiots",
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def export_executorch(
    clf: Classifier,
    bundle_dir: Path,
    options: ExportOptions,
    *,
    roles: Collection[str] | None = None,
    calibration_texts: Sequence[str] | None = None,
    timings: dict[str, float] | None = None,
) -> list[WrittenFile]:
    """Write the ExecuTorch programs (see module docstring) under ``bundle_dir/executorch/``.

    ``roles`` limits the export to some programs (default: all the options ask for; e.g. the
    publisher re-exports only the inference programs when the global adapter changes).
    ``timings``, if given, receives the export wall time in seconds per role.
    """
    if options.max_seq_len > clf.spec.max_seq_len:
        raise ValueError(
            f"options.max_seq_len={options.max_seq_len} exceeds the classifier's max_seq_len={clf.spec.max_seq_len}"
        )
    wanted = _wanted_roles(options, roles)
    texts = tuple(calibration_texts) if calibration_texts else DEFAULT_CALIBRATION_TEXTS
    builders: dict[str, Callable[[], bytes]] = {
        ROLE_INFERENCE_FP32: lambda: _inference_program(clf, options, quantized=False, texts=None),
        ROLE_INFERENCE_INT8: lambda: _inference_program(clf, options, quantized=True, texts=texts),
        ROLE_TRAINING: lambda: _training_program(clf, options),
        ROLE_PER_EXAMPLE: lambda: _per_example_program(clf, options),
    }
    out_dir = Path(bundle_dir) / BACKEND
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with _eval_mode(clf.model):
        for role in wanted:
            start = time.perf_counter()
            buffer = builders[role]()
            (out_dir / FILE_NAMES[role]).write_bytes(buffer)
            elapsed = time.perf_counter() - start
            if timings is not None:
                timings[role] = elapsed
            log.info("executorch %s: %.1f MB in %.1f s", role, len(buffer) / 1e6, elapsed)
            written.append(WrittenFile(f"{BACKEND}/{FILE_NAMES[role]}", BACKEND, role))
    return written


def _wanted_roles(options: ExportOptions, roles: Collection[str] | None) -> list[str]:
    """The roles to export, in FILE_NAMES order; int8 only when the options ask for it."""
    available = [r for r in FILE_NAMES if r != ROLE_INFERENCE_INT8 or "int8" in options.quantize]
    if roles is None:
        return available
    unknown = sorted(set(roles) - set(available))
    if unknown or not roles:
        raise ValueError(
            f"roles must be a non-empty subset of {available} (int8 needs options.quantize), "
            f"found {unknown or list(roles)}"
        )
    return [r for r in available if r in roles]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _seq_dim(max_seq_len: int) -> Any:
    from torch.export import Dim

    return Dim("seq", min=MIN_SEQ_LEN, max=max_seq_len)


def _batch_dim(max_batch: int) -> Any:
    """Dynamic batch axis; a bound of 1 means a fixed batch of 1 (torch.export refuses min == max)."""
    from torch.export import Dim

    return Dim("batch", min=1, max=max_batch) if max_batch > 1 else Dim.STATIC


def _example_tokens(clf: Classifier, batch: int, max_seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic example input_ids / attention_mask [batch, T ≤ 16] (last row half padded)."""
    length = min(EXAMPLE_SEQ_LEN, max_seq_len)
    vocab = int(clf.tokenizer.vocab_size)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (batch, length), generator=generator)  # [B, T]
    mask = torch.ones_like(ids)  # [B, T]
    mask[-1, length // 2 :] = 0
    return ids, mask


def _xnnpack_configs(*, training: bool) -> list[Any]:
    """XNNPACK partitioner rules: all, with the unsqueeze rule narrowed; training also drops softmax."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import (
        SoftmaxConfig,
        UnsqueezeCopyConfig,
    )
    from torch.fx.experimental.symbolic_shapes import free_symbols

    class OneDynamicDimUnsqueezeConfig(UnsqueezeCopyConfig):  # type: ignore[misc]
        """XNNPACK's static reshape takes at most one dynamic dimension: leave others to portable."""

        def check_constraints(self, node: torch.fx.Node, ep: Any) -> bool:
            if not super().check_constraints(node, ep):
                return False
            return sum(1 for d in node.meta["val"].shape if free_symbols(d)) <= 1

    configs = [OneDynamicDimUnsqueezeConfig if c is UnsqueezeCopyConfig else c for c in ALL_PARTITIONER_CONFIGS]
    if training:
        configs = [c for c in configs if c is not SoftmaxConfig]
    return configs


def _fold_view_chains(graph_module: torch.fx.GraphModule) -> Any:
    """Edge pass: ``view_copy(view_copy(x, s1), s2)`` → ``view_copy(x, s2)`` (drops dead middles)."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.passes.infra.pass_base import PassResult

    view = exir_ops.edge.aten.view_copy.default
    modified = False
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target != view:
            continue
        source = node.args[0]
        while isinstance(source, torch.fx.Node) and source.op == "call_function" and source.target == view:
            source = source.args[0]
        if source is not node.args[0]:
            node.args = (source, *node.args[1:])
            modified = True
    if modified:
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
    return PassResult(graph_module, modified)


def _infer_single_dynamic_view_dim(graph_module: torch.fx.GraphModule) -> Any:
    """Edge pass: ``view_copy(x, [8, s, -1, 32])`` → ``view_copy(x, [8, -1, 12, 32])``.

    XNNPACK's partitioner refuses reshapes whose target shape holds symbols, but its reshape
    infers one dimension: a view whose output has exactly one dynamic dimension is rewritten
    with static sizes elsewhere and -1 there, so it is delegated instead of splitting the
    XNNPACK partitions (fewer partitions: faster lowering and fewer delegate calls).
    """
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.experimental.symbolic_shapes import free_symbols
    from torch.fx.passes.infra.pass_base import PassResult

    modified = False
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target != exir_ops.edge.aten.view_copy.default:
            continue
        out_shape = node.meta["val"].shape
        dynamic = [i for i, d in enumerate(out_shape) if free_symbols(d)]
        if len(dynamic) != 1 or all(isinstance(d, int) for d in node.args[1]):
            continue
        new_shape = [-1 if i == dynamic[0] else int(d) for i, d in enumerate(out_shape)]
        node.args = (node.args[0], new_shape, *node.args[2:])
        modified = True
    if modified:
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
    return PassResult(graph_module, modified)


def _inference_program(
    clf: Classifier, options: ExportOptions, *, quantized: bool, texts: Sequence[str] | None
) -> bytes:
    """Export → (optionally quantize) → lower to XNNPACK → serialized .pte bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    batch, seq = _batch_dim(options.inference_max_batch), _seq_dim(options.max_seq_len)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    example = _example_tokens(clf, min(2, options.inference_max_batch), options.max_seq_len)
    model: nn.Module = clf.model
    if quantized:
        model = _quantize_dynamic_int8(clf, example, dynamic, texts or DEFAULT_CALIBRATION_TEXTS)
    ep = torch.export.export(model, example, dynamic_shapes=dynamic, strict=False)
    edge = to_edge_transform_and_lower(
        ep,
        transform_passes=[_fold_view_chains, _infer_single_dynamic_view_dim],
        partitioner=[XnnpackPartitioner(configs=_xnnpack_configs(training=False))],
        constant_methods={"get_max_seq_len": options.max_seq_len, "get_max_batch": options.inference_max_batch},
    )
    return bytes(edge.to_executorch().buffer)


def _quantize_dynamic_int8(
    clf: Classifier, example: tuple[torch.Tensor, ...], dynamic: dict[str, Any], texts: Sequence[str]
) -> nn.Module:
    """prepare_pt2e → run the calibration texts (batches of ≤ 4) → convert_pt2e."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(clf.model, example, dynamic_shapes=dynamic, strict=False).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    quantizer.set_filter_function(_outside_adapter)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for start in range(0, len(texts), 4):
            batch = clf.encode(list(texts[start : start + 4]))
            prepared(batch["input_ids"], batch["attention_mask"])
    return convert_pt2e(prepared)  # type: ignore[no-any-return]


def _outside_adapter(node: torch.fx.Node) -> bool:
    """Quantize only the frozen encoder: the LoRA linears and the head (the adapter) stay fp32."""
    paths = [str(path) for path, _ in node.meta.get("nn_module_stack", {}).values()]
    return not any(".lora_" in p or p == "head" or p.endswith(".head") for p in paths)


def _lower_joint(ep: Any, constant_methods: dict[str, int]) -> bytes:
    """forward+backward ExportedProgram → edge → XNNPACK (training rules) → .pte bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge
    from torch.export.experimental import _export_forward_backward

    joint = _export_forward_backward(ep)
    edge = to_edge(
        joint,
        constant_methods=constant_methods,
        compile_config=EdgeCompileConfig(_core_aten_ops_exception_list=[torch.ops.aten.empty_permuted.default]),
    )
    edge = edge.transform([_fold_view_chains, _infer_single_dynamic_view_dim])
    partitioner = XnnpackPartitioner(
        configs=_xnnpack_configs(training=True), force_non_static_weights_for_f32_linear=True
    )
    return bytes(edge.to_backend(partitioner).to_executorch().buffer)


# ---------------------------------------------------------------------------------------------
# Training program
# ---------------------------------------------------------------------------------------------


class TrainNet(nn.Module):
    """(input_ids [B, T], attention_mask [B, T], labels [B]) → mean cross-entropy (scalar)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids, attention_mask)  # [B, L]
        return F.cross_entropy(logits, labels)


def _training_program(clf: Classifier, options: ExportOptions) -> bytes:
    batch, seq = _batch_dim(options.inference_max_batch), _seq_dim(options.max_seq_len)
    ids, mask = _example_tokens(clf, min(2, options.inference_max_batch), options.max_seq_len)
    labels = torch.zeros(ids.shape[0], dtype=torch.long)  # [B]
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}, "labels": {0: batch}}
    ep = torch.export.export(TrainNet(clf.model), (ids, mask, labels), dynamic_shapes=dynamic, strict=False)
    return _lower_joint(ep, {"get_max_seq_len": options.max_seq_len, "get_max_batch": options.inference_max_batch})


# ---------------------------------------------------------------------------------------------
# Per-example-gradient program
# ---------------------------------------------------------------------------------------------


class _PerCallLoraLinear(nn.Module):
    """A frozen base linear plus LoRA whose A, B and per-example deltas are handed in per call.

    out = base(x) + scaling · bmm(bmm(x, (A + D_A[b])ᵀ), (B + D_B[b])ᵀ)
    """

    def __init__(self, base: nn.Module, scaling: float) -> None:
        super().__init__()
        self.base = base
        self.scaling = scaling
        self.tensors: dict[str, torch.Tensor] = {}  # "A" [r, in], "dA" [B, r, in], "B" [out, r], "dB" [B, out, r]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, in]
        lora_a = self.tensors["A"][None] + self.tensors["dA"]  # [B, r, in]
        lora_b = self.tensors["B"][None] + self.tensors["dB"]  # [B, out, r]
        low = torch.bmm(x, lora_a.transpose(1, 2))  # [B, T, r]
        update = torch.bmm(low, lora_b.transpose(1, 2))  # [B, T, out]
        return self.base(x) + update * self.scaling  # type: ignore[no-any-return]


class PerExampleNet(nn.Module):
    """Σ_b w_b · CE_b with the trainable tensors as INPUTS and zero per-example deltas as parameters.

    Reuses the frozen encoder weights of ``clf.model`` (shared, not copied); the peft LoRA
    linears are replaced by ``_PerCallLoraLinear`` and the head is computed functionally.
    """

    def __init__(self, clf: Classifier, batch_size: int) -> None:
        super().__init__()
        base = clf.model.encoder.get_base_model()
        shared = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
        self.encoder = copy.deepcopy(base, memo=shared)  # module tree copied, tensors shared
        self.specs: tuple[TensorSpec, ...] = clf.trainable_specs()
        index = {spec.name: i for i, spec in enumerate(self.specs)}
        self.lora_slots: list[tuple[_PerCallLoraLinear, int, int]] = []  # (module, index of A, index of B)
        for path, module in list(self.encoder.named_modules()):
            if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
                if len(module.scaling) != 1:
                    raise ValueError(f"{path}: expected one LoRA adapter, found {sorted(module.scaling)}")
                (adapter,) = module.scaling.keys()
                replacement = _PerCallLoraLinear(module.base_layer, float(module.scaling[adapter]))
                self.encoder.set_submodule(path, replacement)
                self.lora_slots.append((replacement, index[f"{path}.lora_A.weight"], index[f"{path}.lora_B.weight"]))
        self.head_index = (index["head.weight"], index["head.bias"])
        covered = {i for _, a, b in self.lora_slots for i in (a, b)} | set(self.head_index)
        if covered != set(range(len(self.specs))):
            missing = [self.specs[i].name for i in range(len(self.specs)) if i not in covered]
            raise ValueError(f"per-example program does not cover trainable tensors {missing}")
        leaking = [n for n, p in self.encoder.named_parameters() if p.requires_grad]
        if leaking:
            raise ValueError(f"frozen encoder copy still has trainable parameters: {leaking[:3]}")
        for i, spec in enumerate(self.specs):
            self.register_parameter(delta_name(i), nn.Parameter(torch.zeros(batch_size, *spec.shape)))

    def deltas(self) -> list[nn.Parameter]:
        return [getattr(self, delta_name(i)) for i in range(len(self.specs))]

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T] int64
        attention_mask: torch.Tensor,  # [B, T] int64
        labels: torch.Tensor,  # [B] int64
        example_weight: torch.Tensor,  # [B] float32
        *trainable: torch.Tensor,  # canonical order
    ) -> torch.Tensor:
        deltas = self.deltas()
        for module, a, b in self.lora_slots:
            module.tensors = {"A": trainable[a], "dA": deltas[a], "B": trainable[b], "dB": deltas[b]}
        mask = additive_attention_mask(attention_mask)  # [B, 1, 1, T]
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [B, T, H]
        pooled = mean_pool(hidden, attention_mask)  # [B, H]
        w_idx, b_idx = self.head_index
        weight = trainable[w_idx][None] + deltas[w_idx]  # [B, L, H]
        bias = trainable[b_idx][None] + deltas[b_idx]  # [B, L]
        logits = torch.bmm(weight, pooled[:, :, None])[:, :, 0] + bias  # [B, L]
        per_example = F.cross_entropy(logits, labels, reduction="none")  # [B]
        for module, _, _ in self.lora_slots:
            module.tensors = {}
        return (per_example * example_weight).sum()


def _per_example_program(clf: Classifier, options: ExportOptions) -> bytes:
    batch = options.dp_batch_size
    net = PerExampleNet(clf, batch)
    seq = _seq_dim(options.max_seq_len)
    ids, mask = _example_tokens(clf, batch, options.max_seq_len)
    labels = torch.zeros(batch, dtype=torch.long)  # [Bfix]
    weight = torch.ones(batch)  # [Bfix]
    trainable = tuple(p.detach().clone() for p in clf.trainable_parameters().values())
    dynamic = {
        "input_ids": {1: seq},
        "attention_mask": {1: seq},
        "labels": None,
        "example_weight": None,
        "trainable": tuple(None for _ in trainable),
    }
    ep = torch.export.export(net, (ids, mask, labels, weight, *trainable), dynamic_shapes=dynamic, strict=False)
    return _lower_joint(ep, {"get_max_seq_len": options.max_seq_len, "get_batch_size": batch})
