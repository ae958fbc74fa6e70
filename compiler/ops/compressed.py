"""Compressed representations (docs/compression_formats.md): `decode` (shared weights: a
codebook gather), `sign` (binary activations, u1) and `bin_conv2d` / `bin_linear` (sign weights,
u1, scaled by a per-output-channel alpha). Their references are exact: `decode` is a gather,
`sign` a comparison, and the binary layers with u1 inputs an integer sum of +-1 products, scaled
in float32 in a fixed order (float form) or requantized (int8 form)."""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.errors import TinycError
from tinyc.ir import DTYPE_BITS, TensorType
from tinyc.ops import refs
from tinyc.ops.core import (ACTIVATIONS, WEIGHT_DTYPES, F, OpDef, Trait, conv_macs, fmt_shape,
                            int_checked_by_shape_rule, is_act_i8, keeps_batch_broadcast, keeps_batch_unary,
                            linear_macs, need, register, torch, weight_q)
from tinyc.ops.layers import CONV_ATTRS, _torch_conv2d, conv2d_shape, linear_shape
from tinyc.ops.refs import centered, qparams, requant_out

INDEX_DTYPES = ("u1", "u2", "u4", "u8")             # decode indices


def _no_quant(t: TensorType, role: str) -> None:
    need(t.quant is None, f"{role} must not carry quant, got {t.dtype} with quant")


# ---- decode -----------------------------------------------------------------------------------

def _decode_shape(ts, a):
    """decode(indices, codebook): result[i] = codebook[indices[i]] (codebook [K]) or
    codebook[i0, indices[i]] (codebook [O, K], one row per output channel i0)."""
    idx, cb = ts
    need(idx.dtype in INDEX_DTYPES, f"indices must be {'/'.join(INDEX_DTYPES)}, got {idx.dtype}")
    _no_quant(idx, "indices")
    need(cb.dtype == "f32" or cb.dtype in WEIGHT_DTYPES, f"codebook must be f32 or {'/'.join(WEIGHT_DTYPES)}, got {cb.dtype}")
    _no_quant(cb, "codebook")
    need(idx.rank >= 1, "indices must have rank >= 1")
    need(cb.rank == 1 or (cb.rank == 2 and cb.shape[0] == idx.shape[0]),
         f"codebook shape {fmt_shape(cb.shape)} is neither [K] nor [{idx.shape[0]}, K]",
         "a per-channel codebook has one row per index of the first axis")
    k, cap = cb.shape[-1], 2 ** DTYPE_BITS[idx.dtype]
    need(1 <= k <= cap, f"codebook has {k} entries; {idx.dtype} indices address 1 to {cap}")
    return idx.shape


def _decode_result(ts, result):
    if ts[1].dtype == "f32":
        need(result.quant is None, "a decoded f32 weight carries no quant")
    else:
        weight_q(result)
        need(len(result.quant.scale) == result.shape[0],
             f"{len(result.quant.scale)} weight scales for {result.shape[0]} output channels")


def _decode(op, idx, codebook):
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


def _torch_decode(op, idx, codebook):
    i = idx.long()
    if codebook.dim() == 1:
        return codebook[i]
    return torch.gather(codebook, 1, i.reshape(i.shape[0], -1)).reshape(i.shape)


register(OpDef(
    "decode", _decode_shape, 2, 2, dtype_rule=lambda ts: ts[1].dtype,
    doc="shared weights: codebook[indices] (codebook [K] or one row per output channel [O, K])",
    ref_exact=_decode, torch=_torch_decode, trainable=(1,), int_form=lambda ts: False,
    result_quant_rule=_decode_result, int8="codebook", c="decoded_weight"))


# ---- sign ------------------------------------------------------------------------------------

def _sign_shape(ts, a):
    """sign(x, threshold?) -> u1: 1 (+1) where x >= threshold (0 without one), else 0 (-1)."""
    x = ts[0]
    need((x.dtype == "f32" and x.quant is None) or is_act_i8(x), f"input must be f32, or i8 with per-tensor quant, got {x.dtype}")
    if len(ts) == 2:
        t = ts[1]
        want = "f32" if x.dtype == "f32" else "i32"
        need(t.dtype == want and t.quant is None,
             f"threshold must be {want} without quant for a{'n i8' if want == 'i32' else ' float'} input, "
             f"got {t.dtype}", "the int8 form compares codes with i32 code thresholds")
        try:
            fits = t.rank <= x.rank and np.broadcast_shapes(x.shape, t.shape) == x.shape
        except ValueError:
            fits = False
        need(fits, f"threshold shape {fmt_shape(t.shape)} does not broadcast to the input {fmt_shape(x.shape)}")
    return x.shape


def _sign(op, x, threshold=None):
    """1 where x >= threshold (0 without one; the int8 form compares codes, default the zero
    point), else 0. NaN gives 0."""
    if op.operands[0].type.quant is not None:
        t = qparams(op, 0).zero_point[0] if threshold is None else threshold.astype(np.int64)
        return (x.astype(np.int64) >= t).astype(np.uint8)
    with np.errstate(invalid="ignore"):
        return (x >= (np.float32(0) if threshold is None else threshold)).astype(np.uint8)


def _sign_result(ts, result):
    need(result.quant is None, "sign's u1 result carries no quant")


def _torch_sign(op, x, threshold=None):
    """The float form for training (tinyc.to_torch): 1.0 where x >= threshold, else 0.0 (the u1
    bits as float 0/1, NaN gives 0); straight-through gradient, that of clamp((x - t + 1) / 2, 0, 1):
    1/2 within |x - t| <= 1 (the hardtanh window of the +-1 sign), 0 outside."""
    d = x if threshold is None else x - threshold
    soft = torch.clamp((d + 1) * 0.5, 0.0, 1.0)
    hard = (d >= 0).to(x.dtype)
    return hard + (soft - soft.detach())     # exactly 0/1 forward


register(OpDef(
    "sign", _sign_shape, 1, 2, dtype="u1", doc="binary activations: 1 where x >= threshold (default 0), else 0",
    ref_exact=_sign, torch=_torch_sign, int_operands=int_checked_by_shape_rule, result_quant_rule=_sign_result,
    int8="threshold_codes", keeps_batch=keeps_batch_broadcast))


# ---- bin_conv2d / bin_linear -----------------------------------------------------------------

def bin_int_form(ts: list[TensorType]) -> bool:
    """A bin_conv2d / bin_linear is in its int8 form when its input is i8 or its bias is i32."""
    return bool(ts) and (ts[0].quant is not None or (len(ts) == 4 and ts[3].dtype == "i32"))


def _bin_operands(ts, out_channels: int) -> None:
    x, w, alpha = ts[:3]
    need((x.dtype in ("f32", "u1") and x.quant is None) or is_act_i8(x),
         f"input must be f32, u1 (binary activations) or i8 with per-tensor quant, got {x.dtype}")
    need(w.dtype == "u1" and w.quant is None, f"weight must be u1 sign bits without quant, got {w.dtype}",
         "bit 1 is +1, bit 0 is -1")
    need(alpha.dtype == "f32" and alpha.quant is None and alpha.shape == (out_channels,),
         f"alpha must be f32 [{out_channels}] without quant, got {alpha.dtype} {fmt_shape(alpha.shape)}")
    int_form = bin_int_form(ts)
    if len(ts) == 4:
        b = ts[3]
        need(b.shape == (out_channels,), f"bias shape {fmt_shape(b.shape)} is not [{out_channels}]")
        if int_form:
            q = b.quant
            need(b.dtype == "i32" and q is not None and q.axis == 0 and not any(q.zero_point),
                 "the int8 form's bias must be i32 quantized per channel (axis 0, zp 0)")
        else:
            need(b.dtype == "f32" and b.quant is None, f"bias must be f32 (float form) or i32 (int8 form), got {b.dtype}")
    need(not (int_form and x.dtype == "f32"), "an f32 input cannot feed the int8 form (i32 bias)")
    need(not (x.dtype == "i8" and len(ts) != 4), "the int8 form takes an i32 bias",
         "quantize-int8 adds a zero bias where the float layer had none")


def _bin_conv2d_shape(ts, a):
    shape = conv2d_shape(ts[:2], a)
    _bin_operands(ts, ts[1].shape[0])
    return shape


def _bin_linear_shape(ts, a):
    shape = linear_shape(ts[:2], a)
    _bin_operands(ts, ts[1].shape[0])
    return shape


def _bin_acc(op, x, w):
    """The layer's sum of products with w_hat = +1 (bit 1) / -1 (bit 0) over the in-bounds taps
    (padded taps contribute 0); x_hat is +-1 for a u1 input, q - zp for i8, the value for f32.
    Integer (int64) for u1 and i8 inputs."""
    xt = op.operands[0].type
    if xt.dtype == "u1":
        xh = 2 * x.astype(np.int64) - 1
    elif xt.quant is not None:
        xh = centered(op, 0, x)
    else:
        xh = x.astype(np.float64)
    wh = 2 * w.astype(np.int64) - 1
    if xh.dtype == np.float64:
        wh = wh.astype(np.float64)
    if op.kind == "bin_conv2d":
        return refs.conv2d(op, xh, wh), (1, -1, 1, 1)
    return refs.linear(op, xh, wh), (-1,)


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


def _bin_layer(op, x, w, alpha, b=None):
    acc, shape = _bin_acc(op, x, w)
    types = [v.type for v in op.operands]
    if bin_int_form(types):
        if types[0].quant is not None:
            in_scale = qparams(op, 0).scale[0]
        else:   # u1: the sum of +-1 products, scaled by 2^BIN_SHIFT
            in_scale, acc = quant.BIN_U1_SCALE, acc << quant.BIN_SHIFT
        want = quant.bin_bias_scales(in_scale, alpha)
        if not np.allclose(want, qparams(op, 3).scale, rtol=1e-6, atol=0):
            raise TinycError(f"interpreter: %{op.result.name} = {op.kind}: bias scales are not "
                             "input scale x alpha", where=op.loc, hint="requantize the bias after changing alpha")
        acc = acc + b.astype(np.int64).reshape(shape)
        return requant_out(op, acc, quant.bin_ratios(in_scale, alpha, op.result.type.quant).reshape(shape))
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
        a = ACTIVATIONS[op.attrs["act"]]
        y = a.numpy(y, a.params_of(op.attrs, fused=True))
    return y.astype(np.float32)


def _torch_bin_layer(op, x, w, alpha, b=None):
    """The float form for training (tinyc.to_torch; fused activation applied by the caller):
    y = alpha[o] * conv / linear(x_hat, w_hat) + bias[o]. x_hat = 2x - 1 for a u1 input (sign's
    float 0/1, gradient straight through), the value for f32; padded taps are zeros of x_hat, so
    they contribute 0 as in the interpreter. w_hat = 2w - 1 for the u1 bits (an integer tensor);
    a floating-point w is a latent weight (to_torch's trainable form): w_hat = +1 where w >= 0,
    else -1, with the identity as its straight-through gradient."""
    xh = 2 * x - 1 if op.operands[0].type.dtype == "u1" else x
    if w.is_floating_point():
        hard = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        wh = hard + (w - w.detach())
    else:
        wh = (2 * w.to(torch.int32) - 1).to(xh.dtype)
    if op.kind == "bin_conv2d":
        acc, shape = _torch_conv2d(op, xh, wh), (1, -1, 1, 1)
    else:
        acc, shape = F.linear(xh, wh), (-1,)
    y = acc * alpha.reshape(shape)
    return y if b is None else y + b.reshape(shape)


def _bin_dtype(ts) -> str:
    return "i8" if bin_int_form(ts) else "f32"


def _bin(kind, infer, attrs, macs, keeps_batch, doc):
    register(OpDef(kind, infer, 3, 4, attrs, traits=Trait.BINARY_LAYER | Trait.FUSABLE, macs=macs,
                   dtype_rule=_bin_dtype, doc=doc, ref_exact=_bin_layer, int_form=bin_int_form,
                   torch=_torch_bin_layer, trainable=(1, 2, 3),
                   int_operands=int_checked_by_shape_rule, int8="bin_layer", keeps_batch=keeps_batch,
                   accepts_act=lambda a: a.requant))


_bin("bin_conv2d", _bin_conv2d_shape, CONV_ATTRS, conv_macs, keeps_batch_unary,
     "binarized conv2d: u1 sign weights x alpha[o] (+ bias)")
_bin("bin_linear", _bin_linear_shape, {}, linear_macs,
     lambda a, types, flags, result: flags[0] and not any(flags[1:]) and types[0].rank >= 2,
     "binarized linear: u1 sign weights x alpha[o] (+ bias)")
