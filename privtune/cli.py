"""The ``privtune`` command. Subcommands import their heavy dependencies lazily so
``privtune info`` answers in about a second."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ondevice.runtime_check import OnnxRuntimeInstallError, check_onnxruntime_install
from privtune import demo_cli, fleet_cli, plan_cli, server_cli, simulate_cli, synth_cli

if TYPE_CHECKING:
    from export.classifier import Classifier
    from ondevice.inference import DeviceClassifier

app = typer.Typer(
    name="privtune",
    help="On-device private learning for a text safety classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # never fold paths in messages
out = Console(soft_wrap=True)


@app.callback()
def _startup() -> None:
    """Refuse to run on a broken ONNX Runtime install (plain onnxruntime beside the training build)."""
    try:
        check_onnxruntime_install()
    except OnnxRuntimeInstallError as exc:
        console.print(f"[bold red]privtune: {exc}[/]")
        raise typer.Exit(code=3) from exc


@app.command()
def info(as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """Versions of every pinned component, and where models and data were found."""
    from privtune.components import environment_report

    report = environment_report()
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"privtune on Python {report['python']} ({report['cpu_count']} CPUs)")
    for column in ("component", "installed", "pinned", ""):
        table.add_column(column)
    for row in report["components"]:
        mark = "[green]ok[/]" if row["ok"] else "[red]MISMATCH[/]" if row["installed"] else "[red]MISSING[/]"
        table.add_row(row["name"], row["installed"] or "-", row["pinned"] or "(any)", mark)
    out.print(table)
    models, data = report["models"], report["data"]
    out.print(f"encoder   {models['encoder']['id']}: {models['encoder']['packaged_dir'] or '[red]not installed[/]'}")
    gen = models["generator"]
    out.print(f"generator {gen['id']}: gguf {gen['packaged_gguf'] or '[red]not installed[/]'}")
    out.print(f"          converted cache: {gen['converted_cache'] or '(not yet converted; first use takes ~35 s)'}")
    if data["root"]:
        sizes = ", ".join(
            f"{task} {sum(s.values())} ({'/'.join(str(n) for n in s.values())})"
            for task, s in data["tweeteval"].items()
        )
        out.print(f"data      {data['root']}: tweeteval {sizes} (train/val/test)")
    else:
        out.print(f"data      [red]{data['error']}[/]")
    if not all(row["ok"] for row in report["components"]):
        raise typer.Exit(code=1)


@app.command()
def classify(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="A saved classifier folder. Default: a fresh, UNTRAINED head on the packaged encoder."),
    ] = None,
    file: Annotated[Path | None, typer.Option(help="Read texts from this file, one per line.")] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(help="Classify through the phone path: a bundle folder written by `privtune export`."),
    ] = None,
    runtime: Annotated[str | None, typer.Option(help="With --bundle: ort or executorch (default ort).")] = None,
    precision: Annotated[
        str | None, typer.Option(help="With --bundle: fp32, or int8 (executorch only; default fp32).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch intra-op threads, or the runtime's with --bundle.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Classify texts with a PyTorch classifier, or with a bundle's ORT / ExecuTorch program (--bundle)."""
    items = list(texts or [])
    if file is not None:
        if not file.is_file():
            console.print(f"[red]privtune classify: {file} not found[/]")
            raise typer.Exit(code=2)
        items += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not items:
        console.print("[red]privtune classify: give texts as arguments or --file[/]")
        raise typer.Exit(code=2)
    if bundle is not None:
        if model is not None:
            console.print("[red]privtune classify: give --model or --bundle, not both[/]")
            raise typer.Exit(code=2)
        labels, probs = _classify_on_device(bundle, runtime or "ort", precision or "fp32", threads, items)
    else:
        if runtime is not None or precision is not None:
            console.print("[red]privtune classify: --runtime and --precision need --bundle[/]")
            raise typer.Exit(code=2)
        labels, probs = _classify_eager(model, threads, items)
    rows = [
        {"text": t, **{label: float(p) for label, p in zip(labels, row, strict=True)}}
        for t, row in zip(items, probs, strict=True)
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table()
    table.add_column("text", overflow="fold", max_width=60)
    for label in labels:
        table.add_column(f"p({label})", justify="right")
    for row in rows:
        table.add_row(str(row["text"]), *(f"{row[label]:.3f}" for label in labels))
    out.print(table)


def _classify_eager(model: Path | None, threads: int, items: list[str]) -> tuple[tuple[str, ...], list[list[float]]]:
    import torch

    from export.classifier import ClassifierFormatError, build_classifier, load_classifier
    from export.model_store import ModelNotFoundError

    torch.set_num_threads(threads)
    try:
        with console.status("loading classifier"):
            clf = load_classifier(model) if model is not None else build_classifier()
    except (ClassifierFormatError, ModelNotFoundError) as exc:
        console.print(f"[red]privtune classify: {exc}[/]")
        raise typer.Exit(code=2) from exc
    if model is None:
        console.print(
            "[yellow]note: no --model given; the head is untrained, so these probabilities mean nothing yet.[/]"
        )
    return clf.spec.labels, _classify_with_progress(clf, items)


def _classify_on_device(
    bundle: Path, runtime: str, precision: str, threads: int, items: list[str]
) -> tuple[tuple[str, ...], list[list[float]]]:
    from ondevice.bundle import BundleError
    from ondevice.inference import load_classifier

    try:
        with console.status(f"verifying {bundle} and loading {runtime} {precision}"):
            clf = load_classifier(bundle, runtime=runtime, precision=precision, threads=threads)
        return clf.labels, _classify_with_progress(clf, items)
    except (BundleError, ValueError, TypeError) as exc:
        console.print(f"[red]privtune classify: {exc}[/]")
        raise typer.Exit(code=2) from exc


def _csv(value: str, option: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if not items:
        console.print(f"[red]privtune export: {option} needs at least one comma-separated value[/]")
        raise typer.Exit(code=2)
    return items


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="Bundle folder to write (atomically).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="A classifier folder, an encoder folder or hub id, or 'packaged' (default: packaged encoder)."
        ),
    ] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (new adapters only; default 8).")] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (new adapters only; default 16).")] = None,
    targets: Annotated[
        str | None, typer.Option(help="LoRA target modules, comma-separated (default query,value).")
    ] = None,
    labels: Annotated[str | None, typer.Option(help="Label names, comma-separated (default safe,unsafe).")] = None,
    max_seq_len: Annotated[int, typer.Option(help="Upper bound of the dynamic sequence axis.")] = 128,
    backends: Annotated[str, typer.Option(help="Comma-separated: ort, executorch.")] = "ort,executorch",
    quantize: Annotated[str, typer.Option(help="int8 or none (ExecuTorch inference).")] = "int8",
    optimizer: Annotated[str, typer.Option(help="ORT optimizer model(s): adamw, sgd, or adamw,sgd.")] = "adamw,sgd",
    dp_batch_size: Annotated[int, typer.Option(help="Batch of the ExecuTorch per-example-gradient program.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of a new adapter and head.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Export a classifier to a phone bundle: ORT Training + ExecuTorch artifacts, tokenizer, manifest."""
    import torch

    from export.bundle import ExportError, check_output_dir, classifier_for_export, export_bundle
    from export.bundle_types import ExportOptions
    from ondevice.protocol import LoraSpec, ProtocolError

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        check_output_dir(out.absolute(), force=force)
        options = ExportOptions(
            max_seq_len=max_seq_len,
            backends=_csv(backends, "--backends"),
            optimizers=_csv(optimizer, "--optimizer"),
            quantize=() if quantize == "none" else _csv(quantize, "--quantize"),
            dp_batch_size=dp_batch_size,
        )
        lora = None
        if rank is not None or alpha is not None or targets is not None:
            default = LoraSpec()
            lora = LoraSpec(
                rank=default.rank if rank is None else rank,
                alpha=default.alpha if alpha is None else alpha,
                targets=default.targets if targets is None else _csv(targets, "--targets"),
            )
        with console.status("loading classifier"):
            clf, trained = classifier_for_export(
                model,
                lora=lora,
                labels=_csv(labels, "--labels") if labels else None,
                max_seq_len=max_seq_len,
                seed=seed,
            )
        if not trained:
            console.print(
                "[yellow]note: exporting a fresh adapter with an UNTRAINED head (no classifier folder given).[/]"
            )
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("starting", total=None)
            report = export_bundle(
                clf, out, options, force=force, progress=lambda message: bar.update(task, description=message)
            )
    except (ExportError, ProtocolError, ValueError) as exc:
        console.print(f"[red]privtune export: {exc}[/]")
        raise typer.Exit(code=2) from exc
    manifest = report.manifest
    table = Table(title=f"{report.bundle_dir} (manifest {manifest.manifest_hash()[:12]})")
    for column in ("file", "backend", "role", "MB"):
        table.add_column(column)
    for entry in manifest.files:
        table.add_row(entry.path, entry.backend, entry.role, f"{entry.size_bytes / 1e6:.1f}")
    out_console = Console()
    out_console.print(table)
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in report.stage_seconds.items())
    out_console.print(f"{len(manifest.trainable)} trainable tensors, {manifest.trainable_numel} parameters; {stages}")


@app.command()
def verify(bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `privtune export`.")]) -> None:
    """Check a bundle's manifest and every file's size and sha256; print what it holds."""
    from ondevice.bundle import BundleError, verify_bundle

    try:
        manifest = verify_bundle(bundle)
    except BundleError as exc:
        console.print(f"[red]privtune verify: {exc}[/]")
        raise typer.Exit(code=1) from exc
    out.print(
        f"{bundle}: ok — manifest {manifest.manifest_hash()[:12]}, {len(manifest.files)} files, "
        f"{len(manifest.trainable)} trainable tensors ({manifest.trainable_numel} parameters), "
        f"labels {list(manifest.labels)}, max_seq_len {manifest.max_seq_len}"
    )


def _classify_with_progress(
    clf: Classifier | DeviceClassifier, items: list[str], chunk: int = 256
) -> list[list[float]]:
    from rich.progress import Progress

    results: list[list[float]] = []
    with Progress(console=console, transient=True, disable=len(items) <= chunk) as progress:
        task = progress.add_task("classifying", total=len(items))
        for start in range(0, len(items), chunk):
            results.extend(clf.classify(items[start : start + chunk]).tolist())
            progress.advance(task, min(chunk, len(items) - start))
    return results


server_cli.register(app)
synth_cli.register(app)
plan_cli.register(app)
simulate_cli.register(app)
fleet_cli.register(app)
demo_cli.register(app)


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # torch.export pickles pytree specs and warns once per copy: hundreds of identical lines per export.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
    try:
        app()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
