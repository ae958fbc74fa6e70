"""Reference interpreter: runs a graph with numpy. The oracle for every pass and C kernel.

Float kernels compute in float64 and the result is cast to the op's storage dtype, so
float32 results match PyTorch to rounding. Sliding-window ops use im2col through strided
views and one matrix product, never Python loops over pixels.

The int8 forms (docs/quantization.md) compute on int64 codes with the arithmetic of
tinyc.quant and check that accumulators fit int32: they define, bit for bit, what the
C kernels must produce.

The compressed representations (docs/compression_formats.md) are exact too: `decode` is a
gather, `sign` a comparison, and bin_conv2d / bin_linear with u1 inputs an integer sum of
+-1 products, scaled in float32 in a fixed order (float form) or requantized (int8 form).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tinyc import quant
from tinyc.errors import TinycError
from tinyc.ir import DTYPES, Graph, Op
from tinyc.ops import BINARY_LAYER_OPS, FUSABLE_ACT_OPS, bin_int_form, fmt_shape, is_int_form, window_out


def run(graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs for these inputs."""
    env = run_all(graph, inputs)
    return [env[v.name] for v in graph.outputs]


def run_all(graph: Graph, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every value of the graph (inputs, consts, op results) by name, for per-layer comparisons."""
    env = {v.name: a for v, a in zip(graph.inputs, _check_inputs(graph, inputs))}
    for op in graph.ops:
        kernel = KERNELS.get(op.kind)
        if kernel is None:
            raise TinycError(f"interpreter: no kernel for op kind '{op.kind}'", where=op.loc)
        env[op.result.name] = kernel(op, *(env[v.name] for v in op.operands))
    return env


def _check_inputs(graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if len(inputs) != len(graph.inputs):
        raise TinycError(f"graph @{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    out = []
    for v, a in zip(graph.inputs, inputs):
        a = np.asarray(a)
        storage = DTYPES[v.type.dtype]
        if a.shape != v.type.shape:
            raise TinycError(f"input %{v.name} has shape {fmt_shape(a.shape)}, the graph expects "
                             f"{fmt_shape(v.type.shape)}", hint="include the batch dimension the model was traced with")
        if not np.can_cast(a.dtype, storage, "same_kind"):
            raise TinycError(f"input %{v.name} has dtype {a.dtype}, the graph expects {v.type.dtype} ({storage})")
        out.append(a.astype(storage, copy=False))
    return out


# ---- windows (conv and pools) ----------------------------------------------------------

def _pad2d(x: np.ndarray, padding, value: float, extra=(0, 0)) -> np.ndarray:
    """Pad H and W by [top, left, bottom, right], plus `extra` rows/cols at the end (ceil_mode)."""
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom + extra[0]), (left, right + extra[1])),
                  constant_values=value)


def _windows(x: np.ndarray, out_hw, kernel, stride, dilation) -> np.ndarray:
    """Read-only view [N, C, OH, OW, KH, KW] of the padded x: the window under each output pixel."""
    n, c = x.shape[:2]
    s = x.strides
    shape = (n, c, *out_hw, *kernel)
    strides = (s[0], s[1], s[2] * stride[0], s[3] * stride[1], s[2] * dilation[0], s[3] * dilation[1])
    return as_strided(x, shape, strides, writeable=False)


def _out_hw(x: np.ndarray, kernel, stride, dilation, padding, ceil_mode: bool = False) -> list[int]:
    return [window_out(n, k, s, d, p0, p1, ceil_mode) for n, k, s, d, p0, p1 in
            zip(x.shape[2:], kernel, stride, dilation, padding[:2], padding[2:])]


def _pool_windows(op: Op, x: np.ndarray, value: float, dilation) -> np.ndarray:
    a = op.attrs
    kernel, stride, padding = a["kernel"], a["stride"], a["padding"]
    out_hw = _out_hw(x, kernel, stride, dilation, padding, a["ceil_mode"])
    size = x.shape[2:]
    # ceil_mode's last window may run past the bottom/right padding: extend with `value`.
    extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - (n + p0 + p1))
             for o, s, d, k, n, p0, p1 in zip(out_hw, stride, dilation, kernel, size, padding[:2], padding[2:])]
    return _windows(_pad2d(x, padding, value, extra), out_hw, kernel, stride, dilation)


def _conv2d(op: Op, x, w, b=None):
    a = op.attrs
    g = a["groups"]
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    oh, ow = _out_hw(x, (kh, kw), a["stride"], a["dilation"], a["padding"])
    win = _windows(_pad2d(x, a["padding"], 0.0), (oh, ow), (kh, kw), a["stride"], a["dilation"])
    # im2col per group: [G, N*OH*OW, Cg*KH*KW] @ [G, Cg*KH*KW, O/G] -> one batched BLAS product.
    cols = win.reshape(n, g, cg, oh, ow, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6).reshape(g, n * oh * ow, -1)
    y = cols @ w.reshape(g, o // g, -1).transpose(0, 2, 1)
    y = y.reshape(g, n, oh, ow, o // g).transpose(1, 0, 4, 2, 3).reshape(n, o, oh, ow)
    return y if b is None else y + b.reshape(1, o, 1, 1)


def _max_pool2d(op: Op, x):
    return _pool_windows(op, x, -np.inf, op.attrs["dilation"]).max(axis=(4, 5))


def _avg_divisor(size: int, out: int, k: int, s: int, pad_begin: int, pad_end: int, include_pad: bool):
    """PyTorch's divisor along one axis: the window clipped to the padded input (count_include_pad)
    or to the input itself."""
    start = np.arange(out) * s - pad_begin
    end = np.minimum(start + k, size + pad_end)
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avg_sum(op: Op, x) -> tuple[np.ndarray, np.ndarray]:
    """Window sums (padding adds 0) and the [OH, OW] divisors."""
    a = op.attrs
    total = _pool_windows(op, x, 0, (1, 1)).sum(axis=(4, 5))
    dh, dw = (_avg_divisor(n, o, k, s, p0, p1, a["count_include_pad"]) for n, o, k, s, p0, p1 in
              zip(x.shape[2:], total.shape[2:], a["kernel"], a["stride"], a["padding"][:2], a["padding"][2:]))
    return total, np.outer(dh, dw)


def _avg_pool2d(op: Op, x):
    total, divisor = _avg_sum(op, x)
    return total / divisor


# ---- the rest ----------------------------------------------------------------------------

def _linear(op: Op, x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def _batch_norm(op: Op, x, mean, var, weight, bias):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = weight / np.sqrt(var + op.attrs["eps"])
    return (x - mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)


def _clamp(x, lo: float, hi: float):
    # min(max(x, lo), hi) as PyTorch does, so lo > hi gives hi.
    return np.minimum(np.maximum(x, lo), hi)


def _leaky_relu(x, alpha: float):
    return np.where(x >= 0, x, x * alpha)


def _softmax(op: Op, x):
    axis = op.attrs["axis"]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _pad(op: Op, x, value=None):
    """Constant pad with the `value` attribute, or with `value` given (the int8 form's code)."""
    value = op.attrs["value"] if value is None else value
    pads, r = op.attrs["pads"], x.ndim
    begin, end = pads[:r], pads[r:]
    # Negative pads crop (as F.pad does): slice first, then pad with the positive parts.
    x = x[tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begin, end)))]
    return np.pad(x, [(max(0, b), max(0, e)) for b, e in zip(begin, end)], constant_values=value)


# Fused activations, applied after the op.
ACTS: dict[str, Callable] = {
    "relu": lambda x, a: np.maximum(x, 0.0),
    "clamp": lambda x, a: _clamp(x, a["act_min"], a["act_max"]),
    "leaky_relu": lambda x, a: _leaky_relu(x, a["act_alpha"]),
}

_COMPUTE: dict[str, Callable] = {
    "conv2d": _conv2d,
    "linear": _linear,
    "matmul": lambda op, a, b: np.matmul(a, b),
    "batch_norm": _batch_norm,
    "relu": lambda op, x: np.maximum(x, 0.0),
    "sigmoid": lambda op, x: 0.5 * (1.0 + np.tanh(0.5 * x)),   # no overflow for large |x|
    "tanh": lambda op, x: np.tanh(x),
    "hardswish": lambda op, x: x * _clamp(x + 3.0, 0.0, 6.0) / 6.0,
    "clamp": lambda op, x: _clamp(x, op.attrs["min"], op.attrs["max"]),
    "leaky_relu": lambda op, x: _leaky_relu(x, op.attrs["alpha"]),
    "add": lambda op, a, b: a + b,
    "sub": lambda op, a, b: a - b,
    "mul": lambda op, a, b: a * b,
    "div": lambda op, a, b: a / b,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "mean": lambda op, x: x.mean(axis=tuple(op.attrs["axes"]), keepdims=op.attrs["keepdim"]),
    "reshape": lambda op, x: x.reshape(op.attrs["shape"]),
    "transpose": lambda op, x: x.transpose(op.attrs["perm"]),
    "cat": lambda op, *xs: np.concatenate(xs, axis=op.attrs["axis"]),
    "softmax": _softmax,
    "pad": _pad,
}


def _kernel(kind: str, compute: Callable) -> Callable:
    """Wrap a float64 compute function: widen operands, apply the fused act, cast to the result dtype."""
    fused = kind in FUSABLE_ACT_OPS

    def kernel(op: Op, *arrays: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = compute(op, *(np.asarray(a, np.float64) for a in arrays))
            if fused and "act" in op.attrs:
                y = ACTS[op.attrs["act"]](y, op.attrs)
        return np.asarray(y).astype(DTYPES[op.result.type.dtype], copy=False)

    return kernel


# ---- int8 forms --------------------------------------------------------------------------------

def _centered(op: Op, i: int, x: np.ndarray) -> np.ndarray:
    """Operand i's codes minus its zero point, as int64 (real = scale * centered)."""
    return x.astype(np.int64) - op.operands[i].type.quant.zero_point[0]


def _requant_out(op: Op, acc: np.ndarray, ratio) -> np.ndarray:
    """int32 accumulators -> int8 result: requantize by `ratio` (broadcastable), add the zero
    point, clamp to the fused act's range (a fused leaky_relu scales negatives by alpha)."""
    if acc.size and (acc.min() < quant.I32_MIN or acc.max() > quant.I32_MAX):
        raise TinycError(f"interpreter: %{op.result.name} = {op.kind}: int32 accumulator overflows",
                         where=op.loc, hint="keep this op in float (quantize-int8{keep-float=...})")
    out = op.result.type.quant
    (mp, sp), (mn, sn) = quant.output_multipliers(ratio, op.attrs)
    y = np.where(acc >= 0, quant.requantize(acc, mp, sp), quant.requantize(acc, mn, sn)) + out.zero_point[0]
    return quant.saturate(y, *quant.act_bounds(op.attrs, out)).astype(np.int8)


def _quant(op: Op, i: int):
    return op.operands[i].type.quant


def _conv2d_q(op: Op, x, w, b=None):
    acc = _conv2d(op, _centered(op, 0, x), w.astype(np.int64), None if b is None else b.astype(np.int64))
    ratio = quant.conv_ratios(_quant(op, 0), _quant(op, 1), op.result.type.quant)
    return _requant_out(op, acc, ratio.reshape(1, -1, 1, 1))


def _linear_q(op: Op, x, w, b=None):
    acc = _linear(op, _centered(op, 0, x), w.astype(np.int64), None if b is None else b.astype(np.int64))
    return _requant_out(op, acc, quant.conv_ratios(_quant(op, 0), _quant(op, 1), op.result.type.quant))


def _mul_q(op: Op, a, b, product=np.multiply):
    acc = product(_centered(op, 0, a), _centered(op, 1, b))
    return _requant_out(op, acc, quant.mul_ratio(_quant(op, 0), _quant(op, 1), op.result.type.quant))


def _add_q(sign: int) -> Callable:
    def kernel(op: Op, a, b):
        ra, rb, ro = quant.add_ratios(_quant(op, 0), _quant(op, 1), op.result.type.quant)
        a2, b2 = (quant.requantize(_centered(op, i, v) << quant.ADD_SHIFT, *quant.quantize_multiplier(r))
                  for i, v, r in ((0, a, ra), (1, b, rb)))
        return _requant_out(op, a2 + sign * b2, ro)
    return kernel


def _div_q(op: Op, a, b):
    num, den = np.broadcast_arrays(_centered(op, 0, a) << quant.DIV_SHIFT, _centered(op, 1, b))
    quotient = quant.div_round(num, np.where(den == 0, 1, den))
    y = _requant_out(op, quotient, quant.div_ratio(_quant(op, 0), _quant(op, 1), op.result.type.quant))
    # x / 0 saturates by the sign of x; 0 / 0 is 0.
    at_zero = np.where(num > 0, quant.QMAX, np.where(num < 0, quant.QMIN, op.result.type.quant.zero_point[0]))
    return np.where(den == 0, at_zero, y).astype(np.int8)


def _avg_pool2d_q(op: Op, x):
    total, divisor = _avg_sum(op, _centered(op, 0, x))
    return quant.saturate(quant.div_round(total, divisor) + _quant(op, 0).zero_point[0]).astype(np.int8)


def _mean_q(op: Op, x):
    axes = tuple(op.attrs["axes"])
    total = _centered(op, 0, x).sum(axis=axes, keepdims=op.attrs["keepdim"])
    count = int(np.prod([x.shape[i] for i in axes]))
    return _requant_out(op, total, quant.rescale_ratio(_quant(op, 0), op.result.type.quant, count))


def _cat_q(op: Op, *xs):
    out = op.result.type.quant
    parts = [_requant_out(op, _centered(op, i, x), quant.rescale_ratio(_quant(op, i), out)) for i, x in enumerate(xs)]
    return np.concatenate(parts, axis=op.attrs["axis"])


def _softmax_q(op: Op, x, table):
    """e = table[row max - q]; out = round(256 * e / sum(e)) - 128."""
    axis, xi = op.attrs["axis"], x.astype(np.int64)
    e = table.astype(np.int64)[xi.max(axis=axis, keepdims=True) - xi]
    y = quant.div_round(e << 8, e.sum(axis=axis, keepdims=True)) + quant.QMIN
    return quant.saturate(y).astype(np.int8)


_INT_COMPUTE: dict[str, Callable] = {
    "conv2d": _conv2d_q,
    "linear": _linear_q,
    "matmul": lambda op, a, b: _mul_q(op, a, b, np.matmul),
    "add": _add_q(1),
    "sub": _add_q(-1),
    "mul": _mul_q,
    "div": _div_q,
    "max_pool2d": lambda op, x: _pool_windows(op, x, quant.QMIN, op.attrs["dilation"]).max(axis=(4, 5)),
    "avg_pool2d": _avg_pool2d_q,
    "mean": _mean_q,
    "reshape": lambda op, x: x.reshape(op.attrs["shape"]),
    "transpose": lambda op, x: x.transpose(op.attrs["perm"]),
    "cat": _cat_q,
    "softmax": _softmax_q,
    "pad": lambda op, x: _pad(op, x, int(quant.quantize(np.float32(op.attrs["value"]), _quant(op, 0)))),
    "lut": lambda op, x, table: table[x.astype(np.int64) - quant.QMIN],
    "quantize": lambda op, x: quant.quantize(x, op.result.type.quant).astype(np.int8),
    "dequantize": lambda op, x: quant.dequantize(x, _quant(op, 0)),
}


# ---- compressed representations (docs/compression_formats.md) ---------------------------------

def _decode(op: Op, idx, codebook):
    """codebook[idx] (codebook [K]) or codebook[c, idx[c, ...]] (codebook [O, K])."""
    i = idx.astype(np.int64)
    k = codebook.shape[-1]
    if i.size and i.max() >= k:
        raise TinycError(f"interpreter: %{op.result.name} = decode: index {int(i.max())} is out of range "
                         f"for a codebook of {k} entries", where=op.loc)
    if codebook.ndim == 1:
        return codebook[i]
    rows = np.take_along_axis(codebook, i.reshape(i.shape[0], -1), axis=1)
    return rows.reshape(i.shape)


def _sign(op: Op, x, threshold=None):
    """1 where x >= threshold (0 without one; the int8 form compares codes, default the zero
    point), else 0. NaN gives 0."""
    if op.operands[0].type.quant is not None:
        t = _quant(op, 0).zero_point[0] if threshold is None else threshold.astype(np.int64)
        return (x.astype(np.int64) >= t).astype(np.uint8)
    with np.errstate(invalid="ignore"):
        return (x >= (np.float32(0) if threshold is None else threshold)).astype(np.uint8)


def _bin_acc(op: Op, x, w):
    """The layer's sum of products with w_hat = +1 (bit 1) / -1 (bit 0) over the in-bounds taps
    (padded taps contribute 0); x_hat is +-1 for a u1 input, q - zp for i8, the value for f32.
    Integer (int64) for u1 and i8 inputs."""
    xt = op.operands[0].type
    if xt.dtype == "u1":
        xh = 2 * x.astype(np.int64) - 1
    elif xt.quant is not None:
        xh = _centered(op, 0, x)
    else:
        xh = x.astype(np.float64)
    wh = 2 * w.astype(np.int64) - 1
    if xh.dtype == np.float64:
        wh = wh.astype(np.float64)
    if op.kind == "bin_conv2d":
        return _conv2d(op, xh, wh), (1, -1, 1, 1)
    return _linear(op, xh, wh), (-1,)


def _act_f32(y: np.ndarray, attrs: dict) -> np.ndarray:
    """Fused activation on float32 values, in float32: relu y > 0 ? y : 0; clamp
    min(max(y, lo), hi); leaky_relu y >= 0 ? y : y * alpha."""
    act = attrs.get("act")
    if act == "relu":
        return np.where(y > 0, y, np.float32(0))
    if act == "clamp":
        return np.minimum(np.maximum(y, np.float32(attrs["act_min"])), np.float32(attrs["act_max"]))
    if act == "leaky_relu":
        return np.where(y >= 0, y, y * np.float32(attrs["act_alpha"]))
    return y


def _bin_layer(op: Op, x, w, alpha, b=None):
    acc, shape = _bin_acc(op, x, w)
    types = [v.type for v in op.operands]
    if bin_int_form(types):
        if types[0].quant is not None:
            in_scale = _quant(op, 0).scale[0]
        else:   # u1: the sum of +-1 products, scaled by 2^BIN_SHIFT
            in_scale, acc = quant.BIN_U1_SCALE, acc << quant.BIN_SHIFT
        want = quant.bin_bias_scales(in_scale, alpha)
        if not np.allclose(want, _quant(op, 3).scale, rtol=1e-6, atol=0):
            raise TinycError(f"interpreter: %{op.result.name} = {op.kind}: bias scales are not "
                             "input scale x alpha", where=op.loc, hint="requantize the bias after changing alpha")
        acc = acc + b.astype(np.int64).reshape(shape)
        return _requant_out(op, acc, quant.bin_ratios(in_scale, alpha, op.result.type.quant).reshape(shape))
    if types[0].dtype == "u1":
        # Exact integer sum, then float32: y = float(acc) * alpha[c]; y = y + bias[c]; act.
        if acc.size and np.abs(acc).max() >= 2 ** 24:
            raise TinycError(f"interpreter: %{op.result.name} = {op.kind}: |sum| >= 2^24 is not exact in float32",
                             where=op.loc)
        y = acc.astype(np.float32) * alpha.astype(np.float32).reshape(shape)
        if b is not None:
            y = y + b.astype(np.float32).reshape(shape)
        return _act_f32(y, op.attrs).astype(np.float32)
    # Float input: like a float conv2d / linear (float64, one rounding to float32 at the end).
    y = acc * alpha.astype(np.float64).reshape(shape)
    if b is not None:
        y = y + b.astype(np.float64).reshape(shape)
    if "act" in op.attrs:
        y = ACTS[op.attrs["act"]](y, op.attrs)
    return y.astype(np.float32)


_SPECIAL: dict[str, Callable] = {
    "decode": _decode,
    "sign": _sign,
    **{k: _bin_layer for k in BINARY_LAYER_OPS},
}


def _dispatch(kind: str) -> Callable:
    """The kernel of `kind`: the int8 form when the op is one (ops.is_int_form), else float."""
    float_kernel = _kernel(kind, _COMPUTE[kind]) if kind in _COMPUTE else None
    int_kernel = _INT_COMPUTE.get(kind)
    if float_kernel is None or int_kernel is None:
        return float_kernel or int_kernel

    def kernel(op: Op, *arrays: np.ndarray) -> np.ndarray:
        int_form = is_int_form(kind, [v.type for v in op.operands])
        return (int_kernel if int_form else float_kernel)(op, *arrays)

    return kernel


KERNELS: dict[str, Callable] = {
    "const": lambda op: op.attrs["value"],
    **{kind: _dispatch(kind) for kind in {**_COMPUTE, **_INT_COMPUTE}},
    **_SPECIAL,
}
