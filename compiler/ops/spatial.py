"""Spatial ops: conv_transpose2d, resize (nearest / bilinear / bicubic upsampling), masked_softmax (attention).

conv_transpose2d stores its weight as [O, C/groups, KH, KW] (output channels first, like conv2d; the
frontend permutes PyTorch's [C, O/groups, KH, KW]), so quantize-int8's "layer" rule (per-output-channel
weights on axis 0, i32 bias) and prune-channels' "filters" rule apply unchanged. It has no Trait.LAYER:
passes that read that trait (binarize, svd, the packed-weight backend, prune-weights) assume conv2d or
linear semantics.

resize computes PyTorch's source indices and interpolation weights at compile time (`resize_tables`);
the interpreter and both C backends read the same tables. The int8 bilinear form interpolates codes
with Q`quant.RESIZE_FRAC_BITS` weights (docs/quantization.md); bicubic (`cubic_tables`: PyTorch's four
taps per axis with A = -0.75, indices clamped to the input) likewise, each axis's four Q10 weights made to
sum to 1024, the result saturated (cubic weights overshoot the input's range).

masked_softmax(x, mask) is softmax over the positions where the constant mask is 1 (0 elsewhere): how
attention masks (causal, boolean, -inf) reach the IR without a -inf in any calibrated range.
"""
from __future__ import annotations

import functools

import numpy as np

from tinyc import quant
from tinyc.ops.core import (F, OpDef, Trait, act_q, axis_attr, broadcast, fmt_shape, int_all, int_layer, int_list,
                            keeps_batch_unary, need, rank_is, register, sample, torch)
from tinyc.ops.refs import centered, qparams, requant_out

# ---- conv_transpose2d ---------------------------------------------------------------------------

CONV_T_ATTRS = {"stride": list[int], "padding": list[int], "output_padding": list[int], "dilation": list[int],
                "groups": int}


def _full_size(size: int, k: int, s: int, d: int) -> int:
    """Length of the uncropped transposed-conv output: every tap of every input position."""
    return (size - 1) * s + d * (k - 1) + 1


def conv_transpose_out(size: int, k: int, s: int, d: int, pad_begin: int, pad_end: int, out_pad: int) -> int:
    """PyTorch's rule: (size - 1) * s - pad_begin - pad_end + d * (k - 1) + out_pad + 1."""
    return _full_size(size, k, s, d) - pad_begin - pad_end + out_pad


def _conv_t_shape(ts, a):
    x, w = ts[0], ts[1]
    rank_is(x, 4, "input")
    rank_is(w, 4, "weight")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g = a["groups"]
    need(g >= 1 and c % g == 0 and o % g == 0, f"groups={g} must divide input channels {c} and output channels {o}")
    need(cg == c // g, f"weight [O, C/groups, KH, KW] has {cg} input channels per group; input has {c} / groups "
         f"{g} = {c // g}", "the weight is stored output channels first (PyTorch's ConvTranspose weight permuted)")
    if len(ts) == 3:
        need(ts[2].shape == (o,), f"bias shape {fmt_shape(ts[2].shape)} is not [{o}]")
    sh, sw = int_list(a, "stride", 2, 1)
    dh, dw = int_list(a, "dilation", 2, 1)
    top, left, bottom, right = int_list(a, "padding", 4, 0)
    oph, opw = int_list(a, "output_padding", 2, 0)
    oh = conv_transpose_out(h, kh, sh, dh, top, bottom, oph)
    ow = conv_transpose_out(wd, kw, sw, dw, left, right, opw)
    need(oh >= 1 and ow >= 1, f"output size {oh}x{ow} is empty: the padding crops more than the full output "
         f"{_full_size(h, kh, sh, dh)}x{_full_size(wd, kw, sw, dw)}")
    return (n, o, oh, ow)


def conv_transpose2d(op, x, w, b=None):
    """Scatter form in the operands' dtype (float64 or int64): each tap (ky, kx) adds a grouped 1x1
    product of x, strided by `stride`, at offset (ky, kx) * dilation of the full output, which is
    then cropped by the padding (output_padding rows/columns past it get the bias only)."""
    a = op.attrs
    g = a["groups"]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // g
    sh, sw = a["stride"]
    dh, dw = a["dilation"]
    top, left, _, _ = a["padding"]
    _, _, oh, ow = op.result.type.shape
    fh, fw = max(_full_size(h, kh, sh, dh), top + oh), max(_full_size(wd, kw, sw, dw), left + ow)
    full = np.zeros((n, o, fh, fw), dtype=np.result_type(x, w))
    xg = x.reshape(n, g, cg, h * wd)
    wg = w.reshape(g, og, cg, kh, kw)
    for ky in range(kh):
        for kx in range(kw):
            part = np.matmul(wg[:, :, :, ky, kx][None], xg).reshape(n, o, h, wd)   # [N, G, Og, H*W]
            full[:, :, ky * dh:ky * dh + (h - 1) * sh + 1:sh, kx * dw:kx * dw + (wd - 1) * sw + 1:sw] += part
    y = full[:, :, top:top + oh, left:left + ow]
    return y if b is None else y + b.reshape(1, o, 1, 1)


def torch_weight(w, groups: int):
    """[O, C/g, KH, KW] (tinyc) -> [C, O/g, KH, KW] (PyTorch's ConvTranspose weight); numpy or torch."""
    o, cg, kh, kw = w.shape
    og = o // groups
    return w.reshape(groups, og, cg, kh, kw).transpose(1, 2).reshape(groups * cg, og, kh, kw) \
        if not isinstance(w, np.ndarray) else \
        w.reshape(groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(groups * cg, og, kh, kw)


def tinyc_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """PyTorch's [C, O/g, KH, KW] -> [O, C/g, KH, KW]."""
    c, og, kh, kw = w.shape
    cg = c // groups
    return np.ascontiguousarray(w.reshape(groups, cg, og, kh, kw).transpose(0, 2, 1, 3, 4).reshape(groups * og, cg,
                                                                                                   kh, kw))


def _torch_conv_t(op, x, w, b=None):
    a = op.attrs
    top, left, _, _ = a["padding"]
    _, _, oh, ow = op.result.type.shape
    full = F.conv_transpose2d(x, torch_weight(w, a["groups"]), None, tuple(a["stride"]), 0, 0, a["groups"],
                              tuple(a["dilation"]))
    y = full[..., top:top + oh, left:left + ow]
    extra_h, extra_w = oh - y.shape[-2], ow - y.shape[-1]
    if extra_h or extra_w:      # output_padding past the full output
        y = F.pad(y, (0, extra_w, 0, extra_h))
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def _conv_t_int(op, x, w, b=None):
    acc = conv_transpose2d(op, centered(op, 0, x), w.astype(np.int64), None if b is None else b.astype(np.int64))
    ratio = quant.conv_ratios(qparams(op, 0), qparams(op, 1), op.result.type.quant)
    return requant_out(op, acc, ratio.reshape(1, -1, 1, 1))


def _conv_t_macs(ts, result) -> int:
    o, _, kh, kw = ts[1].shape
    c = ts[0].shape[1]
    return ts[0].numel * (o // (c // ts[1].shape[1])) * kh * kw


def _randn(rng, *shape, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _conv_t_samples(rng):
    one = dict(dilation=[1, 1], output_padding=[0, 0])
    return [sample((1, 3, 5, 4), _randn(rng, 4, 3, 3, 3, scale=0.3), _randn(rng, 4), stride=[2, 2],
                   padding=[1, 1, 1, 1], output_padding=[1, 1], dilation=[1, 1], groups=1),
            sample((1, 4, 4, 5), _randn(rng, 6, 2, 2, 3, scale=0.3), _randn(rng, 6), stride=[2, 1],
                   padding=[0, 1, 1, 0], groups=2, act="relu", **one),
            sample((2, 2, 3, 3), _randn(rng, 3, 2, 3, 2, scale=0.3), stride=[3, 2], padding=[2, 0, 0, 1],
                   output_padding=[2, 1], dilation=[2, 3], groups=1),
            sample((1, 4, 3, 4), _randn(rng, 4, 1, 4, 4, scale=0.3), _randn(rng, 4), stride=[2, 2],
                   padding=[1, 1, 1, 1], groups=4, **one)]


register(OpDef(
    "conv_transpose2d", _conv_t_shape, 2, 3, CONV_T_ATTRS, traits=Trait.FUSABLE, macs=_conv_t_macs,
    doc="2-D transposed convolution, NCHW, weight [O, C/groups, KH, KW] (PyTorch's [C, O/groups, KH, KW] "
        "permuted), padding [top, left, bottom, right] cropped from the full output, output_padding [h, w] "
        "added after it (PyTorch's rules)",
    ref=conv_transpose2d, ref_int=_conv_t_int, torch=_torch_conv_t, trainable=(1, 2),
    int_operands=int_layer, int8="layer", c="conv_transpose", channels="filters", folds="out_rows",
    keeps_batch=keeps_batch_unary,
    samples=_conv_t_samples))


# ---- resize -------------------------------------------------------------------------------------

RESIZE_MODES = ("nearest", "nearest_exact", "bilinear", "bicubic")


def _f32(x):
    return np.float32(x)


def _scale_value(scale: float, in_size: int, out_size: int) -> np.float32:
    """PyTorch's compute_scales_value<float>: 1 / scale_factor if one was given (> 0), else in / out."""
    return _f32(1.0 / scale) if scale > 0 else _f32(in_size) / _f32(out_size)


@functools.lru_cache(maxsize=None)
def resize_axis(mode: str, align_corners: bool, in_size: int, out_size: int, scale: float):
    """(i0, i1, lambda1) along one axis, PyTorch's CPU formulas in float32: the output index j reads
    input i0[j] (nearest) or (1 - lambda1) x[i0] + lambda1 x[i1] (linear). `scale` is the scale factor
    the model passed (0: none, the size was given)."""
    j = np.arange(out_size)
    if mode == "nearest":       # legacy 'nearest' (UpSample.h nearest_idx)
        if out_size == in_size:
            i0 = j
        elif out_size == 2 * in_size:
            i0 = j >> 1
        else:
            s = _scale_value(scale, in_size, out_size)
            i0 = np.minimum(np.floor(j.astype(np.float32) * s).astype(np.int64), in_size - 1)
        return i0.astype(np.int64), i0.astype(np.int64), np.zeros(out_size, np.float32)
    if mode == "nearest_exact":
        s = _scale_value(scale, in_size, out_size)
        src = ((j + 0.5) * np.float64(s)).astype(np.float32)
        i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        return i0, i0, np.zeros(out_size, np.float32)
    if out_size == in_size:     # bilinear: PyTorch's CPU kernel copies an axis whose size does not change
        return j.astype(np.int64), j.astype(np.int64), np.zeros(out_size, np.float32)
    if align_corners:           # area_pixel_compute_scale / _source_index, guard_index_and_lambda
        s = _f32(in_size - 1) / _f32(out_size - 1) if out_size > 1 else _f32(0.0)
        src = s * j.astype(np.float32)
    else:
        s = _scale_value(scale, in_size, out_size)
        src = s * (j.astype(np.float32) + _f32(0.5)) - _f32(0.5)
        src = np.where(src < 0, _f32(0.0), src).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.minimum(np.maximum(src - i0.astype(np.float32), _f32(0.0)), _f32(1.0)).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, lam


CUBIC_A = np.float32(-0.75)        # PyTorch's bicubic kernel parameter (upsample_bicubic2d)


def _cubic1(x):
    """PyTorch's cubic_convolution1 in float32: ((A + 2) x - (A + 3)) x x + 1, for |x| <= 1."""
    a = CUBIC_A
    return ((a + np.float32(2)) * x - (a + np.float32(3))) * x * x + np.float32(1)


def _cubic2(x):
    """cubic_convolution2 in float32: ((A x - 5A) x + 8A) x - 4A, for 1 < |x| < 2."""
    a = CUBIC_A
    return ((a * x - np.float32(5) * a) * x + np.float32(8) * a) * x - np.float32(4) * a


@functools.lru_cache(maxsize=None)
def cubic_axis(align_corners: bool, in_size: int, out_size: int, scale: float):
    """(indices [4, out], weights [4, out] float32) of a bicubic resize along one axis, as PyTorch's CPU
    kernel computes them in float32 (area_pixel_compute_source_index with cubic=True: no clamp at 0;
    guard_index_and_lambda; get_cubic_upsample_coefficients; taps i0 - 1 .. i0 + 2 clamped to the input)."""
    j = np.arange(out_size)
    if align_corners:
        s = _f32(in_size - 1) / _f32(out_size - 1) if out_size > 1 else _f32(0.0)
        src = (s * j.astype(np.float32)).astype(np.float32)
    else:
        s = _scale_value(scale, in_size, out_size)
        src = (s * (j.astype(np.float32) + _f32(0.5)) - _f32(0.5)).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    t = np.minimum(np.maximum(src - i0.astype(np.float32), _f32(0.0)), _f32(1.0)).astype(np.float32)
    u = (_f32(1.0) - t).astype(np.float32)
    w = np.stack([_cubic2(t + _f32(1.0)), _cubic1(t), _cubic1(u), _cubic2(u + _f32(1.0))]).astype(np.float32)
    idx = np.clip(i0[None, :] + np.arange(-1, 3)[:, None], 0, in_size - 1)
    return idx, w


def cubic_tables(op):
    """Per spatial axis (H, W): (indices [4, out], float32 weights [4, out]) of a bicubic resize."""
    a = op.attrs
    ins, outs = op.operands[0].type.shape[2:], op.result.type.shape[2:]
    scales = a["scales"] or [0.0, 0.0]
    return [cubic_axis(bool(a["align_corners"]), i, o, float(s)) for i, o, s in zip(ins, outs, scales)]


def cubic_weights_q10(w) -> np.ndarray:
    """int8 bicubic weights of one axis, [4, out] in Q10: round_half_away(w 2^10), the largest tap of each
    output index absorbing the rounding so that every output index's four weights sum to 2^10 exactly."""
    w = np.asarray(w, np.float64)
    q = quant.round_half_away(w * 2 ** quant.RESIZE_FRAC_BITS).astype(np.int64)
    q[np.argmax(w, axis=0), np.arange(w.shape[1])] += (1 << quant.RESIZE_FRAC_BITS) - q.sum(axis=0)
    return q


def resize_tables(op):
    """Per spatial axis (H, W): (i0, i1, lambda1) of `op`."""
    a = op.attrs
    ins, outs = op.operands[0].type.shape[2:], op.result.type.shape[2:]
    scales = a["scales"] or [0.0, 0.0]
    return [resize_axis(a["mode"], bool(a["align_corners"]), i, o, float(s)) for i, o, s in zip(ins, outs, scales)]


def _resize_shape(ts, a):
    x = ts[0]
    rank_is(x, 4, "input")
    need(a["mode"] in RESIZE_MODES, f"mode must be one of {', '.join(map(repr, RESIZE_MODES))}, got {a['mode']!r}")
    oh, ow = int_list(a, "size", 2, 1)
    need(len(a["scales"]) in (0, 2) and all(s > 0 for s in a["scales"]),
         f"scales must be [] (the size was given) or 2 positive scale factors, got {a['scales']}")
    need(not a["align_corners"] or a["mode"] in ("bilinear", "bicubic"), "align_corners applies to bilinear and "
         "bicubic only")
    return (x.shape[0], x.shape[1], oh, ow)


def _cubic(op, x, wy, wx):
    """sum_j wy_j sum_k wx_k x[.., iy_j, ix_k] (PyTorch's order) in x's dtype."""
    (iy, _), (ix, _) = cubic_tables(op)
    rows = [sum(x[:, :, iy[j]][:, :, :, ix[k]] * wx[k] for k in range(4)) for j in range(4)]
    return sum(rows[j] * wy[j][:, None] for j in range(4))


def _resize(op, x):
    if op.attrs["mode"] == "bicubic":
        (_, wy), (_, wx) = cubic_tables(op)
        return _cubic(op, x, wy.astype(np.float64), wx.astype(np.float64))
    (h0, h1, lh), (w0, w1, lw) = resize_tables(op)
    if op.attrs["mode"] != "bilinear":
        return x[:, :, h0][:, :, :, w0]
    lh, lw = lh.astype(np.float64)[:, None], lw.astype(np.float64)
    top = x[:, :, h0][:, :, :, w0] * (1 - lw) + x[:, :, h0][:, :, :, w1] * lw
    bot = x[:, :, h1][:, :, :, w0] * (1 - lw) + x[:, :, h1][:, :, :, w1] * lw
    return top * (1 - lh) + bot * lh


def _resize_int(op, x):
    if op.attrs["mode"] == "bicubic":
        (_, wy), (_, wx) = cubic_tables(op)
        acc = _cubic(op, x.astype(np.int64), cubic_weights_q10(wy), cubic_weights_q10(wx))
        return quant.saturate(quant.resize_round(acc)).astype(np.int8)
    (h0, h1, lh), (w0, w1, lw) = resize_tables(op)
    if op.attrs["mode"] != "bilinear":
        return x[:, :, h0][:, :, :, w0]
    xi = x.astype(np.int64)
    (ah, bh), (aw, bw) = quant.resize_weights(lh), quant.resize_weights(lw)
    top = xi[:, :, h0][:, :, :, w0] * aw + xi[:, :, h0][:, :, :, w1] * bw
    bot = xi[:, :, h1][:, :, :, w0] * aw + xi[:, :, h1][:, :, :, w1] * bw
    return quant.resize_round(top * ah[:, None] + bot * bh[:, None]).astype(np.int8)


def _torch_resize(op, x):
    a = op.attrs
    mode = {"nearest": "nearest", "nearest_exact": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}[
        a["mode"]]
    kw = {"align_corners": bool(a["align_corners"])} if mode in ("bilinear", "bicubic") else {}
    if a["scales"]:
        return F.interpolate(x, scale_factor=tuple(float(s) for s in a["scales"]), mode=mode,
                             recompute_scale_factor=False, **kw)
    return F.interpolate(x, size=tuple(a["size"]), mode=mode, **kw)


def _resize_samples(rng):
    return [sample((1, 2, 3, 4), mode="nearest", size=[6, 8], scales=[2.0, 2.0], align_corners=False),
            sample((1, 3, 5, 4), mode="nearest", size=[7, 3], scales=[], align_corners=False),
            sample((2, 2, 4, 3), mode="bilinear", size=[8, 6], scales=[2.0, 2.0], align_corners=False),
            sample((1, 2, 3, 5), mode="bilinear", size=[7, 4], scales=[], align_corners=True),
            sample((1, 2, 4, 4), mode="bilinear", size=[6, 10], scales=[1.5, 2.5], align_corners=False),
            sample((1, 2, 4, 5), mode="nearest_exact", size=[7, 3], scales=[], align_corners=False),
            sample((1, 2, 3, 4), mode="bicubic", size=[6, 8], scales=[2.0, 2.0], align_corners=False),
            sample((2, 3, 4, 5), mode="bicubic", size=[7, 3], scales=[], align_corners=True),
            sample((1, 2, 5, 4), mode="bicubic", size=[4, 9], scales=[], align_corners=False)]


register(OpDef(
    "resize", _resize_shape, 1, 1, {"mode": str, "size": list[int], "scales": list[float], "align_corners": bool},
    traits=Trait.SAME_QUANT,
    doc="spatial resize of NCHW to size [OH, OW]: nearest (PyTorch's legacy 'nearest'), nearest_exact, "
        "bilinear or bicubic (A = -0.75; both with align_corners); scales: the scale factors the model gave ([] if it gave the size), which "
        "PyTorch's source-index formulas use",
    ref=_resize, ref_int=_resize_int, torch=_torch_resize, int_operands=int_all, int8="same", c="resample",
    channels="window", keeps_batch=keeps_batch_unary, samples=_resize_samples))


# ---- masked_softmax -------------------------------------------------------------------------------

def _masked_softmax_shape(ts, a):
    x, mask = ts[0], ts[1]
    axis_attr(a, "axis", x.rank)
    need(mask.dtype == "f32" and mask.quant is None, "mask must be f32 (0 or 1 per position)")
    need(mask.rank <= x.rank and broadcast(x.shape, mask.shape) == x.shape,
         f"mask {fmt_shape(mask.shape)} does not broadcast to the input {fmt_shape(x.shape)}")
    want = 2 if x.quant is None else 3
    need(len(ts) == want, f"{'int8' if want == 3 else 'float'} masked_softmax takes {want} operands, got {len(ts)}",
         "the int8 form is masked_softmax(x, mask, exp_table)")
    return x.shape


def _masked_softmax_operands(ts, a):
    act_q(ts[0], "input")
    need(ts[2].dtype == "i32" and ts[2].shape == (256,), "exp table must be i32 [256]")
    need(ts[0].shape[a["axis"]] <= quant.SOFTMAX_MAX_LEN,
         f"softmax axis has {ts[0].shape[a['axis']]} elements; the int8 form allows {quant.SOFTMAX_MAX_LEN}")


def _masked_softmax_result(ts, result):
    if result.dtype == "f32" or ts[0].quant is None:
        return
    act_q(result, "result")
    need(result.quant == quant.SOFTMAX_OUT, "int8 masked_softmax output must have scale 1/256, zp -128")


def _keep(mask, x) -> np.ndarray:
    return np.broadcast_to(np.asarray(mask) != 0, x.shape)


def _masked_softmax(op, x, mask):
    axis, keep = op.attrs["axis"], _keep(mask, x)
    m = np.where(keep, x, -np.inf).max(axis=axis, keepdims=True)
    e = np.where(keep, np.exp(np.where(keep, x, m) - m), 0.0)
    return e / e.sum(axis=axis, keepdims=True)


def _masked_softmax_int(op, x, mask, table):
    """As int8 softmax over the kept positions: e = table[kept max - q] (0 where masked);
    out = round(256 e / sum e) - 128. A row with no kept position is 0 / 0: rejected by the frontend."""
    axis, xi, keep = op.attrs["axis"], x.astype(np.int64), _keep(mask, x)
    mx = np.where(keep, xi, quant.QMIN).max(axis=axis, keepdims=True)
    e = np.where(keep, table.astype(np.int64)[np.where(keep, mx - xi, 0)], 0)
    total = e.sum(axis=axis, keepdims=True)
    y = quant.div_round(e << 8, np.maximum(total, 1)) + quant.QMIN
    return quant.saturate(y).astype(np.int8)


def _torch_masked_softmax(op, x, mask):
    keep = (mask != 0).expand(x.shape)
    return torch.softmax(x.masked_fill(~keep, float("-inf")), dim=op.attrs["axis"])


def _causal(n: int, m: int) -> np.ndarray:
    return np.tril(np.ones((n, m), np.float32))


def _random_mask(rng, shape) -> np.ndarray:
    m = (rng.uniform(size=shape) < 0.6).astype(np.float32)
    m[..., 0] = 1.0     # every row keeps a position
    return m


register(OpDef(
    "masked_softmax", _masked_softmax_shape, 2, 3, {"axis": int},
    doc="softmax along axis over the positions where mask (f32 0/1, broadcast to x) is 1, 0 elsewhere; "
        "every row keeps at least one position (int8: masked_softmax(x, mask, exp_table))",
    ref=_masked_softmax, ref_int=_masked_softmax_int, torch=_torch_masked_softmax,
    int_operands=_masked_softmax_operands, result_quant_rule=_masked_softmax_result, int8="masked_exp_table",
    c="masked_softmax_axis", channels="masked_axis",
    keeps_batch=lambda a, types, flags, result: flags[0] and not any(flags[1:]) and a["axis"] != 0,
    samples=lambda rng: [sample((2, 4, 5), _causal(4, 5), axis=2),
                         sample((1, 2, 3, 4), _random_mask(rng, (1, 1, 3, 4)), axis=3),
                         sample((2, 3, 6), _random_mask(rng, (1, 6, 3)).transpose(0, 2, 1).copy(), axis=1)]))
