"""Comparisons, masks and selection with a runtime condition: compare (gt, ge, lt, le, eq, ne), logical
(and, or, xor, not), where; and the running sum cumsum.

Masks (docs/ir.md "Masks"): a comparison's result is a float tensor of 0.0 and 1.0 (false, true), not a
dtype of its own, so a mask flows through every op a float tensor does (reshape, expand, mul by a mask,
x.float(), sum of a mask) and the planner, the layouts and the C emitter need nothing new. A condition
(where, logical) is true where it is non-zero, as bool(x) in PyTorch. In int8 a mask is an i8 tensor
with the fixed quantization quant.MASK_OUT (scale 1, zero point 0): codes 0 and 1, which dequantize to
exactly 0.0 and 1.0; an int8 condition is true where its code differs from its zero point.

int8 forms (docs/quantization.md):
- compare(a, b): both centered operands, shifted left by quant.ADD_SHIFT, are rescaled to the common
  scale 2 max(sa, sb) exactly as add's operands are, and compared; on one scale that is the comparison
  of the centered codes (the rescale by exactly 1/2 is a shift).
- logical: on truth values (code != zero point).
- where(c, a, b): a and b each requantized once to the result's quantization (a 256-entry table per
  branch in C), picked by c's truth: no product by the mask and no second rounding.
- cumsum: the running sum of centered codes in int32, requantized once by sx / so.
"""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.ops.core import (OpDef, act_q, axis_attr, broadcast, int_all, keeps_batch_broadcast, need,
                            register, same_dtype, sample, torch)
from tinyc.ops.refs import centered, qparams, requant_out

# ---- compare ----------------------------------------------------------------------------------------

# predicate -> (numpy, torch method name, C code TINYC_CMP_<NAME>)
PREDICATES = {"gt": (np.greater, "gt", 0), "ge": (np.greater_equal, "ge", 1), "lt": (np.less, "lt", 2),
              "le": (np.less_equal, "le", 3), "eq": (np.equal, "eq", 4), "ne": (np.not_equal, "ne", 5)}
LOGICAL = {"and": (np.logical_and, 0), "or": (np.logical_or, 1), "xor": (np.logical_xor, 2), "not": (None, 3)}


def predicate_code(op) -> int:
    """The C kernels' code of a compare op's predicate (TINYC_CMP_GT ... TINYC_CMP_NE)."""
    return PREDICATES[op.attrs["cmp"]][2]


def logical_code(op) -> int:
    """The C kernels' code of a logical op's function (TINYC_LOGIC_AND ... TINYC_LOGIC_NOT)."""
    return LOGICAL[op.attrs["fn"]][1]


def _mask_result(ts, result):
    """An int8 compare / logical result is a mask: i8 with quant.MASK_OUT."""
    if result.dtype == "f32" or ts[0].quant is None:
        return
    act_q(result, "result")
    need(result.quant == quant.MASK_OUT, "an int8 mask (compare, logical) must have scale 1, zp 0",
         "quantize-int8 fixes it (codes 0 and 1)")


def _compare_shape(ts, a):
    need(a["cmp"] in PREDICATES, f"cmp must be one of {', '.join(map(repr, PREDICATES))}, got {a['cmp']!r}")
    same_dtype(ts)
    return broadcast(ts[0].shape, ts[1].shape)


def _compare(op, a, b):
    return PREDICATES[op.attrs["cmp"]][0](a, b).astype(np.float64)


def compare_ratios(qa, qb) -> tuple[float, float]:
    """compare's rescale of each centered operand (shifted by ADD_SHIFT) to 2 max(sa, sb): add's ratios."""
    twice_max = 2.0 * max(qa.scale[0], qb.scale[0])
    return qa.scale[0] / twice_max, qb.scale[0] / twice_max


def _compare_int(op, a, b):
    ra, rb = compare_ratios(qparams(op, 0), qparams(op, 1))
    a2 = quant.requantize(centered(op, 0, a) << quant.ADD_SHIFT, *quant.quantize_multiplier(ra))
    b2 = quant.requantize(centered(op, 1, b) << quant.ADD_SHIFT, *quant.quantize_multiplier(rb))
    return PREDICATES[op.attrs["cmp"]][0](a2, b2).astype(np.int8)


def _torch_compare(op, a, b):
    return getattr(torch, PREDICATES[op.attrs["cmp"]][1])(a, b).to(a.dtype)


def _rand(rng, *shape):
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def _compare_samples(rng):
    return [sample((2, 3, 4), _rand(rng, 3, 4), cmp="gt"), sample((1, 6), (1, 6), cmp="ge"),
            sample((2, 1, 5), (3, 1), cmp="lt"), sample((2, 5), np.array(0.25, np.float32), cmp="le"),
            sample((2, 6), np.round(_rand(rng, 2, 6)), cmp="eq"), sample((3, 4), (4,), cmp="ne")]


register(OpDef(
    "compare", _compare_shape, 2, 2, {"cmp": str},
    doc="a cmp b (gt, ge, lt, le, eq, ne) with broadcasting: a mask, 1.0 where true, 0.0 where false "
        "(int8: both operands rescaled as add's, codes 0/1 with scale 1, zp 0)",
    ref=_compare, ref_int=_compare_int, torch=_torch_compare, int_operands=int_all, result_quant_rule=_mask_result,
    int8="mask", c="comparison", channels="broadcast", keeps_batch=keeps_batch_broadcast, samples=_compare_samples))


# ---- logical --------------------------------------------------------------------------------------------

def _logical_shape(ts, a):
    fn = a["fn"]
    need(fn in LOGICAL, f"fn must be one of {', '.join(map(repr, LOGICAL))}, got {fn!r}")
    need(len(ts) == (1 if fn == "not" else 2), f"logical {fn} takes {1 if fn == 'not' else 2} operands, got {len(ts)}")
    same_dtype(ts)
    return broadcast(*(t.shape for t in ts))


def _truth(op, i, x) -> np.ndarray:
    """Operand i is true where non-zero (int8: where its code differs from its zero point)."""
    return (centered(op, i, x) if op.operands[i].type.quant is not None else x) != 0


def _logical(op, *xs):
    fn = op.attrs["fn"]
    truths = [_truth(op, i, x) for i, x in enumerate(xs)]
    y = ~truths[0] if fn == "not" else LOGICAL[fn][0](*truths)
    return y.astype(np.int8 if op.operands[0].type.quant is not None else np.float64)


def _torch_logical(op, *xs):
    fn = op.attrs["fn"]
    if fn == "not":
        return torch.logical_not(xs[0]).to(xs[0].dtype)
    return getattr(torch, f"logical_{fn}")(xs[0], xs[1]).to(xs[0].dtype)


def _mask(rng, *shape):
    return (rng.uniform(size=shape) < 0.5).astype(np.float32)


register(OpDef(
    "logical", _logical_shape, 1, 2, {"fn": str},
    doc="logical and / or / xor of two operands, not of one, each true where non-zero: a mask "
        "(int8: true where the code is not the zero point; codes 0/1 with scale 1, zp 0)",
    ref=_logical, ref_int=_logical, torch=_torch_logical, int_operands=int_all, result_quant_rule=_mask_result,
    int8="mask", c="boolean", keeps_batch=keeps_batch_broadcast,
    samples=lambda rng: [sample((2, 3, 4), _mask(rng, 3, 4), fn="and"), sample((2, 5), (2, 5), fn="or"),
                         sample((2, 5), _mask(rng, 1, 5), fn="xor"), sample((2, 3), fn="not")]))


# ---- where -----------------------------------------------------------------------------------------------

def _where_shape(ts, a):
    same_dtype(ts)
    return broadcast(*(t.shape for t in ts))


def _where(op, c, a, b):
    return np.where(c != 0, a, b)


def _where_int(op, c, a, b):
    out = op.result.type.quant
    ya, yb = (requant_out(op, centered(op, i, v), quant.rescale_ratio(qparams(op, i), out)) for i, v in ((1, a), (2, b)))
    return np.where(_truth(op, 0, c), ya, yb).astype(np.int8)


def _torch_where(op, c, a, b):
    return torch.where(c != 0, a, b)


def _where_samples(rng):
    return [sample(_mask(rng, 3, 4), (2, 3, 4), (2, 3, 4)), sample((2, 5), (2, 5), np.array(0.0, np.float32)),
            sample(_mask(rng, 1, 5), (2, 1, 5), (3, 1)),
            sample(_mask(rng, 2, 6), np.array(-0.5, np.float32), (2, 6))]


register(OpDef(
    "where", _where_shape, 3, 3,
    doc="where(c, a, b): a where c is non-zero, else b, all three broadcast (int8: a and b each requantized "
        "once to the result; c true where its code is not its zero point)",
    ref=_where, ref_int=_where_int, torch=_torch_where, int_operands=int_all, int8="same", prepare="finite_branches",
    c="select",
    keeps_batch=keeps_batch_broadcast, samples=_where_samples))


# ---- cumsum -----------------------------------------------------------------------------------------------

def _cumsum_shape(ts, a):
    axis_attr(a, "axis", ts[0].rank)
    return ts[0].shape


def _cumsum_int(op, x):
    total = np.cumsum(centered(op, 0, x), axis=op.attrs["axis"])
    return requant_out(op, total, quant.rescale_ratio(qparams(op, 0), op.result.type.quant))


register(OpDef(
    "cumsum", _cumsum_shape, 1, 1, {"axis": int},
    doc="running sum along axis (torch.cumsum; int8: int32 sums of centered codes, one requantization)",
    ref=lambda op, x: np.cumsum(x, axis=op.attrs["axis"]), ref_int=_cumsum_int,
    torch=lambda op, x: torch.cumsum(x, dim=op.attrs["axis"]), int_operands=int_all, int8="same", c="scan",
    channels="along_axis",
    keeps_batch=lambda a, types, flags, result: flags[0] and a["axis"] != 0,
    samples=lambda rng: [sample((2, 3, 4), axis=2), sample((2, 5, 3), axis=1), sample((6, 3), axis=0)]))

