"""Physical layouts of the int8 tensors of a quantized graph.

Every int8 tensor is a dense block of `numel` bytes in the arena, but not necessarily in
PyTorch's row-major order: the C backend picks, per tensor, the order its producer and
consumers run fastest on. The choice is recorded as an *offsets* array: for each logical
element (the IR's shape, NCHW for images), its byte offset in the block.

- Convolutions and pools produce channels-last (NHWC) tensors: the GEMM kernels take dot
  products over contiguous channels. A tensor read by a depthwise convolution is stored
  channels-first (NCHW) instead: that kernel works plane by plane, a row of taps per word.
  The producing kernel pays nothing for either: it stores byte by byte at strides.
- `quantize` writes the layout its consumers want (the image is transposed while it is
  quantized); elementwise ops keep their operand's layout (so they can work in place).
- `reshape` and `transpose` of int8 tensors are views: the offsets are reshaped or
  transposed, no byte moves. A consumer that needs per-dimension strides the view does not
  have (rare) gets a relayout copy into its scratch; `linear` after a flatten of an NHWC
  tensor instead reads it as stored and the weight columns are permuted offline.
- Float tensors (graph inputs/outputs, keep-float regions) stay row-major.

Everything here is numpy on offsets, at compile time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tinyc.errors import BackendError
from tinyc.ir import Graph, Op, Value
from tinyc.ops import OPS, Trait, has, is_int_form

MAX_RANK = 8  # TINYC_S8_MAX_RANK


def channels_last_perm(rank: int) -> tuple[int, ...]:
    """Physical order of the logical dims for channels-last: N, spatial..., C."""
    return (0, *range(2, rank), 1)


def perm_offsets(shape, perm) -> np.ndarray:
    """Offsets of a dense tensor stored with logical dim perm[i] as the i-th physical dim."""
    shape = tuple(shape)
    phys = tuple(shape[p] for p in perm)
    return np.arange(math.prod(shape), dtype=np.int64).reshape(phys).transpose(np.argsort(perm))


def row_major(shape) -> np.ndarray:
    return np.arange(math.prod(shape), dtype=np.int64).reshape(tuple(shape))


def is_row_major(off: np.ndarray) -> bool:
    return bool(np.array_equal(off.ravel(), np.arange(off.size)))


def dim_strides(off: np.ndarray) -> list[int] | None:
    """Per-dimension element strides if `off` is a strided view (off = sum idx_d * s_d), else None."""
    if off.size == 0:
        return [0] * off.ndim
    base = int(off.flat[0])
    strides = []
    for d, n in enumerate(off.shape):
        if n == 1:
            strides.append(0)
            continue
        idx = [0] * off.ndim
        idx[d] = 1
        strides.append(int(off[tuple(idx)]) - base)
    want = base + sum(np.arange(n, dtype=np.int64).reshape([-1 if i == d else 1 for i in range(off.ndim)]) * s
                      for d, (n, s) in enumerate(zip(off.shape, strides)))
    return strides if np.array_equal(off, np.broadcast_to(want, off.shape)) else None


def _decompose(offs) -> tuple[list[int], list[int], list[list[int]]]:
    f = np.stack([np.asarray(o, np.int64).ravel() for o in offs])
    base = [int(b) for b in f[:, 0]] if f.shape[1] else [0] * len(offs)
    n = f.shape[1]
    dims: list[int] = []
    strides: list[list[int]] = []
    while n > 1:
        step = f[:, 1] - f[:, 0]
        same = np.all(np.diff(f, axis=1) == step[:, None], axis=0)
        run = n if same.all() else int(np.argmin(same)) + 1
        for length in range(run, 0, -1):
            if n % length:
                continue
            blocks = f.reshape(f.shape[0], n // length, length)
            if np.array_equal(blocks, blocks[:, :, :1] + step[:, None, None] * np.arange(length)):
                break
        if length == 1:
            raise BackendError("an int8 layout is not a strided walk (internal error)")
        dims.insert(0, length)
        strides.insert(0, [int(s) for s in step])
        f = f[:, ::length]
        n //= length
    if not dims:
        dims, strides = [1], [[0] * len(offs)]
    return base, dims, [list(s) for s in zip(*strides)]


def iteration(*offs: np.ndarray) -> tuple[list[int], list[int], list[list[int]]]:
    """Decompose a joint walk over several offset arrays of one shape into as few strided
    dims as possible: (base offset per array, dims, strides per array), outer dims first.
    Elementwise kernels may visit elements in any order, so the walk follows the physical
    order of one of the arrays (or the logical order), whichever gives the fewest dims and
    then the longest inner rows. Raises BackendError past MAX_RANK dims."""
    offs = tuple(np.asarray(o) for o in offs)
    orders = [tuple(range(offs[0].ndim))]
    for o in offs:
        s = dim_strides(o) if o.ndim > 1 else None
        if s is not None:
            order = tuple(sorted(range(o.ndim), key=lambda d: -abs(s[d])))
            if order not in orders:
                orders.append(order)
    best = None
    for order in orders:
        cand = _decompose(tuple(o.transpose(order) for o in offs))
        if best is None or (len(cand[1]), -cand[1][-1]) < (len(best[1]), -best[1][-1]):
            best = cand
    if len(best[1]) > MAX_RANK:
        raise BackendError(f"a strided walk needs {len(best[1])} dims; the int8 kernels support {MAX_RANK}")
    return best


# ---- assignment ------------------------------------------------------------------------

# By the `c` rule of an op's definition (tinyc.ops): ops whose int8 result may be a view of its
# operand, and ops that keep their operand's layout (elementwise, tables, softmax).
VIEW_RULES = ("view", "permute")
LAYOUT_KEEPING_RULES = ("table_lookup", "elementwise", "softmax_axis")
LAYOUT_KEEPING_RULES += ("minmax", "channel_slope", "log_softmax_axis")   # maximum/minimum, prelu, log_softmax


def _rule(op: Op) -> str | None:
    return OPS[op.kind].c


def is_int8(v: Value) -> bool:
    return v.type.dtype == "i8" and v.type.quant is not None


def is_int8_op(op: Op) -> bool:
    """Ops the int8 backend lowers: int8 forms, quantize and dequantize."""
    return has(op, Trait.INT_ONLY) or is_int_form(op.kind, [v.type for v in op.operands])


def is_depthwise(op: Op) -> bool:
    """Depthwise conv (one input channel per group, several groups): the plane-by-plane kernel.
    A single-channel input (groups = 1) goes to the GEMM kernel instead, which shares each
    im2col row between all output channels."""
    c = op.operands[0].type.shape[1]
    return op.kind == "conv2d" and op.attrs["groups"] == c > 1 and op.operands[1].type.shape[1] == 1


def _keeps_channels(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """A reshape between these shapes keeps N and C and only reshapes the spatial dims, so
    channels-last on one side is a view of channels-last on the other."""
    return len(a) >= 3 and len(b) >= 3 and a[:2] == b[:2]


@dataclass
class Layouts:
    offsets: dict[str, np.ndarray] = field(default_factory=dict)
    views: set[str] = field(default_factory=set)      # op results stored in their operand's bytes
    # fused table epilogues: conv / linear result -> the lut op applied by that layer's kernel as it
    # stores (the lut's result is then a view of the layer's bytes; c_ops_int8.fuse_table_epilogues)
    epilogues: dict[str, "Op"] = field(default_factory=dict)

    def of(self, v: Value) -> np.ndarray:
        return self.offsets[v.name]

    def describe(self, v: Value) -> str:
        off = self.offsets.get(v.name)
        if off is None or is_row_major(off):
            return "row-major"
        for perm_rank in (off.ndim,):
            if perm_rank >= 3 and np.array_equal(off, perm_offsets(off.shape, channels_last_perm(perm_rank))):
                return "channels-last"
        s = dim_strides(off)
        return f"strides {s}" if s is not None else "permuted"


def preferences(graph: Graph, inplace_depthwise: bool | frozenset = False) -> dict[str, str]:
    """Wanted layout of int8 values, from their consumers: "cl" (channels-last) or "cf".
    inplace_depthwise: depthwise convs (True: all, or those whose results are named in the set)
    want channels-last too: result and operand then share a layout, so the result can overwrite
    the operand channel by channel (c_ops_int8); the plane copy then gathers strided bytes."""
    def cl_depthwise(op: Op) -> bool:
        return inplace_depthwise is True or (bool(inplace_depthwise) and op.result.name in inplace_depthwise)

    want: dict[str, set[str]] = {}
    for op in reversed(list(graph.compute_ops())):
        if not is_int8(op.result) and op.kind != "conv2d":
            continue
        res = op.result.name
        mine = want.get(res, set())
        if op.kind == "conv2d" and is_int8(op.operands[0]):
            want.setdefault(op.operands[0].name, set()).add("cf" if is_depthwise(op) and not cl_depthwise(op)
                                                            else "cl")
        elif op.kind == "reshape" and _keeps_channels(op.operands[0].type.shape, op.result.type.shape):
            want.setdefault(op.operands[0].name, set()).update(mine)
        elif _rule(op) in LAYOUT_KEEPING_RULES + ("quantize_edge",):
            for v in op.operands:
                if v.type.shape == op.result.type.shape:
                    want.setdefault(v.name, set()).update(mine)
    return {name: ("cl" if "cl" in w else "cf") for name, w in want.items() if w}


def int8_depthwise(graph: Graph) -> list[Op]:
    return [op for op in graph.compute_ops() if _rule(op) == "conv" and is_int8(op.operands[0]) and is_depthwise(op)]


def has_depthwise(graph: Graph) -> bool:
    return bool(int8_depthwise(graph))


def assign(graph: Graph, inplace_depthwise: bool | frozenset = False) -> Layouts:
    """Layouts of every int8 value (see the module doc); inplace_depthwise: see preferences."""
    lay = Layouts()
    pref = preferences(graph, inplace_depthwise)
    for op in graph.const_ops():
        if is_int8(op.result):
            lay.offsets[op.result.name] = row_major(op.result.type.shape)
    for op in graph.compute_ops():
        v = op.result
        if not is_int8(v):
            continue
        shape = v.type.shape
        x = op.operands[0] if op.operands else None
        xoff = lay.offsets.get(x.name) if x is not None else None
        if _rule(op) in VIEW_RULES and xoff is not None:
            lay.offsets[v.name] = xoff.reshape(shape) if op.kind == "reshape" else xoff.transpose(op.attrs["perm"])
            lay.views.add(v.name)
            continue
        p = pref.get(v.name)
        if _rule(op) in ("conv", "pool"):
            p = p or "cl"
        elif _rule(op) == "dense":
            p = None
        elif _rule(op) in LAYOUT_KEEPING_RULES and xoff is not None and x.type.shape == shape and p is None:
            lay.offsets[v.name] = xoff.copy()
            continue
        elif _rule(op) in ("pad_const", "concat", "gather_copy") and xoff is not None and p is None and \
                len(shape) >= 3 and x.type.rank == len(shape) and \
                np.array_equal(xoff, perm_offsets(x.type.shape, channels_last_perm(len(shape)))):
            p = "cl"
        if p == "cl" and len(shape) >= 3:
            lay.offsets[v.name] = perm_offsets(shape, channels_last_perm(len(shape)))
        else:
            lay.offsets[v.name] = row_major(shape)
    return lay
