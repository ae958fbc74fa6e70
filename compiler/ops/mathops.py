"""The long tail of math: prelu, log_softmax, the reductions sum, amax, amin (mean's shape rule), and the
activations signum (torch.sign), erf, log_sigmoid and atan.

int8 forms (docs/quantization.md):
- prelu(x, slope): the slope is an i8 operand (quantized per tensor like any constant operand of an
  elementwise op); positive inputs are requantized by sx / so, negative ones multiply by the slope
  code, (qx - zx)(qs - zs), and are requantized by sx ss / so: two multipliers, the per-channel part
  is the slope's integer code.
- log_softmax(x, exp_table): the result's quantization is fixed (scale 16/256, zp 127: [-16, 0], as
  TFLite), the exp table is softmax's; the log of the table sum is an integer log2 (tinyc.quant).
- sum: the sum of centered codes requantized by sx / so (mean with a count of 1); amax / amin
  keep their input's quantization and pick codes.
"""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.ops.activations import _erf, activation_op
from tinyc.ops.core import (Activation, F, OpDef, Trait, act_q, axis_attr, fmt_shape, int_all, keeps_batch_unary, need,
                            register, same_dtype, sample, torch)
from tinyc.ops.pooling import _mean_shape
from tinyc.ops.refs import centered, qparams, requant_out


# ---- prelu ------------------------------------------------------------------------------------

def _prelu_shape(ts, a):
    x, w = ts
    same_dtype(ts)
    need(w.rank == 1, f"slope must be 1-D ([C] or [1]), got shape {fmt_shape(w.shape)}")
    channels = x.shape[1] if x.rank >= 2 else 1
    need(w.shape[0] in (1, channels), f"slope has {w.shape[0]} values; the input {fmt_shape(x.shape)} has "
         f"{channels} channels (axis 1)", "one slope, or one per channel")
    return x.shape


def slope_view(x: np.ndarray, w):
    """The slope shaped to broadcast against x along axis 1 (a single slope as is)."""
    if w.shape[0] == 1:
        return w.reshape(())
    return w.reshape((1, -1) + (1,) * (x.ndim - 2))


def _prelu(op, x, w):
    return np.where(x > 0, x, slope_view(x, w) * x)


def _prelu_int(op, x, w):
    dx = centered(op, 0, x)
    ds = slope_view(x, centered(op, 1, w))
    out = op.result.type.quant
    pos = requant_out(op, dx, quant.rescale_ratio(qparams(op, 0), out))
    neg = requant_out(op, dx * ds, quant.mul_ratio(qparams(op, 0), qparams(op, 1), out))
    return np.where(dx > 0, pos, neg).astype(np.int8)


def _torch_prelu(op, x, w):
    return F.prelu(x, w)


def _slopes(rng, n):
    return rng.uniform(-0.5, 0.5, n).astype(np.float32)


register(OpDef(
    "prelu", _prelu_shape, 2, 2, doc="x > 0 ? x : slope x, slope [C] along axis 1 or [1]",
    ref=_prelu, ref_int=_prelu_int, torch=_torch_prelu, trainable=(1,), int_operands=int_all, int8="same",
    c="channel_slope", channels="slope_per_channel", keeps_batch=keeps_batch_unary,
    samples=lambda rng: [sample((2, 3, 4, 5), _slopes(rng, 3)), sample((2, 6), np.array([0.25], np.float32)),
                         sample((2, 4, 7), _slopes(rng, 4))]))


# ---- log_softmax ------------------------------------------------------------------------------

def _log_softmax_shape(ts, a):
    axis_attr(a, "axis", ts[0].rank)
    want = 1 if ts[0].quant is None else 2
    need(len(ts) == want, f"{'int8' if want == 2 else 'float'} log_softmax takes {want} operands, got {len(ts)}",
         "the int8 form is log_softmax(x, exp_table)")
    return ts[0].shape


def _log_softmax_operands(ts, a):
    act_q(ts[0], "input")
    need(ts[1].dtype == "i32" and ts[1].shape == (256,), "exp table must be i32 [256]")
    need(ts[0].shape[a["axis"]] <= quant.SOFTMAX_MAX_LEN,
         f"log_softmax axis has {ts[0].shape[a['axis']]} elements; the int8 form allows {quant.SOFTMAX_MAX_LEN}")


def _log_softmax_result(ts, result):
    if result.dtype == "f32" or ts[0].quant is None:
        return
    act_q(result, "result")
    need(result.quant == quant.LOG_SOFTMAX_OUT, "int8 log_softmax output must have scale 1/16, zp 127")


def _log_softmax(op, x):
    axis = op.attrs["axis"]
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _log_softmax_int(op, x, table):
    """d = row max - q; out = 127 - round((sx d + ln(sum exp_table[d])) * 16), in integers."""
    axis, xi = op.attrs["axis"], x.astype(np.int64)
    d = xi.max(axis=axis, keepdims=True) - xi
    total = table.astype(np.int64)[d].sum(axis=axis, keepdims=True)
    return quant.log_softmax_codes(d, quant.log2_q16(total), qparams(op, 0)).astype(np.int8)


register(OpDef(
    "log_softmax", _log_softmax_shape, 1, 2, {"axis": int},
    doc="log(softmax(x)) along axis (int8: log_softmax(x, exp_table), output scale 1/16 zp 127)",
    ref=_log_softmax, ref_int=_log_softmax_int, torch=lambda op, x: torch.log_softmax(x, dim=op.attrs["axis"]),
    int_operands=_log_softmax_operands, result_quant_rule=_log_softmax_result, int8="log_exp_table",
    c="log_softmax_axis", channels="along_axis",
    keeps_batch=lambda a, types, flags, result: flags[0] and not any(flags[1:]) and a["axis"] != 0,
    samples=lambda rng: [sample((2, 10), axis=1), sample((2, 3, 4), axis=1), sample((3, 5), axis=0)]))


# ---- sum, amax, amin ----------------------------------------------------------------------------

def _sum_int(op, x):
    total = centered(op, 0, x).sum(axis=tuple(op.attrs["axes"]), keepdims=op.attrs["keepdim"])
    return requant_out(op, total, quant.rescale_ratio(qparams(op, 0), op.result.type.quant, 1))


def _reduce_samples(rng):
    return [sample((2, 3, 4, 5), axes=[2, 3], keepdim=True), sample((2, 6, 3), axes=[1], keepdim=False),
            sample((2, 3), axes=[0, 1], keepdim=False)]


def _keeps_batch(a, types, flags, result) -> bool:
    return 0 not in a["axes"]


register(OpDef(
    "sum", _mean_shape, 1, 1, {"axes": list[int], "keepdim": bool}, doc="sum over axes",
    ref=lambda op, x: x.sum(axis=tuple(op.attrs["axes"]), keepdims=op.attrs["keepdim"]), ref_int=_sum_int,
    torch=lambda op, x: torch.sum(x, dim=tuple(op.attrs["axes"]), keepdim=op.attrs["keepdim"]),
    int_operands=int_all, int8="same", c="reduce_sum", channels="reduce", keeps_batch=_keeps_batch,
    samples=_reduce_samples))


def _extreme(kind: str, fn, torch_fn, doc: str) -> None:
    def ref(op, x):
        return fn(x, axis=tuple(op.attrs["axes"]), keepdims=op.attrs["keepdim"])
    register(OpDef(
        kind, _mean_shape, 1, 1, {"axes": list[int], "keepdim": bool}, traits=Trait.SAME_QUANT, doc=doc,
        ref=ref, ref_int=ref, torch=lambda op, x: torch_fn(x, dim=tuple(op.attrs["axes"]), keepdim=op.attrs["keepdim"]),
        int_operands=int_all, int8="same", c="reduce_extreme", channels="reduce", keeps_batch=_keeps_batch,
        samples=_reduce_samples))


_extreme("amax", np.max, lambda x, dim, keepdim: torch.amax(x, dim=dim, keepdim=keepdim),
         "max over axes (NaN wins; int8: on codes, same quant)")
_extreme("amin", np.min, lambda x, dim, keepdim: torch.amin(x, dim=dim, keepdim=keepdim),
         "min over axes (NaN wins; int8: on codes, same quant)")


# ---- signum, erf, log_sigmoid (activations: float tinyc_act cases, int8 tables) ----------------

def _signum(x):
    """-1, 0 or 1 (PyTorch's torch.sign: 0 at -0.0 and at NaN)."""
    return np.where(x > 0, 1.0, np.where(x < 0, -1.0, 0.0))


def _log_sigmoid(x):
    """log(1 / (1 + e^-x)) = min(x, 0) - log1p(e^-|x|), without overflow."""
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


# `signum`, not `sign`: `sign` is binarize's 1-bit op
activation_op(Activation("signum", lambda x, p: _signum(x), lambda x, p: torch.sign(x), c_code=19,
                         doc="-1, 0 or 1 by the sign of x (torch.sign; 0 at NaN)"))
activation_op(Activation("erf", lambda x, p: _erf(x), lambda x, p: torch.erf(x), c_code=20,
                         doc="the error function"))
activation_op(Activation("log_sigmoid", lambda x, p: _log_sigmoid(x),
                         lambda x, p: torch.nn.functional.logsigmoid(x), c_code=21,
                         doc="log(sigmoid(x)) (F.logsigmoid)"))
activation_op(Activation("atan", lambda x, p: np.arctan(x), lambda x, p: torch.atan(x), c_code=22,
                         doc="arctangent, in (-pi/2, pi/2)"))
