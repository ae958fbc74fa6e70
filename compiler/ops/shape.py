"""Constants, views and data movement: const, reshape, transpose, cat, pad."""
from __future__ import annotations

import math

import numpy as np

from tinyc import quant
from tinyc.ir import TensorType, dtype_of
from tinyc.ops import refs
from tinyc.ops.core import (OpDef, OpError, Trait, axis_attr, fmt_shape, int_all, need, register, same_dtype,
                            sample, torch)
from tinyc.ops.refs import qparams, requant_out


def _const_type(ts, a) -> TensorType:
    try:
        return TensorType(tuple(a["value"].shape), dtype_of(a["value"]))
    except TypeError as e:
        raise OpError(str(e)) from None


register(OpDef("const", lambda ts, a: tuple(a["value"].shape), 0, 0, {"value": np.ndarray},
               doc="a constant (weights live in the text form's resource section)",
               ref_exact=lambda op: op.attrs["value"], result_type=_const_type))


# ---- reshape ----------------------------------------------------------------------------------

def _reshape_shape(ts, a):
    shape = a["shape"]
    need(all(d >= 0 for d in shape), f"shape {shape} has a negative dimension", "reshape dimensions are explicit (no -1)")
    need(math.prod(shape) == ts[0].numel,
         f"cannot reshape {fmt_shape(ts[0].shape)} ({ts[0].numel} elements) to {fmt_shape(shape)}")
    return tuple(shape)


def _reshape(op, x):
    return x.reshape(op.attrs["shape"])


register(OpDef(
    "reshape", _reshape_shape, 1, 1, {"shape": list[int]}, traits=Trait.VIEW | Trait.SAME_QUANT,
    doc="row-major reshape; the result aliases its operand", ref=_reshape, ref_int=_reshape, torch=_reshape,
    int_operands=int_all, int8="same", c="view", channels="regroup",
    keeps_batch=lambda a, types, flags, result: bool(a["shape"]) and a["shape"][0] == types[0].shape[0],
    identity=lambda op, const: 0 if op.operands[0].type.shape == op.result.type.shape else None,
    samples=lambda rng: [sample((2, 3, 4), shape=[2, 12])]))


# ---- transpose --------------------------------------------------------------------------------

def _transpose_shape(ts, a):
    perm, shape = a["perm"], ts[0].shape
    need(sorted(perm) == list(range(len(shape))), f"perm {perm} is not a permutation of rank {len(shape)}")
    return tuple(shape[p] for p in perm)


def _transpose(op, x):
    return x.transpose(op.attrs["perm"])


register(OpDef(
    "transpose", _transpose_shape, 1, 1, {"perm": list[int]}, traits=Trait.SAME_QUANT,
    doc="permute axes", ref=_transpose, ref_int=_transpose, torch=lambda op, x: x.permute(op.attrs["perm"]),
    int_operands=int_all, int8="same", c="permute", channels="permute",
    keeps_batch=lambda a, types, flags, result: a["perm"][0] == 0,
    identity=lambda op, const: 0 if list(op.attrs["perm"]) == sorted(op.attrs["perm"]) else None,
    samples=lambda rng: [sample((2, 3, 4), perm=[0, 2, 1]), sample((1, 2, 3, 4), perm=[0, 3, 1, 2])]))


# ---- cat --------------------------------------------------------------------------------------

def _cat_shape(ts, a):
    first = ts[0].shape
    axis = axis_attr(a, "axis", len(first))
    same_dtype(ts)
    for t in ts[1:]:
        need(len(t.shape) == len(first) and all(d == e for i, (d, e) in enumerate(zip(t.shape, first)) if i != axis),
             f"cannot concatenate {fmt_shape(first)} and {fmt_shape(t.shape)} along axis {axis}")
    return first[:axis] + (sum(t.shape[axis] for t in ts),) + first[axis + 1:]


def _cat_int(op, *xs):
    out = op.result.type.quant
    parts = [requant_out(op, refs.centered(op, i, x), quant.rescale_ratio(qparams(op, i), out))
             for i, x in enumerate(xs)]
    return np.concatenate(parts, axis=op.attrs["axis"])


register(OpDef(
    "cat", _cat_shape, 1, None, {"axis": int}, doc="concatenate along axis",
    ref=lambda op, *xs: np.concatenate(xs, axis=op.attrs["axis"]), ref_int=_cat_int,
    torch=lambda op, *xs: torch.cat(xs, dim=op.attrs["axis"]), int_operands=int_all, int8="same", c="concat",
    channels="concat", keeps_batch=lambda a, types, flags, result: all(flags) and a["axis"] != 0,
    samples=lambda rng: [sample((2, 3), (2, 4), axis=1), sample((1, 2, 3), (1, 2, 3), axis=2)]))


# ---- pad --------------------------------------------------------------------------------------

def _pad_shape(ts, a):
    shape, pads = ts[0].shape, a["pads"]
    r = len(shape)
    need(len(pads) == 2 * r, f"pads needs {2 * r} entries (begins then ends) for rank {r}, got {len(pads)}")
    out = tuple(d + b + e for d, b, e in zip(shape, pads[:r], pads[r:]))
    need(all(d >= 0 for d in out), f"negative pads crop {fmt_shape(shape)} below zero size")
    return out


def _pad_int(op, x):
    code = int(quant.quantize(np.float32(op.attrs["value"]), qparams(op, 0)))
    return refs.crop_pad(x, op.attrs["pads"], code, refs.np_pad)


def _pad_keeps_batch(a, types, flags, result) -> bool:
    return a["pads"][0] == 0 and a["pads"][types[0].rank] == 0


register(OpDef(
    "pad", _pad_shape, 1, 1, {"pads": list[int], "value": float}, traits=Trait.SAME_QUANT,
    doc="constant pad, pads = begins then ends; negative pads crop",
    ref=lambda op, x: refs.crop_pad(x, op.attrs["pads"], op.attrs["value"], refs.np_pad), ref_int=_pad_int,
    torch=lambda op, x: refs.crop_pad(x, op.attrs["pads"], op.attrs["value"], refs.torch_pad),
    int_operands=int_all, int8="same", c="pad_const", channels="pad_axes", keeps_batch=_pad_keeps_batch,
    identity=lambda op, const: None if any(op.attrs["pads"]) else 0,
    samples=lambda rng: [sample((1, 2, 3, 3), pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.0),
                         sample((2, 5), pads=[0, -1, 0, 2], value=0.5)]))


# ---- slice, flip, expand: copies that only move elements ------------------------------------------
# Their `ref` is a pure gather (each result element is one operand element, chosen by index only), so
# the C backends lower all three by applying `ref` to the operand's element offsets (c = "gather_copy"):
# the float kernels get a strided copy, the int8 kernels a copy through the operand's layout.

def _slice_index(rank: int, a: dict) -> tuple:
    return (slice(None),) * a["axis"] + (slice(a["start"], a["stop"], a["step"]),)


def _slice_shape(ts, a):
    shape = ts[0].shape
    need(len(shape) >= 1, "slice needs an operand of rank >= 1")
    axis = axis_attr(a, "axis", len(shape))
    start, stop, step, dim = a["start"], a["stop"], a["step"], shape[axis]
    need(0 <= start <= stop <= dim, f"slice bounds start {start}, stop {stop} must satisfy 0 <= start <= stop <= "
         f"{dim} (the size of axis {axis})", "bounds are normalized: no negative or out-of-range values")
    need(step >= 1, f"slice step {step} must be >= 1", "a reversed slice is a slice then a flip")
    return shape[:axis] + (-(-(stop - start) // step),) + shape[axis + 1:]


def _slice(op, x):
    return x[_slice_index(x.ndim, op.attrs)]


def _slice_identity(op, const):
    a, dim = op.attrs, op.operands[0].type.shape[op.attrs["axis"]]
    return 0 if a["start"] == 0 and a["stop"] == dim and (a["step"] == 1 or dim <= 1) else None


register(OpDef(
    "slice", _slice_shape, 1, 1, {"axis": int, "start": int, "stop": int, "step": int}, traits=Trait.SAME_QUANT,
    doc="x[start:stop:step] along axis (0 <= start <= stop <= dim, step >= 1)",
    ref=_slice, ref_int=_slice, torch=_slice, int_operands=int_all, int8="same", c="gather_copy", channels="sub_range",
    keeps_batch=lambda a, types, flags, result: flags[0] and a["axis"] != 0, identity=_slice_identity,
    samples=lambda rng: [sample((2, 5, 4), axis=1, start=1, stop=5, step=2),
                         sample((1, 6, 3, 3), axis=1, start=2, stop=5, step=1),
                         sample((3, 7), axis=0, start=1, stop=3, step=1),
                         sample((2, 3, 8), axis=2, start=0, stop=8, step=3)]))


# ---- flip -------------------------------------------------------------------------------------------

def _flip_shape(ts, a):
    shape, axes = ts[0].shape, a["axes"]
    need(axes == sorted(set(axes)) and all(0 <= d < len(shape) for d in axes),
         f"flip axes {axes} must be distinct, increasing and in range for rank {len(shape)}")
    return shape


def _flip(op, x):
    return np.flip(x, axis=tuple(op.attrs["axes"])) if op.attrs["axes"] else x


register(OpDef(
    "flip", _flip_shape, 1, 1, {"axes": list[int]}, traits=Trait.SAME_QUANT,
    doc="reverse the order of the elements along each of axes", ref=_flip, ref_int=_flip,
    torch=lambda op, x: torch.flip(x, op.attrs["axes"]) if op.attrs["axes"] else x,
    int_operands=int_all, int8="same", c="gather_copy", channels="reversed_axes",
    keeps_batch=lambda a, types, flags, result: flags[0] and 0 not in a["axes"],
    identity=lambda op, const: 0 if all(op.operands[0].type.shape[d] <= 1 for d in op.attrs["axes"]) else None,
    samples=lambda rng: [sample((2, 3, 4), axes=[2]), sample((1, 3, 4, 5), axes=[1, 3])]))


# ---- expand -----------------------------------------------------------------------------------------

def _expand_shape(ts, a):
    src, shape = ts[0].shape, tuple(a["shape"])
    need(len(shape) >= len(src), f"cannot expand {fmt_shape(src)} to fewer dims {fmt_shape(shape)}")
    lead = len(shape) - len(src)
    need(all(d >= 0 for d in shape) and all(s == d or s == 1 for s, d in zip(src, shape[lead:])),
         f"cannot expand {fmt_shape(src)} to {fmt_shape(shape)}",
         "only size-1 dims broadcast; new dims go in front; sizes are explicit (no -1)")
    return shape


def _expand(op, x):
    return np.array(np.broadcast_to(x, op.attrs["shape"]))


register(OpDef(
    "expand", _expand_shape, 1, 1, {"shape": list[int]}, traits=Trait.SAME_QUANT,
    doc="broadcast size-1 dims (and new leading dims) to shape: every copy reads the same element",
    ref=_expand, ref_int=_expand, torch=lambda op, x: x.expand(op.attrs["shape"]),
    int_operands=int_all, int8="same", c="gather_copy", channels="broadcast_copy",
    identity=lambda op, const: 0 if op.operands[0].type.shape == op.result.type.shape else None,
    samples=lambda rng: [sample((2, 1, 4), shape=[2, 3, 4]), sample((1, 3, 1, 1), shape=[2, 3, 4, 5]),
                         sample((3, 1), shape=[2, 3, 4])]))
