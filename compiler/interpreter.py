"""Reference interpreter: runs a graph with numpy. The oracle for every pass and C kernel.

Kernels compute in float64 and the result is cast to the op's storage dtype, so float32
results match PyTorch to rounding. Sliding-window ops use im2col through strided views and
one matrix product, never Python loops over pixels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tinyc.errors import TinycError
from tinyc.ir import DTYPES, Graph, Op
from tinyc.ops import FUSABLE_ACT_OPS, fmt_shape, window_out


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


def _avg_pool2d(op: Op, x):
    a = op.attrs
    total = _pool_windows(op, x, 0.0, (1, 1)).sum(axis=(4, 5))
    dh, dw = (_avg_divisor(n, o, k, s, p0, p1, a["count_include_pad"]) for n, o, k, s, p0, p1 in
              zip(x.shape[2:], total.shape[2:], a["kernel"], a["stride"], a["padding"][:2], a["padding"][2:]))
    return total / np.outer(dh, dw)


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


def _pad(op: Op, x):
    pads, r = op.attrs["pads"], x.ndim
    begin, end = pads[:r], pads[r:]
    # Negative pads crop (as F.pad does): slice first, then pad with the positive parts.
    x = x[tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begin, end)))]
    return np.pad(x, [(max(0, b), max(0, e)) for b, e in zip(begin, end)], constant_values=op.attrs["value"])


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


KERNELS: dict[str, Callable] = {
    "const": lambda op: op.attrs["value"],
    **{kind: _kernel(kind, f) for kind, f in _COMPUTE.items()},
}
