"""Layers with weights: conv2d, linear, matmul, batch_norm."""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.ops import refs
from tinyc.ops.core import (F, OpDef, Trait, broadcast, conv_macs, fmt_shape, int_all, int_layer, int_list,
                            keeps_batch_unary, linear_macs, need, rank_is, register, same_dtype, sample, torch,
                            window_out)
from tinyc.ops.refs import centered, qparams, requant_out

WINDOW_ATTRS = {"stride": list[int], "padding": list[int]}
CONV_ATTRS = {**WINDOW_ATTRS, "dilation": list[int], "groups": int}


# ---- shapes --------------------------------------------------------------------------------

def conv2d_shape(ts, a):
    x, w = ts[0], ts[1]
    rank_is(x, 4, "input")
    rank_is(w, 4, "weight")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g = a["groups"]
    need(g >= 1 and c % g == 0 and o % g == 0, f"groups={g} must divide input channels {c} and output channels {o}")
    need(cg == c // g, f"weight has {cg} input channels per group; input has {c} / groups {g} = {c // g}")
    if len(ts) == 3:
        need(ts[2].shape == (o,), f"bias shape {fmt_shape(ts[2].shape)} is not [{o}]")
    sh, sw = int_list(a, "stride", 2, 1)
    dh, dw = int_list(a, "dilation", 2, 1)
    top, left, bottom, right = int_list(a, "padding", 4, 0)
    return (n, o, window_out(h, kh, sh, dh, top, bottom), window_out(wd, kw, sw, dw, left, right))


def linear_shape(ts, a):
    x, w = ts[0], ts[1]
    need(x.rank >= 1, "input must have rank >= 1")
    rank_is(w, 2, "weight")
    need(x.shape[-1] == w.shape[1], f"input features {x.shape[-1]} do not match weight {fmt_shape(w.shape)}")
    if len(ts) == 3:
        need(ts[2].shape == (w.shape[0],), f"bias shape {fmt_shape(ts[2].shape)} is not [{w.shape[0]}]")
    return x.shape[:-1] + (w.shape[0],)


def _matmul_shape(ts, a):
    x, y = ts
    need(x.rank >= 2 and y.rank >= 2, f"operands must have rank >= 2, got "
         f"{fmt_shape(x.shape)} and {fmt_shape(y.shape)}", "reshape vectors to matrices first")
    need(x.shape[-1] == y.shape[-2], f"inner dimensions differ: {fmt_shape(x.shape)} @ {fmt_shape(y.shape)}")
    same_dtype(ts)
    return broadcast(x.shape[:-2], y.shape[:-2]) + (x.shape[-2], y.shape[-1])


def _batch_norm_shape(ts, a):
    x = ts[0]
    need(x.rank >= 2, f"input must have rank >= 2, got {fmt_shape(x.shape)}")
    for role, t in zip(("mean", "var", "weight", "bias"), ts[1:]):
        need(t.shape == (x.shape[1],), f"{role} shape {fmt_shape(t.shape)} is not [{x.shape[1]}]")
    return x.shape


# ---- semantics -------------------------------------------------------------------------------

def _conv2d_int(op, x, w, b=None):
    acc = refs.conv2d(op, centered(op, 0, x), w.astype(np.int64), None if b is None else b.astype(np.int64))
    ratio = quant.conv_ratios(qparams(op, 0), qparams(op, 1), op.result.type.quant)
    return requant_out(op, acc, ratio.reshape(1, -1, 1, 1))


def _linear_int(op, x, w, b=None):
    acc = refs.linear(op, centered(op, 0, x), w.astype(np.int64), None if b is None else b.astype(np.int64))
    return requant_out(op, acc, quant.conv_ratios(qparams(op, 0), qparams(op, 1), op.result.type.quant))


def mul_int(op, a, b, product=np.multiply):
    acc = product(centered(op, 0, a), centered(op, 1, b))
    return requant_out(op, acc, quant.mul_ratio(qparams(op, 0), qparams(op, 1), op.result.type.quant))


def _batch_norm(op, x, mean, var, weight, bias, xp=np):
    shape = (1, -1) + (1,) * (len(x.shape) - 2)
    scale = weight / xp.sqrt(var + op.attrs["eps"])
    return (x - mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)


def _torch_conv2d(op, x, w, b=None):
    a = op.attrs
    top, left, bottom, right = a["padding"]
    if top == bottom and left == right:
        padding = (top, left)
    else:
        x, padding = refs.torch_pad_hw(x, top, left, bottom, right), (0, 0)
    return F.conv2d(x, w, b, tuple(a["stride"]), padding, tuple(a["dilation"]), a["groups"])


# ---- conformance samples ----------------------------------------------------------------------

def randn(rng, *shape, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _conv_samples(rng):
    conv = dict(dilation=[1, 1])
    return [sample((1, 3, 9, 8), randn(rng, 4, 3, 3, 3, scale=0.3), randn(rng, 4), stride=[1, 1],
                   padding=[1, 1, 1, 1], groups=1, **conv),
            sample((1, 4, 7, 7), randn(rng, 4, 1, 3, 3, scale=0.3), randn(rng, 4), stride=[2, 2],
                   padding=[1, 0, 1, 2], groups=4, act="relu", **conv),
            sample((1, 2, 6, 5), randn(rng, 6, 2, 1, 1), stride=[1, 1], padding=[0, 0, 0, 0], groups=1, **conv)]


def _linear_samples(rng):
    return [sample((2, 5), randn(rng, 3, 5), randn(rng, 3)),
            sample((1, 6), randn(rng, 4, 6), act="clamp", act_min=-0.5, act_max=0.5)]


def _batch_norm_samples(rng):
    return [sample((1, 3, 4, 4), randn(rng, 3), rng.uniform(0.5, 2, 3).astype(np.float32), randn(rng, 3),
                   randn(rng, 3), eps=1e-5)]


# ---- batch independence ------------------------------------------------------------------------

def _linear_keeps_batch(a, types, flags, result) -> bool:
    return keeps_batch_unary(a, types, flags, result) and types[0].rank >= 2


def _matmul_keeps_batch(a, types, flags, result) -> bool:
    (ta, tb), (fa, fb) = types, flags
    if fa and fb:
        return ta.rank == tb.rank >= 3
    if fa:
        return ta.rank == 2 and tb.rank == 2 or ta.rank > tb.rank or (ta.rank == tb.rank and tb.shape[0] == 1)
    return tb.rank >= 3 and (ta.rank < tb.rank or ta.shape[0] == 1)


register(OpDef(
    "conv2d", conv2d_shape, 2, 3, CONV_ATTRS, traits=Trait.LAYER | Trait.FUSABLE | Trait.PADDED_WINDOW,
    macs=conv_macs,
    doc="2-D convolution, NCHW, weight [O, C/groups, KH, KW], padding [top, left, bottom, right]",
    ref=refs.conv2d, ref_int=_conv2d_int, torch=_torch_conv2d, trainable=(1, 2),
    int_operands=int_layer, int8="layer", c="conv", channels="filters", folds="out_rows",
    keeps_batch=keeps_batch_unary,
    samples=_conv_samples))

register(OpDef(
    "linear", linear_shape, 2, 3, traits=Trait.LAYER | Trait.FUSABLE, macs=linear_macs,
    doc="y = x W^T + b over the last axis, weight [N, K]",
    ref=refs.linear, ref_int=_linear_int, torch=lambda op, x, w, b=None: F.linear(x, w, b), trainable=(1, 2),
    int_operands=int_layer, int8="layer", c="dense", channels="features", folds="out_rows",
    keeps_batch=_linear_keeps_batch,
    samples=_linear_samples))

register(OpDef(
    "matmul", _matmul_shape, 2, 2, traits=Trait.FUSABLE,
    macs=lambda ts, result: result.numel * ts[0].shape[-1],
    doc="batched matrix product with broadcasting (torch.matmul for rank >= 2)",
    ref=lambda op, a, b: np.matmul(a, b), ref_int=lambda op, a, b: mul_int(op, a, b, np.matmul),
    torch=lambda op, a, b: torch.matmul(a, b), int_operands=int_all, int8="same", c="batched_matmul", channels="contract",
    keeps_batch=_matmul_keeps_batch, samples=lambda rng: [sample((2, 3, 4), (2, 4, 5)), sample((3, 4), randn(rng, 4, 2))]))

register(OpDef(
    "batch_norm", _batch_norm_shape, 5, 5, {"eps": float}, traits=Trait.CHANNEL_AFFINE,
    doc="inference batch norm over axis 1 (fuse folds it into the producer)",
    ref=_batch_norm, torch=lambda op, *args: _batch_norm(op, *args, xp=torch), trainable=(3, 4),
    prepare="batch_norm_to_conv", c="channel_affine", channels="per_channel", keeps_batch=keeps_batch_unary,
    samples=_batch_norm_samples))
