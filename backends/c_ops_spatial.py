"""Float C lowerings of the spatial ops (tinyc.ops.spatial): conv_transpose2d, resize, masked_softmax.

Registered in c_ops.LOWERINGS by their OpDefs' `c` rules. Index tables and interpolation weights
come from the registry's `resize_tables` (the interpreter's), so the kernels only gather.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tinyc import quant
from tinyc.backends import int8_weights as iw
from tinyc.backends import c_ops
from tinyc.backends.c_ops import (Call, Context, Lowered, Lowering, Param, Weight, _check_rank, act_kernels,
                                  broadcast_strides, c_ints, coalesce, contiguous_strides, fused_act)
from tinyc.errors import BackendError
from tinyc.ir import Op
from tinyc.ops.spatial import resize_tables

MAX_RANK_S8 = 8   # TINYC_S8_MAX_RANK


def _bias(op: Op, ctx: Context) -> str:
    return ctx.ref(op.operands[2]) if len(op.operands) > 2 else "0"


def lower_conv_transpose2d(op: Op, ctx: Context) -> Lowered:
    (n, c, h, w), (o, _, kh, kw) = op.operands[0].type.shape, op.operands[1].type.shape
    _, _, oh, ow = op.result.type.shape
    a = op.attrs
    fields = (("n", n), ("c", c), ("h", h), ("w", w), ("o", o), ("oh", oh), ("ow", ow), ("kh", kh), ("kw", kw),
              ("sh", a["stride"][0]), ("sw", a["stride"][1]), ("dh", a["dilation"][0]), ("dw", a["dilation"][1]),
              ("pad_top", a["padding"][0]), ("pad_left", a["padding"][1]), ("groups", a["groups"]))
    param = Param("tinyc_f32_conv2d_params", ctx.param_name(),
                  tuple((k, str(v)) for k, v in fields) + (("act", fused_act(a)),))
    x, wt = (ctx.ref(v) for v in op.operands[:2])
    call = Call("tinyc_f32_conv_transpose2d", (x, wt, _bias(op, ctx), ctx.ref(op.result), "&" + param.cname))
    return Lowered(("CONV_TRANSPOSE2D", *act_kernels(a.get("act"))), (param,), (), (call,))


def resize_index_weights(op: Op, ctx: Context) -> tuple[Weight, Weight, tuple[np.ndarray, np.ndarray]]:
    """The int32 index tables {i0, i1} of H and W, and the lambda1 arrays (H, W)."""
    (h0, h1, lh), (w0, w1, lw) = resize_tables(op)
    iy = Weight(ctx.weight_name("iy"), np.concatenate([h0, h1]).astype(np.int32), "int32_t")
    ix = Weight(ctx.weight_name("ix"), np.concatenate([w0, w1]).astype(np.int32), "int32_t")
    return iy, ix, (lh, lw)


def lower_resize(op: Op, ctx: Context) -> Lowered:
    if op.attrs["mode"] == "bicubic":       # four taps per axis: the cmp library's kernel
        from tinyc.backends.c_ops_compare import lower_resize_cubic
        return lower_resize_cubic(op, ctx)
    n, c, h, w = op.operands[0].type.shape
    _, _, oh, ow = op.result.type.shape
    bilinear = op.attrs["mode"] == "bilinear"
    iy, ix, (lh, lw) = resize_index_weights(op, ctx)
    weights = [iy, ix]
    ly = lx = "0"
    if bilinear:
        wy, wx = Weight(ctx.weight_name("ly"), lh.astype(np.float32)), Weight(ctx.weight_name("lx"), lw.astype(np.float32))
        weights += [wy, wx]
        ly, lx = wy.cname, wx.cname
    param = Param("tinyc_f32_resize_params", ctx.param_name(),
                  tuple((k, str(v)) for k, v in (("planes", n * c), ("h", h), ("w", w), ("oh", oh), ("ow", ow),
                                                 ("bilinear", int(bilinear)))))
    call = Call("tinyc_f32_resize", (ctx.ref(op.operands[0]), ctx.ref(op.result), iy.cname, ix.cname, ly, lx,
                                     "&" + param.cname))
    return Lowered(("RESIZE",), (param,), tuple(weights), (call,))


def mask_bytes(op: Op, ctx: Context) -> Weight:
    """The mask operand (a constant) as 0/1 bytes, in its own (unbroadcast) row-major order."""
    m = ctx.const(op.operands[1])
    if m is None:
        raise BackendError(f"%{op.result.name} = masked_softmax: the C backends need a constant mask", where=op.loc,
                           hint="attention masks come from the frontend as constants")
    return Weight(ctx.weight_name("mask"), (np.asarray(m) != 0).astype(np.uint8).ravel(), "uint8_t")


def masked_walk(op: Op, x_strides: Sequence[int]) -> tuple[list[int], list[int], list[int], int, int, int]:
    """(dims, x strides, mask strides) of the rows (every dim but the axis, coalesced), and the axis's
    length, x stride and mask stride; x_strides: per-dim element strides of x (and of y)."""
    shape, axis = op.operands[0].type.shape, op.attrs["axis"]
    m_str = broadcast_strides(op.operands[1].type.shape, shape)
    other = [d for d in range(len(shape)) if d != axis]
    dims, (xs, ms) = coalesce([shape[d] for d in other], [x_strides[d] for d in other], [m_str[d] for d in other])
    return dims, xs, ms, shape[axis], x_strides[axis], m_str[axis]


def lower_masked_softmax(op: Op, ctx: Context) -> Lowered:
    mask = mask_bytes(op, ctx)
    dims, xs, ms, n, x_ax, m_ax = masked_walk(op, contiguous_strides(op.operands[0].type.shape))
    _check_rank(dims, op)
    param = Param("tinyc_f32_masked_softmax_params", ctx.param_name(),
                  (("rank", str(len(dims))), ("dims", c_ints(dims)), ("x_strides", c_ints(xs)),
                   ("m_strides", c_ints(ms)), ("len", str(n)), ("xs", str(x_ax)), ("ms", str(m_ax))))
    call = Call("tinyc_f32_masked_softmax", (ctx.ref(op.operands[0]), mask.cname, ctx.ref(op.result),
                                             "&" + param.cname))
    return Lowered(("MASKED_SOFTMAX",), (param,), (mask,), (call,))


# ---- int8 (tinyc_kernels_s8.c; planned and emitted by c_ops_int8.Int8Lowering) ------------------------

def _int8():
    from tinyc.backends import c_ops_int8   # c_ops_int8 imports this module
    return c_ops_int8


def plan_conv_transpose2d_s8(low, op: Op, p) -> None:
    p.info["xs"] = low.strides(op, 0, p)
    kh, kw = op.operands[1].type.shape[2:]
    low.kernel_scratch(p, 8 * (kh + kw))        # the (tap, input index) pairs of a row and a pixel


def emit_conv_transpose2d_s8(low, op: Op, ctx, p):
    m8 = _int8()
    x, wv, y = op.operands[0], op.operands[1], op.result
    w = ctx.const(wv)
    b = ctx.const(op.operands[2]) if len(op.operands) > 2 else None
    if w is None or (len(op.operands) > 2 and b is None):
        raise BackendError(f"%{y.name} = conv_transpose2d: weights and bias must be constants", where=op.loc)
    (n, c, h, wd), (o, _, kh, kw) = x.type.shape, w.shape
    _, _, oh, ow = y.type.shape
    a = op.attrs
    stage = iw.out_stage(op, quant.conv_ratios(x.type.quant, wv.type.quant, y.type.quant),
                         None if b is None else np.asarray(b, np.int64), o)
    ww = Weight(ctx.weight_name("w"), np.ascontiguousarray(w.transpose(0, 2, 3, 1)).astype(np.int8).ravel(), "int8_t")
    qw = Weight(ctx.weight_name("q"), stage.records.ravel().astype(np.int32), "int32_t")
    xs, ys = p.info["xs"], m8._out_strides(low, y)
    fields = (("n", n), ("c", c), ("h", h), ("w", wd), ("o", o), ("oh", oh), ("ow", ow), ("kh", kh), ("kw", kw),
              ("sh", a["stride"][0]), ("sw", a["stride"][1]), ("dh", a["dilation"][0]), ("dw", a["dilation"][1]),
              ("pad_top", a["padding"][0]), ("pad_left", a["padding"][1]), ("groups", a["groups"]),
              ("zx", x.type.quant.zero_point[0]), ("zy", stage.zp), ("lo", stage.lo), ("hi", stage.hi),
              ("mode", stage.mode))
    param = Param("tinyc_s8_conv_t_params", ctx.param_name(),
                  tuple((k, str(v)) for k, v in fields) + (("xs", c_ints(xs)), ("ys", c_ints(ys))))
    call = Call("tinyc_s8_conv_transpose2d", (low.operand(op, 0, ctx, p), ww.cname, qw.cname, ctx.ref(y),
                                              ctx.scratch(p.kernel_scratch_at), "&" + param.cname))
    return m8.Lowered8(("CONV_TRANSPOSE2D",), (param,), (ww, qw), (call,))


def plan_strided_s8(low, op: Op, p) -> None:
    p.info["xs"] = low.strides(op, 0, p)


def emit_resize_s8(low, op: Op, ctx, p):
    if op.attrs["mode"] == "bicubic":
        from tinyc.backends.c_ops_compare import emit_resize_cubic_s8
        return emit_resize_cubic_s8(low, op, ctx, p)
    m8 = _int8()
    x, y = op.operands[0], op.result
    n, c, h, w = x.type.shape
    _, _, oh, ow = y.type.shape
    bilinear = op.attrs["mode"] == "bilinear"
    iy, ix, (lh, lw) = resize_index_weights(op, ctx)
    weights = [iy, ix]
    wy = wx = "0"
    if bilinear:
        qy = Weight(ctx.weight_name("wy"), np.concatenate(quant.resize_weights(lh)).astype(np.int32), "int32_t")
        qx = Weight(ctx.weight_name("wx"), np.concatenate(quant.resize_weights(lw)).astype(np.int32), "int32_t")
        weights += [qy, qx]
        wy, wx = qy.cname, qx.cname
    xs, ys = p.info["xs"], m8._out_strides(low, y)
    fields = (("n", n), ("c", c), ("h", h), ("w", w), ("oh", oh), ("ow", ow), ("bilinear", int(bilinear)))
    param = Param("tinyc_s8_resize_params", ctx.param_name(),
                  tuple((k, str(v)) for k, v in fields) + (("xs", c_ints(xs)), ("ys", c_ints(ys))))
    call = Call("tinyc_s8_resize", (low.operand(op, 0, ctx, p), ctx.ref(y), iy.cname, ix.cname, wy, wx,
                                    "&" + param.cname))
    return m8.Lowered8(("RESIZE",), (param,), tuple(weights), (call,))


def emit_masked_softmax_s8(low, op: Op, ctx, p):
    m8 = _int8()
    x, table, y = op.operands[0], op.operands[2], op.result
    mask = mask_bytes(op, ctx)
    shape, axis = x.type.shape, op.attrs["axis"]
    xs, ys = p.info["xs"], m8._out_strides(low, y)
    ms = broadcast_strides(op.operands[1].type.shape, shape)
    other = [d for d in range(len(shape)) if d != axis]
    dims, (sy, sx, sm) = coalesce([shape[d] for d in other], [ys[d] for d in other], [xs[d] for d in other],
                                  [ms[d] for d in other])
    if len(dims) > MAX_RANK_S8:
        raise BackendError(f"%{y.name} = masked_softmax needs {len(dims)} strided dims; the int8 kernels support "
                           f"{MAX_RANK_S8}", where=op.loc, hint="reshape to fewer dims before this op")
    param = Param("tinyc_s8_masked_softmax_params", ctx.param_name(),
                  (("rows", m8.c_iter(dims, [sy, sx, sm])), ("len", str(shape[axis])), ("xs", str(xs[axis])),
                   ("ys", str(ys[axis])), ("ms", str(ms[axis]))))
    call = Call("tinyc_s8_masked_softmax", (low.operand(op, 0, ctx, p), mask.cname, ctx.ref(y), ctx.ref(table),
                                            "&" + param.cname))
    return m8.Lowered8(("MASKED_SOFTMAX",), (param,), (mask,), (call,))


# By the `c` rule (merged into c_ops_int8's _PLANS / _EMIT).
PLANS_S8 = {"conv_transpose": plan_conv_transpose2d_s8, "resample": plan_strided_s8,
            "masked_softmax_axis": plan_strided_s8}
EMIT_S8 = {"conv_transpose": emit_conv_transpose2d_s8, "resample": emit_resize_s8,
           "masked_softmax_axis": emit_masked_softmax_s8}


def _none(op: Op) -> Sequence[int]:
    return ()


def _first(op: Op) -> Sequence[int]:
    return (0,)


# By the `c` rule of the ops' definitions (merged into c_ops.LOWERINGS).
LOWERINGS: dict[str, Lowering] = {
    "conv_transpose": Lowering(lower_conv_transpose2d, _none),
    "resample": Lowering(lower_resize, _none),
    "masked_softmax_axis": Lowering(lower_masked_softmax, _first),
}

# Registered here, not in c_ops (this module imports c_ops): c_ops imports this module last.
c_ops.LOWERINGS.update(LOWERINGS)
