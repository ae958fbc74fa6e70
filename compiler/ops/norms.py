"""Normalization over the sample's own statistics: layer_norm (and RMSNorm), group_norm (and InstanceNorm).

Both normalize sets of elements by their mean and biased variance, then apply an optional affine:
- `layer_norm(x, weight?, bias?) {axis, eps, rms?}`: each set is x[i_0..i_{axis-1}, ...], the axes
  from `axis` to the last (nn.LayerNorm's normalized_shape); weight and bias have the shape
  x.shape[axis:]. `rms = true` is RMSNorm: no mean is subtracted, x / sqrt(mean(x^2) + eps).
- `group_norm(x, weight?, bias?) {groups, eps}`: x is [N, C, *]; each set is one sample's C / groups
  consecutive channels (all their positions); weight and bias are [C]. InstanceNorm is groups = C.

A bias without a weight is written with a weight of ones (the frontend does so). The int8 form
(docs/quantization.md, "Normalization") keeps weight and bias as float32 constants: the
per-element multipliers and Q8 biases come from them and the result's quant (tinyc.quant.norm_*).
"""
from __future__ import annotations

import math

import numpy as np

from tinyc import quant
from tinyc.ops.core import (F, OpDef, act_q, fmt_shape, keeps_batch_unary, need, register, sample, torch)
from tinyc.ops.layers import randn
from tinyc.ops.refs import centered, qparams


# ---- shapes ----------------------------------------------------------------------------------

def _affine(ts, shape, role: str) -> None:
    for name, t in zip(("weight", "bias"), ts[1:]):
        need(t.shape == tuple(shape), f"{name} shape {fmt_shape(t.shape)} is not {fmt_shape(shape)} ({role})")


def _eps(a) -> None:
    e = a["eps"]
    need(math.isfinite(e) and e >= 0.0, f"eps must be a finite float >= 0, got {e}")


def _layer_norm_shape(ts, a):
    x = ts[0]
    axis = a["axis"]
    need(x.rank >= 1 and 0 <= axis < x.rank, f"axis {axis} is out of range for input {fmt_shape(x.shape)}",
         "axis is the first normalized axis, non-negative")
    _eps(a)
    _affine(ts, x.shape[axis:], f"the normalized shape x.shape[{axis}:]")
    return x.shape


def _group_norm_shape(ts, a):
    x = ts[0]
    need(x.rank >= 2, f"input must be [N, C, ...], got {fmt_shape(x.shape)}")
    c, g = x.shape[1], a["groups"]
    need(g >= 1 and c % g == 0, f"groups={g} must divide the {c} channels")
    _eps(a)
    _affine(ts, (c,), "one per channel")
    return x.shape


def norm_count(op_or_types, attrs: dict | None = None) -> int:
    """Elements normalized together (one set's size): norm_count(op), or norm_count(operand types, attrs)."""
    x, a = (op_or_types.operands[0].type, op_or_types.attrs) if attrs is None else (op_or_types[0], attrs)
    if "groups" in a:
        return x.numel // (x.shape[0] * a["groups"]) if x.numel else 0
    return math.prod(x.shape[a["axis"]:])


def _int_operands(ts, a) -> None:
    act_q(ts[0], "input")
    for name, t in zip(("weight", "bias"), ts[1:]):
        need(t.dtype == "f32" and t.quant is None, f"{name} of the int8 form must be f32 without quant",
             "quantize-int8 keeps the affine parameters in float; the multipliers derive from them")
    n = norm_count(ts, a)
    need(n <= quant.NORM_MAX_COUNT, f"{n} elements are normalized together; the int8 form allows "
         f"{quant.NORM_MAX_COUNT}", "keep this op in float (quantize-int8{keep-float=...})")


# ---- semantics -----------------------------------------------------------------------------------

def _sets(op, x):
    """x as [sets, count] and the parameter index of every column ([count]; group_norm: the
    channel, which also depends on the set's group, so [sets, count])."""
    shape = op.operands[0].type.shape
    if "groups" in op.attrs:
        n, c, g = shape[0], shape[1], op.attrs["groups"]
        inner = math.prod(shape[2:])
        rows = x.reshape(n * g, (c // g) * inner)
        chan = (np.arange(c // g).repeat(inner)[None, :] + (c // g) * (np.arange(n * g) % g)[:, None])
        return rows, chan
    count = math.prod(shape[op.attrs["axis"]:])
    return x.reshape(-1, count), np.arange(count)[None, :]


def _params(op, count_params: int, w, b, dtype=np.float64):
    w = np.ones(count_params, dtype) if w is None else np.asarray(w, dtype).ravel()
    b = np.zeros(count_params, dtype) if b is None else np.asarray(b, dtype).ravel()
    return w, b


def _n_params(op) -> int:
    x = op.operands[0].type
    return x.shape[1] if "groups" in op.attrs else math.prod(x.shape[op.attrs["axis"]:])


def _norm(op, x, w=None, b=None):
    rows, idx = _sets(op, x)
    if op.attrs.get("rms", False):
        z = rows / np.sqrt((rows * rows).mean(axis=1, keepdims=True) + op.attrs["eps"])
    else:
        mean = rows.mean(axis=1, keepdims=True)
        var = ((rows - mean) ** 2).mean(axis=1, keepdims=True)
        z = (rows - mean) / np.sqrt(var + op.attrs["eps"])
    gw, gb = _params(op, _n_params(op), w, b)
    return (z * gw[idx] + gb[idx]).reshape(x.shape)


def _norm_int(op, x, w=None, b=None):
    xq, out = qparams(op, 0), op.result.type.quant
    rows, idx = _sets(op, centered(op, 0, x))
    count = rows.shape[1]
    z = quant.norm_int(rows, count, quant.norm_eps_units(op.attrs["eps"], xq, count), op.attrs.get("rms", False))
    gw, gb = _params(op, _n_params(op), w, b, np.float32)
    m, s, bq = quant.norm_out_params(gw, gb, out)
    return quant.norm_out(z, m[idx], s[idx], bq[idx], out).reshape(x.shape)


def _torch_layer_norm(op, x, w=None, b=None):
    a = op.attrs
    shape = tuple(x.shape[a["axis"]:])
    if a.get("rms", False):
        y = F.rms_norm(x, shape, w, a["eps"])
        return y if b is None else y + b
    return F.layer_norm(x, shape, w, b, a["eps"])


def _torch_group_norm(op, x, w=None, b=None):
    return F.group_norm(x, op.attrs["groups"], w, b, op.attrs["eps"])


# ---- batch independence -----------------------------------------------------------------------

def _layer_norm_keeps_batch(a, types, flags, result) -> bool:
    return keeps_batch_unary(a, types, flags, result) and a["axis"] >= 1


# ---- conformance samples ------------------------------------------------------------------------

def _layer_norm_samples(rng):
    return [sample((2, 5, 8), randn(rng, 8), randn(rng, 8), axis=2, eps=1e-5),
            sample((3, 4, 6), randn(rng, 4, 6), axis=1, eps=1e-3),
            sample((2, 7), axis=1, eps=1e-5),
            sample((2, 3, 8), randn(rng, 8), axis=2, eps=1e-6, rms=True)]


def _group_norm_samples(rng):
    return [sample((1, 6, 4, 4), randn(rng, 6), randn(rng, 6), groups=3, eps=1e-5),
            sample((2, 4, 5), groups=4, eps=1e-5),
            sample((1, 4, 3, 3), randn(rng, 4), randn(rng, 4), groups=1, eps=1e-5),
            sample((2, 6), randn(rng, 6), randn(rng, 6), groups=2, eps=1e-3)]


register(OpDef(
    "layer_norm", _layer_norm_shape, 1, 3, {"axis": int, "eps": float}, {"rms": bool},
    doc="normalize over the axes from `axis` on (mean, biased variance, eps), then weight * . + bias; "
        "rms = true: RMSNorm, x / sqrt(mean(x^2) + eps). prune-channels passes channels on axes before "
        "`axis` through and freezes channels on the normalized axes (removing one changes the statistics)",
    ref=_norm, ref_int=_norm_int, torch=_torch_layer_norm, trainable=(1, 2),
    int_operands=_int_operands, int8="norm_affine", c="normalize", channels="normalized_axes",
    keeps_batch=_layer_norm_keeps_batch, samples=_layer_norm_samples))

register(OpDef(
    "group_norm", _group_norm_shape, 1, 3, {"groups": int, "eps": float},
    doc="normalize each sample's groups of C / groups channels (mean, biased variance, eps), then the "
        "per-channel weight * . + bias; InstanceNorm is groups = C. prune-channels prunes through it only "
        "when groups = C (each channel has its own statistics; groups shrinks with C); other groupings "
        "freeze their channels (removing one would change a group's statistics)",
    ref=_norm, ref_int=_norm_int, torch=_torch_group_norm, trainable=(1, 2),
    int_operands=_int_operands, int8="norm_affine", c="normalize", channels="instance_channels",
    keeps_batch=keeps_batch_unary, samples=_group_norm_samples))
