"""Accuracy and size of the representation-compression passes on the digits models.

Regenerates the figures of docs/compression_formats.md: `python -m bench.compression_eval`
prints the table (from the checked-in float weights tests/data/digits_*.npz; accuracies come from
the reference interpreter, bit-exact integer arithmetic for the int8 graphs).
`python -m bench.compression_eval --save-fixtures` retrains those weights here (seed 0) and
records the machine; TINYC_DIGITS_RETRAIN=1 (and TINYC_DIGITS_SEED=N) trains instead of loading
them, to see which figures depend on the training outcome.
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIB_ROWS = 256      # calibration inputs: the first rows of the (shuffled) training split

# (label, pipeline) per model. distill's options are pinned so its defaults can move.
DISTILL = "distill{epochs=10 lr=0.003}"
DISTILL30 = "distill{epochs=30 lr=0.003}"
PIPELINES: list[tuple[str, str]] = [
    ("float", "fuse"),
    ("int8", "fuse,quantize-int8"),
    ("prune 90% (global)", "fuse,prune-weights{sparsity=0.9}"),
    ("prune 90% (global) + distill", f"fuse,prune-weights{{sparsity=0.9}},{DISTILL}"),
    ("prune 90% (global) + distill + int8", f"fuse,prune-weights{{sparsity=0.9}},{DISTILL},quantize-int8"),
    ("prune 90% (global, rms) + distill + int8",
     f"fuse,prune-weights{{sparsity=0.9 normalize=rms}},{DISTILL},quantize-int8"),
    ("prune 90% (layer) + distill + int8", f"fuse,prune-weights{{sparsity=0.9 scope=layer}},{DISTILL},quantize-int8"),
    ("prune 90% (layer) + distill 30 + int8", f"fuse,prune-weights{{sparsity=0.9 scope=layer}},{DISTILL30},quantize-int8"),
    ("Deep Compression: prune 90% + distill 30 + share 4-bit + distill + int8",
     f"fuse,prune-weights{{sparsity=0.9 scope=layer}},{DISTILL30},share-weights{{bits=4}},{DISTILL},quantize-int8"),
    ("int8 + share 4-bit", "fuse,quantize-int8,share-weights{bits=4}"),
    ("int8 + share 4-bit per channel", "fuse,quantize-int8,share-weights{bits=4 per-channel=true}"),
    ("share 4-bit + int8", "fuse,share-weights{bits=4},quantize-int8"),
    ("int8 + share 2-bit", "fuse,quantize-int8,share-weights{bits=2}"),
    ("share 2-bit + int8", "fuse,share-weights{bits=2},quantize-int8"),
    ("prune 90% (layer) + distill + int8 + share 4-bit",
     f"fuse,prune-weights{{sparsity=0.9 scope=layer}},{DISTILL},quantize-int8,share-weights{{bits=4}}"),
    ("int4 weights", "fuse,quantize-int8{weight-bits=4}"),
    ("int2 weights", "fuse,quantize-int8{weight-bits=2}"),
    ("binarize (float act.)", "fuse,binarize"),
    ("binarize (float act.) + int8", "fuse,binarize,quantize-int8"),
    ("binarize (float act., scale=fit) + int8", "fuse,binarize{scale=fit},quantize-int8"),
    ("binarize (binary act.)", "fuse,binarize{activations=binary}"),
    ("binarize (binary act.) + int8", "fuse,binarize{activations=binary},quantize-int8"),
]


@dataclass(frozen=True)
class Row:
    model: str
    label: str
    pipeline: str
    accuracy: float        # top-1 % on the digits test split (360 images)
    weight_bytes: int      # packed bytes of all constants (tinyc.stats)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data"
RETRAIN_ENV = "TINYC_DIGITS_RETRAIN"   # =1: train here instead of loading the checked-in weights
SEED_ENV = "TINYC_DIGITS_SEED"         # with RETRAIN: another split and initialisation (default 0)


def fixture_path(which: str) -> Path:
    return FIXTURES / f"digits_{which}.npz"


def default_seed() -> int:
    return int(os.environ.get(SEED_ENV, "0")) if os.environ.get(RETRAIN_ENV) == "1" else 0


@functools.lru_cache(maxsize=None)
def pretrained(which: str, seed: int | None = None):
    """(trained torch module, data) of the digits CNN or MLP: the checked-in weights
    (tests/data/digits_WHICH.npz, trained on the seed-0 split) unless TINYC_DIGITS_RETRAIN=1 or
    another seed asks to train here, once per process."""
    from bench.digits import TRAINERS, load_digits, load_weights
    seed = default_seed() if seed is None else seed
    if seed == 0 and os.environ.get(RETRAIN_ENV) != "1" and fixture_path(which).exists():
        return load_weights(which, fixture_path(which)), load_digits(0)
    return TRAINERS[which](seed=seed)


@functools.lru_cache(maxsize=None)
def trained(which: str, seed: int | None = None):
    """(imported float graph, data) of the digits CNN or MLP (see `pretrained`)."""
    import torch

    from tinyc.frontend import from_torch
    module, data = pretrained(which, seed)
    graph = from_torch(module, (torch.from_numpy(data[2][:1]),), name=f"digits_{which}")
    return graph, data


def save_fixtures(out_dir: Path = FIXTURES) -> None:
    """Train both models here (seed 0) and write tests/data/digits_*.npz plus the machine they
    were trained on (digits_weights.json)."""
    import json

    from bench.digits import TRAINERS, accuracy as top1, machine, save_weights
    import torch
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"machine": machine(), "seed": 0, "models": {}}
    for which, train in TRAINERS.items():
        module, data = train(seed=0)
        save_weights(module, out_dir / f"digits_{which}.npz")
        with torch.no_grad():
            acc = top1(module(torch.from_numpy(data[2])).numpy(), data[3])
        info["models"][which] = {"test_accuracy": round(acc, 2), "test_samples": int(len(data[3]))}
    (out_dir / "digits_weights.json").write_text(json.dumps(info, indent=2) + "\n")


def context(which: str, seed: int | None = None):
    """A PassContext like the CLI's: calibration rows, the test split as evaluation data (with
    labels), the training split for distill."""
    from tinyc.evaluate import make_context
    graph, (x_train, _, x_test, y_test) = trained(which, seed)
    return make_context(graph, calib=x_train[:CALIB_ROWS], eval_inputs=x_test, eval_labels=y_test, train=x_train)


def compile_digits(which: str, pipeline: str, seed: int | None = None):
    """(graph after the pipeline, its PassContext)."""
    from tinyc.passmanager import PassManager
    graph, _ = trained(which, seed)
    ctx = context(which, seed)
    return PassManager(pipeline).run(graph.copy(), ctx), ctx


def accuracy(graph, which: str, seed: int | None = None) -> float:
    """Top-1 accuracy (%) on the test split, through the interpreter."""
    from bench.digits import accuracy as top1
    from tinyc.evaluate import as_samples, run_batch
    _, (_, _, x_test, y_test) = trained(which, seed)
    (logits,) = run_batch(graph, as_samples(graph, x_test))
    return top1(logits.reshape(len(x_test), -1), y_test)


def measure(which: str, label: str, pipeline: str, seed: int | None = None) -> Row:
    from tinyc.stats import graph_stats
    graph, _ = compile_digits(which, pipeline, seed)
    return Row(which, label, pipeline, accuracy(graph, which, seed), graph_stats(graph).weight_bytes)


def has_distill() -> bool:
    from tinyc.passes import PASSES
    return "distill" in PASSES


def table(models=("mlp", "cnn"), pipelines=None, seed: int | None = None) -> list[Row]:
    rows = []
    for which in models:
        for label, pipeline in pipelines or PIPELINES:
            if "distill" in pipeline and not has_distill():
                continue
            rows.append(measure(which, label, pipeline, seed))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| model | compression | accuracy % | weight bytes |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model.upper()} | {r.label} | {r.accuracy:.2f} | {r.weight_bytes:,} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--save-fixtures"]:
        save_fixtures()
        return 0
    models = tuple(argv) or ("mlp", "cnn")
    print(markdown(table(models)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
