"""The int8 boundary and table lookup: quantize, dequantize, lut (docs/quantization.md)."""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.ops.core import OpDef, Trait, act_q, fmt_shape, keeps_batch_unary, need, register, same_shape
from tinyc.ops.refs import qparams


def _quantize_operands(ts, a) -> None:
    need(ts[0].dtype == "f32", f"quantize takes an f32 input, got {ts[0].dtype}")


def _lut_shape(ts, a):
    need(ts[1].shape == (256,), f"table shape {fmt_shape(ts[1].shape)} is not [256]")
    return ts[0].shape


def _lut_operands(ts, a) -> None:
    act_q(ts[0], "input")
    need(ts[1].dtype == "i8", f"table must be i8, got {ts[1].dtype}")


register(OpDef(
    "quantize", same_shape, 1, 1, dtype="i8", traits=Trait.INT_ONLY, doc="f32 -> i8 with the result's quant",
    ref_exact=lambda op, x: quant.quantize_input(x, op.result.type.quant).astype(np.int8),
    int_form=lambda ts: False, operand_rule=_quantize_operands,
    result_quant_rule=lambda ts, result: act_q(result, "result"), c="quantize_edge",
    keeps_batch=keeps_batch_unary))

register(OpDef(
    "dequantize", same_shape, 1, 1, dtype="f32", traits=Trait.INT_ONLY, doc="i8 -> f32",
    ref_int=lambda op, x: quant.dequantize(x, qparams(op, 0)),
    int_operands=lambda ts, a: act_q(ts[0], "input"), c="dequantize_edge", keeps_batch=keeps_batch_unary))

register(OpDef(
    "lut", _lut_shape, 2, 2, traits=Trait.INT_ONLY, doc="y = table[x + 128]: int8 unary activations",
    ref_int=lambda op, x, table: table[x.astype(np.int64) - quant.QMIN],
    int_operands=_lut_operands, c="table_lookup", keeps_batch=keeps_batch_unary))
