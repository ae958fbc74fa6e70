"""`prune-layers`: layer pruning. Turns residual blocks into identities (y = x + f(x) becomes
y = x) and removes shape-preserving layers, cheapest first."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyc.interpreter import run_all
from tinyc.ir import Graph, Op, Value
from tinyc.ops import ACTIVATIONS, Trait, has
from tinyc.passes.base import Pass, PassContext, check, option, refuse_quantized, register
from tinyc.passes.budget import accuracy_budget
from tinyc.rewrite import Rewriter
from tinyc.stats import graph_stats

PROXY_SAMPLES = 16   # inputs the data proxy runs


@dataclass(frozen=True)
class Removal:
    """Replace the result of op `op` by `keep` (with the op's fused activation, if any)."""

    kind: str   # "block": drop one operand branch of an add; "layer": drop a shape-preserving layer
    op: str     # result name of the add or the layer
    keep: str   # the value that takes its place
    drop: str   # the operand whose computation goes away

    def describe(self) -> str:
        if self.kind == "block":
            return f"residual branch %{self.drop} of %{self.op} (now %{self.keep})"
        return f"layer %{self.op} (now %{self.keep})"


# ---- candidates and their removal ------------------------------------------------------

def candidates(graph: Graph) -> list[Removal]:
    """Every removal that keeps all shapes: an add operand whose partner has the result's shape,
    and conv2d/linear layers whose input has their output's shape. Graph outputs stay."""
    outputs = {id(v) for v in graph.outputs}
    consts = {id(op.result) for op in graph.const_ops()}
    out = []
    for op in graph.compute_ops():
        if id(op.result) in outputs:
            continue
        shape = op.result.type.shape
        if op.kind == "add" and not any(id(v) in consts for v in op.operands):
            a, b = op.operands
            if a is not b and a.type.shape == b.type.shape == shape:
                out += [Removal("block", op.result.name, a.name, b.name),
                        Removal("block", op.result.name, b.name, a.name)]
        elif has(op, Trait.LAYER) and all(id(v) in consts for v in op.operands[1:]):
            x = op.operands[0]
            if id(x) not in consts and x.type.shape == shape:
                out.append(Removal("layer", op.result.name, x.name, x.name))
    return out


def _act_op(attrs: dict) -> tuple[str, dict] | None:
    """The standalone op equal to a fused activation."""
    act = attrs.get("act")
    if act is None:
        return None
    a = ACTIVATIONS[act]
    return act, a.params_of(attrs, fused=True)


def _already_applied(producer: Op | None, act: tuple[str, dict]) -> bool:
    """True if `producer` already ends in the idempotent activation `act` (relu, clamp)."""
    if producer is None or not ACTIVATIONS[act[0]].idempotent:
        return False
    if producer.kind == act[0] and producer.attrs == act[1]:
        return True
    fused = _act_op(producer.attrs)
    return fused == act


def remove(graph: Graph, r: Removal) -> Graph:
    """A copy of `graph` with `r` applied and dead ops dropped."""
    g = graph.copy()
    producers = {op.result.name: op for op in g.ops}
    values = {v.name: v for v in g.inputs} | {name: op.result for name, op in producers.items()}
    op, keep = producers[r.op], values[r.keep]
    act = _act_op(op.attrs)
    rw = Rewriter(g)
    if act is not None and not _already_applied(producers.get(r.keep), act):   # the activation stays
        keep = rw.before(op).create(act[0], [keep], dict(act[1]), op.result.name, fresh=False)
    rw.replace_op(op, keep)
    g.remove_dead()
    return g


# ---- scores: lower is cheaper to remove ---------------------------------------------------

def _apply_act(x: np.ndarray, attrs: dict) -> np.ndarray:
    act = attrs.get("act")
    if act is None:
        return x
    a = ACTIVATIONS[act]
    return a.numpy(x, a.params_of(attrs, fused=True))


def data_scores(graph: Graph, cands: list[Removal], samples) -> list[float]:
    """Relative change ||y' - y|| / ||y|| of the removed op's output over the samples."""
    ops = {op.result.name: op for op in graph.ops}
    num, den = np.zeros(len(cands)), np.zeros(len(cands))
    for sample in samples:
        env = run_all(graph, sample)
        for i, r in enumerate(cands):
            y = env[r.op].astype(np.float64)
            num[i] += float(np.sum((_apply_act(env[r.keep].astype(np.float64), ops[r.op].attrs) - y) ** 2))
            den[i] += float(np.sum(y * y))
    return list(np.sqrt(num / np.maximum(den, 1e-30)))


def _weights(graph_consts: dict, op: Op) -> tuple[np.ndarray, np.ndarray]:
    w = graph_consts[op.operands[1].name].astype(np.float64)
    b = graph_consts[op.operands[2].name].astype(np.float64) if len(op.operands) > 2 else np.zeros(1)
    return w, b


def _gain(consts: dict, op: Op) -> float:
    """RMS output of a conv/linear for unit-variance input: sqrt((||W||^2 + ||b||^2) / outputs)."""
    w, b = _weights(consts, op)
    return float(np.sqrt((np.sum(w * w) + np.sum(b * b)) / w.shape[0]))


def _identity_like(op: Op, w: np.ndarray) -> np.ndarray:
    """The weights of this conv/linear that would compute y = x (zeros if no such kernel)."""
    eye = np.zeros_like(w)
    if op.kind == "linear":
        return np.eye(w.shape[0])
    top, left = op.attrs["padding"][:2]
    dh, dw = op.attrs["dilation"]
    if top % dh == 0 and left % dw == 0 and top // dh < w.shape[2] and left // dw < w.shape[3]:
        per_group = w.shape[1]
        for o in range(w.shape[0]):
            eye[o, o % per_group, top // dh, left // dw] = 1.0
    return eye


def _ancestors(producers: dict[int, Op], v: Value) -> dict[int, Op]:
    seen: dict[int, Op] = {}
    stack = [v]
    while stack:
        op = producers.get(id(stack.pop()))
        if op is not None and id(op) not in seen:
            seen[id(op)] = op
            stack += op.operands
    return seen


def weight_scores(graph: Graph, cands: list[Removal]) -> list[float]:
    """Data-free estimates of the same relative change: for a layer, sqrt((||W - I||^2 + ||b||^2) / C)
    (I its identity kernel); for a residual branch, the product of its conv/linear gains over the
    product of those on the kept side since they part (1 for an identity shortcut)."""
    consts = {op.result.name: op.attrs["value"] for op in graph.const_ops()}
    producers = {id(op.result): op for op in graph.ops}
    ops = {op.result.name: op for op in graph.ops}
    values = {v.name: v for v in graph.inputs} | {op.result.name: op.result for op in graph.ops}
    out = []
    for r in cands:
        op = ops[r.op]
        if r.kind == "layer":
            w, b = _weights(consts, op)
            out.append(float(np.sqrt((np.sum((w - _identity_like(op, w)) ** 2) + np.sum(b * b)) / w.shape[0])))
            continue
        keep, drop = _ancestors(producers, values[r.keep]), _ancestors(producers, values[r.drop])
        gain = lambda side, other: float(np.prod([_gain(consts, o) for k, o in side.items()  # noqa: E731
                                                  if k not in other and has(o, Trait.LAYER)]))
        out.append(gain(drop, keep) / max(gain(keep, drop), 1e-30))
    return out


# ---- the pass ---------------------------------------------------------------------------

@register
@dataclass(frozen=True)
class PruneLayers(Pass):
    """Layer pruning: make residual blocks identities (y = x + f(x) becomes y = x; with a
    projection shortcut either branch may go) and remove shape-preserving conv2d/linear layers
    (same input and output shape), least costly first; a fused activation stays. Give exactly one
    of count=N (remove N), budget=F (remove at least F of the MACs) or count=auto (remove the most
    within --max-accuracy-drop). Cost: the accuracy drop from the evaluation data if there is any;
    else the relative change ||y' - y|| / ||y|| of the removed op's output on the eval/calibration
    inputs; else that change estimated from weight norms (||W - I|| of a layer; the RMS filter-norm
    gain of a branch relative to its shortcut)."""

    name = "prune-layers"
    searches = ("count",)   # count=auto: chosen against the accuracy budget
    count: int | str = option(0, "layers/blocks to remove, or auto (needs evaluation data and "
                                 "--max-accuracy-drop); 0 = not given")
    budget: float = option(0.0, "fraction of the MACs to remove, in (0, 1); 0 = not given")

    def __post_init__(self):
        if isinstance(self.count, str):
            if self.count != "auto":
                raise ValueError(f"count must be a non-negative integer or 'auto', got {self.count!r}")
        elif self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if not 0.0 <= self.budget < 1.0:
            raise ValueError(f"budget must be in [0, 1) (a fraction of the MACs), got {self.budget}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        check((self.count != 0) != (self.budget != 0.0),
              "prune-layers needs exactly one of count=N, budget=F or count=auto",
              "e.g. prune-layers{count=1} or prune-layers{budget=0.2}")
        refuse_quantized(graph, self.name)
        before = graph_stats(graph)
        if self.count == "auto":
            out, removed, scored_by = self._auto(graph, ctx)
        else:
            out, removed, scored_by = self._fixed(graph, ctx, before.macs)
        after = graph_stats(out)
        ctx.stats[self.name] = {"scored_by": scored_by, "removed": removed,
                                "macs": [before.macs, after.macs], "params": [before.params, after.params]}
        what = "; ".join(f"{r['what']} (score {r['score']:.3g})" for r in removed) or "nothing"
        ctx.notes.append(f"prune-layers: removed {what}; scored by {scored_by}; "
                         f"MACs {before.macs:,} -> {after.macs:,}")
        return out

    def _scorer(self, ctx: PassContext, graph: Graph):
        """(scores(graph, removals, graphs after each) -> list, description)."""
        if ctx.evaluate is not None:
            baseline = ctx.baseline if ctx.baseline is not None else ctx.evaluate(graph)
            return (lambda g, cs, after: [baseline - ctx.evaluate(a) for a in after],
                    f"{ctx.metric or 'score'} drop on the evaluation data")
        data = ctx.eval_inputs if ctx.eval_inputs is not None else ctx.calib
        if data is not None:
            from tinyc.passes.quant_calibrate import calibration_samples
            samples = calibration_samples(graph, data)[:PROXY_SAMPLES]
            which = "eval" if ctx.eval_inputs is not None else "calibration"
            return (lambda g, cs, after: data_scores(g, cs, samples),
                    f"relative output change on {len(samples)} {which} inputs")
        return (lambda g, cs, after: weight_scores(g, cs)), "weight norms (no data given)"

    def _options(self, graph: Graph, score) -> list[tuple[Removal, Graph, int, float]]:
        """(removal, graph after it, MACs saved, score) for each removal that saves MACs."""
        macs = graph_stats(graph).macs
        found = []
        for r in candidates(graph):
            g = remove(graph, r)
            saved = macs - graph_stats(g).macs
            if saved > 0:
                found.append((r, g, saved))
        scores = score(graph, [r for r, _, _ in found], [g for _, g, _ in found]) if found else []
        return [(r, g, saved, float(s)) for (r, g, saved), s in zip(found, scores)]

    @staticmethod
    def _record(r: Removal, saved: int, s: float) -> dict:
        return {"what": r.describe(), "kind": r.kind, "op": r.op, "kept": r.keep, "macs_saved": saved, "score": s}

    def _fixed(self, graph: Graph, ctx: PassContext, macs: int):
        score, scored_by = self._scorer(ctx, graph)
        removed, saved_total = [], 0
        while (len(removed) < self.count) if self.count else (saved_total < self.budget * macs):
            options = self._options(graph, score)
            if not options:
                wanted = f"count={self.count}" if self.count else f"budget={self.budget:g}"
                ctx.notes.append(f"prune-layers: no further removable residual block or shape-preserving "
                                 f"layer in @{graph.name} (wanted {wanted})")
                break
            if self.count:
                r, graph, saved, s = min(options, key=lambda o: (o[3], -o[2]))
            else:
                r, graph, saved, s = min(options, key=lambda o: (max(o[3], 0.0) / o[2], -o[2]))
            removed.append(self._record(r, saved, s))
            saved_total += saved
        return graph, removed, scored_by

    def _auto(self, graph: Graph, ctx: PassContext):
        baseline, budget = accuracy_budget(graph, ctx, "prune-layers{count=auto}")
        score, scored_by = self._scorer(ctx, graph)
        removed, drop = [], baseline - ctx.evaluate(graph)
        while True:
            options = [o for o in self._options(graph, score) if o[3] <= budget]
            if not options:
                break
            # most MACs saved per point lost on top of what is already lost
            r, graph, saved, drop = max(options, key=lambda o: (o[2] / max(o[3] - drop, 1e-9), o[2]))
            removed.append(self._record(r, saved, drop))
        ctx.notes.append(f"prune-layers: count=auto removed {len(removed)}; {ctx.metric or 'score'} drop "
                         f"{drop:.3g} (budget {budget:g})")
        return graph, removed, scored_by
