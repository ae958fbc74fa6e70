"""Pooling and reductions: max_pool2d, avg_pool2d, mean, softmax."""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.ops import refs
from tinyc.ops.core import (F, OpDef, Trait, act_q, axis_attr, int_all, int_list, keeps_batch_unary, need,
                            rank_is, register, sample, torch, window_out)
from tinyc.ops.layers import WINDOW_ATTRS
from tinyc.ops.refs import centered, qparams, requant_out


def _pool_shape(ts, a, dilation):
    x = ts[0]
    rank_is(x, 4, "input")
    n, c, h, w = x.shape
    kh, kw = int_list(a, "kernel", 2, 1)
    sh, sw = int_list(a, "stride", 2, 1)
    top, left, bottom, right = int_list(a, "padding", 4, 0)
    ceil = a["ceil_mode"]
    return (n, c, window_out(h, kh, sh, dilation[0], top, bottom, ceil),
            window_out(w, kw, sw, dilation[1], left, right, ceil))


def _torch_max_pool2d(op, x):
    hw, kernel, stride, dilation, padding, ceil = refs.window_args(op, op.attrs["dilation"])
    (oh, ow), pads = refs.pool_geometry(hw, kernel, stride, dilation, padding, ceil)
    y = F.max_pool2d(refs.torch_pad_hw(x, *pads, value=float("-inf")), kernel, stride, 0, dilation)
    return y[..., :oh, :ow]


def _torch_avg_pool2d(op, x):
    hw, kernel, stride, dilation, padding, ceil = refs.window_args(op, (1, 1))
    (oh, ow), pads = refs.pool_geometry(hw, kernel, stride, dilation, padding, ceil)
    total = F.avg_pool2d(refs.torch_pad_hw(x, *pads), kernel, stride, 0, divisor_override=1)[..., :oh, :ow]
    divisor = refs.torch_avg_divisors(hw, (oh, ow), kernel, stride, padding, bool(op.attrs["count_include_pad"]))
    return total / torch.as_tensor(divisor, dtype=x.dtype, device=x.device)


def _avg_pool2d(op, x):
    total, divisor = refs.avg_sum(op, x)
    return total / divisor


def _avg_pool2d_int(op, x):
    total, divisor = refs.avg_sum(op, centered(op, 0, x))
    return quant.saturate(quant.div_round(total, divisor) + qparams(op, 0).zero_point[0]).astype(np.int8)


register(OpDef(
    "max_pool2d", lambda ts, a: _pool_shape(ts, a, int_list(a, "dilation", 2, 1)), 1, 1,
    {"kernel": list[int], **WINDOW_ATTRS, "dilation": list[int], "ceil_mode": bool}, traits=Trait.SAME_QUANT,
    doc="max over windows (padding is -inf)",
    ref=lambda op, x: refs.pool_windows(op, x, -np.inf, op.attrs["dilation"]).max(axis=(4, 5)),
    ref_int=lambda op, x: refs.pool_windows(op, x, quant.QMIN, op.attrs["dilation"]).max(axis=(4, 5)),
    torch=_torch_max_pool2d, int_operands=int_all, int8="same", c="pool", channels="window", keeps_batch=keeps_batch_unary,
    samples=lambda rng: [sample((1, 2, 7, 7), kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], dilation=[1, 1],
                                ceil_mode=False),
                         sample((1, 3, 8, 6), kernel=[2, 3], stride=[3, 2], padding=[0, 1, 0, 1], dilation=[1, 1],
                                ceil_mode=True)]))

register(OpDef(
    "avg_pool2d", lambda ts, a: _pool_shape(ts, a, (1, 1)), 1, 1,
    {"kernel": list[int], **WINDOW_ATTRS, "ceil_mode": bool, "count_include_pad": bool}, traits=Trait.SAME_QUANT,
    doc="average over windows, PyTorch's divisor rules",
    ref=_avg_pool2d, ref_int=_avg_pool2d_int, torch=_torch_avg_pool2d, int_operands=int_all, int8="same", c="pool",
    channels="window", keeps_batch=keeps_batch_unary,
    samples=lambda rng: [sample((1, 2, 7, 7), kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], ceil_mode=False,
                                count_include_pad=True),
                         sample((1, 3, 8, 6), kernel=[2, 3], stride=[3, 2], padding=[0, 1, 0, 1], ceil_mode=True,
                                count_include_pad=False)]))


# ---- mean -------------------------------------------------------------------------------------

def _mean_shape(ts, a):
    shape, axes = ts[0].shape, a["axes"]
    need(len(axes) > 0 and axes == sorted(set(axes)) and all(0 <= x < len(shape) for x in axes),
         f"axes {axes} must be sorted, distinct and in [0, {len(shape)})")
    if a["keepdim"]:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _mean_int(op, x):
    axes = tuple(op.attrs["axes"])
    total = centered(op, 0, x).sum(axis=axes, keepdims=op.attrs["keepdim"])
    count = int(np.prod([x.shape[i] for i in axes]))
    return requant_out(op, total, quant.rescale_ratio(qparams(op, 0), op.result.type.quant, count))


register(OpDef(
    "mean", _mean_shape, 1, 1, {"axes": list[int], "keepdim": bool}, doc="mean over axes",
    ref=lambda op, x: x.mean(axis=tuple(op.attrs["axes"]), keepdims=op.attrs["keepdim"]), ref_int=_mean_int,
    torch=lambda op, x: torch.mean(x, dim=tuple(op.attrs["axes"]), keepdim=op.attrs["keepdim"]),
    int_operands=int_all, int8="same", c="reduce", channels="reduce",
    keeps_batch=lambda a, types, flags, result: 0 not in a["axes"],
    samples=lambda rng: [sample((2, 3, 4, 5), axes=[2, 3], keepdim=True), sample((2, 6, 3), axes=[1], keepdim=False)]))


# ---- softmax ----------------------------------------------------------------------------------

def _softmax_shape(ts, a):
    axis_attr(a, "axis", ts[0].rank)
    want = 1 if ts[0].quant is None else 2
    need(len(ts) == want, f"{'int8' if want == 2 else 'float'} softmax takes {want} operands, got {len(ts)}",
         "the int8 form is softmax(x, exp_table)")
    return ts[0].shape


def _softmax_operands(ts, a):
    act_q(ts[0], "input")
    need(ts[1].dtype == "i32" and ts[1].shape == (256,), "exp table must be i32 [256]")
    need(ts[0].shape[a["axis"]] <= quant.SOFTMAX_MAX_LEN,
         f"softmax axis has {ts[0].shape[a['axis']]} elements; the int8 form allows {quant.SOFTMAX_MAX_LEN}")


def _softmax_result(ts, result):
    if result.dtype == "f32" or ts[0].quant is None:
        return
    act_q(result, "result")
    need(result.quant == quant.SOFTMAX_OUT, "int8 softmax output must have scale 1/256, zp -128")


def _softmax(op, x):
    axis = op.attrs["axis"]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_int(op, x, table):
    """e = table[row max - q]; out = round(256 * e / sum(e)) - 128."""
    axis, xi = op.attrs["axis"], x.astype(np.int64)
    e = table.astype(np.int64)[xi.max(axis=axis, keepdims=True) - xi]
    y = quant.div_round(e << 8, e.sum(axis=axis, keepdims=True)) + quant.QMIN
    return quant.saturate(y).astype(np.int8)


register(OpDef(
    "softmax", _softmax_shape, 1, 2, {"axis": int}, doc="softmax along axis (int8: softmax(x, exp_table))",
    ref=_softmax, ref_int=_softmax_int, torch=lambda op, x: torch.softmax(x, dim=op.attrs["axis"]),
    int_operands=_softmax_operands, result_quant_rule=_softmax_result, int8="exp_table", c="softmax_axis", channels="along_axis",
    prepare="additive_mask",
    keeps_batch=lambda a, types, flags, result: flags[0] and not any(flags[1:]) and a["axis"] != 0,
    samples=lambda rng: [sample((2, 10), axis=1), sample((2, 3, 4), axis=1)]))
