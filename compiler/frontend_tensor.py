"""Tensor indexing and creation: slice/select on any axis, flip, expand, chunk/split/unbind, unflatten, zeros/ones/full,
reflect/replicate/circular padding, where/masked_fill (the `where` op; a constant condition may fold), embedding and
token (integer) inputs.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others.

Indexing lowers to three IR ops: `slice` (one axis, normalized bounds, step >= 1), `flip` and
`expand`; `reshape` drops or splits dims. Ops returning several tensors (split, chunk, unbind)
return a tuple of values, one `slice` each. A gather along an axis with a constant index
(`gather_const`, roll) becomes slices of its evenly spaced runs joined by `cat`.
Tensors filled with a constant (zeros, ones, full and their _like / new_ forms) are constants
of the graph: their shape is static even when the model computes it from the input's size.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from tinyc.frontend_ops import Builder, ConstRef
from tinyc.ir import Value


def _axis(b: Builder, d: int, rank: int) -> int:
    if not -max(rank, 1) <= d < max(rank, 1):
        b.unsupported(f"dim {d} out of range for a rank-{rank} tensor")
    return d + rank if d < 0 else d


def _clamp_bound(v, size: int, default: int) -> int:
    """PyTorch's slice bound: None is the default, negatives count from the end, then clamped to [0, size]."""
    if v is None:
        return default
    v = int(v)
    if v < 0:
        v += size
    return min(max(v, 0), size)


def slice_axis(b: Builder, x: Value, axis: int, start: int, stop: int, step: int = 1,
               tag: str | None = None) -> Value:
    """x[start:stop:step] along `axis` (normalized bounds); a slice keeping the whole dim is x itself."""
    dim = x.type.shape[axis]
    if step < 1:
        b.unsupported(f"slice step {step}", "PyTorch slices take positive steps; reverse with flip")
    if (start, stop) == (0, dim) and (step == 1 or dim <= 1):
        return x
    if stop <= start:
        b.unsupported(f"a slice selecting no elements ({start}:{stop} of a dim of {dim})",
                      "tinyc does not compile zero-size tensors; remove the empty slice")
    shape = list(x.type.shape)
    shape[axis] = -(-(stop - start) // step)
    return b.emit("slice", [x], shape, {"axis": axis, "start": start, "stop": stop, "step": step}, tag)


def slice_tensor(b, a):
    x = b.value(a["self"])
    axis = _axis(b, a["dim"], x.type.rank)
    dim = x.type.shape[axis]
    start = _clamp_bound(a["start"], dim, 0)
    stop = max(_clamp_bound(a["end"], dim, dim), start)
    return slice_axis(b, x, axis, start, stop, int(a["step"] if a["step"] is not None else 1))


def _index(b: Builder, i: int, dim: int, what: str) -> int:
    if not -dim <= i < dim:
        b.unsupported(f"{what} {i} out of range for a dim of {dim}")
    return i + dim if i < 0 else i


def _select(b: Builder, x: Value, axis: int, index: int, tag: str | None = None) -> Value:
    i = _index(b, int(index), x.type.shape[axis], "index")
    y = slice_axis(b, x, axis, i, i + 1, 1, "slice" if tag is None else f"{tag}_slice")
    return b.reshape(y, x.type.shape[:axis] + x.type.shape[axis + 1:], tag)


def select(b, a):
    """x[..., i, ...]: a one-element slice, then a reshape dropping the dim."""
    x = b.value(a["self"])
    return _select(b, x, _axis(b, a["dim"], x.type.rank), a["index"])


def narrow(b, a):
    x = b.value(a["self"])
    axis = _axis(b, a["dim"], x.type.rank)
    dim, length = x.type.shape[axis], int(a["length"])
    start = int(a["start"])
    start = start + dim if start < 0 else start
    if start < 0 or length < 0 or start + length > dim:
        b.unsupported(f"narrow({start}, {length}) past the end of a dim of {dim}")
    return slice_axis(b, x, axis, start, start + length)


def _pieces(b: Builder, x: Value, axis: int, sizes: list[int]) -> tuple[Value, ...]:
    """Consecutive slices of these sizes along axis (split, chunk): a tuple, like the aten op's list."""
    if sum(sizes) != x.type.shape[axis] or any(s < 0 for s in sizes):
        b.unsupported(f"split sizes {sizes} for a dim of {x.type.shape[axis]}")
    out, start = [], 0
    for i, s in enumerate(sizes):
        out.append(slice_axis(b, x, axis, start, start + s, 1, str(i)))
        start += s
    return tuple(out)


def _even_sizes(dim: int, size: int) -> list[int]:
    return [min(size, dim - s) for s in range(0, dim, size)] if size > 0 and dim > 0 else [dim]


def split(b, a):
    x = b.value(a["self"])
    axis = _axis(b, a["dim"], x.type.rank)
    return _pieces(b, x, axis, _even_sizes(x.type.shape[axis], int(a["split_size"])))


def split_with_sizes(b, a):
    x = b.value(a["self"])
    axis = _axis(b, a["dim"], x.type.rank)
    sizes = a["split_sizes"] if "split_sizes" in a else a["split_size"]
    return _pieces(b, x, axis, [int(s) for s in sizes])


def chunk(b, a):
    """torch.chunk: pieces of ceil(dim / chunks) (so possibly fewer than `chunks`)."""
    x = b.value(a["self"])
    axis = _axis(b, a["dim"], x.type.rank)
    dim, n = x.type.shape[axis], int(a["chunks"])
    if n < 1:
        b.unsupported(f"chunk into {n} pieces")
    return _pieces(b, x, axis, _even_sizes(dim, -(-dim // n)))


def unbind(b, a):
    x = b.value(a["self"])
    axis = _axis(b, a["dim"], x.type.rank)
    return tuple(_select(b, x, axis, i, str(i)) for i in range(x.type.shape[axis]))


def unflatten(b, a):
    return b.reshape(b.value(a["self"]), b.out_shape())


def expand(b, a):
    """x.expand(sizes) (-1 keeps a dim; new dims go in front): broadcast copies of size-1 dims."""
    x = b.value(a["self"])
    shape = list(b.out_shape())
    if tuple(shape) == x.type.shape:
        return x
    return b.emit("expand", [x], shape, {"shape": shape})


def repeat(b, a):
    """x.repeat(r0, r1, ...): each repeated dim d becomes [r, d] by expand, then one reshape."""
    x = b.value(a["self"])
    reps = [int(r) for r in a["repeats"]]
    if len(reps) < x.type.rank or any(r < 1 for r in reps):
        b.unsupported(f"repeat({reps}) of a rank-{x.type.rank} tensor")
    src = [1] * (len(reps) - x.type.rank) + list(x.type.shape)
    if all(r == 1 for r in reps):
        return b.reshape(x, src)
    split_src, split_out = [], []
    for r, d in zip(reps, src):
        if r > 1 and d > 1:
            split_src += [1, d]
            split_out += [r, d]
        else:
            split_src.append(d)
            split_out.append(r * d)
    xs = b.reshape(x, split_src, tag="in")
    y = b.emit("expand", [xs], split_out, {"shape": split_out}, tag="expand")
    return b.reshape(y, b.out_shape())


def flip(b, a):
    x = b.value(a["self"])
    axes = sorted({_axis(b, d, x.type.rank) for d in a["dims"]})
    axes = [d for d in axes if x.type.shape[d] > 1]
    if not axes:
        return x
    return b.emit("flip", [x], x.type.shape, {"axes": axes})


# ---------------------------------------------------------------- gathers with constant indices

def _const_index(b: Builder, index, dim: int) -> np.ndarray:
    if not isinstance(index, ConstRef):
        b.unsupported("an index tensor computed at run time",
                      "tinyc gathers with constant indices only (a buffer or a literal tensor)")
    idx = index.array
    if idx.dtype == np.bool_:
        if idx.ndim != 1 or idx.shape[0] != dim:
            b.unsupported(f"a boolean mask of shape {list(idx.shape)} for a dim of {dim}")
        idx = np.flatnonzero(idx)
    elif not np.issubdtype(idx.dtype, np.integer):
        b.unsupported(f"an index tensor of dtype {idx.dtype}")
    idx = idx.astype(np.int64).ravel()
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        b.unsupported(f"an index out of range for a dim of {dim}")
    return np.where(idx < 0, idx + dim, idx)


def gather_axis(b: Builder, x: Value, axis: int, idx: np.ndarray) -> Value:
    """x's elements at positions idx along axis: one slice per evenly spaced run (a descending run is a
    slice then a flip), joined by cat."""
    if idx.size == 0:
        b.unsupported("an empty index (a zero-size result)")
    runs, i = [], 0
    while i < idx.size:
        j = i
        step = int(idx[i + 1] - idx[i]) if i + 1 < idx.size else 1
        if step != 0:
            while j + 1 < idx.size and idx[j + 1] - idx[j] == step:
                j += 1
        runs.append((int(idx[i]), int(idx[j]), step if j > i else 1))
        i = j + 1
    parts = []
    for k, (first, last, step) in enumerate(runs):
        tag = f"run{k}" if len(runs) > 1 else None
        lo, hi = min(first, last), max(first, last)
        y = slice_axis(b, x, axis, lo, hi + 1, abs(step), tag if step > 0 else f"run{k}_slice")
        if step < 0:
            y = b.emit("flip", [y], y.type.shape, {"axes": [axis]}, tag)
        parts.append(y)
    if len(parts) == 1:
        return parts[0]
    shape = list(x.type.shape)
    shape[axis] = int(idx.size)
    return b.emit("cat", parts, shape, {"axis": axis})


def gather_const(b: Builder, x: Value, axis: int, index) -> Value:
    """x.index_select(axis, index) for a constant `index` (integer or boolean mask, any shape: the
    result has index's dims in place of axis, as x[:, idx] does). For the lowerings of index_select
    and index.Tensor (tinyc.frontend_tokens, which owns them) when the index is a constant."""
    dim = x.type.shape[axis]
    idx_shape = index.array.shape if isinstance(index, ConstRef) and index.array.dtype != np.bool_ else None
    y = gather_axis(b, x, axis, _const_index(b, index, dim))
    if idx_shape is None or len(idx_shape) == 1:
        return y
    return b.reshape(y, x.type.shape[:axis] + tuple(idx_shape) + x.type.shape[axis + 1:])


def roll(b, a):
    """torch.roll: per rolled dim, the last `shift` elements then the others (two slices and a cat)."""
    x = b.value(a["self"])
    shifts, dims = [int(s) for s in a["shifts"]], [int(d) for d in a["dims"]]
    if not dims:          # roll of the flattened tensor
        flat = b.reshape(x, [x.type.numel], tag="flat")
        return b.reshape(_roll(b, flat, 0, shifts[0], "roll"), x.type.shape)
    if len(shifts) != len(dims):
        b.unsupported(f"roll with {len(shifts)} shifts for {len(dims)} dims")
    y = x
    for k, (s, d) in enumerate(zip(shifts, dims)):
        y = _roll(b, y, _axis(b, d, x.type.rank), s, f"roll{k}" if k < len(dims) - 1 else None)
    return y


def _roll(b: Builder, x: Value, axis: int, shift: int, tag: str | None) -> Value:
    n = x.type.shape[axis]
    s = shift % n if n else 0
    if s == 0:
        return x
    tail = slice_axis(b, x, axis, n - s, n, 1, f"{tag}_tail" if tag else "tail")
    head = slice_axis(b, x, axis, 0, n - s, 1, f"{tag}_head" if tag else "head")
    return b.emit("cat", [tail, head], x.type.shape, {"axis": axis}, tag)


# ---------------------------------------------------------------- padding by copies (reflect, replicate, circular)

def _pad_index(b: Builder, n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """The source positions along one dim of PyTorch's reflect / replicate / circular padding."""
    if lo < 0 or hi < 0:
        b.unsupported(f"negative {mode} padding (cropping)")
    body = np.arange(n)
    if mode == "reflect":
        if lo >= n or hi >= n:
            b.unsupported(f"reflect padding ({lo}, {hi}) of a dim of {n}", "reflect padding must be smaller than the dim")
        return np.concatenate([np.arange(lo, 0, -1), body, np.arange(n - 2, n - 2 - hi, -1)])
    if mode == "replicate":
        return np.concatenate([np.zeros(lo, np.int64), body, np.full(hi, n - 1)])
    if lo > n or hi > n:
        b.unsupported(f"circular padding ({lo}, {hi}) of a dim of {n}", "circular padding may wrap around once at most")
    return np.concatenate([np.arange(n - lo, n), body, np.arange(hi)])


def pad_by_copies(b: Builder, x: Value, pads: list[int], mode: str) -> Value:
    """F.pad(x, pads, mode) for reflect / replicate / circular (nn.ReflectionPad2d, ReplicationPad1d,
    padding_mode='reflect' convs...): per padded dim, slices (flipped where they run backwards) of x
    joined by cat (gather_axis): exact in float and int8."""
    rank = x.type.rank
    if len(pads) % 2 or len(pads) // 2 > rank:
        b.unsupported(f"{len(pads)} padding values for a rank-{rank} tensor")
    y = x
    for i in range(len(pads) // 2):   # (before, after) pairs from the last dim backwards
        lo, hi = pads[2 * i], pads[2 * i + 1]
        if lo or hi:
            axis = rank - 1 - i
            y = gather_axis(b, y, axis, _pad_index(b, y.type.shape[axis], lo, hi, mode))
    return y


def pad_mode(mode: str) -> Callable:
    """aten.reflection_pad{1,2,3}d / replication_pad*d / _pad_circular (what F.pad's modes decompose to)."""
    return lambda b, a: pad_by_copies(b, b.value(a["self"]), [int(v) for v in a["padding" if "padding" in a else "pad"]],
                                      mode)


# ---------------------------------------------------------------- where / masked_fill

def _where_side(b: Builder, side, tag: str) -> Value:
    """A branch of where as an operand: a Value, a constant, or a number (a 0-d constant)."""
    if isinstance(side, bool):
        side = float(side)
    v = b.value(side, tag)
    if v.type.dtype != "f32":
        b.unsupported("where over integer tensors")
    return v


def _where(b: Builder, cond, x, y) -> Value:
    """where(cond, x, y): the `where` op (cond a mask, true where non-zero; x and y values, constants or
    numbers). A constant condition folds what it can first: both sides constant is a constant; a side the
    condition never picks drops out; a constant side filling every chosen position with the same infinity
    (masked_fill(mask, -inf) before a softmax) is y + where(m, -inf, 0), one add, so that quantize-int8 sees
    an additive mask and makes it a masked_softmax."""
    out = b.out_shape()
    if isinstance(cond, ConstRef):
        folded = _fold_const_condition(b, cond, x, y, out)
        if folded is not None:
            return folded
    elif not isinstance(cond, Value):
        b.unsupported(f"a {type(cond).__name__} condition")
    c = b.value(cond, "condition")
    if c.type.dtype != "f32":
        b.unsupported("a condition computed from integer tensors")
    xv, yv = _where_side(b, x, "self"), _where_side(b, y, "other")
    return b.emit("where", [c, xv, yv], out)


def _fold_const_condition(b: Builder, cond: ConstRef, x, y, out) -> Value | ConstRef | None:
    """The constant-condition cases that need no `where` (see _where), or None."""
    m = np.broadcast_to(cond.array.astype(bool), np.broadcast_shapes(cond.array.shape, out))
    if m.shape != tuple(out):
        b.unsupported(f"a condition of shape {list(cond.array.shape)} for a result of shape {list(out)}")
    sides = []
    for side, pick in ((x, m), (y, ~m)):
        if not pick.any():
            continue
        if isinstance(side, Value):
            if side.type.dtype != "f32":
                b.unsupported("where over integer tensors")
            sides.append((side, pick))
        else:
            v = side.array if isinstance(side, ConstRef) else np.asarray(side)
            const = np.where(pick, np.broadcast_to(v.astype(np.float32), out), np.float32(0.0)).astype(np.float32)
            sides.append((const, pick))
    consts = [c for c, _ in sides if not isinstance(c, Value)]
    values = [v for v, _ in sides if isinstance(v, Value)]
    if consts and not values:
        return ConstRef(b.node.name, sum(consts))
    if len(sides) == 1:                     # the condition picks one side everywhere
        y_ = values[0]
    elif consts and len(values) == 1:
        kept = next(pick for v, pick in sides if isinstance(v, Value))
        filled = consts[0][~kept]
        if not (filled.size and np.isinf(filled).all() and np.unique(filled).size == 1):
            return None
        fill = b.value(ConstRef(f"{b.node.name}.fill", consts[0]))
        y_ = b.emit("add", [values[0], fill], np.broadcast_shapes(values[0].type.shape, fill.type.shape))
    else:
        return None
    if y_.type.shape != tuple(out):
        y_ = b.emit("expand", [y_], list(out), {"shape": list(out)}, tag="expand")
    return y_


def where(b, a):
    return _where(b, a["condition"], a["self"], a["other"])


def masked_fill(b, a):
    """x.masked_fill(mask, value) = where(mask, value, x) (value a number or a 0-d tensor)."""
    return _where(b, a["mask"], a["value"], a["self"])


# ---------------------------------------------------------------- constant-filled tensors

def filled(value: float | None) -> Callable:
    """zeros/ones/full (value None: the `fill_value` argument) and their _like / new_ forms: a
    constant of the result's static shape (a shape computed from x.size() is static at export)."""
    def lower(b, a):
        fill = a["fill_value"] if value is None else value
        if not isinstance(fill, (int, float, bool)):
            b.unsupported("a fill value computed at run time")
        array = torch.full(b.out_shape(), fill, dtype=b.node.meta["val"].dtype).numpy()   # PyTorch's dtype
        return ConstRef(b.node.name, array)
    return lower


def _table() -> dict[str, Callable]:
    t_: dict[str, Callable] = {}

    def add(names: str, fn: Callable):
        for n in names.split():
            t_["aten." + n] = fn

    # (the _copy forms are what functionalization writes for the views)
    add("slice.Tensor slice_copy.Tensor", slice_tensor)
    add("select.int select_copy.int", select)
    add("narrow.default narrow_copy.default", narrow)
    add("split.Tensor unsafe_split.Tensor split_copy.Tensor", split)
    add("split_with_sizes.default unsafe_split_with_sizes.default split_with_sizes_copy.default split.sizes",
        split_with_sizes)
    add("chunk.default unsafe_chunk.default", chunk)
    add("unbind.int unbind_copy.int", unbind)
    add("unflatten.int", unflatten)
    add("expand.default expand_copy.default", expand)
    add("repeat.default", repeat)
    add("flip.default", flip)
    add("roll.default", roll)
    add("reflection_pad1d.default reflection_pad2d.default reflection_pad3d.default", pad_mode("reflect"))
    add("replication_pad1d.default replication_pad2d.default replication_pad3d.default", pad_mode("replicate"))
    add("_pad_circular.default", pad_mode("circular"))
    add("where.self where.ScalarSelf where.ScalarOther where.Scalar", where)
    add("masked_fill.Scalar masked_fill.Tensor", masked_fill)
    add("zeros.default zeros_like.default new_zeros.default", filled(0.0))
    add("ones.default ones_like.default new_ones.default", filled(1.0))
    add("full.default full_like.default new_full.default", filled(None))
    return t_


LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = _table()
