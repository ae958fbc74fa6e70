"""Spatial and attention ops: transposed convolution, nearest/bilinear upsampling, scaled_dot_product_attention.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others.

- ConvTranspose1d/2d become `conv_transpose2d` (1-D through [N, C, 1, L] reshapes, as conv1d); the
  weight is stored output channels first, [O, C/groups, KH, KW] (PyTorch's [C, O/groups, KH, KW]
  permuted at import; a non-constant weight gets the same permutation as reshape/transpose ops).
- F.interpolate / nn.Upsample (nearest, nearest-exact, bilinear, linear, bicubic) become `resize`, carrying the
  scale factors the model gave: PyTorch's source-index formulas use them instead of in/out sizes.
- scaled_dot_product_attention becomes matmul(q, k^T) * scale, softmax over the last axis, matmul with
  v. Masks (is_causal, a boolean attn_mask, -inf entries of a float attn_mask) become a constant 0/1
  operand of `masked_softmax`, so no -inf reaches an int8 calibration range; the finite part of a float
  mask is added to the scores (constant: shifted per row so its row maximum is 0, entries then below
  MASK_FLOOR count as masked; a mask computed by the model is added as is, float-exact, and calibrated
  like any activation by quantize-int8).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from tinyc.frontend_ops import Builder, ConstRef, _ints, _need_rank, _shape
from tinyc.ir import Value
from tinyc.ops.spatial import conv_transpose_out, tinyc_weight

# A float attention-mask entry at least this far below its row's largest entry is a masked position:
# exp underflows to 0 in float32 (as in PyTorch) whenever the row's scores differ by less than ~9,900.
MASK_FLOOR = -1.0e4


# ---------------------------------------------------------------- transposed convolution

def _conv_transpose(b: Builder, x, w, bias, stride, padding, output_padding, groups, dilation) -> Value:
    x = b.value(x)
    wshape = w.array.shape if isinstance(w, ConstRef) else _shape(b.value(w))
    nd = len(wshape) - 2
    if nd not in (1, 2):
        b.unsupported(f"{nd}-D transposed convolution", "tinyc lowers ConvTranspose1d and ConvTranspose2d")
    _need_rank(b, x, nd + 2, f"conv_transpose{nd}d")
    if isinstance(padding, str):
        b.unsupported(f"padding={padding!r} in a transposed convolution")
    g = int(groups)
    stride, padding, output_padding, dilation = (_ints(v, nd) for v in (stride, padding, output_padding, dilation))
    ks = list(wshape[2:])
    if nd == 1:
        n, c, length = _shape(x)
        x = b.reshape(x, [n, c, 1, length], tag="in")
        ks, stride, padding, output_padding, dilation = ([1] + ks, [1] + stride, [0] + padding, [0] + output_padding,
                                                         [1] + dilation)
    c, og, kh, kw = wshape[0], wshape[1], ks[0], ks[1]
    if c % g or _shape(x)[1] != c:
        b.unsupported(f"a weight of shape {list(wshape)} with groups={g} for {_shape(x)[1]} input channels")
    cg, o = c // g, og * g
    if isinstance(w, ConstRef):
        w = ConstRef(w.name, tinyc_weight(w.array.reshape(c, og, kh, kw), g))
    else:   # [C, O/g, KH, KW] -> [G, C/g, O/g, KH*KW] -> [G, O/g, C/g, KH*KW] -> [O, C/g, KH, KW]
        w5 = b.reshape(b.value(w), [g, cg, og, kh * kw], tag="w5")
        wt = b.emit("transpose", [w5], [g, og, cg, kh * kw], {"perm": [0, 2, 1, 3]}, tag="wt")
        w = b.reshape(wt, [o, cg, kh, kw], tag="w")
    operands = [x, b.value(w, "weight")] + ([b.value(bias, "bias")] if bias is not None else [])
    n, _, h, wd = _shape(x)
    shape = [n, o] + [conv_transpose_out(s, k, st, d, p, p, op) for s, k, st, d, p, op
                      in zip((h, wd), ks, stride, dilation, padding, output_padding)]
    attrs = {"stride": stride, "padding": padding + padding, "output_padding": output_padding, "dilation": dilation,
             "groups": g}
    y = b.emit("conv_transpose2d", operands, shape, attrs, tag="2d" if nd == 1 else None)
    return b.reshape(y, [shape[0], shape[1], shape[3]]) if nd == 1 else y


def conv_transpose(b, a):
    """aten.conv_transpose{1,2}d, and aten.convolution with transposed=True (frontend_ops.convolution)."""
    return _conv_transpose(b, a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["output_padding"],
                           a["groups"], a["dilation"])


# ---------------------------------------------------------------- resize

def _scales(b: Builder, a: dict, nd: int) -> list[float]:
    """The scale factors the model passed ([] if it gave the output size)."""
    if "scale_factors" in a:
        s = a["scale_factors"]
        return [] if s is None else [float(v) for v in _floats(s, nd)]
    given = [a.get("scales_h"), a.get("scales_w")] if nd == 2 else [a.get("scales")]
    if all(v is None for v in given):
        return []
    if any(v is None or v <= 0 for v in given):
        b.unsupported(f"scale factors {given} given for some axes only")
    return [float(v) for v in given]


def _floats(v, n: int) -> list[float]:
    v = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]
    return v * n if len(v) == 1 else v


def resize(mode: str, nd: int) -> Callable:
    def lower(b, a):
        x = b.value(a["input"] if "input" in a else a["self"])
        _need_rank(b, x, nd + 2, f"{nd}-D {mode} upsampling")
        scales = _scales(b, a, nd)
        align = bool(a.get("align_corners", False)) if mode in ("bilinear", "bicubic") else False
        out = b.out_shape()
        if nd == 2:
            return b.emit("resize", [x], out, {"mode": mode, "size": list(out[2:]), "scales": scales,
                                               "align_corners": align})
        n, c, length = _shape(x)
        x4 = b.reshape(x, [n, c, 1, length], tag="in")
        y = b.emit("resize", [x4], [n, c, 1, out[2]], {"mode": mode, "size": [1, out[2]],
                                                       "scales": [1.0] + scales if scales else [],
                                                       "align_corners": align}, tag="2d")
        return b.reshape(y, list(out))
    return lower


# ---------------------------------------------------------------- attention

def _const_mask(b: Builder, mask: np.ndarray, scores_shape) -> tuple[np.ndarray, np.ndarray | None]:
    """(keep: 0/1 float32, additive part or None) of a constant attention mask."""
    if mask.dtype == np.bool_:
        keep, add = mask.astype(np.float32), None
    else:
        m = mask.astype(np.float64)
        if np.isnan(m).any() or np.isposinf(m).any():
            b.unsupported("an attention mask with NaN or +inf entries")
        kept = np.isfinite(m)
        row_max = np.where(kept, m, -np.inf).max(axis=-1, keepdims=True)
        shifted = np.where(kept, m - np.where(np.isfinite(row_max), row_max, 0.0), -np.inf)
        kept &= shifted > MASK_FLOOR
        keep = kept.astype(np.float32)
        add = np.where(kept, shifted, 0.0).astype(np.float32)
        add = add if np.any(add) else None
    full = np.broadcast_to(keep, np.broadcast_shapes(keep.shape, tuple(scores_shape)))
    if not full.any(axis=-1).all():
        b.unsupported("an attention mask that masks every key of some query",
                      "PyTorch returns NaN for such rows; keep at least one key per query")
    return keep, add


def sdpa(b, a):
    if a["dropout_p"]:
        b.unsupported(f"dropout_p={a['dropout_p']} in scaled_dot_product_attention", "export in eval mode "
                      "(model.eval()); nn.MultiheadAttention passes dropout only in training")
    q, k, v = (b.value(a[n], n) for n in ("query", "key", "value"))
    if min(q.type.rank, k.type.rank, v.type.rank) < 2:
        b.unsupported("attention on tensors of rank < 2")
    if a.get("enable_gqa") and _shape(q)[-3] != _shape(k)[-3]:
        b.unsupported("grouped-query attention (enable_gqa with fewer key/value heads)",
                      "repeat the key/value heads (repeat_interleave) before the attention")
    (lq, e), s = _shape(q)[-2:], _shape(k)[-2]
    perm = list(range(k.type.rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    kt = b.emit("transpose", [k], _shape(k)[:-2] + (e, s), {"perm": perm}, tag="kt")
    batch = tuple(np.broadcast_shapes(_shape(q)[:-2], _shape(kt)[:-2]))
    scores = b.emit("matmul", [q, kt], batch + (lq, s), tag="scores")
    scale = a.get("scale")
    scale = 1.0 / math.sqrt(e) if scale is None else float(scale)
    scores = b.emit("mul", [scores, b.value(scale, "scale")], _shape(scores), tag="scaled")
    mask, keep = a.get("attn_mask"), None
    if a["is_causal"]:
        if mask is not None:
            b.unsupported("is_causal together with attn_mask")
        keep = np.tril(np.ones((lq, s), np.float32))
    elif isinstance(mask, ConstRef):
        keep, add = _const_mask(b, mask.array, _shape(scores))
        if add is not None:
            av = b.value(ConstRef(f"{b.node.name}.mask_bias", add))
            scores = b.emit("add", [scores, av], tuple(np.broadcast_shapes(_shape(scores), _shape(av))), tag="biased")
        if keep.all():
            keep = None
    elif mask is not None:       # computed by the model (float): additive, as PyTorch
        mv = b.value(mask, "attn_mask")
        scores = b.emit("add", [scores, mv], tuple(np.broadcast_shapes(_shape(scores), _shape(mv))), tag="biased")
    axis = scores.type.rank - 1
    if keep is None:
        attn = b.emit("softmax", [scores], _shape(scores), {"axis": axis}, tag="attn")
    else:
        kv = b.value(ConstRef(f"{b.node.name}.keep", keep))
        attn = b.emit("masked_softmax", [scores, kv], _shape(scores), {"axis": axis}, tag="attn")
    batch = tuple(np.broadcast_shapes(_shape(attn)[:-2], _shape(v)[:-2]))
    return b.emit("matmul", [attn, v], batch + (lq, _shape(v)[-1]))


# ---------------------------------------------------------------- the table

def _table() -> dict[str, Callable]:
    t: dict[str, Callable] = {}

    def add(names: str, fn: Callable):
        for n in names.split():
            t["aten." + n] = fn

    add("conv_transpose2d.input conv_transpose1d.default", conv_transpose)
    add("upsample_nearest2d.vec upsample_nearest2d.default", resize("nearest", 2))
    add("_upsample_nearest_exact2d.vec _upsample_nearest_exact2d.default", resize("nearest_exact", 2))
    add("upsample_bilinear2d.vec upsample_bilinear2d.default", resize("bilinear", 2))
    add("upsample_bicubic2d.vec upsample_bicubic2d.default", resize("bicubic", 2))
    add("upsample_nearest1d.vec upsample_nearest1d.default", resize("nearest", 1))
    add("_upsample_nearest_exact1d.vec _upsample_nearest_exact1d.default", resize("nearest_exact", 1))
    add("upsample_linear1d.vec upsample_linear1d.default", resize("bilinear", 1))
    add("scaled_dot_product_attention.default", sdpa)
    return t


LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = _table()
