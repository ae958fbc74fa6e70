"""Pieces shared by the ops' reference semantics: sliding windows in numpy (im2col through
strided views, never Python loops over pixels) and in torch (explicit padding cropped to the
IR's output size), and the integer helpers of the int8 forms (docs/quantization.md)."""
from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tinyc import quant
from tinyc.errors import TinycError
from tinyc.ir import Op
from tinyc.ops.core import F, window_out


# ---- numpy windows (conv and pools) -------------------------------------------------------

def pad2d(x: np.ndarray, padding, value: float, extra=(0, 0)) -> np.ndarray:
    """Pad H and W by [top, left, bottom, right], plus `extra` rows/cols at the end (ceil_mode)."""
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom + extra[0]), (left, right + extra[1])),
                  constant_values=value)


def windows(x: np.ndarray, out_hw, kernel, stride, dilation) -> np.ndarray:
    """Read-only view [N, C, OH, OW, KH, KW] of the padded x: the window under each output pixel."""
    n, c = x.shape[:2]
    s = x.strides
    shape = (n, c, *out_hw, *kernel)
    strides = (s[0], s[1], s[2] * stride[0], s[3] * stride[1], s[2] * dilation[0], s[3] * dilation[1])
    return as_strided(x, shape, strides, writeable=False)


def out_hw(x: np.ndarray, kernel, stride, dilation, padding, ceil_mode: bool = False) -> list[int]:
    return [window_out(n, k, s, d, p0, p1, ceil_mode) for n, k, s, d, p0, p1 in
            zip(x.shape[2:], kernel, stride, dilation, padding[:2], padding[2:])]


def ceil_extra(out, stride, dilation, kernel, size, padding) -> list[int]:
    """Rows/cols past the bottom/right padding that ceil_mode's last window reads."""
    return [max(0, (o - 1) * s + d * (k - 1) + 1 - (n + p0 + p1))
            for o, s, d, k, n, p0, p1 in zip(out, stride, dilation, kernel, size, padding[:2], padding[2:])]


def pool_windows(op: Op, x: np.ndarray, value: float, dilation) -> np.ndarray:
    a = op.attrs
    kernel, stride, padding = a["kernel"], a["stride"], a["padding"]
    hw = out_hw(x, kernel, stride, dilation, padding, a["ceil_mode"])
    extra = ceil_extra(hw, stride, dilation, kernel, x.shape[2:], padding)
    return windows(pad2d(x, padding, value, extra), hw, kernel, stride, dilation)


def conv2d(op: Op, x, w, b=None):
    """Grouped 2-D convolution in the operands' dtype (float64 or int64)."""
    a = op.attrs
    g = a["groups"]
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    oh, ow = out_hw(x, (kh, kw), a["stride"], a["dilation"], a["padding"])
    win = windows(pad2d(x, a["padding"], 0.0), (oh, ow), (kh, kw), a["stride"], a["dilation"])
    # im2col per group: [G, N*OH*OW, Cg*KH*KW] @ [G, Cg*KH*KW, O/G] -> one batched BLAS product.
    cols = win.reshape(n, g, cg, oh, ow, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6).reshape(g, n * oh * ow, -1)
    y = cols @ w.reshape(g, o // g, -1).transpose(0, 2, 1)
    y = y.reshape(g, n, oh, ow, o // g).transpose(1, 0, 4, 2, 3).reshape(n, o, oh, ow)
    return y if b is None else y + b.reshape(1, o, 1, 1)


def linear(op: Op, x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def axis_divisor(size: int, out: int, k: int, s: int, pad_begin: int, pad_end: int, include_pad: bool):
    """PyTorch's average-pool divisor along one axis: the window clipped to the padded input
    (count_include_pad) or to the input itself."""
    start = np.arange(out) * s - pad_begin
    end = np.minimum(start + k, size + pad_end)
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def avg_divisors(hw, out, kernel, stride, padding, include_pad: bool) -> np.ndarray:
    """[OH, OW] divisors of an average pool."""
    dh, dw = (axis_divisor(n, o, k, s, p0, p1, include_pad) for n, o, k, s, p0, p1 in
              zip(hw, out, kernel, stride, padding[:2], padding[2:]))
    return np.outer(dh, dw)


def avg_sum(op: Op, x) -> tuple[np.ndarray, np.ndarray]:
    """Window sums (padding adds 0) and the [OH, OW] divisors."""
    a = op.attrs
    total = pool_windows(op, x, 0, (1, 1)).sum(axis=(4, 5))
    return total, avg_divisors(x.shape[2:], total.shape[2:], a["kernel"], a["stride"], a["padding"],
                               a["count_include_pad"])


def crop_pad(x, pads, value, pad_fn):
    """Negative pads crop (as F.pad does): slice first, then pad with the positive parts."""
    r = len(x.shape)
    begin, end = pads[:r], pads[r:]
    x = x[tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begin, end)))]
    return pad_fn(x, [(max(0, b), max(0, e)) for b, e in zip(begin, end)], value)


def np_pad(x, widths, value):
    return np.pad(x, widths, constant_values=value)


def clamp(x, lo: float, hi: float):
    # min(max(x, lo), hi) as PyTorch does, so lo > hi gives hi.
    return np.minimum(np.maximum(x, lo), hi)


# ---- torch windows ---------------------------------------------------------------------------

def torch_pad_hw(x, top: int, left: int, bottom: int, right: int, value: float = 0.0):
    if not (top or left or bottom or right):
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


@functools.lru_cache(maxsize=None)
def pool_geometry(hw: tuple[int, int], kernel: tuple, stride: tuple, dilation: tuple, padding: tuple,
                  ceil_mode: bool) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(OH, OW) by the IR's rule and the padding [t, l, b, r] that makes every window fit,
    ceil_mode's last window included (as the numpy reference pads)."""
    out = tuple(window_out(n, k, s, d, p0, p1, ceil_mode) for n, k, s, d, p0, p1 in
                zip(hw, kernel, stride, dilation, padding[:2], padding[2:]))
    extra = ceil_extra(out, stride, dilation, kernel, hw, padding)
    t, l, b, r = padding
    return out, (t, l, b + extra[0], r + extra[1])


@functools.lru_cache(maxsize=None)
def torch_avg_divisors(hw, out, kernel, stride, padding, include_pad: bool) -> np.ndarray:
    return avg_divisors(hw, out, kernel, stride, padding, include_pad).astype(np.float64)


def window_args(op: Op, dilation) -> tuple:
    a = op.attrs
    hw = tuple(op.operands[0].type.shape[2:])
    return hw, tuple(a["kernel"]), tuple(a["stride"]), tuple(dilation), tuple(a["padding"]), bool(a["ceil_mode"])


def torch_pad(x, widths, value):
    flat = []
    for b, e in reversed(widths):   # F.pad lists the last dimension first
        flat += [b, e]
    return F.pad(x, flat, value=value) if any(flat) else x


# ---- int8 forms ------------------------------------------------------------------------------

def qparams(op: Op, i: int):
    return op.operands[i].type.quant


def centered(op: Op, i: int, x: np.ndarray) -> np.ndarray:
    """Operand i's codes minus its zero point, as int64 (real = scale * centered)."""
    return x.astype(np.int64) - op.operands[i].type.quant.zero_point[0]


def requant_out(op: Op, acc: np.ndarray, ratio) -> np.ndarray:
    """int32 accumulators -> int8 result: requantize by `ratio` (broadcastable), add the zero
    point, clamp to the fused act's range (a fused leaky_relu scales negatives by alpha)."""
    if acc.size and (acc.min() < quant.I32_MIN or acc.max() > quant.I32_MAX):
        raise TinycError(f"interpreter: %{op.result.name} = {op.kind}: int32 accumulator overflows",
                         where=op.loc, hint="keep this op in float (quantize-int8{keep-float=...})")
    out = op.result.type.quant
    (mp, sp), (mn, sn) = quant.output_multipliers(ratio, op.attrs)
    y = np.where(acc >= 0, quant.requantize(acc, mp, sp), quant.requantize(acc, mn, sn)) + out.zero_point[0]
    return quant.saturate(y, *quant.act_bounds(op.attrs, out)).astype(np.int8)
