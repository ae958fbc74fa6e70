"""Instructions and flash of the packed-weight kernels against the int8 dense layers they replace.

`python -m bench.packed_kernels [--models mlp,conv] [--sparsity 0.8,0.9,0.95] [--bits 2,...,8]
[--per-channel] [--jobs N]` compiles, for each configuration, a seeded LeNet-300-100-shaped MLP
(784-300-100-10, `mlp`) or a LeNet-5-shaped conv net (`conv`: 1x28x28, conv 6@5x5, pool, conv
16@5x5, pool, 256-120-84-10) through `fuse,prune-weights{sparsity=S scope=layer},quantize-int8
[,share-weights{bits=B}]` for the Cortex-M4, checks its outputs on QEMU against the interpreter
(equal), and measures exact instructions per layer (QEMU TCG plugin, `tinyc bench`'s harness) and
the model flash (text + data of the model object). Each row is set against the int8 dense layer:
the same graph with packing disabled (every weight a dense int8 array, the ordinary kernels).
Weights are seeded Gaussian: the figures are about storage and speed, not accuracy.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET = "cortex-m4"


def mlp():
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10)).eval()


def conv():
    import torch
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, 10)).eval()


MODELS = {"mlp": mlp, "conv": conv}


def pipeline(sparsity: float, bits: int | None, per_channel: bool = False) -> str:
    steps = ["fuse"]
    if sparsity:
        steps.append(f"prune-weights{{sparsity={sparsity} scope=layer}}")
    steps.append("quantize-int8")
    if bits:
        steps.append(f"share-weights{{bits={bits}" + (" per-channel=true" if per_channel else "") + "}")
    return ",".join(steps)


@dataclass
class Row:
    model: str
    sparsity: float
    bits: int | None
    per_channel: bool
    packed: bool
    flash: int
    instructions: int
    layers: dict[str, int]          # layer result name -> instructions (conv2d / linear only)
    formats: dict[str, str]         # layer -> chosen storage


def graph_of(model: str, sparsity: float, bits: int | None, per_channel: bool):
    import torch
    from tinyc.frontend import from_torch
    from tinyc.passes import PassContext
    from tinyc.passmanager import PassManager
    module = MODELS[model]()
    shape = (1, 1, 28, 28) if model == "conv" else (1, 784)
    example = torch.zeros(shape)
    graph = from_torch(module, (example,), name=model)
    calib = np.random.default_rng(1).random((32, *shape)).astype(np.float32)
    return PassManager(pipeline(sparsity, bits, per_channel)).run(graph, PassContext(calib=calib)), calib


def measure(model: str, sparsity: float, bits: int | None, per_channel: bool, packed: bool, work: Path) -> Row:
    from bench.benchmarks import model_flash
    from tinyc.backends import c_ops_packed
    from tinyc.backends.bench import bench_model
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.backends.run import run_model
    from tinyc.backends.target_files import write_target_files
    from tinyc.interpreter import run as interpret

    graph, calib = graph_of(model, sparsity, bits, per_channel)
    tag = f"{model}-s{sparsity}-b{bits}-{'pc' if per_channel else 'pl'}-{'packed' if packed else 'dense'}"
    out = work / tag
    policy = c_ops_packed.PackingPolicy(disable=not packed)
    info = emit_bundle(graph, out, target_name=TARGET, packing=policy)
    write_target_files(out, TARGET, "model")
    rows = calib[:2]
    got = run_model(out, TARGET, "model", rows.reshape(len(rows), -1))
    for r in range(len(rows)):
        want = interpret(graph, [rows[r]])[0].ravel()
        if not np.array_equal(got[r], want):
            raise SystemExit(f"{tag}: row {r} differs from the interpreter")
    b = bench_model(out, TARGET, "model", profile=True)
    layers = {lay.name: n for lay, n in zip(info.layers, b.layer_instructions) if lay.kind in ("linear", "conv2d")}
    formats = c_ops_packed.describe(graph) if packed else {}
    return Row(model, sparsity, bits, per_channel, packed, model_flash(out, "model"), b.instructions, layers, formats)


def _job(args):
    return measure(*args)


def table(rows: list[Row]) -> str:
    base = {(r.model, r.sparsity): r for r in rows if not r.packed and r.bits is None}
    lines = ["| model | sparsity | share bits | model flash B | flash vs int8 dense | layer | instr | vs int8 dense | "
             "format |", "|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        if not r.packed:
            continue
        d = base.get((r.model, r.sparsity))
        bits = "-" if r.bits is None else f"{r.bits}{' pc' if r.per_channel else ''}"
        for i, (name, n) in enumerate(r.layers.items()):
            ref = d.layers.get(name) if d else None
            ratio = f"{n / ref:.2f}x" if ref else "?"
            fl = f"{r.flash:,}" if i == 0 else ""
            flr = f"{r.flash / d.flash:.2f}x" if d and i == 0 else ""
            lines.append(f"| {r.model} | {r.sparsity} | {bits} | {fl} | {flr} | {name} | {n:,} | {ratio} | "
                         f"{r.formats.get(name, 'int8 dense')} |")
    for d in base.values():
        lines.append(f"| {d.model} | {d.sparsity} | int8 dense | {d.flash:,} | 1.00x | all | {d.instructions:,} | "
                     f"1.00x | " + ", ".join(f"{k} {v:,}" for k, v in d.layers.items()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,conv")
    ap.add_argument("--sparsity", default="0.8,0.9,0.95")
    ap.add_argument("--bits", default="2,3,4,5,6,7,8")
    ap.add_argument("--per-channel", action="store_true")
    ap.add_argument("--no-unshared", action="store_true", help="skip the pruned int8 rows without sharing")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    bits = [int(b) for b in a.bits.split(",") if b]
    jobs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in a.models.split(","):
            for s in (float(x) for x in a.sparsity.split(",")):
                jobs.append((model, s, None, False, False, work))
                if not a.no_unshared:
                    jobs.append((model, s, None, False, True, work))
                for b in bits:
                    jobs.append((model, s, b, a.per_channel, True, work))
        with ProcessPoolExecutor(a.jobs) as pool:
            rows = list(pool.map(_job, jobs))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
