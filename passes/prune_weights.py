"""`prune-weights`: unstructured magnitude pruning (connection pruning) of the weight matrices
the registry names (OpDef.weights: conv2d / linear weight, gru / lstm w_ih and w_hh of each
direction; attention's projections are linear ops).

The graph stays dense: pruned weights become exact zeros (float weights 0.0, integer codes 0),
and the backend picks a sparse storage where it is smaller (docs/compression_formats.md) for
conv2d / linear; weights whose kernels read dense arrays (gru / lstm: WeightOperand.dense) keep
their zeros in the dense array (no smaller, no faster, the result unchanged). Biases are untouched. Works on float graphs and on quantize-int8's output (also low-bit i4/i2
weights): a weight's magnitude is |w| in float, |code| * scale[c] for an integer weight (its real
value), so global pruning compares all layers on one scale.

- scope=global: one threshold over all selected weights, on raw magnitudes (normalize=none, no
  per-layer normalisation: layers with small weights, often the wide classifier, lose more of
  them, possibly all) or on magnitudes divided by the layer's RMS weight (normalize=rms).
- scope=layer: every weight matrix (a layer's weight; each of a gru's w_ih, w_hh) is pruned to
  the sparsity on its own.

Exactly round(sparsity * n) weights are zero afterwards (n = weights in scope, existing zeros
count); ties in magnitude are broken by position (flattened order, layers in graph order).
`sparsity=auto` bisects the largest global sparsity whose score stays within the accuracy
budget (ctx.evaluate, ctx.max_accuracy_drop, against ctx.baseline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tinyc.ir import Graph, Op
from tinyc.ops import OPS, Trait, has, kinds_with
from tinyc.ops.core import WeightOperand
from tinyc.passes.base import Pass, PassContext, check, option, register

AUTO_STEPS = 8            # sparsity=auto: bisection steps over [0, 1] (resolution 1/256)


# ---- shared by the weight-compression passes (share-weights, binarize) -------------------------

def weight_layers(graph: Graph, names: tuple[str, ...], pass_name: str, *, skip_scalar: bool = True,
                  trait: Trait = Trait.LAYER) -> tuple[list[Op], list[str]]:
    """(layers, skipped): the layers (ops with `trait`: conv2d / linear) whose weight is a const.

    Without `names`, every such layer except those with one weight per output channel (a 1x1
    depthwise conv is a per-channel scale, e.g. a lowered batch_norm) when `skip_scalar`;
    `skipped` names layers left out for having a non-const weight. Named layers must qualify.
    """
    producers = graph.producers()
    by_name = {op.result.name: op for op in graph.compute_ops()}
    unknown = [n for n in names if n not in by_name or not has(by_name[n], trait)]
    check(not unknown, f"{pass_name}: layers names no {' / '.join(kinds_with(trait))} op: {', '.join(unknown)}",
          "use the result names of conv2d / linear ops in the IR dump (tinyc opt --print-ir-after-all)")
    chosen, skipped = [], []
    for op in graph.compute_ops():
        if not has(op, trait) or (names and op.result.name not in names):
            continue
        w = producers.get(id(op.operands[1]))
        if w is None or not w.is_const:
            why = "its weight is decoded from a codebook (share-weights)" if w is not None and w.kind == "decode" \
                else "its weight is not a constant"
            check(not names, f"{pass_name}: %{op.result.name} cannot be compressed: {why}",
                  "run prune-weights and binarize before share-weights" if "decode" in why else None)
            skipped.append(op.result.name)
            continue
        if skip_scalar and not names and op.operands[1].type.numel == op.operands[1].type.shape[0]:
            continue
        chosen.append(op)
    return chosen, skipped


def weight_const(graph: Graph, op: Op) -> Op:
    return graph.producers()[id(op.operands[1])]


@dataclass(frozen=True)
class WeightRef:
    """One weight matrix of one op: `op.operands[operand.slot]`. `key` names it in statistics: the
    op's result name, with `.role` when the op has several weight matrices (gru.w_hh)."""

    op: Op
    operand: WeightOperand
    key: str

    @property
    def value(self):
        return self.op.operands[self.operand.slot]

    def const(self, graph: Graph) -> Op:
        return graph.producers()[id(self.value)]


def weight_refs(graph: Graph, names: tuple[str, ...], pass_name: str, *,
                skip_scalar: bool = True) -> tuple[list[WeightRef], list[str]]:
    """(weights, skipped): the constant weight matrices of the ops the registry gives weights
    (OpDef.weights), in graph order. Without `names`, every op's; with `names`, those ops' (each
    must have one). A weight that is not a constant is skipped (`skipped` names it), or an error
    when its op is named. `skip_scalar` leaves out Trait.LAYER weights with one weight per output
    channel (a 1x1 depthwise conv is a per-channel scale, e.g. a lowered batch_norm) unless named.
    """
    producers = graph.producers()
    ops = [op for op in graph.compute_ops() if OPS[op.kind].weights(op)]
    known = {op.result.name for op in ops}
    unknown = [n for n in names if n not in known]
    check(not unknown, f"{pass_name}: layers names no op with weight matrices: {', '.join(unknown)}",
          "layers= takes result names of " + (", ".join(sorted(known)) if known else
                                              "conv2d / linear / gru / lstm ops (this graph has none)"))
    chosen, skipped = [], []
    for op in ops:
        if names and op.result.name not in names:
            continue
        operands = OPS[op.kind].weights(op)
        for wo in operands:
            ref = WeightRef(op, wo, op.result.name if len(operands) == 1 else f"{op.result.name}.{wo.role}")
            w = producers.get(id(ref.value))
            if w is None or not w.is_const:
                why = "its weight is decoded from a codebook (share-weights)" if w is not None and w.kind == "decode" \
                    else "its weight is not a constant"
                check(not names, f"{pass_name}: %{op.result.name} cannot be compressed ({wo.role}): {why}",
                      "run prune-weights and binarize before share-weights" if "decode" in why else None)
                skipped.append(ref.key)
                continue
            t = ref.value.type
            if skip_scalar and not names and has(op, Trait.LAYER) and t.numel == t.shape[0]:
                continue
            chosen.append(ref)
    return chosen, skipped


def magnitudes(w_op: Op) -> np.ndarray:
    """|real weight| as float64: |w| for f32, |code| * scale[c] for per-channel integer weights."""
    t, a = w_op.result.type, w_op.attrs["value"]
    mag = np.abs(a.astype(np.float64))
    if t.quant is not None:
        mag = mag * np.asarray(t.quant.scale, np.float64).reshape((-1,) + (1,) * (a.ndim - 1))
    return mag


def prune_mask(mags: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """Boolean masks (True = prune) zeroing exactly round(sparsity * n) of the weights jointly:
    the smallest magnitudes, ties by position; weights already zero are chosen first."""
    flat = np.concatenate([m.ravel() for m in mags]) if mags else np.zeros(0)
    k = int(np.floor(sparsity * flat.size + 0.5))
    order = np.argsort(flat, kind="stable")
    mask = np.zeros(flat.size, bool)
    mask[order[:k]] = True
    out, start = [], 0
    for m in mags:
        out.append(mask[start:start + m.size].reshape(m.shape))
        start += m.size
    return out


def layer_sparsity(graph: Graph, refs: list[WeightRef]) -> dict[str, dict]:
    out = {}
    for ref in refs:
        a = ref.const(graph).attrs["value"]
        zeros = int(np.count_nonzero(a == 0))
        out[ref.key] = {"weights": int(a.size), "zeros": zeros, "sparsity": zeros / max(a.size, 1)}
        if ref.operand.dense:
            out[ref.key]["storage"] = "dense (its kernels read dense weights: zeros are stored)"
    return out


@register
@dataclass(frozen=True)
class PruneWeights(Pass):
    """Unstructured magnitude pruning of the weight matrices (conv2d / linear weights, gru / lstm
    w_ih and w_hh) to a sparsity (fraction of zero weights): smallest |w| first, over all of them at
    once (scope=global) or per matrix. Float or int8 graphs; the IR stays dense with exact zeros
    (conv2d / linear may be stored sparse, gru / lstm stay dense). sparsity=auto picks the largest
    global sparsity within --max-accuracy-drop (needs --eval)."""

    name = "prune-weights"
    searches = ("sparsity",)   # sparsity=auto: chosen against the accuracy budget
    sparsity: float | Literal["auto"] = option(0.9, "fraction of weights set to zero, in [0, 1], or auto "
                                                    "(largest within --max-accuracy-drop, needs --eval)")
    scope: Literal["global", "layer"] = option("global", "one magnitude threshold over all layers, or per layer")
    normalize: Literal["none", "rms"] = option(
        "none", "scope=global: compare raw magnitudes (none) or magnitudes / the layer's RMS weight (rms)")
    layers: tuple[str, ...] = option((), "result names of the ops to prune (conv2d, linear, gru, lstm; default: all "
                                         "with constant weights)")

    def __post_init__(self):
        if self.sparsity != "auto" and not (isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity <= 1.0):
            raise ValueError(f"sparsity must be in [0, 1] or auto, got {self.sparsity}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        graph = graph.copy()
        layers, skipped = weight_refs(graph, self.layers, self.name)
        stats: dict = {"scope": self.scope, "skipped": skipped}
        if self.sparsity == "auto":
            sparsity = self._auto(graph, layers, ctx, stats)
        else:
            sparsity = float(self.sparsity)
        self._prune(graph, layers, sparsity)
        per_layer = layer_sparsity(graph, layers)
        unique = list({id(c): c.attrs["value"] for c in (ref.const(graph) for ref in layers)}.values())
        total = sum(a.size for a in unique)             # a weight two ops share counts once
        zeros = sum(int(np.count_nonzero(a == 0)) for a in unique)
        stats.update(target=sparsity, sparsity=zeros / max(total, 1), weights=total, zeros=zeros, layers=per_layer)
        ctx.stats[self.name] = stats
        if skipped:
            ctx.notes.append(f"prune-weights: skipped (non-constant weights): {', '.join(skipped)}")
        dense = [ref.key for ref in layers if ref.operand.dense]
        if dense:
            ctx.notes.append(f"prune-weights: {', '.join(dense)}: stored dense with their zeros (their kernels read "
                             "dense weights; only conv2d / linear get a sparse format)")
        return graph

    def _prune(self, graph: Graph, layers: list[WeightRef], sparsity: float) -> None:
        consts = [ref.const(graph) for ref in layers]
        unique = list({id(c): c for c in consts}.values())      # a weight shared by two layers prunes once
        if self.scope == "global":
            mags = [magnitudes(c) for c in unique]
            if self.normalize == "rms":
                mags = [m / max(float(np.sqrt(np.mean(m ** 2))), 1e-300) if m.size else m for m in mags]
            masks = prune_mask(mags, sparsity)
        else:
            masks = [prune_mask([magnitudes(c)], sparsity)[0] for c in unique]
        for c, m in zip(unique, masks):
            a = c.attrs["value"].copy()
            a[m] = 0
            c.attrs["value"] = a

    def _auto(self, graph: Graph, layers: list[WeightRef], ctx: PassContext, stats: dict) -> float:
        check(ctx.evaluate is not None, "prune-weights{sparsity=auto} needs evaluation data to measure accuracy",
              "pass --eval X.npy [Y.npy] and --max-accuracy-drop POINTS, or give a sparsity")
        check(ctx.max_accuracy_drop is not None, "prune-weights{sparsity=auto} needs an accuracy budget",
              "pass --max-accuracy-drop POINTS")
        check(self.scope == "global", "prune-weights{sparsity=auto} searches one global sparsity",
              "use scope=global, or give a sparsity with scope=layer")
        baseline = ctx.baseline if ctx.baseline is not None else ctx.evaluate(graph)
        floor = baseline - ctx.max_accuracy_drop
        trials = []

        def score(s: float) -> float:
            g = graph.copy()
            self._prune(g, weight_refs(g, self.layers, self.name)[0], s)
            value = float(ctx.evaluate(g))
            trials.append((s, value))
            return value

        lo, hi = 0.0, 1.0
        for _ in range(AUTO_STEPS):
            mid = (lo + hi) / 2
            if score(mid) >= floor:
                lo = mid
            else:
                hi = mid
        stats.update(baseline=baseline, floor=floor, trials=trials, metric=ctx.metric or None)
        ctx.notes.append(f"prune-weights: sparsity=auto chose {lo:.4f} ({ctx.metric or 'score'} >= {floor:.2f})")
        return lo
