"""Scoring graphs on the user's data, for accuracy-aware compilation.

`make_evaluator(reference, inputs, labels)` returns `(evaluate, metric)`: `evaluate(graph)` scores
a graph (higher is better) through the reference interpreter. The metric is chosen once, from
the reference graph and the data:

- with labels: top-1 accuracy in % ("accuracy %"), the argmax of the first output;
- without labels, a classifier (first output `[B, C]`, C > 1, not shaped like an input):
  top-1 agreement in % with the reference graph's predictions ("top-1 agreement %");
- otherwise (regression, reconstruction like the anomaly-detection autoencoder): the SQNR of
  the first output against the reference's in dB ("SQNR dB"), capped at `SQNR_CAP`, so an
  accuracy budget of D points with this metric means "keep SQNR >= SQNR_CAP - D dB".

Samples run in batches: when every op keeps the batch on axis 0 (checked op by op,
`batch_safe`), the graph is re-typed for a batch of samples and run once per chunk; otherwise
the interpreter runs sample by sample.

`make_context(graph, ...)` builds the PassContext the CLI hands to the pass manager.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tinyc.context import PassContext
from tinyc.errors import TinycError
from tinyc.interpreter import run_all
from tinyc.ir import Graph, TensorType
from tinyc.ops import OPS, fmt_shape

SQNR_CAP = 100.0             # dB; identical outputs score this
CHUNK_BYTES = 64 << 20       # rough working-set budget of one batched interpreter run
METRICS = {"accuracy": "accuracy %", "agreement": "top-1 agreement %", "sqnr": "SQNR dB"}

Evaluator = Callable[[Graph], float]


# ---- samples ------------------------------------------------------------------------------

def as_samples(graph: Graph, data, what: str = "input", flag: str = "--eval") -> list[np.ndarray]:
    """One float32 array (int32 for token-id inputs) per graph input, each `[N, *input shape]`. `data` is an array (one-input
    graphs) or a list of arrays, each N x the input's shape, N x the shape without its leading
    batch dimension of 1, or a single sample of the input's shape."""
    arrays = [data] if isinstance(data, np.ndarray) else list(data)
    if len(arrays) != len(graph.inputs):
        raise TinycError(f"{what} data has {len(arrays)} arrays; graph @{graph.name} has {len(graph.inputs)} inputs",
                         hint="give one array per graph input")
    out = []
    for v, a in zip(graph.inputs, arrays):
        a = np.asarray(a)
        shape = v.type.shape
        if a.dtype.kind not in "fiub":
            raise TinycError(f"{what} data for %{v.name} has dtype {a.dtype}; expected numbers (float32)")
        if a.shape[1:] == shape:
            pass
        elif a.shape == shape:
            a = a[None]
        elif shape[:1] == (1,) and a.shape[1:] == shape[1:]:
            a = a[:, None]
        else:
            rows = ", ".join(map(str, shape[1:]))
            raise TinycError(f"{what} data for %{v.name} has shape {fmt_shape(a.shape)}; the model input is "
                             f"{fmt_shape(shape)}",
                             hint=f"{flag} takes N samples: [N, {', '.join(map(str, shape))}]"
                             + (f" or [N, {rows}]" if shape[:1] == (1,) else ""))
        if v.type.dtype == "i32":   # token ids
            if a.dtype.kind == "f" and not np.array_equal(a, np.floor(a)):
                raise TinycError(f"{what} data for %{v.name} must hold integer token ids, got {a.dtype} values "
                                 "with fractions", hint="save the token ids as an integer array (int64 or int32)")
            out.append(np.ascontiguousarray(a, dtype=np.int32))
            continue
        out.append(np.ascontiguousarray(a, dtype=np.float32))
    counts = {len(a) for a in out}
    if len(counts) != 1 or counts == {0}:
        raise TinycError(f"{what} data holds {' / '.join(str(len(a)) for a in out)} samples",
                         hint="every input needs the same, non-zero number of samples")
    return out


# ---- batched runs -------------------------------------------------------------------------------

def batch_safe(graph: Graph) -> bool:
    """True when every value computed from the inputs keeps the samples independent along axis 0,
    so that stacking samples on axis 0 and running once equals running each sample."""
    if not graph.inputs:
        return False
    lead = {v.type.shape[0] if v.type.rank else None for v in graph.inputs}
    if len(lead) != 1 or None in lead:
        return False
    (b,) = lead
    batched = {id(v) for v in graph.inputs}
    for op in graph.ops:
        types = [v.type for v in op.operands]
        flags = [id(v) in batched for v in op.operands]
        if not any(flags):
            continue
        if not _keeps_batch(op.kind, op.attrs, types, flags, op.result.type):
            return False
        if op.result.type.rank == 0 or op.result.type.shape[0] != b:
            return False
        batched.add(id(op.result))
    return all(id(v) in batched for v in graph.outputs)


def _keeps_batch(kind: str, a: dict, types: list[TensorType], flags: list[bool], result: TensorType) -> bool:
    """The op's own rule (its definition's `keeps_batch` facet); ops without one do not."""
    rule = OPS[kind].keeps_batch
    return rule is not None and rule(a, types, flags, result)


def batch_graph(graph: Graph, n: int) -> Graph:
    """A copy of a batch_safe graph for n samples stacked on axis 0 (inputs [n*B, ...])."""
    g = graph.copy()
    for v in g.inputs:
        v.type = v.type.with_shape((v.type.shape[0] * n,) + v.type.shape[1:])
    for op in g.compute_ops():
        if op.kind == "reshape" and op.operands[0].type.shape[0] != op.attrs["shape"][0]:
            op.attrs["shape"] = [op.operands[0].type.shape[0]] + list(op.attrs["shape"][1:])
        shape = OPS[op.kind].infer([v.type for v in op.operands], op.attrs)
        op.result.type = op.result.type.with_shape(shape)
    return g


def _per_sample_bytes(graph: Graph) -> int:
    """A rough working set of one sample: the largest im2col / window view plus all activations."""
    acts = sum(op.result.type.numel for op in graph.compute_ops())
    windows = max([op.result.type.numel // op.result.type.shape[1] * op.attrs["groups"]
                   * math.prod(op.operands[1].type.shape[1:]) for op in graph.compute_ops() if op.kind == "conv2d"] + [0])
    return 8 * (acts + windows) + 1


def run_batch(graph: Graph, samples: list[np.ndarray], names: list[str] | None = None,
              chunk: int | None = None) -> list[np.ndarray]:
    """Values `names` (default: the outputs) for N samples (as_samples arrays): one array
    `[N, *value shape]` per name. Batched when batch_safe, else sample by sample."""
    names = list(names or [v.name for v in graph.outputs])
    n = len(samples[0])
    if batch_safe(graph) and _names_batched(graph, names):
        b = graph.inputs[0].type.shape[0]
        chunk = chunk or max(1, min(n, CHUNK_BYTES // _per_sample_bytes(graph)))
        parts: list[list[np.ndarray]] = [[] for _ in names]
        graphs: dict[int, Graph] = {}
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            g = graphs.get(k) or graphs.setdefault(k, batch_graph(graph, k))
            env = run_all(g, [s[start:start + k].reshape((k * b,) + s.shape[2:]) for s in samples])
            for part, name in zip(parts, names):
                part.append(env[name].reshape((k, b) + env[name].shape[1:]))
        return [np.concatenate(p) for p in parts]
    rows = []
    for i in range(n):
        env = run_all(graph, [s[i] for s in samples])
        rows.append([env[name] for name in names])
    return [np.stack(r) for r in zip(*rows)]


def _names_batched(graph: Graph, names: list[str]) -> bool:
    consts = {op.result.name for op in graph.const_ops()}
    return not any(n in consts for n in names)


# ---- metrics ------------------------------------------------------------------------------------

def choose_metric(graph: Graph, labels) -> str:
    """'accuracy' with labels; else 'agreement' for classifiers, 'sqnr' for anything else."""
    if labels is not None:
        return "accuracy"
    out = graph.outputs[0].type
    like_input = any(out.shape == v.type.shape for v in graph.inputs)
    return "agreement" if out.rank == 2 and out.shape[-1] > 1 and not like_input else "sqnr"


def top1(outputs: np.ndarray) -> np.ndarray:
    """Predicted classes: argmax over the last axis, flattened to one prediction per row."""
    return np.argmax(outputs, axis=-1).reshape(-1)


def sqnr_db(got: np.ndarray, want: np.ndarray) -> float:
    """10 log10(signal / noise) of `got` against `want`, capped at SQNR_CAP."""
    want = np.asarray(want, np.float64)
    noise = float(np.sum((np.asarray(got, np.float64) - want) ** 2))
    signal = float(np.sum(want ** 2))
    if not math.isfinite(noise):
        return -SQNR_CAP
    if noise == 0.0:
        return SQNR_CAP
    if signal == 0.0:
        return -SQNR_CAP
    return float(min(SQNR_CAP, 10.0 * math.log10(signal / noise)))


def _labels(labels, n_pred: int, classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == classes and classes > 1 and y.shape[0] * y.shape[1] != n_pred:
        y = np.argmax(y, axis=1)   # one-hot rows
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise TinycError("labels must be integer class indices", hint="save them as an int array (or one-hot rows)")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iub":
        raise TinycError(f"labels have dtype {y.dtype}; expected integer class indices")
    if len(y) != n_pred:
        raise TinycError(f"{len(y)} labels for {n_pred} predictions",
                         hint="give one label per evaluation sample (the same N as the inputs)")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise TinycError(f"labels range over [{y.min()}, {y.max()}]; the model has {classes} classes",
                         hint=f"labels are class indices in [0, {classes - 1}]")
    return y.astype(np.int64)


def make_evaluator(reference_graph: Graph, inputs, labels=None, metric: str | None = None
                   ) -> tuple[Evaluator, str]:
    """(evaluate, metric name) for scoring graphs on `inputs` (see the module docstring).
    `metric` forces 'accuracy' (needs labels), 'agreement' or 'sqnr' instead of the automatic choice."""
    samples = as_samples(reference_graph, inputs, "evaluation")
    kind = metric or choose_metric(reference_graph, labels)
    if kind not in METRICS:
        raise TinycError(f"unknown metric {kind!r}", hint="one of " + ", ".join(METRICS))
    if kind == "accuracy" and labels is None:
        raise TinycError("accuracy needs labels", hint="pass the labels (.npy) after the inputs")
    out_type = reference_graph.outputs[0].type
    out_shape = out_type.shape
    if kind == "accuracy":
        classes = out_shape[-1] if out_shape else 1
        want = _labels(labels, len(samples[0]) * math.prod(out_shape[:-1]), classes)
    else:
        ref = run_batch(reference_graph, samples, [reference_graph.outputs[0].name])[0]
        want = top1(ref) if kind == "agreement" else ref

    def evaluate(graph: Graph) -> float:
        if not graph.outputs or graph.outputs[0].type.shape != out_shape:
            got_shape = fmt_shape(graph.outputs[0].type.shape) if graph.outputs else "none"
            raise TinycError(f"cannot evaluate graph @{graph.name}: its first output is {got_shape}, "
                             f"the reference's {fmt_shape(out_shape)}")
        got = run_batch(graph, samples, [graph.outputs[0].name])[0]
        if kind == "sqnr":
            return sqnr_db(got, want)
        return float(100.0 * np.mean(top1(got) == want))

    return evaluate, METRICS[kind]


# ---- the pass context -------------------------------------------------------------------------

def make_context(graph: Graph, *, calib=None, eval_inputs=None, eval_labels=None, train=None,
                 max_accuracy_drop: float | None = None):
    """The PassContext for compiling `graph` (as imported): `reference` is a copy of it; with
    evaluation inputs, `evaluate`, `metric` and `baseline` (the reference's score) are set."""
    ctx = PassContext(calib=calib, eval_inputs=eval_inputs, eval_labels=eval_labels, train=train,
                      reference=graph.copy(), max_accuracy_drop=max_accuracy_drop)
    if eval_inputs is None and eval_labels is not None:
        raise TinycError("evaluation labels given without evaluation inputs", hint="pass --eval X.npy Y.npy")
    if max_accuracy_drop is not None:
        if eval_inputs is None:
            raise TinycError("--max-accuracy-drop needs evaluation data to measure accuracy",
                             hint="pass --eval X.npy [Y.npy] (inputs, optional labels)")
        if not (max_accuracy_drop >= 0 and math.isfinite(max_accuracy_drop)):
            raise TinycError(f"--max-accuracy-drop must be a non-negative number of points, got {max_accuracy_drop}")
    if train is not None:
        as_samples(graph, train, "training", "--train")   # shape errors now, not in the middle of a pipeline
    if eval_inputs is not None and max_accuracy_drop is not None:
        _contract_scorers(ctx, graph)
    elif eval_inputs is not None:
        ctx.evaluate, ctx.metric = make_evaluator(ctx.reference, eval_inputs, eval_labels)
        ctx.baseline = ctx.evaluate(ctx.reference)
    return ctx


def _first_output(graph: Graph, samples: list[np.ndarray]) -> np.ndarray:
    return run_batch(graph, samples, [graph.outputs[0].name])[0]


def _contract_scorers(ctx, graph: Graph) -> None:
    """Under a budget (contract.py): selection and confirmation splits of the evaluation data and
    their scorers."""
    from tinyc import contract
    samples = as_samples(graph, ctx.eval_inputs, "evaluation")
    n = len(samples[0])
    kind = choose_metric(graph, ctx.eval_labels)
    labels = None
    if kind == "accuracy":
        out_shape = graph.outputs[0].type.shape
        if math.prod(out_shape[:-1]) != 1:
            raise TinycError("--max-accuracy-drop with labels needs one prediction per sample (output [1, classes])",
                             hint="drop the labels: the budget then counts changed predictions")
        labels = _labels(ctx.eval_labels, n, out_shape[-1] if out_shape else 1)
    sel, conf = contract.split_indices(n)
    if not len(conf):
        ctx.notes.append(f"budget contract: {n} evaluation samples are too few to keep a confirmation split "
                         f"(it needs {contract.MIN_CONFIRM} of {contract.CONFIRM_FRACTION:.0%}); the final check "
                         "uses the selection data")
    pool = [s[sel] for s in samples]
    if kind == "sqnr":
        make = lambda idx_pool, _labels: contract.sqnr_scorer(ctx.reference, idx_pool, _first_output)
    else:
        make = lambda idx_pool, lab: contract.classifier_scorer(ctx.reference, idx_pool, lab, _first_output)
    ctx.selection = make(pool, None if labels is None else labels[sel])
    ctx.confirmation = (make([s[conf] for s in samples], None if labels is None else labels[conf])
                        if len(conf) else None)
    ctx.evaluate, ctx.metric, ctx.baseline = ctx.selection.score, ctx.selection.metric, ctx.selection.baseline
