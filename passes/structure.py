"""Shared machinery of the structural compression passes (prune-channels, prune-layers, svd).

- `refuse_quantized`: these passes work on float graphs, before quantize-int8.
- `ChannelAnalysis`: which output channels of which layers are tied together and what every
  consumer must do when some of them go (the channel-dependency analysis of prune-channels).
- `remove_channels`: the rewrite that drops channels and keeps the graph valid.
- `accuracy_budget`, `budgeted_search`: the `auto` modes' sensitivity analysis and greedy,
  verified choice of per-layer settings within `ctx.max_accuracy_drop`.

Channel layouts. A value whose elements along one axis are channels of prunable layers
carries a `Layout`: the axis, the segments of channels along it (group, count), and `inner`,
how many consecutive elements each channel covers there (a flatten of [N, C, H, W] to
[N, C*H*W] gives inner = H*W). A *group* is a set of channels that must be kept or removed
together: the output filters of one conv/linear, or of several joined by an add/sub/mul/div
(residual connections) or by a matmul contracting over them. Groups that cannot be shrunk
(they reach a graph output, or an op would mix them) are *frozen*, with the reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tinyc.errors import PassError
from tinyc.ir import Graph, Op
from tinyc.ops import OPS, OpError, Trait, has, infer_type
from tinyc.passes.base import PassContext, check

# ---- preconditions -------------------------------------------------------------------------

def is_quantized(graph: Graph) -> bool:
    """True once quantize-int8 (or anything else) has put integer tensors or quant params in."""
    return any(has(op, Trait.INT_ONLY) or op.result.type.quant is not None
               or (not op.is_const and op.result.type.dtype != "f32") for op in graph.ops)


def refuse_quantized(graph: Graph, name: str) -> None:
    check(not is_quantized(graph), f"{name} works on float graphs; @{graph.name} is already quantized",
          f"run {name} before quantize-int8, e.g. -p fuse,{name},quantize-int8")


def reinfer(op: Op) -> None:
    """Recompute the result shape of `op` after its operands or attributes changed."""
    try:
        shape = infer_type(op.kind, [v.type for v in op.operands], op.attrs).shape
    except OpError as e:  # a bug in a pass, not in the user's model
        raise PassError(f"internal error: %{op.result.name} = {op.kind} no longer type-checks: {e}",
                        hint="this is a bug in tinyc; please report it with the model") from None
    op.result.type = op.result.type.with_shape(shape)


# ---- channel layouts and groups ----------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    axis: int
    segs: tuple[tuple[int, int], ...]   # (group id, channels), in order along the axis
    inner: int = 1                       # consecutive elements per channel along the axis

    @property
    def channels(self) -> int:
        return sum(n for _, n in self.segs)

    def moved(self, axis: int, inner: int | None = None) -> "Layout":
        return Layout(axis, self.segs, self.inner if inner is None else inner)


@dataclass(eq=False)
class ChannelGroup:
    """Output channels that are kept or removed together."""

    key: str                    # the producers' result names joined by '+'
    size: int                   # channels
    producers: list[Op]         # conv2d/linear ops whose output filters these are
    blocks: int = 1             # keep the same number in each of `blocks` equal blocks (grouped convs)
    frozen: list[str] = field(default_factory=list)   # why the group cannot shrink
    ties: list[str] = field(default_factory=list)     # ops that tie different producers together
    gid: int = -1

    @property
    def tied(self) -> bool:
        return len(self.producers) > 1


class ChannelAnalysis:
    """Channel layouts of every value, the channel groups and the rewrite actions of `graph`."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.consts = {id(op.result): op for op in graph.const_ops()}
        self.layout: dict[int, Layout] = {}
        self.actions: dict[int, list[tuple]] = {}   # id(op) -> rewrite actions
        self._parent: list[int] = []
        self._info: list[ChannelGroup] = []
        for op in graph.ops:
            if not op.is_const:
                self._visit(op)
        for v in graph.outputs:
            if id(v) in self.layout:
                self._freeze(self.layout[id(v)], f"reaches the graph output %{v.name}")
        self.groups = self._collect()

    # ---- union-find over groups ----
    def _new(self, size: int, producer: Op | None = None, blocks: int = 1, frozen: str | None = None) -> int:
        gid = len(self._parent)
        self._parent.append(gid)
        self._info.append(ChannelGroup("", size, [producer] if producer else [], blocks,
                                       [frozen] if frozen else [], [], gid))
        return gid

    def find(self, gid: int) -> int:
        while self._parent[gid] != gid:
            self._parent[gid] = self._parent[self._parent[gid]]
            gid = self._parent[gid]
        return gid

    def _union(self, a: int, b: int, why: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        ga, gb = self._info[a], self._info[b]
        assert ga.size == gb.size
        self._parent[b] = a
        ga.producers += gb.producers
        ga.blocks = math.lcm(ga.blocks, gb.blocks)
        ga.frozen += gb.frozen
        ga.ties += [t for t in gb.ties + [why] if t not in ga.ties]

    def _freeze(self, layout: Layout | None, why: str) -> None:
        if layout is not None:
            for gid, _ in layout.segs:
                self._info[self.find(gid)].frozen.append(why)

    def _constrain(self, gid: int, blocks: int) -> None:
        g = self._info[self.find(gid)]
        g.blocks = math.lcm(g.blocks, blocks)

    def _tie(self, a: Layout, b: Layout, why: str) -> bool:
        """Channels at equal positions of `a` and `b` must go together."""
        if a.inner != b.inner or [n for _, n in a.segs] != [n for _, n in b.segs]:
            self._freeze(a, f"{why} aligns them with differently grouped channels")
            self._freeze(b, f"{why} aligns them with differently grouped channels")
            return False
        for (ga, _), (gb, _) in zip(a.segs, b.segs):
            self._union(ga, gb, why)
        return True

    def _collect(self) -> list[ChannelGroup]:
        order = {id(op): i for i, op in enumerate(self.graph.ops)}
        out = []
        for gid, g in enumerate(self._info):
            if self.find(gid) == gid and g.producers:
                g.producers.sort(key=lambda op: order[id(op)])
                g.key = "+".join(p.result.name for p in g.producers)
                out.append(g)
        return out

    def _act(self, op: Op, *action) -> None:
        self.actions.setdefault(id(op), []).append((op, *action))

    # ---- propagation, one rule per op kind ----
    def _visit(self, op: Op) -> None:
        lays = [self.layout.get(id(v)) for v in op.operands]
        rule = RULES.get(OPS[op.kind].channels)
        if rule is None:
            for L in lays:
                self._freeze(L, f"%{op.result.name} = {op.kind} has no channel-pruning rule")
            return
        out = rule(self, op, lays)
        if out is not None:
            self.layout[id(op.result)] = out

    def _weights_const(self, op: Op) -> bool:
        return all(id(v) in self.consts for v in op.operands[1:])

    def rule_conv2d(self, op: Op, lays) -> Layout | None:
        L, why = lays[0], f"%{op.result.name} = conv2d"
        if not self._weights_const(op):
            self._freeze(L, f"{why} has non-constant weights")
            return None
        c, o, g = op.operands[0].type.shape[1], op.operands[1].type.shape[0], op.attrs["groups"]
        if 1 < g == c == o:  # depthwise: its filters follow the input channels
            if L is not None and L.axis != 1:
                self._freeze(L, f"{why} reads them on axis {L.axis}")
                return None
            if L is not None:
                self._act(op, "depthwise")
            return L
        slice_in = L is not None and L.axis == 1
        if L is not None and not slice_in:
            self._freeze(L, f"{why} reads them on axis {L.axis}")
        if slice_in and g > 1:
            if len(L.segs) != 1 or L.inner != 1:
                self._freeze(L, f"{why} (groups={g}) reads concatenated channels")
                slice_in = False
            else:
                self._constrain(L.segs[0][0], g)
        self._act(op, "layer", slice_in)
        return Layout(1, ((self._new(o, op, blocks=g), o),))

    def rule_linear(self, op: Op, lays) -> Layout | None:
        L, x = lays[0], op.operands[0]
        if not self._weights_const(op):
            self._freeze(L, f"%{op.result.name} = linear has non-constant weights")
            return None
        slice_in = L is not None and L.axis == x.type.rank - 1
        if L is not None and not slice_in:
            self._freeze(L, f"%{op.result.name} = linear works along another axis")
        self._act(op, "layer", slice_in)
        n = op.operands[1].type.shape[0]
        return Layout(op.result.type.rank - 1, ((self._new(n, op), n),))

    def rule_batch_norm(self, op: Op, lays) -> Layout | None:
        L = lays[0]
        if L is not None and L.axis == 1:
            if not self._weights_const(op):
                self._freeze(L, f"%{op.result.name} = batch_norm has non-constant parameters")
            else:
                for i in range(1, 5):
                    self._act(op, "param", i, 0)
        return L

    def rule_same(self, op: Op, lays) -> Layout | None:
        return lays[0]

    def rule_binary(self, op: Op, lays) -> Layout | None:
        rank, why = op.result.type.rank, f"%{op.result.name} = {op.kind}"
        mapped = [(i, L, L.axis + rank - op.operands[i].type.rank) for i, L in enumerate(lays) if L is not None]
        if not mapped:
            return None
        axes = {o for _, _, o in mapped}
        full = op.result.type.shape[mapped[0][2]]
        if len(axes) > 1 or any(op.operands[i].type.shape[L.axis] != full for i, L, _ in mapped):
            for _, L, _ in mapped:
                self._freeze(L, f"{why} broadcasts them against other channels")
            return None
        (i, L, o) = mapped[0]
        if len(mapped) == 2:
            if not self._tie(L, mapped[1][1], why):
                return None
        else:
            other = op.operands[1 - i]
            ax = o - (rank - other.type.rank)
            if ax >= 0 and other.type.shape[ax] != 1:
                if id(other) in self.consts:
                    self._act(op, "param", 1 - i, ax)
                else:
                    self._freeze(L, f"{why} combines them with %{other.name}, which is not prunable alike")
        return L.moved(o)

    def rule_pool(self, op: Op, lays) -> Layout | None:
        L = lays[0]
        if L is not None and L.axis != 1:
            self._freeze(L, f"%{op.result.name} = {op.kind} pools over them")
            return None
        return L

    def rule_mean(self, op: Op, lays) -> Layout | None:
        L, axes = lays[0], op.attrs["axes"]
        if L is None:
            return None
        if L.axis in axes:
            self._freeze(L, f"%{op.result.name} = mean averages over them")
            return None
        return L.moved(L.axis if op.attrs["keepdim"] else L.axis - sum(a < L.axis for a in axes))

    def rule_reshape(self, op: Op, lays) -> Layout | None:
        L = lays[0]
        if L is None:
            return None
        out = reshape_layout(L, op.operands[0].type.shape, op.result.type.shape)
        if out is None:
            self._freeze(L, f"%{op.result.name} = reshape splits them")
            return None
        self._act(op, "reshape")
        return out

    def rule_transpose(self, op: Op, lays) -> Layout | None:
        L = lays[0]
        return None if L is None else L.moved(list(op.attrs["perm"]).index(L.axis))

    def rule_pad(self, op: Op, lays) -> Layout | None:
        L = lays[0]
        if L is None:
            return None
        pads, r = op.attrs["pads"], op.result.type.rank
        if pads[L.axis] or pads[r + L.axis]:
            self._freeze(L, f"%{op.result.name} = pad pads the channel axis")
            return None
        return L

    def rule_softmax(self, op: Op, lays) -> Layout | None:
        L = lays[0]
        if L is not None and L.axis == op.attrs["axis"]:
            self._freeze(L, f"%{op.result.name} = softmax normalizes over them")
        return L

    def rule_cat(self, op: Op, lays) -> Layout | None:
        axis, why = op.attrs["axis"], f"%{op.result.name} = cat"
        mapped = [L for L in lays if L is not None]
        if not mapped:
            return None
        inners = {L.inner for L in mapped}
        if all(L is None or L.axis == axis for L in lays) and len(inners) == 1:
            inner, segs = inners.pop(), []
            for v, L in zip(op.operands, lays):
                n = v.type.shape[axis]
                if L is not None:
                    segs += L.segs
                elif n % inner == 0:
                    segs.append((self._new(n // inner, frozen=f"{why} joins them with %{v.name}"), n // inner))
                else:
                    break
            else:
                return Layout(axis, tuple(segs), inner)
        if len(mapped) == len(lays) and all(L.axis == mapped[0].axis != axis for L in mapped):
            if all(self._tie(mapped[0], L, why) for L in mapped[1:]):
                return mapped[0]
            return None
        for L in mapped:
            self._freeze(L, f"{why} concatenates them with other data")
        return None

    def rule_matmul(self, op: Op, lays) -> Layout | None:
        (a, b), (La, Lb), why = op.operands, lays, f"%{op.result.name} = matmul"
        rank = op.result.type.rank
        ka = La is not None and La.axis == a.type.rank - 1
        kb = Lb is not None and Lb.axis == b.type.rank - 2
        if ka and kb:
            self._tie(La, Lb, why)
        elif ka or kb:
            self._freeze(La if ka else Lb, f"{why} contracts them with unprunable data")
        out = None
        if La is not None and not ka:
            if La.axis == a.type.rank - 2:
                out = La.moved(rank - 2)
            else:
                self._freeze(La, f"{why} broadcasts them")
        if Lb is not None and not kb:
            if Lb.axis == b.type.rank - 1 and out is None:
                out = Lb.moved(rank - 1)
            else:
                self._freeze(Lb, f"{why} broadcasts them")
        return out

    # ---- the rewrite ----
    def positions(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray | None:
        """Kept element indices along the layout's axis, or None when every channel stays."""
        chans, off, changed = [], 0, False
        for gid, n in layout.segs:
            k = keep.get(self.find(gid))
            changed |= k is not None and len(k) < n
            chans.append(off + (np.arange(n) if k is None else np.asarray(k, np.int64)))
            off += n
        if not changed:
            return None
        ch = np.concatenate(chans)
        return (ch[:, None] * layout.inner + np.arange(layout.inner)).ravel()

    def rewrite(self, keep: dict[int, np.ndarray]) -> None:
        """Drop the channels not in `keep` (root group id -> sorted kept indices), in place."""
        users = self.graph.users()
        for op in list(self.graph.ops):
            for action in self.actions.get(id(op), []):
                getattr(self, "_do_" + action[1])(keep, users, op, *action[2:])
            if not op.is_const:
                reinfer(op)
        self.graph.remove_dead()

    def _set(self, users, op: Op, i: int, array: np.ndarray) -> None:
        """Operand i of `op` becomes the const `array` (in place when `op` is its only user)."""
        v = op.operands[i]
        array = np.ascontiguousarray(array)
        if len(users.get(id(v), [])) == 1:
            self.consts[id(v)].attrs["value"] = array
            v.type = v.type.with_shape(array.shape)
        else:
            op.operands[i] = self.graph.add_const(v.name, array, before=op)

    def _do_layer(self, keep, users, op: Op, slice_in: bool) -> None:
        x, w = op.operands[:2]
        rows = self.positions(self.layout[id(op.result)], keep)
        cols = self.positions(self.layout[id(x)], keep) if slice_in else None
        if rows is None and cols is None:
            return
        weight = self.consts[id(w)].attrs["value"]
        new = weight if rows is None else weight[rows]
        g = op.attrs.get("groups", 1)
        if cols is not None and g == 1:
            new = new[:, cols]
        elif cols is not None:  # grouped conv: each group keeps its own input channels
            per_in, per_out = weight.shape[1], weight.shape[0] // g
            local = [cols[(cols >= j * per_in) & (cols < (j + 1) * per_in)] - j * per_in for j in range(g)]
            idx = np.arange(weight.shape[0]) if rows is None else rows
            new = np.stack([weight[o][local[o // per_out]] for o in idx])
        self._set(users, op, 1, new)
        if rows is not None and len(op.operands) > 2:
            self._set(users, op, 2, self.consts[id(op.operands[2])].attrs["value"][rows])

    def _do_depthwise(self, keep, users, op: Op) -> None:
        pos = self.positions(self.layout[id(op.operands[0])], keep)
        if pos is None:
            return
        for i in range(1, len(op.operands)):
            self._set(users, op, i, self.consts[id(op.operands[i])].attrs["value"][pos])
        op.attrs["groups"] = int(len(pos))

    def _do_param(self, keep, users, op: Op, i: int, axis: int) -> None:
        pos = self.positions(self.layout[id(op.result)], keep)
        if pos is not None:
            self._set(users, op, i, np.take(self.consts[id(op.operands[i])].attrs["value"], pos, axis=axis))

    def _do_reshape(self, keep, users, op: Op) -> None:
        L = self.layout[id(op.result)]
        pos = self.positions(L, keep)
        if pos is not None:
            shape = list(op.attrs["shape"])
            shape[L.axis] = int(len(pos))
            op.attrs["shape"] = shape


# By the `channels` rule of an op's definition (tinyc.ops); an op without one freezes its channels.
RULES: dict[str, Callable[[ChannelAnalysis, Op, list], Layout | None]] = {
    "filters": ChannelAnalysis.rule_conv2d,
    "features": ChannelAnalysis.rule_linear,
    "per_channel": ChannelAnalysis.rule_batch_norm,
    "same": ChannelAnalysis.rule_same,
    "broadcast": ChannelAnalysis.rule_binary,
    "window": ChannelAnalysis.rule_pool,
    "reduce": ChannelAnalysis.rule_mean,
    "regroup": ChannelAnalysis.rule_reshape,
    "permute": ChannelAnalysis.rule_transpose,
    "pad_axes": ChannelAnalysis.rule_pad,
    "along_axis": ChannelAnalysis.rule_softmax,
    "concat": ChannelAnalysis.rule_cat,
    "contract": ChannelAnalysis.rule_matmul,
}


def reshape_layout(L: Layout, src: tuple[int, ...], dst: tuple[int, ...]) -> Layout | None:
    """Where the channels of `L` land after reshaping `src` to `dst`, if each stays contiguous:
    the dims before the channel axis must keep their product, and each channel's block of
    elements (inner x the dims after the axis) must be whole multiples of the new trailing dims."""
    before = math.prod(src[:L.axis])
    block = L.inner * math.prod(src[L.axis + 1:])
    for b in range(len(dst)):
        if math.prod(dst[:b]) != before:
            continue
        after = math.prod(dst[b + 1:])
        if block % after == 0 and dst[b] == L.channels * (block // after):
            return L.moved(b, block // after)
    return None


def remove_channels(graph: Graph, keep: dict[str, np.ndarray]) -> Graph:
    """A copy of `graph` keeping, per group key, only the listed channels (sorted indices)."""
    out = graph.copy()
    analysis = ChannelAnalysis(out)
    by_key = {g.key: g for g in analysis.groups}
    plan = {}
    for key, kept in keep.items():
        g = by_key[key]
        assert not g.frozen, (key, g.frozen)
        if len(kept) < g.size:
            plan[g.gid] = np.sort(np.asarray(kept, np.int64))
    analysis.rewrite(plan)
    return out


def filter_norms(analysis: ChannelAnalysis, group: ChannelGroup, criterion: str) -> np.ndarray:
    """Per channel of `group`: the sum over its producers of the l1 or l2 norm of that filter."""
    total = np.zeros(group.size)
    for p in group.producers:
        w = analysis.consts[id(p.operands[1])].attrs["value"].astype(np.float64).reshape(group.size, -1)
        total += np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w * w).sum(axis=1))
    return total


# ---- accuracy-budgeted search (the `auto` modes) -----------------------------------------

def accuracy_budget(graph: Graph, ctx: PassContext, what: str) -> tuple[float, float]:
    """(baseline score, allowed drop) for an `auto` mode; PassError without evaluation data."""
    check(ctx.evaluate is not None, f"{what} needs evaluation data to measure the accuracy it costs",
          "pass --eval data and --max-accuracy-drop POINTS, or give a fixed setting instead of auto")
    check(ctx.max_accuracy_drop is not None, f"{what} needs an accuracy budget",
          "pass --max-accuracy-drop POINTS (the score may fall at most that much below the baseline)")
    baseline = ctx.baseline if ctx.baseline is not None else ctx.evaluate(graph)
    return float(baseline), float(ctx.max_accuracy_drop)


def recovery(ctx: PassContext, epochs: int, what: str) -> Callable[[Graph], Graph]:
    """graph -> the graph after `epochs` of distillation (the distill pass, in a scratch context
    so its notes don't pile up), or the graph itself when epochs is 0. Accuracy-aware passes
    score candidates after recovery, so a choice is judged as it will ship: pruned and retrained."""
    if epochs == 0:
        return lambda graph: graph
    check(ctx.train is not None, f"{what} with recover={epochs} needs training inputs to retrain candidates",
          "pass --train X.npy, or recover=0")
    import dataclasses
    from tinyc.passes.distill import Distill

    retrain = Distill(epochs=epochs)
    return lambda graph: retrain.apply(graph, dataclasses.replace(ctx, notes=[], stats={}))


@dataclass(frozen=True)
class Trial:
    """One layer's setting tried alone: MACs it saves and accuracy points it costs."""

    setting: Any
    saved: int
    drop: float


def greedy_plan(trials: dict[str, list[Trial]], budget: float) -> list[tuple[str, Trial | None, Trial]]:
    """Steps (key, previous trial, new trial): each moves one layer to a more aggressive
    setting, most MACs saved per predicted point lost first, while the summed drops of the
    chosen settings stay within `budget`."""
    current: dict[str, Trial] = {}
    predicted, plan = 0.0, []
    while True:
        best = None
        for key, options in trials.items():
            cur = current.get(key)
            saved0, drop0 = (cur.saved, max(cur.drop, 0.0)) if cur else (0, 0.0)
            for t in options:
                gain, cost = t.saved - saved0, max(t.drop, 0.0) - drop0
                if gain <= 0 or predicted + cost > budget:
                    continue
                rank = (gain / max(cost, 1e-9), gain)
                if best is None or rank > best[0]:
                    best = (rank, key, t, cost)
        if best is None:
            return plan
        _, key, t, cost = best
        plan.append((key, current.get(key), t))
        current[key] = t
        predicted += cost


def budgeted_search(trials: dict[str, list[Trial]], budget: float, baseline: float,
                    build: Callable[[dict[str, Any]], Graph],
                    evaluate: Callable[[Graph], float]) -> tuple[dict[str, Any], Graph, float, int]:
    """Plan greedily, then verify the combined choice with `evaluate`, undoing the last steps
    until it is within budget. Returns (settings, graph, drop, steps undone)."""
    plan = greedy_plan(trials, budget)
    settings = {key: t.setting for key, _, t in plan}
    undone = 0
    while True:
        graph = build(settings)
        drop = baseline - evaluate(graph)
        if drop <= budget or not plan:
            return settings, graph, drop, undone
        key, prev, _ = plan.pop()
        undone += 1
        if prev is None:
            del settings[key]
        else:
            settings[key] = prev.setting
