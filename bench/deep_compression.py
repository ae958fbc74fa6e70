"""Deep Compression (Han, Mao, Dally, ICLR 2016) side by side with tinyc on LeNet-300-100 and LeNet-5.

The paper's rows (Table 1, and Tables 2-3 for pruning and bits without Huffman coding) against
tinyc on real handwritten digits available offline: scikit-learn's digits upsampled to 28 x 28
(bench.realdata; 898 training and 899 test images, where the paper used MNIST's 60,000 and 10,000
native 28 x 28 images, so the error rates are not comparable, only their changes). For each model:

- *tinyc, Deep Compression's recipe*: the paper's pruning rate (8 % of the weights kept, global
  magnitude here instead of the paper's per-layer thresholds) and index bits (6 for LeNet-300-100,
  5 for LeNet-5's dominant fully connected layers), with distillation on the training images after
  pruning and after sharing (the paper retrains with labels), then int8;
- *tinyc --auto*: `tinyc compile --auto --max-accuracy-drop 1 --train` (bench.auto_eval), which
  searched with half of the test images and never saw the held-out half.

Ratios compare float32 weights with what tinyc ships: the model object's flash (weights, indices,
codebooks, kernels and invoke code: more than the paper counts) and, in brackets, the packed weight
bytes of the weight matrices alone (indices, codebooks, sparse structure: the paper's measure, without
Huffman coding in tinyc). Errors are measured on the
held-out half of the test images, the compiled graph run by the interpreter, whose integer
semantics the firmware matches bit for bit (checked on QEMU for 8 inputs per row).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# (model, storage ratio, top-1 error before %, after %, what the paper did): Table 1; the P+Q
# ratios (pruning + quantization, without Huffman) from Tables 2 and 3.
PAPER = {
    "lenet_300_100": ("40x (32x without Huffman)", 1.64, 1.58,
                      "92 % pruned (per layer 8 % / 9 % / 26 % kept), 6-bit shared weights, Huffman"),
    "lenet5": ("39x (33x without Huffman)", 0.80, 0.74,
               "92 % pruned (conv 66 % / 12 %, fc 8 % / 19 % kept), 8-bit conv / 5-bit fc, Huffman"),
}
RECIPES = {
    "lenet_300_100": "fuse,prune-weights{sparsity=0.92},distill{epochs=20},share-weights{bits=6},distill,quantize-int8",
    "lenet5": "fuse,prune-weights{sparsity=0.92},distill{epochs=20},share-weights{bits=5},distill,quantize-int8",
}
LABELS = {"lenet_300_100": "LeNet-300-100", "lenet5": "LeNet-5"}


@dataclass
class DCRow:
    model: str
    source: str
    pipeline: str
    float_bytes: int
    model_flash: int | None
    weight_bytes: int | None
    error_before: float
    error_after: float
    note: str = ""


def held_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """bench.auto_eval's split of a test set: (evaluation half, held-out half)."""
    perm = np.random.default_rng(0).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def recipe_row(name: str, workdir: Path) -> DCRow:
    import torch

    from bench.compression_report import firmware
    from bench.realdata import train
    from tinyc.evaluate import as_samples, make_context, run_batch, top1
    from tinyc.frontend import from_torch
    from tinyc.passmanager import PassManager
    from tinyc.backends.c_emitter import emit_bundle

    model, (x_train, _, x_test, y_test) = train(name)
    _, held = held_split(len(x_test))
    graph = from_torch(model, (torch.from_numpy(x_test[:1]),), name=name)
    ctx = make_context(graph, calib=x_train[:128], train=x_train)
    out = PassManager(RECIPES[name]).run(graph.copy(), ctx)
    xs = as_samples(graph, x_test[held])
    err = lambda g: 100.0 * float(np.mean(top1(run_batch(g, xs, [g.outputs[0].name])[0]) != y_test[held]))
    fw = firmware(out, x_test[held], workdir, f"dc-{name}")
    info = emit_bundle(out, workdir / f"dc-{name}-info", name="model", target_name="cortex-m4")
    packed = sum(lay.storage["bytes"] for lay in info.layers if lay.storage)
    return DCRow(name, "tinyc, Deep Compression's recipe", RECIPES[name], 4 * sum(p.numel() for p in model.parameters()),
                 fw.flash_model, packed, err(graph), err(out))


def auto_row(name: str, workdir: Path, jobs: int) -> DCRow:
    from bench.auto_eval import evaluate
    r = evaluate(name, workdir / "auto", jobs)
    if "error" in r:
        return DCRow(name, "tinyc --auto", "", 0, None, None, 100 - r["float_acc"], float("nan"), r["error"])
    return DCRow(name, "tinyc --auto --max-accuracy-drop 1", r["pipeline"], r["float_weight_bytes"], r["model_flash"],
                 r["weight_bytes"], 100 - r["float_acc"], 100 - r["shipped_acc"],
                 f"firmware run on QEMU; {r['candidates']} candidates")


def rows(workdir: Path, jobs: int = 2, auto: bool = True) -> list[DCRow]:
    out = []
    for name in PAPER:
        print(f"  deep compression: {name}", file=sys.stderr, flush=True)
        out.append(recipe_row(name, workdir))
        if auto:
            (workdir / "auto").mkdir(exist_ok=True)
            out.append(auto_row(name, workdir, jobs))
    return out


def description() -> list[str]:
    """The module docstring after its title, as markdown lines (paragraphs and bullets)."""
    out: list[str] = []
    for para in __doc__.split("\n\n")[1:]:
        items: list[str] = []
        for line in para.strip().splitlines():
            if line.startswith("- ") or not items:
                items.append(line.strip())
            else:
                items[-1] += " " + line.strip()
        out += items + [""]
    return out


def table(rows_: list[DCRow]) -> list[str]:
    lines = ["| model | source | storage ratio: model flash (weights only) | top-1 error % before → after | "
             "change (points) | what was done |", "|---|---|---:|---:|---:|---|"]
    for name in PAPER:
        ratio, before, after, what = PAPER[name]
        lines.append(f"| {LABELS[name]} | Deep Compression (MNIST) | {ratio} | {before:.2f} → {after:.2f} | "
                     f"{after - before:+.2f} | {what} |")
        for r in (r for r in rows_ if r.model == name):
            if r.model_flash is None:
                lines.append(f"| {LABELS[name]} | {r.source} | | | | {r.note} |")
                continue
            wb = f" ({r.float_bytes / r.weight_bytes:.1f}x)" if r.weight_bytes else ""
            lines.append(f"| {LABELS[name]} | {r.source} (digits 28x28) | {r.float_bytes / r.model_flash:.1f}x{wb} | "
                         f"{r.error_before:.2f} → {r.error_after:.2f} | {r.error_after - r.error_before:+.2f} | "
                         f"`{r.pipeline}`{'; ' + r.note if r.note else ''} |")
    return lines
