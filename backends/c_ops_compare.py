"""C lowerings of comparisons, masks, selection and running sums (tinyc.ops.compare: compare, logical, where,
cumsum) and of bicubic resize (tinyc.ops.spatial's resize with mode "bicubic"), float and int8, calling
runtime_c/tinyc_kernels_compare.c (the "cmp" kernel library).

Float rules join c_ops.LOWERINGS; int8 rules are PLANS_S8 / EMIT_S8, merged into c_ops_int8's tables
through c_ops_math (which c_ops_int8 imports). Every int8 constant (rescale multipliers, requantizing
tables, Q10 cubic weights) comes from the registry and tinyc.quant, as the interpreter's, so the kernels
match it bit for bit.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tinyc import quant
from tinyc.backends import c_ops
from tinyc.backends import int8_weights as iw
from tinyc.backends.c_ops import (Call, Context, Kernel, KernelLibrary, Lowered, Lowering, Param, Weight,
                                  _check_rank, broadcast_strides, c_ints, coalesce, contiguous_strides)
from tinyc.backends.int8_layout import iteration
from tinyc.errors import BackendError
from tinyc.ir import Op
from tinyc.ops.compare import compare_ratios, logical_code, predicate_code
from tinyc.ops.spatial import cubic_tables, cubic_weights_q10

LIBRARY = KernelLibrary("cmp", "TINYC_CMP_", "tinyc_kernels_compare.c",
                        ("tinyc_kernels_compare.h", "tinyc_kernels_compare.c"))
MAX_RANK = 8   # TINYC_CMP_MAX_RANK


def _k(name: str) -> Kernel:
    return Kernel(LIBRARY.key, name)


def _iter(ctx, k: int, dims: Sequence[int], strides: Sequence[Sequence[int]]) -> Param:
    return Param("tinyc_cmp_iter", ctx.param_name(k), _iter_fields(dims, strides))


def _iter_fields(dims, strides) -> tuple[tuple[str, str], ...]:
    if len(dims) > MAX_RANK:
        raise BackendError(f"a strided walk needs {len(dims)} dims; the kernels support {MAX_RANK}",
                           hint="reshape to fewer dims before this op")
    s = [c_ints(x) for x in strides] + ["{0}"] * (4 - len(strides))
    return ("rank", str(len(dims))), ("dims", c_ints(dims)), ("s", "{" + ", ".join(s) + "}")


def _iter_init(dims, strides) -> str:
    return "{" + ", ".join(v for _, v in _iter_fields(dims, strides)) + "}"


# ---- float ------------------------------------------------------------------------------------------

def _float_walk(op: Op, ctx) -> Param:
    """Result (contiguous) and operands (broadcast) walked together, coalesced."""
    out = op.result.type.shape
    dims, strides = coalesce(out, contiguous_strides(out), *(broadcast_strides(v.type.shape, out) for v in op.operands))
    _check_rank(dims, op)
    return _iter(ctx, 0, dims, strides)


def lower_compare(op: Op, ctx: Context) -> Lowered:
    a, b = op.operands
    it = _float_walk(op, ctx)
    call = Call("tinyc_cmp_compare_f32", (ctx.ref(a), ctx.ref(b), ctx.ref(op.result), "&" + it.cname,
                                          str(predicate_code(op))))
    return Lowered((_k("COMPARE_F32"),), (it,), (), (call,))


def lower_logical(op: Op, ctx: Context) -> Lowered:
    it = _float_walk(op, ctx)
    a = op.operands[0]
    b = ctx.ref(op.operands[1]) if len(op.operands) > 1 else "0"
    call = Call("tinyc_cmp_logical_f32", (ctx.ref(a), b, ctx.ref(op.result), "&" + it.cname, str(logical_code(op))))
    return Lowered((_k("LOGICAL_F32"),), (it,), (), (call,))


def lower_where(op: Op, ctx: Context) -> Lowered:
    it = _float_walk(op, ctx)
    call = Call("tinyc_cmp_where_f32", (*(ctx.ref(v) for v in op.operands), ctx.ref(op.result), "&" + it.cname))
    return Lowered((_k("WHERE_F32"),), (it,), (), (call,))


def _cumsum_fields(shape, axis: int, xs, ys) -> tuple[tuple[str, str], ...]:
    """tinyc_cmp_cumsum_params' walk: every line along `axis` (s[0] = y, s[1] = x strides)."""
    other = [d for d in range(len(shape)) if d != axis]
    dims = [shape[d] for d in other] or [1]
    outer = _iter_init(dims, [[ys[d] for d in other] or [0], [xs[d] for d in other] or [0]])
    return ("outer", outer), ("len", str(shape[axis])), ("xs", str(xs[axis])), ("ys", str(ys[axis]))


def lower_cumsum(op: Op, ctx: Context) -> Lowered:
    shape = op.operands[0].type.shape
    st = contiguous_strides(shape)
    param = Param("tinyc_cmp_cumsum_params", ctx.param_name(), _cumsum_fields(shape, op.attrs["axis"], st, st))
    call = Call("tinyc_cmp_cumsum_f32", (ctx.ref(op.operands[0]), ctx.ref(op.result), "&" + param.cname))
    return Lowered((_k("CUMSUM_F32"),), (param,), (), (call,))


def _cubic_index_weights(op: Op, ctx, q10: bool) -> list[Weight]:
    """iy, ix (int32, [4, out] tap-major) and wy, wx (float, or int32 Q10) of a bicubic resize."""
    (hi, hw), (wi, ww) = cubic_tables(op)
    out = [Weight(ctx.weight_name("iy"), hi.astype(np.int32).ravel(), "int32_t"),
           Weight(ctx.weight_name("ix"), wi.astype(np.int32).ravel(), "int32_t")]
    if q10:
        out += [Weight(ctx.weight_name("wy"), cubic_weights_q10(hw).astype(np.int32).ravel(), "int32_t"),
                Weight(ctx.weight_name("wx"), cubic_weights_q10(ww).astype(np.int32).ravel(), "int32_t")]
    else:
        out += [Weight(ctx.weight_name("wy"), hw.astype(np.float32).ravel()),
                Weight(ctx.weight_name("wx"), ww.astype(np.float32).ravel())]
    return out


def _cubic_param(op: Op, ctx, xs, ys) -> Param:
    n, c, h, w = op.operands[0].type.shape
    _, _, oh, ow = op.result.type.shape
    fields = tuple((k, str(v)) for k, v in (("n", n), ("c", c), ("h", h), ("w", w), ("oh", oh), ("ow", ow)))
    return Param("tinyc_cmp_cubic_params", ctx.param_name(), fields + (("xs", c_ints(xs)), ("ys", c_ints(ys))))


def lower_resize_cubic(op: Op, ctx: Context) -> Lowered:
    """resize mode "bicubic" (c_ops_spatial's resize lowering hands it here)."""
    weights = _cubic_index_weights(op, ctx, q10=False)
    param = _cubic_param(op, ctx, contiguous_strides(op.operands[0].type.shape),
                         contiguous_strides(op.result.type.shape))
    call = Call("tinyc_cmp_cubic_f32", (ctx.ref(op.operands[0]), ctx.ref(op.result), *(w.cname for w in weights),
                                        "&" + param.cname))
    return Lowered((_k("CUBIC_F32"),), (param,), tuple(weights), (call,))


# ---- int8 (planned and emitted by c_ops_int8.Int8Lowering) ------------------------------------------

def _s8():
    from tinyc.backends import c_ops_int8   # c_ops_int8 imports this module (through c_ops_math)
    return c_ops_int8


def _zp(v) -> int:
    return v.type.quant.zero_point[0]


def _plan_elementwise(low, op: Op, p) -> None:
    """Operands stored like the result may be overwritten (each element is read before it is written)."""
    out = low.lay.of(op.result)
    p.inplace = tuple(i for i, v in enumerate(op.operands)
                      if v.type.shape == op.result.type.shape and np.array_equal(low.lay.of(v), out))


def _s8_walk(low, op: Op, ctx) -> tuple[list[int], Param]:
    s8 = _s8()
    shape = op.result.type.shape
    base, dims, strides = iteration(low.lay.of(op.result), *(s8._broadcast_off(low, v, shape) for v in op.operands))
    return base, _iter(ctx, 0, dims, strides)


def emit_compare_s8(low, op: Op, ctx, p):
    s8 = _s8()
    a, b = op.operands
    qa, qb = a.type.quant, b.type.quant
    base, it = _s8_walk(low, op, ctx)
    (ma, sa), (mb, sb) = (quant.quantize_multiplier(r) for r in compare_ratios(qa, qb))
    fields = (("pred", predicate_code(op)), ("za", _zp(a)), ("zb", _zp(b)), ("same", int(qa.scale[0] == qb.scale[0])),
              ("ma", ma), ("na", 31 - sa), ("mb", mb), ("nb", 31 - sb))
    param = Param("tinyc_cmp_s8_params", ctx.param_name(1), tuple((k, str(v)) for k, v in fields))
    call = Call("tinyc_cmp_compare_s8", (ctx.ref(a, base[1]), ctx.ref(b, base[2]), ctx.ref(op.result, base[0]),
                                         "&" + it.cname, "&" + param.cname))
    return s8.Lowered8((_k("COMPARE_S8"),), (it, param), (), (call,))


def emit_logical_s8(low, op: Op, ctx, p):
    s8 = _s8()
    base, it = _s8_walk(low, op, ctx)
    a = op.operands[0]
    two = len(op.operands) > 1
    b = ctx.ref(op.operands[1], base[2]) if two else "0"
    zb = _zp(op.operands[1]) if two else 0
    call = Call("tinyc_cmp_logical_s8", (ctx.ref(a, base[1]), b, ctx.ref(op.result, base[0]), "&" + it.cname,
                                         str(logical_code(op)), str(_zp(a)), str(zb)))
    return s8.Lowered8((_k("LOGICAL_S8"),), (it,), (), (call,))


def emit_where_s8(low, op: Op, ctx, p):
    """One requantizing table per branch (iw.requant_table: the interpreter's requant_out, code by code)."""
    s8 = _s8()
    c, a, b = op.operands
    y = op.result
    base, it = _s8_walk(low, op, ctx)
    ta = Weight(ctx.weight_name("ta"), iw.requant_table(a.type.quant, y.type.quant), "int8_t")
    tb = Weight(ctx.weight_name("tb"), iw.requant_table(b.type.quant, y.type.quant), "int8_t")
    call = Call("tinyc_cmp_where_s8", (ctx.ref(c, base[1]), ctx.ref(a, base[2]), ctx.ref(b, base[3]),
                                       ctx.ref(y, base[0]), "&" + it.cname, str(_zp(c)), ta.cname, tb.cname))
    return s8.Lowered8((_k("WHERE_S8"),), (it,), (ta, tb), (call,))


def _plan_strided(low, op: Op, p) -> None:
    p.info["xs"] = low.strides(op, 0, p)


def emit_cumsum_s8(low, op: Op, ctx, p):
    s8 = _s8()
    x, y = op.operands[0], op.result
    m, shift = quant.quantize_multiplier(quant.rescale_ratio(x.type.quant, y.type.quant))
    fields = _cumsum_fields(x.type.shape, op.attrs["axis"], p.info["xs"], s8._out_strides(low, y))
    fields += tuple((k, str(v)) for k, v in (("zx", _zp(x)), ("zy", _zp(y)), ("m", m), ("n", 31 - shift)))
    param = Param("tinyc_cmp_cumsum_params", ctx.param_name(), fields)
    call = Call("tinyc_cmp_cumsum_s8", (low.operand(op, 0, ctx, p), ctx.ref(y), "&" + param.cname))
    return s8.Lowered8((_k("CUMSUM_S8"),), (param,), (), (call,))


def emit_resize_cubic_s8(low, op: Op, ctx, p):
    """resize mode "bicubic" in int8 (c_ops_spatial's int8 resize hands it here; planned by its rule)."""
    s8 = _s8()
    weights = _cubic_index_weights(op, ctx, q10=True)
    param = _cubic_param(op, ctx, p.info["xs"], s8._out_strides(low, op.result))
    call = Call("tinyc_cmp_cubic_s8", (low.operand(op, 0, ctx, p), ctx.ref(op.result), *(w.cname for w in weights),
                                       "&" + param.cname))
    return s8.Lowered8((_k("CUBIC_S8"),), (param,), tuple(weights), (call,))


# By the `c` rule (merged into c_ops_int8's tables through c_ops_math).
PLANS_S8 = {"comparison": _plan_elementwise, "boolean": _plan_elementwise, "select": _plan_elementwise,
            "scan": _plan_strided}
EMIT_S8 = {"comparison": emit_compare_s8, "boolean": emit_logical_s8, "select": emit_where_s8, "scan": emit_cumsum_s8}


def _first(op: Op) -> Sequence[int]:
    return (0,)


# By the `c` rule of the ops' definitions (merged into c_ops.LOWERINGS).
LOWERINGS: dict[str, Lowering] = {
    "comparison": Lowering(lower_compare, c_ops._same_size_operands),
    "boolean": Lowering(lower_logical, c_ops._same_size_operands),
    "select": Lowering(lower_where, c_ops._same_size_operands),
    "scan": Lowering(lower_cumsum, _first),
}
c_ops.LOWERINGS.update(LOWERINGS)
