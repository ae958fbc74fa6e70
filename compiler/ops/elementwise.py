"""Binary elementwise arithmetic with broadcasting: add, sub, mul, div, maximum, minimum."""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.ops.core import (OpDef, Trait, broadcast, int_all, keeps_batch_broadcast, register, same_dtype,
                            sample, torch)
from tinyc.ops.layers import mul_int
from tinyc.ops.refs import centered, qparams, requant_out


def _shape(ts, a):
    same_dtype(ts)
    return broadcast(ts[0].shape, ts[1].shape)


def _add_int(sign: int):
    def kernel(op, a, b):
        ra, rb, ro = quant.add_ratios(qparams(op, 0), qparams(op, 1), op.result.type.quant)
        a2, b2 = (quant.requantize(centered(op, i, v) << quant.ADD_SHIFT, *quant.quantize_multiplier(r))
                  for i, v, r in ((0, a, ra), (1, b, rb)))
        return requant_out(op, a2 + sign * b2, ro)
    return kernel


def _div_int(op, a, b):
    num, den = np.broadcast_arrays(centered(op, 0, a) << quant.DIV_SHIFT, centered(op, 1, b))
    quotient = quant.div_round(num, np.where(den == 0, 1, den))
    y = requant_out(op, quotient, quant.div_ratio(qparams(op, 0), qparams(op, 1), op.result.type.quant))
    # x / 0 saturates by the sign of x; 0 / 0 is 0.
    at_zero = np.where(num > 0, quant.QMAX, np.where(num < 0, quant.QMIN, op.result.type.quant.zero_point[0]))
    return np.where(den == 0, at_zero, y).astype(np.int8)


def _all(array, value: float) -> bool:
    return array is not None and array.size > 0 and bool(np.all(array == value))


def _identity(unit: float, commutative: bool):
    """x op unit (and unit op x when commutative) forwards x, when no act is fused and the
    result has x's type."""
    def identity(op, const):
        if "act" in op.attrs:
            return None
        for keep, other in ((0, 1), (1, 0)) if commutative else ((0, 1),):
            if op.operands[keep].type == op.result.type and _all(const(op.operands[other]), unit):
                return keep
        return None
    return identity


def _binary(kind, ref, ref_int, torch_fn, unit, commutative, fusable=True, doc=""):
    traits = Trait.ELEMENTWISE | (Trait.FUSABLE if fusable else Trait.NONE) | (Trait.ADDITIVE if unit == 0.0 else Trait.NONE)
    register(OpDef(kind, _shape, 2, 2, traits=traits,
                   doc=doc, ref=ref, ref_int=ref_int, torch=torch_fn, int_operands=int_all, int8="same", c="elementwise",
                   prepare="div_by_const" if kind == "div" else None, channels="broadcast",
                   keeps_batch=keeps_batch_broadcast, identity=_identity(unit, commutative),
                   samples=lambda rng: [sample((2, 3, 4), rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32)),
                                        sample((1, 6), (1, 6), **({"act": "relu"} if fusable else {}))]))


_binary("add", lambda op, a, b: a + b, _add_int(1), lambda op, a, b: a + b, 0.0, True, doc="a + b")
_binary("sub", lambda op, a, b: a - b, _add_int(-1), lambda op, a, b: a - b, 0.0, False, doc="a - b")
_binary("mul", lambda op, a, b: a * b, mul_int, lambda op, a, b: a * b, 1.0, True, doc="a * b")
_binary("div", lambda op, a, b: a / b, _div_int, lambda op, a, b: a / b, 1.0, False, fusable=False,
        doc="a / b (int8: x / 0 saturates by the sign of x)")


# ---- maximum, minimum ----------------------------------------------------------------------------

def _pick_int(pick):
    """int8: each operand requantized to the result's quantization (a cat-style rescale, monotonic),
    then the larger / smaller code."""
    def kernel(op, a, b):
        out = op.result.type.quant
        ya, yb = (requant_out(op, centered(op, i, v), quant.rescale_ratio(qparams(op, i), out))
                  for i, v in ((0, a), (1, b)))
        return pick(ya, yb).astype(np.int8)
    return kernel


def _pick(kind: str, fn, torch_fn, doc: str) -> None:
    register(OpDef(kind, _shape, 2, 2, doc=doc, ref=lambda op, a, b: fn(a, b), ref_int=_pick_int(fn),
                   torch=lambda op, a, b: torch_fn(a, b), int_operands=int_all, int8="same", c="minmax",
                   channels="broadcast", keeps_batch=keeps_batch_broadcast,
                   samples=lambda rng: [sample((2, 3, 4), rng.uniform(-1.0, 1.0, (3, 4)).astype(np.float32)),
                                        sample((1, 6), (1, 6)), sample((2, 1, 5), (3, 1))]))


_pick("maximum", np.maximum, lambda a, b: torch.maximum(a, b), "elementwise max, broadcasting (NaN wins)")
_pick("minimum", np.minimum, lambda a, b: torch.minimum(a, b), "elementwise min, broadcasting (NaN wins)")
