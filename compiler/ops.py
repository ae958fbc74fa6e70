"""Op definitions: operand counts, attribute schemas, result-type inference and MAC counts.

One `OpDef` per op kind (docs/ir.md is the prose version of this table). The verifier,
the interpreter, passes and backends all read it, so a new op kind starts here.
Shape rules follow PyTorch exactly; the result dtype is the first operand's (so integer
forms of these ops keep their dtype) unless the OpDef says otherwise.

Integer forms (docs/quantization.md): an op whose first operand is quantized is the int8
form of its kind; `INT_OPERANDS` checks its operands' quantization and `check_result_quant` its
result's. The arithmetic itself lives in tinyc.quant.

Compressed representations (docs/compression_formats.md): `decode` (shared weights: codebook
gather), `sign` (binary activations, u1) and `bin_conv2d` / `bin_linear` (sign weights, u1,
scaled by a per-output-channel alpha).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, get_args, get_origin

import numpy as np

from tinyc import quant
from tinyc.ir import DTYPE_BITS, Op, TensorType, dtype_of

Shape = tuple[int, ...]

FUSABLE_ACT_OPS = {"conv2d", "linear", "matmul", "add", "sub", "mul", "bin_conv2d", "bin_linear"}
BINARY_LAYER_OPS = ("bin_conv2d", "bin_linear")   # sign (u1) weights scaled by alpha
INDEX_DTYPES = ("u1", "u2", "u4", "u8")             # decode indices

# Fused activation: the attributes `act` may bring along, by activation.
ACT_ATTRS = {"act": str, "act_min": float, "act_max": float, "act_alpha": float}
ACT_PARAMS = {"relu": (), "clamp": ("act_min", "act_max"), "leaky_relu": ("act_alpha",)}


class OpError(ValueError):
    """An op's operands or attributes are inconsistent. The verifier adds which op it is."""

    def __init__(self, what: str, hint: str | None = None):
        super().__init__(what)
        self.hint = hint


@dataclass(frozen=True)
class OpDef:
    kind: str
    infer: Callable[[list[TensorType], dict], Shape]   # result shape; raises OpError
    min_operands: int
    max_operands: int | None                            # None: any number (cat)
    required: dict[str, Any] = field(default_factory=dict)   # attribute -> Python type
    optional: dict[str, Any] = field(default_factory=dict)
    macs: Callable[[list[TensorType], TensorType], int] = lambda operands, result: 0
    dtype: str | None = None                            # result dtype; None: the first operand's
    dtype_rule: Callable[[list[TensorType]], str] | None = None   # result dtype from the operands

    def arity(self) -> str:
        lo, hi = self.min_operands, self.max_operands
        return str(lo) if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"

    @property
    def attrs(self) -> dict[str, Any]:
        return {**self.required, **self.optional}


# ---- helpers ---------------------------------------------------------------

def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _need(cond: bool, what: str, hint: str | None = None) -> None:
    if not cond:
        raise OpError(what, hint)


def _rank(t: TensorType, rank: int, role: str) -> None:
    _need(t.rank == rank, f"{role} must have rank {rank}, got shape {fmt_shape(t.shape)}")


def _ints(attrs: dict, name: str, n: int, lo: int) -> list[int]:
    """The int-list attribute `name`, checked to have `n` entries each >= `lo`."""
    v = attrs[name]
    _need(len(v) == n and all(x >= lo for x in v), f"{name} must be {n} integers >= {lo}, got {v}")
    return v


def _axis(attrs: dict, name: str, rank: int) -> int:
    a = attrs[name]
    _need(0 <= a < rank, f"{name} {a} is out of range for rank {rank}", "axes are non-negative")
    return a


def _same_dtype(ts: list[TensorType]) -> None:
    dtypes = sorted({t.dtype for t in ts})
    _need(len(dtypes) == 1, f"operand dtypes differ: {', '.join(dtypes)}")


def window_out(size: int, k: int, stride: int, dilation: int, pad_begin: int, pad_end: int,
               ceil_mode: bool = False) -> int:
    """Output length of a sliding window (conv or pool), PyTorch's rule.

    With ceil_mode a partial last window counts, but only if it starts inside the input or
    the begin padding.
    """
    span = size + pad_begin + pad_end - dilation * (k - 1) - 1
    _need(span >= 0, f"window of {k} (dilation {dilation}) is larger than the padded input "
          f"({size} + {pad_begin} + {pad_end})")
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def broadcast(*shapes: Shape) -> Shape:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise OpError("shapes " + " and ".join(fmt_shape(s) for s in shapes) + " do not broadcast") from None


# ---- shape rules, one per op kind --------------------------------------------

def _const(ts, a) -> Shape:
    return tuple(a["value"].shape)


def _conv2d(ts, a) -> Shape:
    x, w = ts[0], ts[1]
    _rank(x, 4, "input")
    _rank(w, 4, "weight")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g = a["groups"]
    _need(g >= 1 and c % g == 0 and o % g == 0,
          f"groups={g} must divide input channels {c} and output channels {o}")
    _need(cg == c // g, f"weight has {cg} input channels per group; input has {c} / groups {g} = {c // g}")
    if len(ts) == 3:
        _need(ts[2].shape == (o,), f"bias shape {fmt_shape(ts[2].shape)} is not [{o}]")
    sh, sw = _ints(a, "stride", 2, 1)
    dh, dw = _ints(a, "dilation", 2, 1)
    top, left, bottom, right = _ints(a, "padding", 4, 0)
    return (n, o, window_out(h, kh, sh, dh, top, bottom), window_out(wd, kw, sw, dw, left, right))


def _linear(ts, a) -> Shape:
    x, w = ts[0], ts[1]
    _need(x.rank >= 1, "input must have rank >= 1")
    _rank(w, 2, "weight")
    _need(x.shape[-1] == w.shape[1], f"input features {x.shape[-1]} do not match weight {fmt_shape(w.shape)}")
    if len(ts) == 3:
        _need(ts[2].shape == (w.shape[0],), f"bias shape {fmt_shape(ts[2].shape)} is not [{w.shape[0]}]")
    return x.shape[:-1] + (w.shape[0],)


def _matmul(ts, a) -> Shape:
    x, y = ts
    _need(x.rank >= 2 and y.rank >= 2, f"operands must have rank >= 2, got "
          f"{fmt_shape(x.shape)} and {fmt_shape(y.shape)}", "reshape vectors to matrices first")
    _need(x.shape[-1] == y.shape[-2], f"inner dimensions differ: {fmt_shape(x.shape)} @ {fmt_shape(y.shape)}")
    _same_dtype(ts)
    return broadcast(x.shape[:-2], y.shape[:-2]) + (x.shape[-2], y.shape[-1])


def _batch_norm(ts, a) -> Shape:
    x = ts[0]
    _need(x.rank >= 2, f"input must have rank >= 2, got {fmt_shape(x.shape)}")
    for role, t in zip(("mean", "var", "weight", "bias"), ts[1:]):
        _need(t.shape == (x.shape[1],), f"{role} shape {fmt_shape(t.shape)} is not [{x.shape[1]}]")
    return x.shape


def _same(ts, a) -> Shape:
    return ts[0].shape


def _binary(ts, a) -> Shape:
    _same_dtype(ts)
    return broadcast(ts[0].shape, ts[1].shape)


def _pool(ts, a, dilation) -> Shape:
    x = ts[0]
    _rank(x, 4, "input")
    n, c, h, w = x.shape
    kh, kw = _ints(a, "kernel", 2, 1)
    sh, sw = _ints(a, "stride", 2, 1)
    top, left, bottom, right = _ints(a, "padding", 4, 0)
    ceil = a["ceil_mode"]
    return (n, c, window_out(h, kh, sh, dilation[0], top, bottom, ceil),
            window_out(w, kw, sw, dilation[1], left, right, ceil))


def _max_pool2d(ts, a) -> Shape:
    return _pool(ts, a, _ints(a, "dilation", 2, 1))


def _avg_pool2d(ts, a) -> Shape:
    return _pool(ts, a, (1, 1))


def _mean(ts, a) -> Shape:
    shape, axes = ts[0].shape, a["axes"]
    _need(len(axes) > 0 and axes == sorted(set(axes)) and all(0 <= x < len(shape) for x in axes),
          f"axes {axes} must be sorted, distinct and in [0, {len(shape)})")
    if a["keepdim"]:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reshape(ts, a) -> Shape:
    shape = a["shape"]
    _need(all(d >= 0 for d in shape), f"shape {shape} has a negative dimension",
          "reshape dimensions are explicit (no -1)")
    _need(math.prod(shape) == ts[0].numel,
          f"cannot reshape {fmt_shape(ts[0].shape)} ({ts[0].numel} elements) to {fmt_shape(shape)}")
    return tuple(shape)


def _transpose(ts, a) -> Shape:
    perm, shape = a["perm"], ts[0].shape
    _need(sorted(perm) == list(range(len(shape))), f"perm {perm} is not a permutation of rank {len(shape)}")
    return tuple(shape[p] for p in perm)


def _cat(ts, a) -> Shape:
    first = ts[0].shape
    axis = _axis(a, "axis", len(first))
    _same_dtype(ts)
    for t in ts[1:]:
        _need(len(t.shape) == len(first) and all(d == e for i, (d, e) in enumerate(zip(t.shape, first)) if i != axis),
              f"cannot concatenate {fmt_shape(first)} and {fmt_shape(t.shape)} along axis {axis}")
    return first[:axis] + (sum(t.shape[axis] for t in ts),) + first[axis + 1:]


def _softmax(ts, a) -> Shape:
    _axis(a, "axis", ts[0].rank)
    want = 1 if ts[0].quant is None else 2
    _need(len(ts) == want, f"{'int8' if want == 2 else 'float'} softmax takes {want} operands, got {len(ts)}",
          "the int8 form is softmax(x, exp_table)")
    return ts[0].shape


def _lut(ts, a) -> Shape:
    _need(ts[1].shape == (256,), f"table shape {fmt_shape(ts[1].shape)} is not [256]")
    return ts[0].shape


def _pad(ts, a) -> Shape:
    shape, pads = ts[0].shape, a["pads"]
    r = len(shape)
    _need(len(pads) == 2 * r, f"pads needs {2 * r} entries (begins then ends) for rank {r}, got {len(pads)}")
    out = tuple(d + b + e for d, b, e in zip(shape, pads[:r], pads[r:]))
    _need(all(d >= 0 for d in out), f"negative pads crop {fmt_shape(shape)} below zero size")
    return out


# ---- compressed representations (docs/compression_formats.md) --------------------------------

def _no_quant(t: TensorType, role: str) -> None:
    _need(t.quant is None, f"{role} must not carry quant, got {t.dtype} with quant")


def _decode(ts, a) -> Shape:
    """decode(indices, codebook): result[i] = codebook[indices[i]] (codebook [K]) or
    codebook[i0, indices[i]] (codebook [O, K], one row per output channel i0)."""
    idx, cb = ts
    _need(idx.dtype in INDEX_DTYPES, f"indices must be {'/'.join(INDEX_DTYPES)}, got {idx.dtype}")
    _no_quant(idx, "indices")
    _need(cb.dtype == "f32" or cb.dtype in WEIGHT_DTYPES,
          f"codebook must be f32 or {'/'.join(WEIGHT_DTYPES)}, got {cb.dtype}")
    _no_quant(cb, "codebook")
    _need(idx.rank >= 1, "indices must have rank >= 1")
    _need(cb.rank == 1 or (cb.rank == 2 and cb.shape[0] == idx.shape[0]),
          f"codebook shape {fmt_shape(cb.shape)} is neither [K] nor [{idx.shape[0]}, K]",
          "a per-channel codebook has one row per index of the first axis")
    k, cap = cb.shape[-1], 2 ** DTYPE_BITS[idx.dtype]
    _need(1 <= k <= cap, f"codebook has {k} entries; {idx.dtype} indices address 1 to {cap}")
    return idx.shape


def _is_act_i8(t: TensorType) -> bool:
    return t.dtype == "i8" and t.quant is not None and not t.quant.per_channel


def _sign(ts, a) -> Shape:
    """sign(x, threshold?) -> u1: 1 (+1) where x >= threshold (0 without one), else 0 (-1)."""
    x = ts[0]
    _need((x.dtype == "f32" and x.quant is None) or _is_act_i8(x),
          f"input must be f32, or i8 with per-tensor quant, got {x.dtype}")
    if len(ts) == 2:
        t = ts[1]
        want = "f32" if x.dtype == "f32" else "i32"
        _need(t.dtype == want and t.quant is None,
              f"threshold must be {want} without quant for a{'n i8' if want == 'i32' else ' float'} input, "
              f"got {t.dtype}", "the int8 form compares codes with i32 code thresholds")
        try:
            fits = t.rank <= x.rank and np.broadcast_shapes(x.shape, t.shape) == x.shape
        except ValueError:
            fits = False
        _need(fits, f"threshold shape {fmt_shape(t.shape)} does not broadcast to the input {fmt_shape(x.shape)}")
    return x.shape


def bin_int_form(ts: list[TensorType]) -> bool:
    """A bin_conv2d / bin_linear is in its int8 form when its input is i8 or its bias is i32."""
    return bool(ts) and (ts[0].quant is not None or (len(ts) == 4 and ts[3].dtype == "i32"))


def _bin_operands(ts, out_channels: int) -> None:
    x, w, alpha = ts[:3]
    _need((x.dtype in ("f32", "u1") and x.quant is None) or _is_act_i8(x),
          f"input must be f32, u1 (binary activations) or i8 with per-tensor quant, got {x.dtype}")
    _need(w.dtype == "u1" and w.quant is None, f"weight must be u1 sign bits without quant, got {w.dtype}",
          "bit 1 is +1, bit 0 is -1")
    _need(alpha.dtype == "f32" and alpha.quant is None and alpha.shape == (out_channels,),
          f"alpha must be f32 [{out_channels}] without quant, got {alpha.dtype} {fmt_shape(alpha.shape)}")
    int_form = bin_int_form(ts)
    if len(ts) == 4:
        b = ts[3]
        _need(b.shape == (out_channels,), f"bias shape {fmt_shape(b.shape)} is not [{out_channels}]")
        if int_form:
            q = b.quant
            _need(b.dtype == "i32" and q is not None and q.axis == 0 and not any(q.zero_point),
                  "the int8 form's bias must be i32 quantized per channel (axis 0, zp 0)")
        else:
            _need(b.dtype == "f32" and b.quant is None, f"bias must be f32 (float form) or i32 (int8 form), got {b.dtype}")
    _need(not (int_form and x.dtype == "f32"), "an f32 input cannot feed the int8 form (i32 bias)")
    _need(not (x.dtype == "i8" and len(ts) != 4), "the int8 form takes an i32 bias",
          "quantize-int8 adds a zero bias where the float layer had none")


def _bin_conv2d(ts, a) -> Shape:
    shape = _conv2d(ts[:2], a)
    _bin_operands(ts, ts[1].shape[0])
    return shape


def _bin_linear(ts, a) -> Shape:
    shape = _linear(ts[:2], a)
    _bin_operands(ts, ts[1].shape[0])
    return shape


def _bin_dtype(ts) -> str:
    return "i8" if bin_int_form(ts) else "f32"


# ---- integer forms: operand quantization (docs/quantization.md) -------------------------

WEIGHT_DTYPES = ("i8", "i4", "i2", "i1")
# Ops whose int8 result reuses the input's quantization (data movement, max, average).
SAME_QUANT_OPS = {"max_pool2d", "avg_pool2d", "reshape", "transpose", "pad"}


def _act_q(t: TensorType, role: str) -> None:
    got = "without quant" if t.quant is None else "per-channel" if t.quant.per_channel else "per-tensor"
    _need(t.dtype == "i8" and got == "per-tensor", f"{role} must be i8 with per-tensor quant, got {t.dtype} {got}",
          "run quantize-int8 to produce integer IR")


def _weight_q(t: TensorType) -> None:
    q = t.quant
    _need(t.dtype in WEIGHT_DTYPES and q is not None and q.axis == 0 and not any(q.zero_point),
          f"weight must be {'/'.join(WEIGHT_DTYPES)} quantized per output channel (axis 0, zp 0)")


def _bias_q(t: TensorType, x: TensorType, w: TensorType) -> None:
    q = t.quant
    _need(t.dtype == "i32" and q is not None and q.axis == 0 and not any(q.zero_point),
          "bias must be i32 quantized per channel (axis 0, zp 0)")
    want = quant.bias_params(x.quant, w.quant).scale
    _need(all(math.isclose(s, w_, rel_tol=1e-6) for s, w_ in zip(q.scale, want)),
          "bias scales are not input scale x weight scales", "requantize the bias after changing a scale")


def _int_layer(ts, a) -> None:
    _act_q(ts[0], "input")
    _weight_q(ts[1])
    if len(ts) == 3:
        _bias_q(ts[2], ts[0], ts[1])


def _int_all(ts, a) -> None:
    for i, t in enumerate(ts):
        _act_q(t, f"operand {i}")


def _int_softmax(ts, a) -> None:
    _act_q(ts[0], "input")
    _need(ts[1].dtype == "i32" and ts[1].shape == (256,), "exp table must be i32 [256]")
    _need(ts[0].shape[a["axis"]] <= quant.SOFTMAX_MAX_LEN,
          f"softmax axis has {ts[0].shape[a['axis']]} elements; the int8 form allows {quant.SOFTMAX_MAX_LEN}")


def _int_lut(ts, a) -> None:
    _act_q(ts[0], "input")
    _need(ts[1].dtype == "i8", f"table must be i8, got {ts[1].dtype}")


def _quantize_operand(ts, a) -> None:
    _need(ts[0].dtype == "f32", f"quantize takes an f32 input, got {ts[0].dtype}")


def _dequantize_operand(ts, a) -> None:
    _act_q(ts[0], "input")


# Checked by infer_type when the op is an int8 form (is_int_form). Kinds
# missing here have no integer form; quantize-int8 lowers them (batch_norm, unary
# activations) before they could need one.
INT_OPERANDS: dict[str, Callable[[list[TensorType], dict], None]] = {
    "conv2d": _int_layer, "linear": _int_layer, "softmax": _int_softmax, "lut": _int_lut,
    "dequantize": _dequantize_operand,
    # checked by their shape rules (the int8 forms of the compressed ops)
    **{k: lambda ts, a: None for k in ("sign", *BINARY_LAYER_OPS)},
    **{k: _int_all for k in ("matmul", "add", "sub", "mul", "div", "max_pool2d", "avg_pool2d", "mean",
                             "reshape", "transpose", "cat", "pad")},
}


def is_int_form(kind: str, operand_types: list[TensorType]) -> bool:
    """True for the int8 form of `kind`: its first operand is quantized (lut and dequantize
    exist only as int8 forms; bin_conv2d / bin_linear also with a u1 input and an i32 bias).
    Integer tensors without quant are plain integers."""
    if kind in BINARY_LAYER_OPS:
        return bin_int_form(operand_types)
    return kind in ("lut", "dequantize") or (kind not in ("const", "quantize") and bool(operand_types)
                                             and operand_types[0].quant is not None)


def check_result_quant(kind: str, operand_types: list[TensorType], result: TensorType) -> None:
    """Raise OpError unless the result of an int8-form op carries the quantization its kind requires."""
    if kind == "sign":
        _need(result.quant is None, "sign's u1 result carries no quant")
        return
    if kind == "decode":
        if operand_types[1].dtype == "f32":
            _need(result.quant is None, "a decoded f32 weight carries no quant")
        else:
            _weight_q(result)
            _need(len(result.quant.scale) == result.shape[0],
                  f"{len(result.quant.scale)} weight scales for {result.shape[0]} output channels")
        return
    if kind != "quantize" and (result.dtype == "f32" or not is_int_form(kind, operand_types)):
        return
    _act_q(result, "result")
    if kind in SAME_QUANT_OPS:
        _need(result.quant == operand_types[0].quant, "result quant differs from the input's",
              f"{kind} keeps its input's quantization")
    if kind == "softmax":
        _need(result.quant == quant.SOFTMAX_OUT, "int8 softmax output must have scale 1/256, zp -128")


# ---- MAC counts (docs/ir.md, Statistics) ---------------------------------------

def _conv_macs(ts, result) -> int:
    return result.numel * math.prod(ts[1].shape[1:])


def _linear_macs(ts, result) -> int:
    return result.numel * ts[1].shape[1]


def _matmul_macs(ts, result) -> int:
    return result.numel * ts[0].shape[-1]


# ---- the table -------------------------------------------------------------------

def _op(kind, infer, operands, required=None, macs=None, dtype=None, dtype_rule=None) -> OpDef:
    lo, hi = operands if isinstance(operands, tuple) else (operands, operands)
    return OpDef(kind, infer, lo, hi, required or {}, ACT_ATTRS if kind in FUSABLE_ACT_OPS else {},
                 macs or OpDef.macs, dtype, dtype_rule)


_WINDOW = {"stride": list[int], "padding": list[int]}

OPS: dict[str, OpDef] = {d.kind: d for d in [
    _op("const", _const, 0, {"value": np.ndarray}),
    _op("conv2d", _conv2d, (2, 3), {**_WINDOW, "dilation": list[int], "groups": int}, _conv_macs),
    _op("linear", _linear, (2, 3), macs=_linear_macs),
    _op("matmul", _matmul, 2, macs=_matmul_macs),
    _op("batch_norm", _batch_norm, 5, {"eps": float}),
    *(_op(k, _same, 1) for k in ("relu", "sigmoid", "tanh", "hardswish")),
    _op("clamp", _same, 1, {"min": float, "max": float}),
    _op("leaky_relu", _same, 1, {"alpha": float}),
    *(_op(k, _binary, 2) for k in ("add", "sub", "mul", "div")),
    _op("max_pool2d", _max_pool2d, 1, {"kernel": list[int], **_WINDOW, "dilation": list[int], "ceil_mode": bool}),
    _op("avg_pool2d", _avg_pool2d, 1, {"kernel": list[int], **_WINDOW, "ceil_mode": bool,
                                       "count_include_pad": bool}),
    _op("mean", _mean, 1, {"axes": list[int], "keepdim": bool}),
    _op("reshape", _reshape, 1, {"shape": list[int]}),
    _op("transpose", _transpose, 1, {"perm": list[int]}),
    _op("cat", _cat, (1, None), {"axis": int}),
    _op("softmax", _softmax, (1, 2), {"axis": int}),
    _op("pad", _pad, 1, {"pads": list[int], "value": float}),
    # int8 boundary and table lookup (docs/quantization.md)
    _op("quantize", _same, 1, dtype="i8"),
    _op("dequantize", _same, 1, dtype="f32"),
    _op("lut", _lut, 2),
    # compressed representations (docs/compression_formats.md)
    _op("decode", _decode, 2, dtype_rule=lambda ts: ts[1].dtype),
    _op("sign", _sign, (1, 2), dtype="u1"),
    _op("bin_conv2d", _bin_conv2d, (3, 4), {**_WINDOW, "dilation": list[int], "groups": int}, _conv_macs,
        dtype_rule=_bin_dtype),
    _op("bin_linear", _bin_linear, (3, 4), macs=_linear_macs, dtype_rule=_bin_dtype),
]}


# ---- checks and the public entry points -----------------------------------------------

def type_name(t) -> str:
    return str(t) if get_origin(t) else t.__name__


def attr_matches(value, t) -> bool:
    """isinstance for attribute schemas: `list[int]` checks elements; bools are not ints;
    floats must be floats (so the text form and the C backends see the same literal)."""
    if get_origin(t) is list:
        (elem,) = get_args(t)
        return isinstance(value, list) and all(attr_matches(v, elem) for v in value)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


def check_act(attrs: dict) -> None:
    """Raise OpError unless the fused-activation attributes (act, act_min, act_max, act_alpha) agree."""
    act = attrs.get("act")
    params = sorted(k for k in ACT_ATTRS if k != "act" and k in attrs)
    if act is None:
        _need(not params, f"{', '.join(params)} given without act")
        return
    _need(act in ACT_PARAMS, f"unknown act {act!r}", "act is one of " + ", ".join(map(repr, ACT_PARAMS)))
    want = sorted(ACT_PARAMS[act])
    _need(params == want, f"act {act!r} takes attributes [{', '.join(want)}], got [{', '.join(params)}]")
    if act == "clamp":
        _need(attrs["act_min"] <= attrs["act_max"], f"act_min {attrs['act_min']} > act_max {attrs['act_max']}")


def check_signature(kind: str, n_operands: int, attrs: dict) -> OpDef:
    """Check the kind, operand count and attribute names/types; return the op's definition."""
    d = OPS.get(kind)
    _need(d is not None, f"unknown op kind '{kind}'", "known kinds: " + ", ".join(sorted(OPS)))
    _need(d.min_operands <= n_operands and (d.max_operands is None or n_operands <= d.max_operands),
          f"takes {d.arity()} operands, got {n_operands}")
    schema = d.attrs
    for name, value in attrs.items():
        if name not in schema:
            hint = "act is only allowed on " + ", ".join(sorted(FUSABLE_ACT_OPS)) if name in ACT_ATTRS \
                else f"{kind} takes: {', '.join(sorted(schema)) or 'no attributes'}"
            raise OpError(f"unknown attribute '{name}'", hint)
        _need(attr_matches(value, schema[name]),
              f"attribute '{name}' must be {type_name(schema[name])}, got {type(value).__name__} {value!r}")
    missing = [k for k in d.required if k not in attrs]
    _need(not missing, f"missing attribute {', '.join(missing)}")
    if kind in FUSABLE_ACT_OPS:
        check_act(attrs)
    return d


def infer_type(kind: str, operand_types: list[TensorType], attrs: dict) -> TensorType:
    """The result type of `kind` applied to operands of these types (raises OpError)."""
    d = check_signature(kind, len(operand_types), attrs)
    shape = d.infer(operand_types, attrs)
    if kind == "const":
        try:
            return TensorType(shape, dtype_of(attrs["value"]))
        except TypeError as e:
            raise OpError(str(e)) from None
    if kind == "quantize":
        _quantize_operand(operand_types, attrs)
    elif is_int_form(kind, operand_types):
        _need(kind in INT_OPERANDS, f"{kind} has no integer form",
              "quantize-int8 lowers it (batch_norm to a depthwise conv, activations to lut)")
        INT_OPERANDS[kind](operand_types, attrs)
    dtype = d.dtype_rule(operand_types) if d.dtype_rule else d.dtype or operand_types[0].dtype
    return TensorType(tuple(int(s) for s in shape), dtype)


def macs(op: Op) -> int:
    """Multiply-accumulates of one op (0 for ops without any)."""
    return OPS[op.kind].macs([v.type for v in op.operands], op.result.type)
