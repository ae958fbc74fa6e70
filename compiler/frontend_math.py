"""The long tail of elementwise math and reductions: abs, sqrt, rsqrt, exp, elu, mish, softplus, pow (also by a
constant tensor exponent), sign, logsigmoid, maximum/minimum, prelu, log_softmax, sum/amax/amin, adaptive max pool,
comparisons (gt, ge, lt, le, eq, ne) and logical / bitwise ops on masks, cumsum.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others. The parameterless math
activations (abs, sqrt, rsqrt, exp, log, reciprocal, selu, mish, erf, log_sigmoid) need no entry here: frontend_ops
lowers aten.<kind>.default for every registered activation without parameters (atan too).

A comparison's bool result is a mask: a float tensor of 0.0 / 1.0 (docs/ir.md "Masks"), so x.float(), x * mask
and mask.sum() need nothing more; bitwise and / or / xor / not are logical ops on bool tensors (on integer
tensors they are not supported).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from tinyc.frontend_ops import Builder, ConstRef, _axis, _broadcast, _clamp, _first_of, _ints, _need_rank, _pool, _shape
from tinyc.ir import Value
from tinyc.ops.activations import SELU_ALPHA, SELU_SCALE


# ---------------------------------------------------------------- activations with parameters

def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-6)


def elu(b: Builder, a: dict):
    """aten.elu(x, alpha, scale, input_scale) = scale * (x > 0 ? x : alpha (e^(input_scale x) - 1)):
    nn.ELU (scale = input_scale = 1), SELU's constants, CELU (input_scale = 1 / alpha)."""
    x = b.value(a["self"])
    alpha, scale, input_scale = float(a["alpha"]), float(a["scale"]), float(a["input_scale"])
    if scale == 1.0 and input_scale == 1.0:
        return b.emit("elu", [x], _shape(x), {"alpha": alpha})
    if _close(alpha, SELU_ALPHA) and _close(scale, SELU_SCALE) and input_scale == 1.0:
        return b.emit("selu", [x], _shape(x))
    if scale == 1.0 and alpha > 0 and _close(alpha * input_scale, 1.0):
        return b.emit("celu", [x], _shape(x), {"alpha": alpha})
    b.unsupported(f"elu with alpha={alpha}, scale={scale}, input_scale={input_scale}",
                  "tinyc has elu (scale = input_scale = 1), selu and celu (input_scale = 1 / alpha)")


def celu(b: Builder, a: dict):
    x = b.value(a["self"])
    alpha = float(a["alpha"])
    if alpha <= 0:
        b.unsupported(f"celu with alpha={alpha}", "alpha must be > 0")
    return b.emit("celu", [x], _shape(x), {"alpha": alpha})


def softplus(b: Builder, a: dict):
    x = b.value(a["self"])
    beta = float(a["beta"])
    if beta == 0:
        b.unsupported("softplus with beta=0")
    return b.emit("softplus", [x], _shape(x), {"beta": beta, "threshold": float(a["threshold"])})


def _pow(b: Builder, x, exponent: float):
    x = b.value(x)
    if exponent == 1.0:
        return x
    return b.emit("pow", [x], _shape(x), {"exponent": float(exponent)})


def pow_scalar(b: Builder, a: dict):
    e = a["exponent"]
    if isinstance(e, bool) or not isinstance(e, (int, float)):
        b.unsupported(f"pow with a {type(e).__name__} exponent")
    return _pow(b, a["self"], float(e))


MAX_EXPONENT_RUNS = 64


def pow_tensor(b: Builder, a: dict):
    """x ** t with a constant t: one-element t is pow by a scalar; a t varying along one axis (a
    per-channel or per-feature exponent) is pow by a scalar on each run of equal exponents along that
    axis (slices of x), joined by cat: exact in float, one table per run in int8. An exponent computed
    at run time, or varying along several axes, is not supported."""
    e = a["exponent"]
    if not isinstance(e, ConstRef):
        b.unsupported("pow with a tensor exponent computed at run time",
                      "use a Python number or a constant tensor (a parameter or buffer) as the exponent")
    x = b.value(a["self"])
    if e.array.size == 1:
        if tuple(_broadcast(_shape(x), e.array.shape)) != _shape(x):
            b.unsupported("pow whose exponent's shape broadcasts the base")
        return _pow(b, x, float(e.array.reshape(())))
    out = b.out_shape()
    if out != _shape(x):
        b.unsupported("pow whose exponent's shape broadcasts the base",
                      "give the exponent a shape that broadcasts to the base's")
    full = np.broadcast_to(e.array.astype(np.float32), out)
    varying = [d for d in range(len(out)) if not (full == full.take([0], axis=d)).all()]
    if len(varying) != 1:
        b.unsupported(f"pow with an exponent of shape {list(e.array.shape)} varying along {len(varying)} axes",
                      "tinyc takes a tensor exponent that varies along one axis (one exponent per channel)")
    axis = varying[0]
    along = full[tuple(slice(None) if d == axis else 0 for d in range(len(out)))]
    starts = [0] + [i for i in range(1, len(along)) if along[i] != along[i - 1]]
    if len(starts) > MAX_EXPONENT_RUNS:
        b.unsupported(f"pow with {len(starts)} runs of different exponents along axis {axis}",
                      f"at most {MAX_EXPONENT_RUNS} (each run is one pow by a scalar)")
    from tinyc.frontend_tensor import slice_axis
    parts = []
    for k, (lo, hi) in enumerate(zip(starts, starts[1:] + [len(along)])):
        xs = slice_axis(b, x, axis, lo, hi, 1, f"run{k}")
        y = b.emit("pow", [xs], _shape(xs), {"exponent": float(along[lo])}, tag=f"pow{k}") \
            if float(along[lo]) != 1.0 else xs
        parts.append(y)
    return b.emit("cat", parts, out, {"axis": axis})


def log_sigmoid_forward(b: Builder, a: dict):
    """F.logsigmoid exports as log_sigmoid_forward (output, buffer): the buffer is only for the gradient."""
    x = b.value(a["self"])
    return (b.emit("log_sigmoid", [x], _shape(x)), None)


def signum(b: Builder, a: dict):
    """torch.sign / torch.sgn of a real tensor: the `signum` op (`sign` is binarize's 1-bit op)."""
    x = b.value(a["self"])
    return b.emit("signum", [x], _shape(x))


def square(b: Builder, a: dict):
    return _pow(b, a["self"], 2.0)


def clamp_scalar(lo: bool) -> Callable:
    """clamp_min / clamp_max by a number: clamp with the other side unbounded."""
    def lower(b: Builder, a: dict):
        v = a["min"] if lo else a["max"]
        return _clamp(b, a["self"], v, None) if lo else _clamp(b, a["self"], None, v)
    return lower


# ---------------------------------------------------------------- maximum, minimum

def _pick(b: Builder, kind: str, x, y, tag: str | None = None) -> Value:
    xv, yv = b.value(x, "self"), b.value(y, "other")
    return b.emit(kind, [xv, yv], _broadcast(_shape(xv), _shape(yv)), tag=tag)


def pick(kind: str, other: str = "other") -> Callable:
    return lambda b, a: _pick(b, kind, a["self"], a[other])


def clamp_tensor(b: Builder, a: dict):
    """clamp(x, min, max) with tensor bounds: minimum(maximum(x, min), max), as PyTorch."""
    lo, hi = a["min"], a["max"]
    if lo is None and hi is None:
        b.unsupported("clamp without min or max")
    x = a["self"]
    if lo is not None:
        x = _pick(b, "maximum", x, lo, tag="min" if hi is not None else None)
    if hi is not None:
        x = _pick(b, "minimum", x, hi)
    return x


# ---------------------------------------------------------------- prelu, log_softmax

def _prelu(b: Builder, x: Value, w, n: int):
    """prelu with n slopes (1, or one per channel of axis 1), the slope flattened to [n]."""
    channels = _shape(x)[1] if x.type.rank >= 2 else 1
    if n not in (1, channels):
        b.unsupported(f"prelu with {n} slopes for an input of shape {list(_shape(x))}",
                      "one slope, or one per channel (axis 1)")
    if isinstance(w, ConstRef):
        wv = b.value(w if w.array.shape == (n,) else ConstRef(w.name, w.array.reshape(n)), "weight")
    else:
        wv = b.reshape(b.value(w), [n], tag="slope")
    return b.emit("prelu", [x, wv], _shape(x))


def _slope_shape(b: Builder, w) -> tuple[int, ...]:
    return tuple(w.array.shape) if isinstance(w, ConstRef) else _shape(b.value(w))


def prelu(b: Builder, a: dict):
    """nn.PReLU / F.prelu: the 1-D weight holds one slope or one per channel (axis 1)."""
    x, w = b.value(a["self"]), a["weight"]
    shape = _slope_shape(b, w)
    if len(shape) != 1:
        b.unsupported(f"prelu with a {len(shape)}-D weight", "the weight is 1-D: one slope, or one per channel")
    return _prelu(b, x, w, shape[0])


def prelu_kernel(b: Builder, a: dict):
    """_prelu_kernel(x, w) = x > 0 ? x : w x with w broadcast (PReLU's decomposition passes [C, 1, ...]):
    w must hold one value, or vary along the axis that lands on x's axis 1."""
    x, w = b.value(a["self"]), a["weight"]
    shape = _slope_shape(b, w)
    n = int(np.prod(shape)) if shape else 1
    varying = [i + x.type.rank - len(shape) for i, d in enumerate(shape) if d != 1]
    if tuple(_broadcast(_shape(x), shape)) != _shape(x) or (n > 1 and varying != [1]):
        b.unsupported(f"_prelu_kernel with a weight of shape {list(shape)} for an input of shape "
                      f"{list(_shape(x))}", "one slope, or one per channel (axis 1)")
    return _prelu(b, x, w, n)


def log_softmax(b: Builder, a: dict):
    if a.get("dtype") not in (None, torch.float32) or a.get("half_to_float"):
        b.unsupported("log_softmax with a dtype conversion")
    x = b.value(a["self"])
    if x.type.rank == 0:
        b.unsupported("log_softmax of a 0-d tensor")
    return b.emit("log_softmax", [x], _shape(x), {"axis": _axis(a["dim"], x.type.rank)})


# ---------------------------------------------------------------- reductions

def _reduce(b: Builder, kind: str, x, dims, keepdim: bool, tag: str | None = None) -> Value:
    """sum / amax / amin over `dims` (None or empty: every dim)."""
    x = b.value(x)
    rank = x.type.rank
    if rank == 0:
        return x
    if isinstance(dims, int):
        dims = [dims]
    axes = sorted({_axis(int(d), rank) for d in dims}) if dims else list(range(rank))
    keep = bool(keepdim)
    shape = [1 if i in axes else d for i, d in enumerate(_shape(x)) if keep or i not in axes]
    return b.emit(kind, [x], shape, {"axes": axes, "keepdim": keep}, tag=tag)


def sum_(b: Builder, a: dict):
    if a.get("dtype") not in (None, torch.float32):
        b.unsupported("sum with a dtype conversion")
    return _reduce(b, "sum", a["self"], a.get("dim"), a.get("keepdim", False))


def extreme(kind: str) -> Callable:
    """amax / amin (dims, keepdim) and max / min over everything."""
    return lambda b, a: _reduce(b, kind, a["self"], a.get("dim"), a.get("keepdim", False))


def extreme_dim(kind: str) -> Callable:
    """max.dim / min.dim return (values, indices): the values are amax / amin; using the indices is an
    error (the frontend's getitem says so)."""
    def lower(b: Builder, a: dict):
        return (_reduce(b, kind, a["self"], [a["dim"]], a["keepdim"]), None)
    return lower


def adaptive_max_pool(nd: int) -> Callable:
    """Output 1 along an axis is amax over it; an output dividing the input is a max pool with that
    window; other sizes (uneven windows) are not supported. The indices are not computed."""
    def lower(b: Builder, a: dict):
        x = b.value(a["self"])
        _need_rank(b, x, nd + 2, f"adaptive_max_pool{nd}d")
        sizes, outs = list(_shape(x)[2:]), _ints(a["output_size"], nd)
        if all(o in (1, s) for s, o in zip(sizes, outs)):
            axes = [2 + i for i, (s, o) in enumerate(zip(sizes, outs)) if o == 1 and s != 1]
            if not axes:
                return (x, None)
            return (_reduce(b, "amax", x, axes, True), None)
        if any(s % o for s, o in zip(sizes, outs)):
            b.unsupported(f"adaptive max pooling from {sizes} to {outs} (uneven windows)",
                          "use an output size that divides the input size, or 1")
        kernel = [s // o for s, o in zip(sizes, outs)]
        fake = {"self": x, "kernel_size": kernel, "stride": kernel, "padding": 0, "dilation": 1,
                "ceil_mode": False}
        return _pool(b, "max_pool2d", nd, fake)
    return lower


# ---------------------------------------------------------------- comparisons, masks, cumsum

def _mask_operand(b: Builder, x, tag: str) -> Value:
    """A compare / logical operand: a Python bool is 1.0 or 0.0 (True & mask), a number a scalar constant."""
    if isinstance(x, bool):
        x = float(x)
    return b.value(x, tag)


def compare(cmp: str) -> Callable:
    """aten.gt/ge/lt/le/eq/ne, Tensor and Scalar forms: a `compare` mask (1.0 where true)."""
    def lower(b: Builder, a: dict):
        xv, yv = _mask_operand(b, a["self"], "self"), _mask_operand(b, a["other"], "other")
        return b.emit("compare", [xv, yv], _broadcast(_shape(xv), _shape(yv)), {"cmp": cmp})
    return lower


def logical(fn: str, bitwise: bool = False) -> Callable:
    """logical_and/or/xor/not (operands true where non-zero), and the bitwise forms &, |, ^, ~ on bool
    tensors (bitwise ops on integer tensors are not supported)."""
    def lower(b: Builder, a: dict):
        if bitwise and b.node.meta["val"].dtype != torch.bool:
            b.unsupported(f"bitwise {fn} on {b.node.meta['val'].dtype} tensors",
                          "tinyc computes bitwise ops on bool masks only (comparisons' results)")
        xs = [_mask_operand(b, a["self"], "self")] + ([] if fn == "not" else [_mask_operand(b, a["other"], "other")])
        return b.emit("logical", xs, _broadcast(*(_shape(v) for v in xs)), {"fn": fn})
    return lower


def cumsum(b: Builder, a: dict):
    """torch.cumsum along one dim (a 0-d tensor is its own running sum)."""
    if a.get("dtype") not in (None, torch.float32):
        b.unsupported(f"cumsum with dtype={a['dtype']}", "cumsum in the input's dtype (float32)")
    x = b.value(a["self"])
    if x.type.rank == 0:
        return x
    return b.emit("cumsum", [x], _shape(x), {"axis": _axis(int(a["dim"]), x.type.rank)})


# ---------------------------------------------------------------- the table

def _table() -> dict[str, Callable[[Builder, dict], Any]]:
    t: dict[str, Callable[[Builder, dict], Any]] = {}

    def add(names: str, fn: Callable):
        for n in names.split():
            t["aten." + n] = fn

    add("elu.default", elu)
    add("celu.default", celu)
    add("softplus.default", softplus)
    add("pow.Tensor_Scalar", pow_scalar)
    add("pow.Tensor_Tensor", pow_tensor)
    add("square.default", square)
    add("sign.default sgn.default", signum)
    add("log_sigmoid_forward.default", log_sigmoid_forward)
    add("clamp_min.default", clamp_scalar(lo=True))
    add("clamp_max.default", clamp_scalar(lo=False))
    add("maximum.default max.other", pick("maximum"))
    add("minimum.default min.other", pick("minimum"))
    add("clamp_min.Tensor", pick("maximum", "min"))
    add("clamp_max.Tensor", pick("minimum", "max"))
    add("clamp.Tensor", clamp_tensor)
    add("prelu.default", prelu)
    add("_prelu_kernel.default", prelu_kernel)
    add("log_softmax.int _log_softmax.default", log_softmax)
    add("sum.dim_IntList sum.default", sum_)
    add("amax.default max.default", extreme("amax"))
    add("amin.default min.default", extreme("amin"))
    add("max.dim", extreme_dim("amax"))
    add("min.dim", extreme_dim("amin"))
    add("adaptive_max_pool2d.default", adaptive_max_pool(2))
    add("adaptive_max_pool1d.default", adaptive_max_pool(1))
    for cmp in ("gt", "ge", "lt", "le", "eq", "ne"):
        add(f"{cmp}.Tensor {cmp}.Scalar", compare(cmp))
    for fn in ("and", "or", "xor"):
        add(f"logical_{fn}.default", logical(fn))
        add(f"bitwise_{fn}.Tensor bitwise_{fn}.Scalar __{fn}__.Tensor __{fn}__.Scalar", logical(fn, bitwise=True))
    add("logical_not.default", logical("not"))
    add("bitwise_not.default", logical("not", bitwise=True))
    add("cumsum.default", cumsum)
    return t


LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = _table()
