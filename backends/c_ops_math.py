"""C lowerings of the math ops (tinyc.ops.mathops, maximum / minimum of tinyc.ops.elementwise): float
(tinyc_kernels_f32.c) and int8 (tinyc_kernels_s8.c).

The math activations (abs, sqrt, exp, elu, mish, softplus, pow, ...) need nothing here: they are
cases of the float tinyc_act switch (c_ops.lower_act) and int8 tables (lut).

Float rules join c_ops.LOWERINGS (c_ops imports this module last); int8 rules are PLANS_S8 / EMIT_S8,
merged into c_ops_int8's tables, with the c_ops_int8 helpers imported lazily (it imports this module).
Every int8 constant (requantization tables and multipliers, the log2 table) comes from tinyc.quant,
as the interpreter's, so the kernels match it bit for bit.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tinyc import quant
from tinyc.backends import c_ops
from tinyc.backends import int8_weights as iw
from tinyc.backends.c_ops import (Call, Context, Lowered, Lowering, Param, Weight, _check_rank, _rows, _shape,
                                  c_float, c_ints, coalesce, contiguous_strides, lower_binary)
from tinyc.backends.int8_layout import dim_strides, iteration
from tinyc.ir import Op


# ---- float ------------------------------------------------------------------------------------

def _prelu_view(op: Op) -> tuple[int, int, int]:
    """x as [outer, channels, inner] for the slope: per channel of axis 1, or one slope for all."""
    x, w = op.operands
    shape = _shape(x)
    if w.type.numel == 1:
        return 1, 1, x.type.numel
    return shape[0], shape[1], math.prod(shape[2:])


def lower_prelu(op: Op, ctx: Context) -> Lowered:
    x, w = op.operands
    call = Call("tinyc_f32_prelu", (ctx.ref(x), ctx.ref(w), ctx.ref(op.result), *map(str, _prelu_view(op))))
    return Lowered(("PRELU",), (), (), (call,))


def lower_log_softmax(op: Op, ctx: Context) -> Lowered:
    shape, axis = _shape(op.operands[0]), op.attrs["axis"]
    sizes = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
    call = Call("tinyc_f32_log_softmax", (ctx.ref(op.operands[0]), ctx.ref(op.result), *map(str, sizes)))
    return Lowered(("LOG_SOFTMAX",), (), (), (call,))


def _reduce_walk(op: Op) -> tuple[list[int], list[int]]:
    """x's dims (merged where possible) and the result's strides along them (0 on reduced dims)."""
    shape = _shape(op.operands[0])
    axes = set(op.attrs["axes"])
    kept = [1 if i in axes else d for i, d in enumerate(shape)]
    y_str = [0 if i in axes else s for i, s in enumerate(contiguous_strides(kept))]
    dims, (y_str,) = coalesce(shape, y_str)
    _check_rank(dims, op)
    return dims, y_str


def lower_sum(op: Op, ctx: Context) -> Lowered:
    """mean's kernel with a count of 1 (the division by 1.0f is exact)."""
    dims, y_str = _reduce_walk(op)
    param = Param("tinyc_f32_mean_params", ctx.param_name(),
                  (("rows", str(_rows(dims))), ("rank", str(len(dims))), ("dims", c_ints(dims)),
                   ("y_strides", c_ints(y_str)), ("y_size", str(op.result.type.numel)), ("count", c_float(1.0))))
    call = Call("tinyc_f32_mean", (ctx.ref(op.operands[0]), ctx.ref(op.result), "&" + param.cname))
    return Lowered(("MEAN",), (param,), (), (call,))


def lower_extreme(op: Op, ctx: Context) -> Lowered:
    dims, y_str = _reduce_walk(op)
    param = Param("tinyc_f32_extreme_params", ctx.param_name(),
                  (("rows", str(_rows(dims))), ("rank", str(len(dims))), ("dims", c_ints(dims)),
                   ("y_strides", c_ints(y_str)), ("y_size", str(op.result.type.numel)),
                   ("is_min", str(int(_is_min(op))))))
    call = Call("tinyc_f32_reduce_extreme", (ctx.ref(op.operands[0]), ctx.ref(op.result), "&" + param.cname))
    return Lowered(("REDUCE_EXTREME",), (param,), (), (call,))


def _is_min(op: Op) -> bool:
    """amin and minimum keep the smaller side (amax and maximum the larger)."""
    return op.kind == "amin" or op.kind == "minimum"


# ---- int8 (tinyc_kernels_s8.c; planned and emitted by c_ops_int8.Int8Lowering) ----------------

def _s8():
    from tinyc.backends import c_ops_int8   # c_ops_int8 imports this module
    return c_ops_int8


def _q(v):
    return v.type.quant


def _zp(v) -> int:
    return v.type.quant.zero_point[0]


def _rq(ratio: float) -> tuple[int, int]:
    """(M, n) of a ratio for the kernels: requantize = (acc * M + 2^(n-1)) >> n, n = 31 - shift."""
    m, shift = quant.quantize_multiplier(ratio)
    return m, 31 - shift


def _same_layout(self, op: Op, operands: range) -> tuple[int, ...]:
    """The operands stored like the result (same shape and layout): elementwise kernels may write
    over them."""
    out = self.lay.of(op.result)
    return tuple(i for i in operands if op.operands[i].type.shape == op.result.type.shape
                 and np.array_equal(self.lay.of(op.operands[i]), out))


def _plan_minmax(self, op: Op, p) -> None:
    p.inplace = _same_layout(self, op, range(2))


def _plan_prelu(self, op: Op, p) -> None:
    p.inplace = _same_layout(self, op, range(1))


def emit_minmax_s8(self, op: Op, ctx: Context, p):
    s8 = _s8()
    a, b = op.operands
    y = op.result
    shape = y.type.shape
    base, dims, (sy, sa, sb) = iteration(self.lay.of(y), s8._broadcast_off(self, a, shape),
                                         s8._broadcast_off(self, b, shape))
    ta = Weight(ctx.weight_name("ta"), iw.requant_table(_q(a), _q(y)), "int8_t")
    tb = Weight(ctx.weight_name("tb"), iw.requant_table(_q(b), _q(y)), "int8_t")
    it = s8._iter_param(ctx, 0, dims, [sy, sa, sb])
    call = Call("tinyc_s8_minmax", (ctx.ref(a, base[1]), ctx.ref(b, base[2]), ctx.ref(y, base[0]), ta.cname,
                                    tb.cname, "&" + it.cname, str(int(_is_min(op)))))
    return s8.Lowered8(("MINMAX",), (it,), (ta, tb), (call,))


def emit_prelu_s8(self, op: Op, ctx: Context, p):
    """The slope's offset per element: its channel's (axis 1) offset in the slope's own layout."""
    s8 = _s8()
    x, w = op.operands
    y = op.result
    shape = y.type.shape
    woff = self.lay.of(w).ravel()
    if w.type.numel == 1:
        choff = np.zeros(shape, np.int64)
    else:
        choff = np.broadcast_to(woff.reshape((1, -1) + (1,) * (len(shape) - 2)), shape)
    base, dims, (sy, sx, sw) = iteration(self.lay.of(y), self.lay.of(x), choff)
    (mp, np_), (mn, nn) = _rq(quant.rescale_ratio(_q(x), _q(y))), _rq(quant.mul_ratio(_q(x), _q(w), _q(y)))
    fields = (("zx", _zp(x)), ("zs", _zp(w)), ("zy", _zp(y)), ("m_pos", mp), ("n_pos", np_), ("m_neg", mn),
              ("n_neg", nn))
    param = Param("tinyc_s8_prelu_params", ctx.param_name(),
                  (("it", s8.c_iter(dims, [sy, sx, sw])),) + tuple((k, str(v)) for k, v in fields))
    call = Call("tinyc_s8_prelu", (ctx.ref(x, base[1]), ctx.ref(w, base[2]), ctx.ref(y, base[0]),
                                   "&" + param.cname))
    return s8.Lowered8(("PRELU",), (param,), (), (call,))


def _plan_strided(self, op: Op, p) -> None:
    p.info["xs"] = [self.strides(op, 0, p)]


def emit_log_softmax_s8(self, op: Op, ctx: Context, p):
    s8 = _s8()
    x, table, y = op.operands[0], op.operands[1], op.result
    axis, shape = op.attrs["axis"], x.type.shape
    xs, ys = p.info["xs"][0], s8._out_strides(self, y)
    other = [d for d in range(len(shape)) if d != axis]
    (m1, s1), (m2, s2) = quant.log_softmax_multipliers(_q(x))
    t2 = Weight(ctx.weight_name("log2"), quant.log2_table(), "int32_t")
    fields = (("len", shape[axis]), ("xs", xs[axis]), ("ys", ys[axis]), ("zy", quant.LOG_SOFTMAX_OUT.zero_point[0]),
              ("m_d", m1), ("n_d", 31 - s1), ("m_l", m2), ("n_l", 31 - s2))
    param = Param("tinyc_s8_log_softmax_params", ctx.param_name(),
                  (("outer", s8.c_iter([shape[d] for d in other] or [1],
                                       [[ys[d] for d in other] or [0], [xs[d] for d in other] or [0]])),)
                  + tuple((k, str(v)) for k, v in fields))
    call = Call("tinyc_s8_log_softmax", (self.operand(op, 0, ctx, p), ctx.ref(y), ctx.ref(table), t2.cname,
                                         "&" + param.cname))
    return s8.Lowered8(("LOG_SOFTMAX",), (param,), (t2,), (call,))


def _reduce_iters(self, op: Op, p) -> tuple[str, str]:
    """tinyc_s8_iter initializers of the kept dims (s0 = y, s1 = x) and the reduced dims (s1 = x)."""
    s8 = _s8()
    x, y = op.operands[0], op.result
    shape, axes = x.type.shape, op.attrs["axes"]
    xs = p.info["xs"][0]
    kept = [d for d in range(len(shape)) if d not in axes]
    ys = dim_strides(self.lay.of(y).reshape([shape[d] for d in kept] if kept else [1]))
    out = s8.c_iter([shape[d] for d in kept] or [1], [ys, [xs[d] for d in kept] or [0]])
    red = s8.c_iter([shape[d] for d in axes], [[0] * len(axes), [xs[d] for d in axes]])
    return out, red


def emit_sum_s8(self, op: Op, ctx: Context, p):
    """mean's kernel: the sum of centered codes requantized by sx / so (a count of 1)."""
    s8 = _s8()
    x, y = op.operands[0], op.result
    out, red = _reduce_iters(self, op, p)
    m, n = _rq(quant.rescale_ratio(_q(x), _q(y), 1))
    param = Param("tinyc_s8_mean_params", ctx.param_name(),
                  (("out", out), ("red", red), ("zx", str(_zp(x))), ("zy", str(_zp(y))), ("m", str(m)), ("n", str(n))))
    call = Call("tinyc_s8_mean", (self.operand(op, 0, ctx, p), ctx.ref(y), "&" + param.cname))
    return s8.Lowered8(("MEAN",), (param,), (), (call,))


def emit_extreme_s8(self, op: Op, ctx: Context, p):
    s8 = _s8()
    out, red = _reduce_iters(self, op, p)
    param = Param("tinyc_s8_extreme_params", ctx.param_name(),
                  (("out", out), ("red", red), ("is_min", str(int(_is_min(op))))))
    call = Call("tinyc_s8_reduce_extreme", (self.operand(op, 0, ctx, p), ctx.ref(op.result), "&" + param.cname))
    return s8.Lowered8(("REDUCE_EXTREME",), (param,), (), (call,))


# By the `c` rule (merged into c_ops_int8's _PLANS / _EMIT).
PLANS_S8 = {"minmax": _plan_minmax, "channel_slope": _plan_prelu, "log_softmax_axis": _plan_strided,
            "reduce_sum": _plan_strided, "reduce_extreme": _plan_strided}
EMIT_S8 = {"minmax": emit_minmax_s8, "channel_slope": emit_prelu_s8, "log_softmax_axis": emit_log_softmax_s8,
           "reduce_sum": emit_sum_s8, "reduce_extreme": emit_extreme_s8}
# compare, logical, where, cumsum (c_ops_compare registers its float rules in c_ops.LOWERINGS itself)
from tinyc.backends import c_ops_compare  # noqa: E402
PLANS_S8.update(c_ops_compare.PLANS_S8)
EMIT_S8.update(c_ops_compare.EMIT_S8)


def _none(op: Op) -> Sequence[int]:
    return ()


def _first(op: Op) -> Sequence[int]:
    return (0,)


# By the `c` rule of the ops' definitions (merged into c_ops.LOWERINGS).
LOWERINGS: dict[str, Lowering] = {
    "minmax": Lowering(lower_binary, c_ops._same_size_operands),
    "channel_slope": Lowering(lower_prelu, _first),
    "log_softmax_axis": Lowering(lower_log_softmax, _first),
    "reduce_sum": Lowering(lower_sum, _none),
    "reduce_extreme": Lowering(lower_extreme, _none),
}
c_ops.LOWERINGS.update(LOWERINGS)
