"""ExecuTorch runners for a bundle's ``executorch/`` programs (the phone-side half of the contract).

Program signatures are documented in ``export.executorch_backend``. The Python runtime
bindings take ``torch.Tensor`` arguments, so this module imports torch as the bindings'
tensor type only (a phone's C++/Java runtime has no torch; all DP arithmetic stays in numpy).
Private runtime APIs (``executorch.extension.training._load_for_executorch_for_training``,
``portable_lib._unsafe_reset_threadpool``) are used only in this module.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ondevice.protocol import TensorSpec, canonical_name

METHOD = "forward"
DELTA_PREFIX = "delta_"
TRAIN_FQN_PREFIX = "model."
MIN_SEQ_LEN = 2  # [CLS] [SEP]


def canonical_fqn(fqn: str) -> str:
    """Training-program parameter FQN (``model.encoder.base_model.model...default.weight``) → canonical name."""
    return canonical_name(fqn.removeprefix(TRAIN_FQN_PREFIX))


def delta_name(index: int) -> str:
    """Parameter name of the delta of the ``index``-th trainable tensor (canonical order)."""
    return f"{DELTA_PREFIX}{index:02d}"


def _as_tensor(value: np.ndarray | torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    if tensor.dtype != dtype:
        if tensor.is_floating_point() != dtype.is_floating_point:
            raise ValueError(f"{name} must be {dtype}, found {tensor.dtype}")
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def _constant(module: Any, method: str) -> int:
    return int(module.run_method(method, ())[0])


class EtInference:
    """Runs an inference .pte: ``(input_ids, attention_mask) → logits`` numpy [B, L]."""

    def __init__(self, path: str | Path) -> None:
        from executorch.runtime import Runtime

        self._program = Runtime.get().load_program(Path(path))
        self._method = self._program.load_method(METHOD)
        self.max_seq_len = int(self._program.load_method("get_max_seq_len").execute([])[0])
        self.max_batch = int(self._program.load_method("get_max_batch").execute([])[0])
        _LIVE_PROGRAMS.add(self)

    def __call__(self, input_ids: np.ndarray | torch.Tensor, attention_mask: np.ndarray | torch.Tensor) -> np.ndarray:
        ids = _as_tensor(input_ids, torch.long, "input_ids")  # [B, T]
        mask = _as_tensor(attention_mask, torch.long, "attention_mask")  # [B, T]
        _check_tokens(ids, mask, self.max_seq_len, max_batch=self.max_batch)
        logits = self._method.execute([ids, mask])[0]  # [B, L]
        return np.asarray(logits.numpy(), dtype=np.float32).copy()


_LIVE_PROGRAMS: weakref.WeakSet[Any] = weakref.WeakSet()
"""Every runner of this module that holds a loaded program (EtInference, EtTrainer, EtPerExampleGrads)."""


def thread_count() -> int:
    """The current size of ExecuTorch's process-wide XNNPACK thread pool."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    return int(_threadpool_get_thread_count())


def set_threads(threads: int) -> None:
    """Size ExecuTorch's process-wide XNNPACK thread pool (private pybindings calls, kept in this module).

    Resizing the pool under a loaded program is unsafe (measured with executorch 1.5.1: program A
    loaded at 1 thread, pool resized to 2, program B loaded, then A run → segfault, abort or hang).
    So a call with the current size is a no-op, and a different size is refused with a ValueError
    while any program loaded by this module is alive: size the pool once per process, before the
    first program (or drop the programs first, or use another process).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, found {threads!r}")
    current = thread_count()
    if current == threads:
        return
    if len(_LIVE_PROGRAMS):
        raise ValueError(
            f"ExecuTorch's thread pool is process-wide and {len(_LIVE_PROGRAMS)} loaded program(s) run on "
            f"{current} thread(s); resizing it under them is unsafe, so threads={threads} is refused "
            "(use the same count, drop the other programs first, or use another process)"
        )
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(threads)


def load_inference(path: str | Path) -> EtInference:
    """Load an inference .pte (fp32 or int8)."""
    return EtInference(path)


def _check_tokens(
    ids: torch.Tensor, mask: torch.Tensor, max_seq_len: int, *, max_batch: int | None = None, batch: int | None = None
) -> None:
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)} must both be [B, T]")
    rows, length = ids.shape
    if not MIN_SEQ_LEN <= length <= max_seq_len:
        raise ValueError(f"sequence length {length} is outside {MIN_SEQ_LEN}..{max_seq_len}")
    if max_batch is not None and not 1 <= rows <= max_batch:
        raise ValueError(f"batch {rows} is outside 1..{max_batch}")
    if batch is not None and rows != batch:
        raise ValueError(f"this program takes exactly {batch} rows (pad with weight-0 rows), found {rows}")


class EtTrainer:
    """Runs ``training.pte``: forward+backward, gradients, parameters (canonical names, numpy)."""

    def __init__(self, path: str | Path) -> None:
        from executorch.extension.training import _load_for_executorch_for_training

        self._module = _load_for_executorch_for_training(str(path))
        self.max_seq_len = _constant(self._module.model, "get_max_seq_len")
        self.max_batch = _constant(self._module.model, "get_max_batch")
        self._ran = False
        _LIVE_PROGRAMS.add(self)

    def forward_backward(
        self, input_ids: np.ndarray | torch.Tensor, attention_mask: np.ndarray | torch.Tensor, labels: Any
    ) -> float:
        """One forward+backward pass; returns the mean cross-entropy. Gradients are not accumulated."""
        ids = _as_tensor(input_ids, torch.long, "input_ids")  # [B, T]
        mask = _as_tensor(attention_mask, torch.long, "attention_mask")  # [B, T]
        target = _as_tensor(np.asarray(labels), torch.long, "labels")  # [B]
        _check_tokens(ids, mask, self.max_seq_len, max_batch=self.max_batch)
        if target.shape != (ids.shape[0],):
            raise ValueError(f"labels shape {tuple(target.shape)} does not match batch {ids.shape[0]}")
        loss = self._module.forward_backward(METHOD, (ids, mask, target))[0]
        self._ran = True
        return float(loss)

    def _require_run(self) -> None:
        if not self._ran:
            # The runtime exposes parameters only through the outputs of a forward_backward call.
            raise RuntimeError("call forward_backward once before reading or writing parameters/gradients")

    def gradients(self) -> dict[str, np.ndarray]:
        """Gradients of the last ``forward_backward`` call (copies)."""
        self._require_run()
        return {canonical_fqn(k): v.detach().numpy().copy() for k, v in self._module.named_gradients().items()}

    def parameters(self) -> dict[str, np.ndarray]:
        """Current trainable tensors held in runtime memory (copies)."""
        self._require_run()
        return {canonical_fqn(k): v.detach().numpy().copy() for k, v in self._module.named_parameters().items()}

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite the runtime's trainable tensors in place (keys: canonical names, all required)."""
        self._require_run()
        live = {canonical_fqn(k): v for k, v in self._module.named_parameters().items()}
        if set(values) != set(live):
            raise ValueError(
                f"parameter names differ: missing {sorted(set(live) - set(values))[:3]}, "
                f"unexpected {sorted(set(values) - set(live))[:3]}"
            )
        for name, tensor in live.items():
            value = torch.from_numpy(np.asarray(values[name], dtype=np.float32))
            if tuple(value.shape) != tuple(tensor.shape):
                raise ValueError(f"{name}: shape {tuple(value.shape)} does not match {tuple(tensor.shape)}")
            tensor.copy_(value)

    def sgd_optimizer(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> Callable[[], None]:
        """The runtime's SGD over the live parameters; calling the result applies one step of the last gradients."""
        from executorch.extension.training import get_sgd_optimizer

        self._require_run()
        optimizer = get_sgd_optimizer(self._module.named_parameters(), lr, momentum, 0.0, weight_decay, False)
        return lambda: optimizer.step(self._module.named_gradients())


class EtPerExampleGrads:
    """Runs ``per_example_grads.pte``: per-example gradients [Bfix, *shape] under canonical names."""

    def __init__(self, path: str | Path, specs: Sequence[TensorSpec]) -> None:
        from executorch.extension.training import _load_for_executorch_for_training

        self._module = _load_for_executorch_for_training(str(path))
        self.specs = tuple(specs)
        self.batch_size = _constant(self._module.model, "get_batch_size")
        self.max_seq_len = _constant(self._module.model, "get_max_seq_len")
        self.last_loss = float("nan")
        _LIVE_PROGRAMS.add(self)

    def __call__(
        self,
        input_ids: np.ndarray | torch.Tensor,
        attention_mask: np.ndarray | torch.Tensor,
        labels: Any,
        example_weight: Any,
        trainable: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        ids = _as_tensor(input_ids, torch.long, "input_ids")  # [Bfix, T]
        mask = _as_tensor(attention_mask, torch.long, "attention_mask")  # [Bfix, T]
        target = _as_tensor(np.asarray(labels), torch.long, "labels")  # [Bfix]
        weight = _as_tensor(np.asarray(example_weight, dtype=np.float32), torch.float32, "example_weight")  # [Bfix]
        _check_tokens(ids, mask, self.max_seq_len, batch=self.batch_size)
        for name, vector in (("labels", target), ("example_weight", weight)):
            if vector.shape != (self.batch_size,):
                raise ValueError(f"{name} shape {tuple(vector.shape)} must be ({self.batch_size},)")
        tensors = []
        for spec in self.specs:
            if spec.name not in trainable:
                raise ValueError(f"trainable tensor {spec.name} is missing")
            tensor = _as_tensor(np.asarray(trainable[spec.name], dtype=np.float32), torch.float32, spec.name)
            if tuple(tensor.shape) != tuple(spec.shape):
                raise ValueError(f"{spec.name}: shape {tuple(tensor.shape)} does not match {spec.shape}")
            tensors.append(tensor)
        self.last_loss = float(self._module.forward_backward(METHOD, (ids, mask, target, weight, *tensors))[0])
        grads = self._module.named_gradients()
        return {spec.name: grads[delta_name(i)].detach().numpy().copy() for i, spec in enumerate(self.specs)}
