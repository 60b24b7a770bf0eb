"""Export wall time, bundle file sizes, and phone-runtime inference latency vs PyTorch eager.

Latency case: 1 text × 64 tokens (a real tweet repeated/truncated to exactly 64 tokens), at 1
and 2 threads; baseline: PyTorch eager of the same classifier in the same process. Cases:
ORT InferenceSession (``inference.onnx``), ExecuTorch XNNPACK fp32 and int8 programs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.harness import RESULTS_DIR, build_result, machine_info, time_fn, write_result
from export.bundle import export_bundle
from export.bundle_types import ExportOptions
from export.classifier import Classifier, build_classifier
from ondevice.data import load_tweeteval, tweeteval_task_dir

SEQ_LEN = 64


def _tokens_of_length(clf: Classifier, length: int) -> tuple[np.ndarray, np.ndarray]:
    text = " ".join(load_tweeteval(tweeteval_task_dir("offensive"), "test").texts[:20])
    batch = clf.tokenizer([text], truncation=True, max_length=length, return_tensors="np")
    ids = batch["input_ids"].astype(np.int64)  # [1, 64]
    if ids.shape[1] != length:
        raise RuntimeError(f"could not build a {length}-token input, got {ids.shape[1]}")
    return ids, np.ones_like(ids)


def _latency(clf: Classifier, bundle: Path, threads: int) -> dict[str, object]:
    import onnxruntime as ort

    from ondevice.et_runtime import load_inference, set_threads

    ids, mask = _tokens_of_length(clf, SEQ_LEN)
    torch.set_num_threads(threads)
    set_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(bundle / "ort" / "inference.onnx"), options, providers=["CPUExecutionProvider"])
    et_fp32 = load_inference(bundle / "executorch" / "inference_fp32.pte")
    et_int8 = load_inference(bundle / "executorch" / "inference_int8.pte")
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    clf.model.eval()

    def eager() -> None:
        with torch.no_grad():
            clf.model(ids_t, mask_t)

    timings = [
        time_fn("pytorch_eager", eager, repeats=30, warmup=5),
        time_fn(
            "ort", lambda: session.run(["logits"], {"input_ids": ids, "attention_mask": mask}), repeats=30, warmup=5
        ),
        time_fn("executorch_fp32", lambda: et_fp32(ids, mask), repeats=30, warmup=5),
        time_fn("executorch_int8", lambda: et_int8(ids, mask), repeats=30, warmup=5),
    ]
    return build_result(
        "inference_latency",
        timings,
        baseline="pytorch_eager",
        threads=threads,
        params={"batch": 1, "seq_len": SEQ_LEN, "bundle": "fresh export of build_classifier(seed=0)"},
    )


def main() -> None:
    torch.set_num_threads(2)
    clf = build_classifier(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_bundle(clf, Path(tmp) / "bundle", ExportOptions())
        sizes = {f.path: f.size_bytes for f in report.manifest.files}
        export_doc = {
            "benchmark": "export",
            "machine": machine_info(),
            "threads": 2,
            "stage_seconds": report.stage_seconds,
            "file_bytes": sizes,
            "total_bytes": sum(sizes.values()),
        }
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "export-2t.json").write_text(json.dumps(export_doc, indent=2) + "\n")
        print(RESULTS_DIR / "export-2t.json")
        for threads in (1, 2):
            print(write_result(_latency(clf, report.bundle_dir, threads)))


if __name__ == "__main__":
    main()
