"""`svd`: low-rank factorization. A linear W (out x in) becomes two linears through rank r,
W ~= (U_r sqrt(S_r)) (sqrt(S_r) V_r^T); a conv2d becomes a conv with r filters and a 1x1 conv.
Attention's projections are linear ops (covered as such).

Ops whose registry weights include input projections (WeightOperand.projects_input: gru / lstm
w_ih, used only as x @ W^T) get them factored before the op: x -> linear(x, A) with no bias ->
the op with W' = B (rank r columns). All input projections of one op (both directions) share x,
so they are factored jointly: the stacked [W_0; W_1] ~= [B_0; B_1] A. Exact at full rank; the
other weights (gru / lstm w_hh, applied to the state inside the recurrence) stay dense."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyc.ir import Graph, Op
from tinyc.ops import OPS, Trait, has
from tinyc.passes.base import Pass, PassContext, check, option, refuse_quantized, register
from tinyc.passes.budget import Trial, accuracy_budget, budgeted_search
from tinyc.rewrite import Rewriter
from tinyc.stats import graph_stats

AUTO_FRACTIONS = (0.75, 0.5, 0.25, 0.125)   # rank=auto tries these fractions of the break-even rank


@dataclass(frozen=True)
class Factors:
    """SVD of a layer's weight as a matrix (out x in*kh*kw)."""

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    out: int        # rows (output channels)
    fan_in: int     # columns (in * kh * kw)
    positions: int  # output positions per output channel (MACs = positions * out * fan_in)

    @property
    def break_even(self) -> int:
        """The largest rank that still lowers parameters and MACs: r * (in + out) < in * out."""
        return (self.fan_in * self.out - 1) // (self.fan_in + self.out)

    def rank_for_energy(self, energy: float) -> int:
        cum = np.cumsum(self.s ** 2)
        return int(np.searchsorted(cum, energy * cum[-1] * (1 - 1e-9))) + 1 if cum[-1] > 0 else 1

    def error(self, r: int) -> float:
        """||W - W_r||_F / ||W||_F."""
        total = float(np.sum(self.s ** 2))
        return float(np.sqrt(np.sum(self.s[r:] ** 2) / total)) if total > 0 else 0.0


def projections(op: Op) -> tuple[int, ...]:
    """The operand slots of the op's input projections (registry weights with projects_input);
    none for Trait.LAYER ops (they split as layers)."""
    if has(op, Trait.LAYER):
        return ()
    return tuple(w.slot for w in OPS[op.kind].weights(op) if w.projects_input)


def factorable(graph: Graph) -> list[Op]:
    """linear and conv2d (groups=1) ops with constant weights and bias; ops with constant input
    projections (gru / lstm w_ih). An op whose input and input projections are another's (an lstm's
    cell-state op beside its sequence op) is left out: it is factored with that op."""
    consts = {id(op.result) for op in graph.const_ops()}
    out, seen = [], set()
    for op in graph.compute_ops():
        slots = projections(op)
        if has(op, Trait.LAYER):
            if op.attrs.get("groups", 1) == 1 and all(id(v) in consts for v in op.operands[1:]):
                out.append(op)
        elif slots and all(id(op.operands[i]) in consts for i in slots):
            key = _projection_key(op, slots)
            if key not in seen:
                seen.add(key)
                out.append(op)
    return out


def _projection_key(op: Op, slots: tuple[int, ...]) -> tuple:
    return (id(op.operands[0]),) + tuple(id(op.operands[i]) for i in slots)


def factors(graph: Graph, op: Op) -> Factors:
    slots = projections(op)
    if slots:     # the stacked input projections [sum rows, F], applied at every position of x
        w = np.concatenate([graph.const_value(op.operands[i]).astype(np.float64) for i in slots])
        f = op.operands[0].type.shape[-1]
        positions = op.operands[0].type.numel // f
    else:
        w = graph.const_value(op.operands[1]).astype(np.float64)
        positions = op.result.type.numel // w.shape[0]
    u, s, vt = np.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
    return Factors(u, s, vt, w.shape[0], w[0].size, positions)


def _split_projections(graph: Graph, op: Op, f: Factors, r: int, slots: tuple[int, ...]) -> None:
    """op(x, ..., W_i, ...) ==> op(linear(x, A), ..., B_i, ...): A = sqrt(S_r) V_r^T [r, F] and B_i
    the rows of U_r sqrt(S_r) belonging to W_i, for every op with the same x and projections."""
    x = op.operands[0]
    root = np.sqrt(f.s[:r])
    a = (root[:, None] * f.vt[:r]).astype(np.float32)
    b = (f.u[:, :r] * root).astype(np.float32)
    key = _projection_key(op, slots)
    rw = Rewriter(graph)
    build = rw.before(op)
    mid = build.create("linear", [x, build.const(op.operands[slots[0]].name + ".v", a)], {},
                       op.result.name + ".lowrank")
    parts, start = [], 0
    for i in slots:
        rows = op.operands[i].type.shape[0]
        parts.append(build.const(op.operands[i].name + ".u", b[start:start + rows]))
        start += rows
    twins = [o for o in graph.compute_ops() if projections(o) == slots and _projection_key(o, slots) == key]
    for o in twins:
        operands = list(o.operands)
        operands[0] = mid
        for i, v in zip(slots, parts):
            operands[i] = v
        rw.set_operands(o, operands)


def _split(graph: Graph, op: Op, f: Factors, r: int) -> None:
    """op(x, W, b) ==> op'(op_r(x, A), B, b): A = sqrt(S_r) V_r^T, B = U_r sqrt(S_r)."""
    slots = projections(op)
    if slots:
        _split_projections(graph, op, f, r, slots)
        return
    x, w = op.operands[:2]
    root = np.sqrt(f.s[:r])
    a = (root[:, None] * f.vt[:r]).astype(np.float32).reshape((r,) + w.type.shape[1:])
    b = (f.u[:, :r] * root).astype(np.float32)
    attrs = {}
    if op.kind == "conv2d":
        attrs = {k: op.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
        b = b.reshape(f.out, r, 1, 1)
    rw = Rewriter(graph)
    build = rw.before(op)
    a_value = build.const(w.name + ".v", a)
    mid = build.create(op.kind, [x, a_value], attrs, op.result.name + ".lowrank")
    rw.set_operands(op, [mid, build.const(w.name + ".u", b)] + op.operands[2:])
    if op.kind == "conv2d":
        op.attrs.update(stride=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1], groups=1)


def factorize(graph: Graph, ranks: dict[str, int], fs: dict[str, Factors]) -> Graph:
    """A copy of `graph` with each layer named in `ranks` split through that rank."""
    g = graph.copy()
    for op in list(g.ops):
        if op.result.name in ranks:
            _split(g, op, fs[op.result.name], ranks[op.result.name])
    g.remove_dead()
    return g


@register
@dataclass(frozen=True)
class Svd(Pass):
    """Low-rank factorization by truncated SVD: a linear in->out becomes in->r (sqrt(S)V^T, no
    bias) then r->out (U sqrt(S), the bias and activation); a conv2d (groups=1) a k x k conv with
    r filters (same stride/padding/dilation) then a 1x1 conv r->out; a gru / lstm gets its input
    projections w_ih (both directions jointly) through a bias-free linear F->r before it, w_hh
    stays dense. The rank is fixed (rank=),
    keeps a fraction of the squared singular values (energy=), or is chosen per layer within
    --max-accuracy-drop (rank=auto). A layer is split only if that lowers both its parameters and
    its MACs (r * (in + out) < in * out); the others are left and noted. Per-layer rank and
    relative error ||W - W_r||_F / ||W||_F go to the report."""

    name = "svd"
    searches = ("rank",)   # rank=auto: chosen against the accuracy budget
    rank: int | str = option(0, "rank of every split layer, or auto (needs evaluation data and "
                                "--max-accuracy-drop); 0 = choose by energy")
    energy: float = option(0.9, "fraction of the squared singular values kept, in (0, 1] (when rank=0)")
    min_size: int = option(256, "leave layers with fewer weights than this alone")
    layers: tuple[str, ...] = option((), "factorize only these layers (result names); default all")

    def __post_init__(self):
        if isinstance(self.rank, str):
            if self.rank != "auto":
                raise ValueError(f"rank must be a positive integer, 0 or 'auto', got {self.rank!r}")
        elif self.rank < 0:
            raise ValueError(f"rank must be >= 0, got {self.rank}")
        if not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.min_size < 0:
            raise ValueError(f"min-size must be >= 0, got {self.min_size}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        refuse_quantized(graph, self.name)
        fs, skipped = self._layers(graph)
        if self.rank == "auto":
            ranks, out = self._auto(graph, fs, ctx)
        else:
            ranks = {}
            for name, f in fs.items():
                r = min(self.rank, len(f.s)) if self.rank else f.rank_for_energy(self.energy)
                if r > f.break_even:
                    skipped[name] = (f"rank {r} of {len(f.s)} would not lower its parameters and MACs "
                                     f"(needs rank <= {f.break_even})")
                else:
                    ranks[name] = r
            out = factorize(graph, ranks, fs)
        self._report(graph, out, fs, ranks, skipped, ctx)
        return out

    def _layers(self, graph: Graph) -> tuple[dict[str, Factors], dict[str, str]]:
        ops = factorable(graph)
        names = [op.result.name for op in ops]
        unknown = [n for n in self.layers if n not in names]
        check(not unknown, f"svd: no factorizable layer named {', '.join(unknown)}",
              "layers= takes result names of linear, conv2d (groups=1), gru and lstm ops: " + ", ".join(names))
        fs, skipped = {}, {}
        for op in ops:
            name = op.result.name
            if self.layers and name not in self.layers:
                continue
            size = sum(op.operands[i].type.numel for i in (projections(op) or (1,)))
            if size < self.min_size:
                skipped[name] = f"{size} weights < min-size {self.min_size}"
                continue
            f = factors(graph, op)
            if f.break_even < 1:
                skipped[name] = f"{f.out}x{f.fan_in} is too small for any rank to save"
                continue
            fs[name] = f
        return fs, skipped

    def _auto(self, graph: Graph, fs: dict[str, Factors], ctx: PassContext):
        baseline, budget = accuracy_budget(graph, ctx, "svd{rank=auto}")
        macs = graph_stats(graph).macs
        trials: dict[str, list[Trial]] = {}
        for name, f in fs.items():
            for r in sorted({max(1, round(x * f.break_even)) for x in AUTO_FRACTIONS}, reverse=True):
                g = factorize(graph, {name: r}, fs)
                trials.setdefault(name, []).append(Trial(r, macs - graph_stats(g).macs, baseline - ctx.evaluate(g)))
        ranks, out, drop, undone = budgeted_search(trials, budget, baseline, lambda rs: factorize(graph, rs, fs),
                                                   ctx.evaluate)
        ctx.notes.append(f"svd: rank=auto split {len(ranks)} of {len(fs)} layers "
                         f"({', '.join(f'{k}:{v}' for k, v in ranks.items()) or 'none'}); {ctx.metric or 'score'} "
                         f"drop {drop:.3g} (budget {budget:g}, {undone} step(s) undone after the combined check)")
        return ranks, out

    def _report(self, graph: Graph, out: Graph, fs, ranks, skipped, ctx: PassContext) -> None:
        layers = {}
        for name, r in ranks.items():
            f = fs[name]
            layers[name] = {"rank": r, "full_rank": len(f.s), "error": f.error(r),
                            "params": [f.out * f.fan_in, r * (f.out + f.fan_in)],
                            "macs": [f.positions * f.out * f.fan_in, f.positions * r * (f.out + f.fan_in)]}
        before, after = graph_stats(graph), graph_stats(out)
        ctx.stats[self.name] = {"layers": layers, "skipped": skipped,
                                "macs": [before.macs, after.macs], "params": [before.params, after.params]}
        split = ", ".join(f"{n} rank {v['rank']}/{v['full_rank']} (error {v['error']:.3f})" for n, v in layers.items())
        ctx.notes.append(f"svd: split {split or 'no layer'}; MACs {before.macs:,} -> {after.macs:,}, "
                         f"params {before.params:,} -> {after.params:,}")
        if skipped:
            ctx.notes.append("svd: left alone: " + "; ".join(f"{n}: {why}" for n, why in skipped.items()))
        split = [op for op in graph.compute_ops() if projections(op) and op.result.name in ranks]
        if split:
            recurrent = [op.result.name for op in split]
            dense = sorted({w.role for op in split for w in OPS[op.kind].weights(op) if not w.projects_input})
            ctx.notes.append(f"svd: {', '.join(recurrent)}: input projections factored through a linear before the "
                             f"op; {', '.join(dense)} stay dense (applied to the state inside the recurrence)")
