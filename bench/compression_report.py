"""`make compression-docs`: docs/compression.md — every compression pass and combination, measured
on real firmware: params, weight bytes, MACs, flash of the model, guest instructions on a QEMU
Cortex-M4, and accuracy (digits) or fidelity to the uncompressed model (MLPerf architectures).

Each firmware's outputs are checked against the reference interpreter on QEMU before its figures
are used (equal for integer graphs, within 1e-4 for float), so no row describes a file that
would not run.

    python -m bench.compression_report --out docs/compression.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.digits import machine
from tinyc.errors import TinycError

TARGET = "cortex-m4"
COMMAND = "make compression-docs   (python -m bench.compression_report --out docs/compression.md)"
CHECK_ROWS = 8  # inputs run on QEMU to check each firmware against the interpreter

AUTOENCODER_PIPELINES = [("float", "fuse"), ("int8", "fuse,quantize-int8"),
                         ("svd energy 0.95", "fuse,svd{energy=0.95}"),
                         ("svd energy 0.9", "fuse,svd{energy=0.9}"),
                         ("svd energy 0.8", "fuse,svd{energy=0.8}"),
                         ("svd rank 16", "fuse,svd{rank=16}"),
                         ("svd energy 0.9 + int8", "fuse,svd{energy=0.9},quantize-int8"),
                         ("svd rank 16 + distill", "fuse,svd{rank=16},distill{epochs=20 lr=0.0003}"),
                         ("svd rank 16 + distill + int8", "fuse,svd{rank=16},distill{epochs=20 lr=0.0003},quantize-int8"),
                         ("prune-channels 0.5 + int8", "fuse,prune-channels{ratio=0.5},quantize-int8")]

MLPERF_PIPELINES: dict[str, list[tuple[str, str]]] = {
    "ds_cnn": [("int8", "fuse,quantize-int8"),
               ("prune-channels 0.5 + int8", "fuse,prune-channels{ratio=0.5},quantize-int8"),
               ("prune-layers 1 + int8", "fuse,prune-layers{count=1},quantize-int8")],
    "resnet8": [("int8", "fuse,quantize-int8"),
                ("prune-channels 0.5 + int8", "fuse,prune-channels{ratio=0.5},quantize-int8"),
                ("prune-layers 1 + int8", "fuse,prune-layers{count=1},quantize-int8")],
}


@dataclass
class Firmware:
    flash_model: int | None
    instructions: int | None
    note: str = ""


@dataclass
class Row:
    model: str
    label: str
    pipeline: str
    params: int
    weight_bytes: int
    macs: int
    score: float
    metric: str
    firmware: Firmware


def is_integer_graph(graph) -> bool:
    return any(op.kind == "quantize" for op in graph.ops)


def firmware(graph, inputs: np.ndarray, workdir: Path, tag: str) -> Firmware:
    """Build for the Cortex-M4, check outputs against the interpreter on QEMU, then bench."""
    from tinyc.backends.bench import bench_model
    from tinyc.backends.run import run_model
    from tinyc.backends.target_files import write_target_files
    from tinyc.backends.c_emitter import emit_bundle
    from bench.benchmarks import model_flash
    from tinyc.evaluate import as_samples, run_batch

    out = workdir / tag
    try:
        emit_bundle(graph, out, name="model", target_name=TARGET)
        write_target_files(out, TARGET, "model")
        rows = inputs[:CHECK_ROWS]
        got = run_model(out, TARGET, "model", rows.reshape(len(rows), -1))
    except TinycError as e:
        return Firmware(None, None, f"no C yet: {e.what.splitlines()[0][:80]}")
    want = np.concatenate([o.reshape(len(rows), -1) for o in run_batch(graph, as_samples(graph, rows))], axis=1)
    if is_integer_graph(graph):
        ok = np.array_equal(got, want)
    else:
        ok = float(np.abs(got - want).max()) <= 1e-4 * max(float(np.abs(want).max()), 1e-30)
    if not ok:
        raise AssertionError(f"{tag}: the firmware's outputs differ from the interpreter's")
    bench = bench_model(out, TARGET, "model", profile=False)
    return Firmware(model_flash(out, "model"), bench.instructions)


def digits_rows(workdir: Path) -> list[Row]:
    from bench import compression_eval as ce
    from tinyc.stats import graph_stats

    rows = []
    for which in ("mlp", "cnn"):
        _, (_, _, x_test, _) = ce.trained(which)
        for label, pipeline in ce.PIPELINES:
            print(f"  digits {which}: {label}", file=sys.stderr, flush=True)
            graph, _ = ce.compile_digits(which, pipeline)
            s = graph_stats(graph)
            fw = firmware(graph, x_test, workdir, f"digits-{which}-{len(rows)}")
            rows.append(Row(f"digits {which.upper()}", label, pipeline, s.params, s.weight_bytes, s.macs,
                            ce.accuracy(graph, which), "accuracy %", fw))
    return rows


def autoencoder_rows(workdir: Path) -> list[Row]:
    """The MLPerf AD architecture trained on synthetic machine spectra; score = detection AUC of
    reconstruction error (normal vs a machine with shifted harmonics)."""
    import torch

    from bench.anomaly import anomalous_spectra, detection_auc, train_autoencoder
    from tinyc.evaluate import as_samples, make_context, run_batch
    from tinyc.frontend import from_torch
    from tinyc.passmanager import PassManager
    from tinyc.stats import graph_stats

    module, (x_train, x_test) = train_autoencoder()
    reference = from_torch(module, (torch.from_numpy(x_test[:1]),), name="fc_autoencoder")
    x_anomaly = anomalous_spectra(len(x_test))
    rows = []
    for label, pipeline in AUTOENCODER_PIPELINES:
        print(f"  trained fc_autoencoder: {label}", file=sys.stderr, flush=True)
        ctx = make_context(reference, calib=x_train[:64], eval_inputs=x_test, train=x_train)
        graph = PassManager(pipeline).run(reference.copy(), ctx)
        s = graph_stats(graph)
        out = lambda x: run_batch(graph, as_samples(graph, x))[0]
        score = detection_auc(out(x_test), x_test, out(x_anomaly), x_anomaly)
        fw = firmware(graph, x_test, workdir, f"ae-{len(rows)}")
        fw.note = (fw.note + "; " if fw.note else "") + f"SQNR vs float model {ctx.evaluate(graph):.1f} dB"
        rows.append(Row("fc_autoencoder (trained)", label, pipeline, s.params, s.weight_bytes, s.macs,
                        score, "AUC", fw))
    return rows


def mlperf_rows(workdir: Path) -> list[Row]:
    from bench import zoo
    from tinyc.evaluate import make_context
    from tinyc.frontend import from_torch
    from tinyc.passmanager import PassManager
    from tinyc.stats import graph_stats

    rows = []
    for model, pipelines in MLPERF_PIPELINES.items():
        module, example = zoo.get(model)
        reference = from_torch(module, (example,), name=model)
        rng = np.random.default_rng(0)
        data = rng.standard_normal((96, *example.shape[1:])).astype(np.float32)
        for label, pipeline in pipelines:
            print(f"  {model}: {label}", file=sys.stderr, flush=True)
            ctx = make_context(reference, calib=data[:32], eval_inputs=data[32:])
            graph = PassManager(pipeline).run(reference.copy(), ctx)
            s = graph_stats(graph)
            fw = firmware(graph, data[32:], workdir, f"{model}-{len(rows)}")
            rows.append(Row(model, label, pipeline, s.params, s.weight_bytes, s.macs,
                            ctx.evaluate(graph), ctx.metric, fw))
    return rows


def _fmt(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def table(rows: list[Row]) -> list[str]:
    lines = ["| model | compression | params | weight B | MACs | model flash B | instructions | score | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.label} | {r.params:,} | {r.weight_bytes:,} | {r.macs:,} | "
                     f"{_fmt(r.firmware.flash_model)} | {_fmt(r.firmware.instructions)} | "
                     f"{r.score:.2f} {r.metric} | {r.firmware.note} |")
    return lines


def pareto_front(points: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
    """Points no other point beats on both flash (smaller) and accuracy (higher)."""
    front, best = [], -1.0
    for x, y, label in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y, label))
            best = y
    return front


def plot(rows: list[Row], path: Path) -> bool:
    """Accuracy vs model flash for the digits models (only rows with firmware)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, marker in (("digits MLP", "o"), ("digits CNN", "s")):
        pts = [(r.firmware.flash_model, r.score, r.label) for r in rows if r.model == model and r.firmware.flash_model]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=model, alpha=0.7)
            for x, y, label in pareto_front(pts):   # label only the best trade-offs, readable
                ax.annotate(label, (x, y), fontsize=6, xytext=(4, -8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("model flash on Cortex-M4 (bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits: accuracy vs flash per compression pipeline (labels: Pareto front)")
    ax.set_ylim(80, 100.5)  # the collapsed global-pruning rows (10-30 %) are in the table
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def digits_machine() -> str:
    import json
    from bench.compression_eval import FIXTURES
    try:
        return json.loads((FIXTURES / "digits_weights.json").read_text())["machine"]
    except (OSError, ValueError, KeyError):
        return "this machine (no checked-in weights found)"


def render(digits: list[Row], autoencoder: list[Row], mlperf: list[Row], plotted: bool, plot_name: str,
           deep: list | None = None) -> str:
    lines = [
        "# Compression: what each pass buys on a Cortex-M4",
        "",
        f"Regenerate with `{COMMAND}`. Generated by tinyc; do not edit by hand.",
        "",
        "Every row is a real firmware: compiled for `cortex-m4`, its outputs checked on QEMU (mps2-an386) against "
        "tinyc's reference interpreter (equal for integer graphs, within 1e-4 for float), then benchmarked. "
        "*Model flash* is text+data of the model's object (weights + kernels + invoke); *instructions* are exact guest "
        "instructions per inference under `-icount shift=0`. *Weight B* counts packed constant bytes. A row whose "
        "format has no C kernel yet says so in *note* and has no firmware figures.",
        "",
        f"Measured on: {machine()}. Figures that come out of training (distillation, the autoencoder, "
        "retrained digits models) move a little from CPU to CPU: float32 training is not bit-reproducible across "
        "vector widths and summation orders. Instruction counts, flash and the figures of pipelines that train "
        "nothing are exact on any machine.",
        "",
        "## Digits (scikit-learn `digits`; accuracy on the 360-image test split)",
        "",
        f"The float models are the checked-in weights `tests/data/digits_*.npz` (trained in the project with seed 0 "
        f"on: {digits_machine()}), so only the compression passes move these rows.",
        "",
    ] + table(digits)
    if plotted:
        lines += ["", f"![accuracy vs flash]({plot_name})"]
    if deep:
        from bench import deep_compression as dc
        lines += ["", "## Deep Compression side by side (LeNet-300-100, LeNet-5 on real handwritten digits)", "",
                  ] + dc.description() + dc.table(deep)
        if not any(r.source.startswith("tinyc --auto") for r in deep):
            lines += ["", "The `tinyc --auto` rows (same models, data and held-out half) are in "
                      "[auto_results.md](auto_results.md) (`python -m bench.auto_eval`)."]
    lines += ["", "## FC autoencoder (MLPerf Tiny anomaly detection), trained on synthetic machine spectra", "",
              "Trained in seconds on 2,048 synthetic 5-frame x 128-bin log spectra of a machine (`bench.anomaly`); the score is "
              "the detection AUC of reconstruction error between 256 held-out normal samples and 256 of a machine whose "
              "harmonics moved. The note gives the output SQNR against the uncompressed float model.", ""]
    lines += table(autoencoder)
    lines += ["", "## MLPerf Tiny classifiers (seeded random weights; top-1 agreement in % with the uncompressed model on random inputs)",
              "", "Random weights have flat singular-value spectra and no redundancy to find, so these rows show the cost in "
              "MACs, flash and instructions; accuracy effects need trained weights (see the digits and autoencoder tables).", ""]
    lines += table(mlperf)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compression_report", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/compression.md"))
    parser.add_argument("--skip-mlperf", action="store_true")
    parser.add_argument("--skip-auto", action="store_true", help="Deep Compression table without the --auto rows")
    parser.add_argument("--jobs", type=int, default=2, help="--auto's parallel candidates")
    args = parser.parse_args(argv)
    from bench import deep_compression
    with tempfile.TemporaryDirectory(prefix="tinyc-compress-") as tmp:
        deep = deep_compression.rows(Path(tmp), args.jobs, auto=not args.skip_auto)
        digits = digits_rows(Path(tmp))
        autoencoder = autoencoder_rows(Path(tmp))
        mlperf = [] if args.skip_mlperf else mlperf_rows(Path(tmp))
    plot_path = args.out.with_name("compression_digits.png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plotted = plot(digits, plot_path)
    args.out.write_text(render(digits, autoencoder, mlperf, plotted, plot_path.name, deep))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
