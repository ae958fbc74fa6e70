"""Channel analysis for prune-channels: which output channels of which layers are tied together,
and the rewrite that drops channels and keeps the graph valid.

- `ChannelAnalysis`: the channel layout of every value, the channel groups and what every
  consumer must do when some channels go (one rule per `channels` facet of an op's definition,
  `RULES`; an op without one freezes the channels that reach it).
- `remove_channels`: a copy of a graph without the channels not kept.
- `filter_norms`: the l1/l2 importance of each channel of a group.

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
from typing import Callable

import numpy as np

from tinyc.ir import Graph, Op
from tinyc.ops import OPS
from tinyc.ops.recurrent import op_layout
from tinyc.rewrite import Builder, reinfer


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
    unit: int = 1               # channels go in aligned runs of `unit` (whole groups of a group_norm)
    units: list[str] = field(default_factory=list)    # why they go in runs

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
        ga.unit = math.lcm(ga.unit, gb.unit)
        ga.units += [u for u in gb.units if u not in ga.units]
        ga.ties += [t for t in gb.ties + [why] if t not in ga.ties]

    def _freeze(self, layout: Layout | None, why: str) -> None:
        if layout is not None:
            for gid, _ in layout.segs:
                self._info[self.find(gid)].frozen.append(why)

    def _constrain(self, gid: int, blocks: int) -> None:
        g = self._info[self.find(gid)]
        g.blocks = math.lcm(g.blocks, blocks)

    def _constrain_unit(self, gid: int, unit: int, why: str) -> None:
        g = self._info[self.find(gid)]
        g.unit = math.lcm(g.unit, unit)
        if why not in g.units:
            g.units.append(why)

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
                per_block = g.size // g.blocks
                if g.unit > 1 and per_block % g.unit:
                    g.frozen.append(f"{g.units[0]}, and runs of {g.unit} do not tile its blocks of {per_block}")
                elif g.unit > 1 and per_block == g.unit:
                    g.frozen.append(f"{g.units[0]}, and {g.key} is a single such group"
                                    + (" per block" if g.blocks > 1 else ""))
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

    def rule_slice(self, op: Op, lays) -> Layout | None:
        """Slicing other axes keeps the channels; slicing the channel axis keeps the whole groups
        between two group boundaries (step 1), and the rewrite moves start/stop with the pruning."""
        L, a = lays[0], op.attrs
        if L is None or a["axis"] != L.axis:
            return L
        bounds = [0]
        for _, n in L.segs:
            bounds.append(bounds[-1] + n * L.inner)
        if a["step"] != 1 or a["start"] not in bounds or a["stop"] not in bounds:
            self._freeze(L, f"%{op.result.name} = slice cuts through them")
            return None
        self._act(op, "slice")
        segs = L.segs[bounds.index(a["start"]):bounds.index(a["stop"])]
        return Layout(L.axis, segs, L.inner) if segs else None

    def rule_flip(self, op: Op, lays) -> Layout | None:
        L = lays[0]
        if L is not None and L.axis in op.attrs["axes"] and op.result.type.shape[L.axis] > 1:
            self._freeze(L, f"%{op.result.name} = flip reverses their order")
            return None
        return L

    def rule_expand(self, op: Op, lays) -> Layout | None:
        L, x = lays[0], op.operands[0]
        if L is None:
            return None
        axis = L.axis + op.result.type.rank - x.type.rank
        if op.result.type.shape[axis] != x.type.shape[L.axis]:
            self._freeze(L, f"%{op.result.name} = expand broadcasts them")
            return None
        self._act(op, "reshape")      # the shape attribute follows the channel count
        return L.moved(axis)

    def rule_instance_norm(self, op: Op, lays) -> Layout | None:
        """group_norm: channels on axis 1 go in whole groups of C/groups (a removed group takes its
        statistics with it; the other groups' are unchanged), weight and bias sliced, groups = the
        kept count / (C/groups). groups = C (InstanceNorm) prunes channel by channel; groups = 1
        normalizes every channel together and freezes them; so does a group that straddles two
        layers' channels (cat)."""
        L, why = lays[0], f"%{op.result.name} = group_norm"
        if L is None:
            return None
        c, g = op.operands[0].type.shape[1], op.attrs["groups"]
        s = c // g
        if L.axis != 1 or L.inner != 1:
            self._freeze(L, f"{why} normalizes over them")
        elif g == 1:
            self._freeze(L, f"{why} (groups=1) normalizes all {c} channels together: removing one changes the "
                            "statistics of the others")
        elif not self._weights_const(op):
            self._freeze(L, f"{why} has non-constant parameters")
        else:
            off = 0
            for gid, n in L.segs:
                if off % s or n % s:
                    self._freeze(L, f"{why} (groups={g}) has a group of {s} channels that spans two layers' "
                                    "channels")
                    return None
                off += n
            if s > 1:
                for gid, _ in L.segs:
                    self._constrain_unit(gid, s, f"{why} (groups={g}) normalizes {s} channels together: they "
                                                 f"go in whole groups of {s}")
            self._act(op, "norm_groups", s)
            return L
        return None

    def rule_normalized_axes(self, op: Op, lays) -> Layout | None:
        """layer_norm: channels on an axis before the normalized ones pass through unchanged; on a
        normalized axis they are frozen (removing one changes the statistics)."""
        L = lays[0]
        if L is not None and L.axis >= op.attrs["axis"]:
            self._freeze(L, f"%{op.result.name} = layer_norm normalizes over them: removing one would change its "
                            "mean and variance (a barrier to channel pruning)")
            return None
        return L

    def rule_recurrent(self, op: Op, lays) -> Layout | None:
        """gru/lstm: the hidden units of each direction are the op's channels (one group of
        directions x hidden, the same count kept per direction): a unit takes its row in every gate
        block of w_ih, w_hh and both biases, its column of w_hh and its entry of constant initial
        states. Input features on axis 2 slice the columns of every direction's w_ih."""
        lay, why = op_layout(op), f"%{op.result.name} = {op.kind}"
        L = lays[0]
        weights = [op.operands[i] for d in range(lay.dirs) for i in lay.weights(d)]
        states = [op.operands[1 + i] for i in range(lay.states)]
        for S in lays[1:1 + lay.states]:
            self._freeze(S, f"{why} takes them as an initial state")
        if not all(id(v) in self.consts for v in weights):
            self._freeze(L, f"{why} has non-constant weights")
            return None
        slice_in = L is not None and L.axis == 2
        if L is not None and not slice_in:
            self._freeze(L, f"{why} reads them on axis {L.axis}, not as input features")
        frozen = None
        outside = [v for v in states if id(v) not in self.consts]
        if outside:
            frozen = f"{why} starts from the state %{outside[0].name}, which is not a constant it can shrink"
        elif lay.result == "cell" and lay.dirs > 1:
            frozen = f"{why} returns both directions' cell states on one axis"
        size = lay.dirs * lay.hidden
        self._act(op, "recurrent", slice_in)
        return Layout(2, ((self._new(size, op, blocks=lay.dirs, frozen=frozen), size),))

    def rule_table_columns(self, op: Op, lays) -> Layout | None:
        """embedding: the table's columns (the embedding dim, the result's last axis) are channels
        produced here, pruned when everything downstream allows it."""
        table = op.operands[0]
        for L in lays:
            self._freeze(L, f"%{op.result.name} = {op.kind} gathers them")
        if id(table) not in self.consts:
            return None
        d = table.type.shape[1]
        self._act(op, "columns")
        return Layout(op.result.type.rank - 1, ((self._new(d, op), d),))

    def rule_masked_softmax(self, op: Op, lays) -> Layout | None:
        """masked_softmax: as softmax (frozen on its axis); a constant mask varying along the
        channels is sliced with them."""
        L, m = lays[0], op.operands[1]
        self._freeze(lays[1], f"%{op.result.name} = {op.kind} uses them as its mask")
        if L is None:
            return None
        if L.axis == op.attrs["axis"]:
            self._freeze(L, f"%{op.result.name} = {op.kind} normalizes over them")
            return None
        ax = L.axis - (op.result.type.rank - m.type.rank)
        if ax >= 0 and m.type.shape[ax] != 1:
            if id(m) in self.consts:
                self._act(op, "param", 1, ax)
            else:
                self._freeze(L, f"%{op.result.name} = {op.kind} has a non-constant mask along them")
                return None
        return L

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
            op.operands[i] = Builder.before(self.graph, op).const(v.name, array)

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

    def _do_norm_groups(self, keep, users, op: Op, per_group: int) -> None:
        pos = self.positions(self.layout[id(op.operands[0])], keep)
        if pos is None:
            return
        for i in range(1, len(op.operands)):
            self._set(users, op, i, self.consts[id(op.operands[i])].attrs["value"][pos])
        op.attrs["groups"] = int(len(pos)) // per_group

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

    def _do_slice(self, keep, users, op: Op) -> None:
        pos = self.positions(self.layout[id(op.operands[0])], keep)
        if pos is not None:
            op.attrs["start"] = int(np.count_nonzero(pos < op.attrs["start"]))
            op.attrs["stop"] = int(np.count_nonzero(pos < op.attrs["stop"]))

    def _do_reshape(self, keep, users, op: Op) -> None:
        L = self.layout[id(op.result)]
        pos = self.positions(L, keep)
        if pos is not None:
            shape = list(op.attrs["shape"])
            shape[L.axis] = int(len(pos))
            op.attrs["shape"] = shape


    def _do_recurrent(self, keep, users, op: Op, slice_in: bool) -> None:
        lay = op_layout(op)
        units = self.positions(self.layout[id(op.result)], keep)
        cols = self.positions(self.layout[id(op.operands[0])], keep) if slice_in else None
        if units is None and cols is None:
            return
        h = lay.hidden
        per_dir = [np.arange(h) if units is None else units[(units >= d * h) & (units < (d + 1) * h)] - d * h
                   for d in range(lay.dirs)]
        value = lambda i: self.consts[id(op.operands[i])].attrs["value"]
        new = {}                    # every array is read before any is replaced (operands may share a const)
        for d, k in enumerate(per_dir):
            rows = (np.arange(lay.gates)[:, None] * h + k[None, :]).ravel()
            w_ih, w_hh, b_ih, b_hh = lay.weights(d)
            new[w_ih] = value(w_ih)[rows] if cols is None else value(w_ih)[rows][:, cols]
            new[w_hh] = value(w_hh)[rows][:, k]
            new[b_ih], new[b_hh] = value(b_ih)[rows], value(b_hh)[rows]
        for i in range(1, 1 + lay.states):
            new[i] = np.stack([value(i)[d][:, k] for d, k in enumerate(per_dir)])
        for i, array in new.items():
            self._set(users, op, i, array)
        op.attrs["hidden"] = int(len(per_dir[0]))

    def _do_columns(self, keep, users, op: Op) -> None:
        pos = self.positions(self.layout[id(op.result)], keep)
        if pos is not None:
            self._set(users, op, 0, self.consts[id(op.operands[0])].attrs["value"][:, pos])


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
    "instance_channels": ChannelAnalysis.rule_instance_norm,
    "normalized_axes": ChannelAnalysis.rule_normalized_axes,
    "sub_range": ChannelAnalysis.rule_slice,
    "reversed_axes": ChannelAnalysis.rule_flip,
    "broadcast_copy": ChannelAnalysis.rule_expand,
    "hidden_units": ChannelAnalysis.rule_recurrent,
    "table_columns": ChannelAnalysis.rule_table_columns,
    "masked_axis": ChannelAnalysis.rule_masked_softmax,
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


def filter_rows(analysis: ChannelAnalysis, op: Op, size: int) -> np.ndarray:
    """The weights of each of the `size` channels `op` produces, one row per channel: conv/linear
    filters (weight rows), a recurrent layer's hidden units (their rows of every gate block of
    w_ih and w_hh, per direction), an embedding's columns."""
    rule = OPS[op.kind].channels
    value = lambda v: analysis.consts[id(v)].attrs["value"].astype(np.float64)
    if rule == "hidden_units":
        lay = op_layout(op)
        rows = []
        for d in range(lay.dirs):
            w_ih, w_hh = (value(op.operands[i]) for i in list(lay.weights(d))[:2])
            g, h = lay.gates, lay.hidden
            rows.append(np.concatenate([w.reshape(g, h, -1).transpose(1, 0, 2).reshape(h, -1) for w in (w_ih, w_hh)],
                                       axis=1))
        return np.concatenate(rows).reshape(size, -1)
    if rule == "table_columns":
        return value(op.operands[0]).T.reshape(size, -1)
    return value(op.operands[1]).reshape(size, -1)


def filter_norms(analysis: ChannelAnalysis, group: ChannelGroup, criterion: str) -> np.ndarray:
    """Per channel of `group`: the sum over its producers of the l1 or l2 norm of that filter."""
    total = np.zeros(group.size)
    for p in group.producers:
        w = filter_rows(analysis, p, group.size)
        total += np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w * w).sum(axis=1))
    return total


def _rule_slope_per_channel(self: ChannelAnalysis, op: Op, lays) -> Layout | None:
    """prelu: one slope per channel of axis 1 is sliced with the channels (a single slope stays)."""
    L = lays[0]
    if L is None or op.operands[1].type.numel == 1:
        return L
    if L.axis != 1:
        self._freeze(L, f"%{op.result.name} = {op.kind} has its slopes on axis 1, not {L.axis}")
    elif not self._weights_const(op):
        self._freeze(L, f"%{op.result.name} = {op.kind} has a non-constant slope")
    else:
        self._act(op, "param", 1, 0)
    return L


RULES["slope_per_channel"] = _rule_slope_per_channel
