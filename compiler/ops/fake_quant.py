"""fake_quant: an imported model's own quantization, in float (PyTorch pt2e models,
docs/quantization.md "Importing a pt2e-quantized model").

A pt2e-converted model computes in float between quantize/dequantize pairs; the frontend imports
each pair as one `fake_quant` op carrying the model's scale, zero point and code range, so the
float interpreter reproduces the quantized PyTorch model. quantize-int8 (qparams=model) takes
these parameters as the values' int8 quantization instead of calibrating, and removes the op.

The arithmetic is PyTorch's quantized_decomposed quantize-then-dequantize, operation for
operation in float32: codes = clamp(rint(x * inv_scale) + zp, qmin, qmax) (rint: ties to even),
y = (codes - zp) * scale. PyTorch computes inv_scale per tensor as float32(1.0 / scale) from a
float64 division and per channel as a float32 division; `inv_scales` reproduces both (the C
kernel is handed the same constants, so float C and the interpreter agree bit for bit).
"""
from __future__ import annotations

import numpy as np

from tinyc.ops.core import OpDef, axis_attr, keeps_batch_unary, need, register, sample, torch

# Code ranges fake_quant accepts: those of the integer dtypes PyTorch's quantized_decomposed ops take.
CODE_MIN, CODE_MAX = -2 ** 31, 2 ** 31 - 1


def per_channel(attrs: dict) -> bool:
    return "axis" in attrs


def inv_scales(scale, channelwise: bool) -> np.ndarray:
    s = np.asarray(scale, np.float64)
    if channelwise:
        return np.float32(1.0) / s.astype(np.float32)
    return (1.0 / s).astype(np.float32)


def _shaped(values, axis: int | None, ndim: int, dtype) -> np.ndarray:
    a = np.asarray(values, dtype)
    if axis is None:
        return a.reshape(())
    return a.reshape([-1 if i == axis else 1 for i in range(ndim)])


def codes(x, attrs: dict) -> np.ndarray:
    """PyTorch's quantize_per_tensor / quantize_per_channel codes (float32 holding integers)."""
    x = np.asarray(x, np.float32)
    axis = attrs.get("axis")
    inv = _shaped(inv_scales(attrs["scale"], axis is not None), axis, x.ndim, np.float32)
    zp = _shaped(attrs["zero_point"], axis, x.ndim, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.rint(x * inv) + zp
    return np.clip(t, np.float32(attrs["qmin"]), np.float32(attrs["qmax"])).astype(np.float32)


def fake_quantize(x, attrs: dict) -> np.ndarray:
    """quantize then dequantize exactly as PyTorch's quantized_decomposed ops (float32)."""
    x = np.asarray(x, np.float32)
    axis = attrs.get("axis")
    zp = _shaped(attrs["zero_point"], axis, x.ndim, np.float32)
    s = _shaped(attrs["scale"], axis, x.ndim, np.float32)
    return ((codes(x, attrs) - zp) * s).astype(np.float32)


def _infer(ts, a):
    x = ts[0]
    need(x.dtype == "f32", f"fake_quant takes an f32 input, got {x.dtype}")
    scale, zp = a["scale"], a["zero_point"]
    need(len(scale) == len(zp) and len(scale) >= 1, f"scale and zero_point differ in length "
         f"({len(scale)} and {len(zp)}) or are empty")
    need(all(np.isfinite(s) and s > 0 and np.float32(s) == s and np.isfinite(1.0 / np.float32(s)) for s in scale),
         "scales must be positive finite float32 values", "scales come from the model's quantize ops")
    qmin, qmax = a["qmin"], a["qmax"]
    need(CODE_MIN <= qmin < qmax <= CODE_MAX, f"code range [{qmin}, {qmax}] is empty or wider than int32")
    need(all(qmin <= z <= qmax for z in zp), f"zero points {zp} lie outside the code range [{qmin}, {qmax}]")
    if per_channel(a):
        axis = axis_attr(a, "axis", x.rank)
        need(len(scale) == x.shape[axis], f"{len(scale)} scales for {x.shape[axis]} channels along axis {axis}")
    else:
        need(len(scale) == 1, f"{len(scale)} scales without an axis (per-tensor quantization has one)")
    return x.shape


def _torch(op, x):
    a = op.attrs
    axis = a.get("axis")
    shape = [1] * x.dim() if axis is None else [-1 if i == axis else 1 for i in range(x.dim())]
    inv = torch.from_numpy(inv_scales(a["scale"], axis is not None)).reshape(shape)
    zp = torch.tensor(a["zero_point"], dtype=torch.float32).reshape(shape)
    s = torch.tensor(a["scale"], dtype=torch.float32).reshape(shape)
    q = torch.clamp(torch.round(x.float() * inv) + zp, a["qmin"], a["qmax"])
    return (q - zp) * s


def _samples(rng):
    return [sample((2, 3, 4, 5), scale=[0.05], zero_point=[3], qmin=-128, qmax=127),
            sample((2, 16), scale=[0.0078125], zero_point=[128], qmin=0, qmax=255),   # uint8 codes
            sample((1, 3, 8), scale=[0.02], zero_point=[0], qmin=-127, qmax=127)]     # a narrower range


register(OpDef(
    "fake_quant", _infer, 1, 1,
    required={"scale": list[float], "zero_point": list[int], "qmin": int, "qmax": int},
    optional={"axis": int},
    doc="quantize then dequantize with an imported model's parameters (per tensor, or per channel "
        "along axis): (clamp(rint(x * inv_scale) + zp, qmin, qmax) - zp) * scale, as PyTorch",
    ref=lambda op, x: fake_quantize(x, op.attrs), torch=_torch, int8="model_quant", c="quant_dequant",
    keeps_batch=lambda a, types, flags, result: keeps_batch_unary(a, types, flags, result) and a.get("axis") != 0,
    samples=_samples))
