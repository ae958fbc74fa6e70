"""IR verifier: checks every invariant of docs/ir.md and reports the first break, naming the op.

Runs after import and after every pass, so a pass that produces bad IR is caught at once
rather than as wrong numbers on the device.
"""
from __future__ import annotations

import math
import re

import numpy as np

from tinyc.errors import VerifyError
from tinyc.ir import DTYPE_BITS, DTYPES, Graph, Op, TensorType, Value
from tinyc.ops import OpError, check_result_quant, check_signature, fmt_shape, infer_type

_NAME = re.compile(r"[A-Za-z0-9_.]+")
_F32_TINY, _F32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
_F64_TINY, _F64_MAX = float(np.finfo(np.float64).tiny), float(np.finfo(np.float64).max)
_LOC_BAD = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def verify(graph: Graph) -> None:
    """Raise VerifyError for the first invariant `graph` breaks."""
    defined: dict[str, Value] = {}
    for v in graph.inputs:
        label = f"input %{v.name}"
        _define(v, defined, label, None)
        _check_type(v.type, label, None)
    consts: dict[str, np.ndarray] = {}
    for op in graph.ops:
        label = f"%{op.result.name} = {op.kind}"
        _check_op(op, defined, label)
        if op.kind == "decode":
            _check_decode_indices(op, consts, label)
        _define(op.result, defined, label, op.loc)
        if op.is_const:
            consts[op.result.name] = op.attrs["value"]
    for i, v in enumerate(graph.outputs):
        _fail(defined.get(v.name) is v, f"output {i} %{v.name}", "is not defined by an input or an op", None)


def _fail(ok: bool, label: str, what: str, where: str | None, hint: str | None = None) -> None:
    if not ok:
        raise VerifyError(f"verify: {label}: {what}", where=where, hint=hint)


def _define(v: Value, defined: dict[str, Value], label: str, loc: str | None) -> None:
    _fail(isinstance(v.name, str) and _NAME.fullmatch(v.name) is not None, label,
          f"bad value name {v.name!r}", loc, "names use only letters, digits, '_' and '.'")
    _fail(v.name not in defined, label, f"value %{v.name} is defined twice", loc)
    defined[v.name] = v


def _check_op(op: Op, defined: dict[str, Value], label: str) -> None:
    for v in op.operands:
        known = defined.get(v.name)
        _fail(known is not None, label, f"operand %{v.name} is not defined before this op", op.loc)
        _fail(known is v, label, f"operand %{v.name} is a different Value object from the one defined "
              "under that name", op.loc, "passes must reuse the defining Value, not a copy")
    if op.loc is not None:  # locs land in generated C comments and reports
        _fail(isinstance(op.loc, str), label, f"loc is a {type(op.loc).__name__}, not a string", None)
        bad = _LOC_BAD.search(op.loc)
        _fail(bad is None, label, f"loc {op.loc!r} holds the control character "
              f"U+{ord(bad.group()) if bad else 0:04X}", None, "a loc is printable text on one line")
    for key, a in op.attrs.items():
        if key != "value" or not op.is_const:
            _fail(not _has_nan(a), label, f"attribute {key} is NaN", op.loc,
                  "NaN has no meaning as an op parameter; give a number")
    declared = op.result.type
    try:
        # A const's type is declared, not inferred: i4 and friends share int8 storage.
        if op.is_const:
            check_signature(op.kind, len(op.operands), op.attrs)
        else:
            inferred = infer_type(op.kind, [v.type for v in op.operands], op.attrs)
            check_result_quant(op.kind, [v.type for v in op.operands], op.result.type)
    except OpError as e:
        raise VerifyError(f"verify: {label}: {e}", where=op.loc, hint=e.hint) from None
    if op.is_const:
        _check_const(op.attrs["value"], declared, label, op.loc)
    else:
        _fail(declared.shape == inferred.shape, label, f"result shape {fmt_shape(declared.shape)} does not "
              f"match inferred {fmt_shape(inferred.shape)}", op.loc)
        _fail(declared.dtype == inferred.dtype, label, f"result dtype {declared.dtype} does not match "
              f"inferred {inferred.dtype}", op.loc)
    _check_type(declared, label, op.loc)


def _has_nan(a) -> bool:
    if isinstance(a, (float, np.floating)):
        return math.isnan(a)
    if isinstance(a, (list, tuple)):
        return any(_has_nan(x) for x in a)
    return False


def _check_const(value: np.ndarray, t: TensorType, label: str, loc: str | None) -> None:
    _fail(isinstance(value, np.ndarray), label, f"value is a {type(value).__name__}, not a numpy array", loc)
    _fail(value.shape == t.shape, label, f"value shape {fmt_shape(value.shape)} does not match type "
          f"{fmt_shape(t.shape)}", loc)
    _fail(value.dtype == DTYPES[t.dtype], label, f"value dtype {value.dtype} is not the storage dtype "
          f"{DTYPES[t.dtype]} of {t.dtype}", loc)
    bits = DTYPE_BITS[t.dtype]
    if bits < 8 and value.size:  # sub-byte codes live unpacked in int8/uint8 storage: each must fit
        lo, hi = code_range(t.dtype)
        vmin, vmax = int(value.min()), int(value.max())
        _fail(lo <= vmin and vmax <= hi, label, f"{t.dtype} codes must lie in [{lo}, {hi}], but the value holds "
              f"{vmin if vmin < lo else vmax}", loc)


def code_range(dtype: str) -> tuple[int, int]:
    """The integer codes a dtype holds: [0, 2^b - 1] unsigned (u*), [-2^(b-1), 2^(b-1) - 1] signed."""
    bits = DTYPE_BITS[dtype]
    return (0, 2 ** bits - 1) if dtype.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _check_decode_indices(op: Op, consts: dict[str, np.ndarray], label: str) -> None:
    """decode(indices, codebook) with constant indices: every index addresses a codebook entry."""
    indices = consts.get(op.operands[0].name)
    if indices is None or not indices.size:
        return
    k = op.operands[1].type.shape[-1]
    top = int(indices.max())
    _fail(top < k, label, f"decode index {top} is outside the codebook's {k} entries", op.loc,
          "indices address codebook entries 0 to K-1")


def _check_type(t: TensorType, label: str, loc: str | None) -> None:
    """Quantization parameters fit the tensor: integer dtype, axis and lengths, scales, zero points."""
    q = t.quant
    if q is None:
        return
    _fail(t.dtype != "f32", label, "an f32 tensor carries quantization parameters", loc)
    if q.per_channel:
        _fail(0 <= q.axis < t.rank, label, f"quant axis {q.axis} is out of range for rank {t.rank}", loc)
        _fail(len(q.scale) == t.shape[q.axis], label, f"{len(q.scale)} quant scales for "
              f"{t.shape[q.axis]} channels along axis {q.axis}", loc)
    _fail(all(math.isfinite(s) and s > 0 for s in q.scale), label, "quant scales must be finite and > 0", loc)
    # The C code holds scales as float32 (quantize, dequantize, tables) and derives requantization
    # multipliers from their ratios: a scale that float32 rounds to 0 or inf, or a subnormal, breaks
    # both. i32 (bias) scales are products in_scale * w_scale that only enter float64 arithmetic.
    lo, hi, kind = (_F64_TINY, _F64_MAX, "float64") if t.dtype == "i32" else (_F32_TINY, _F32_MAX, "float32")
    odd = next((s for s in q.scale if not lo <= s <= hi), None)
    _fail(odd is None, label, f"quant scale {odd!r} is outside the normal {kind} range [{lo:.4g}, {hi:.4g}]", loc,
          "the generated C computes with scales in float32 (i32 bias scales in float64)")
    lo, hi = code_range(t.dtype)
    _fail(all(lo <= z <= hi for z in q.zero_point), label,
          f"quant zero points must lie in [{lo}, {hi}] for {t.dtype}", loc)


def nonfinite_consts(graph: Graph, limit: int = 5) -> list[str]:
    """`%name (loc): N NaN, M inf of K` for each float const holding NaN or infinity (at most `limit`)."""
    found = []
    for op in graph.const_ops():
        value = np.asarray(op.attrs.get("value"))
        if value.dtype.kind != "f" or value.size == 0:
            continue
        finite = np.isfinite(value)
        if finite.all():
            continue
        nan = int(np.isnan(value).sum())
        inf = value.size - int(finite.sum()) - nan
        counts = ", ".join(c for c in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if c)
        where = f" ({op.loc})" if op.loc else ""
        found.append(f"%{op.result.name}{where}: {counts} of {value.size} values")
    if len(found) > limit:
        found = found[:limit] + [f"and {len(found) - limit} more"]
    return found


def zero_size_values(graph: Graph, limit: int = 3) -> list[str]:
    """`%name: [1, 0] (loc)` for each input or op result with a zero-size dimension (at most `limit`)."""
    found = [(v.name, v.type.shape, None) for v in graph.inputs if 0 in v.type.shape]
    found += [(op.result.name, op.result.type.shape, op.loc) for op in graph.ops if 0 in op.result.type.shape]
    text = [f"%{name}: {fmt_shape(shape)}" + (f" ({loc})" if loc else "") for name, shape, loc in found]
    return text[:limit] + ([f"and {len(text) - limit} more"] if len(text) > limit else [])


def check_values(graph: Graph, path, allow_nonfinite: bool, error=None) -> list[str]:
    """Refuse a model with zero-size tensors, or with NaN / infinite constants unless
    `allow_nonfinite`; returns the non-finite constants it let through (for a warning).
    `error` is the TinycError subclass to raise (the frontend's or the CLI's)."""
    from tinyc.errors import TinycError
    error = error or TinycError
    empty = zero_size_values(graph)
    if empty:
        raise error(f"{path} has tensors with no elements: " + "; ".join(empty),
                    hint="tinyc compiles layers of at least one feature/channel: remove or resize the zero-size layer")
    bad = nonfinite_consts(graph)
    if bad and not allow_nonfinite:
        raise error(f"{path} has NaN or infinite weights: " + "; ".join(bad),
                    hint="the file may be corrupt or the model diverged in training; fix the weights, "
                         "or pass --allow-nonfinite to compile them anyway")
    return bad
