"""`binarize`: XNOR-Net style binary layers (docs/compression_formats.md).

A selected conv2d / linear (default: all but the first and the last, in graph order) becomes
bin_conv2d / bin_linear with sign weights (u1 bits, 1 = +1, sign(0) = +1) and a per-output-channel
f32 scale alpha:

- activations=float: y = alpha[c] * (x * sign(W)) + bias, the input stays f32.
- activations=binary: the input is binarized first, `sign(x, threshold)` (u1: 1 where
  x >= threshold), and the layer sums +-1 products: y = alpha[c] * (K - 2 popcount(x XOR w))
  + bias over the in-bounds taps (padded taps contribute 0).

scale=mean-abs sets alpha[c] = mean|W[c]| (XNOR-Net) and keeps the bias. scale=fit sets alpha[c]
and the bias by least squares: the layer's float pre-activation output on the calibration data
(--calib) against the binary layer's sum, per output channel (alpha kept > 0 by flipping the
channel's sign bits). scale=auto is mean-abs for float activations, fit for binary ones.
threshold=mean binarizes each input channel at its mean over the calibration data (a ReLU
output is never below 0, so sign(x) would be constant); threshold=zero uses sign(x).
Layers are processed in graph order and fitted on the inputs the binarized graph gives them.
Runs on float graphs: quantize-int8 afterwards lowers the binary layers to their int8 form
(first and last layers int8, binary layers in between).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tinyc.interpreter import run_op
from tinyc.ir import Graph, Op, Value
from tinyc.ops import ACTIVATIONS, OPS, Trait, has, is_int_form
from tinyc.passes.base import Pass, PassContext, check, option, register
from tinyc.passes.prune_weights import weight_const, weight_layers
from tinyc.rewrite import Rewriter

FIT_SAMPLES = 1024       # calibration inputs used at most (the first ones)
ALPHA_FLOOR = 1e-3       # alpha[c] >= ALPHA_FLOOR * max(alpha): int8 biases are in units of alpha


def alpha_floor(alpha: np.ndarray) -> np.ndarray:
    """alpha raised to ALPHA_FLOOR x its maximum (1 where every alpha is 0): an all-zero weight
    channel (pruned) has mean|W| = 0, and a bias in units of a tiny alpha would saturate."""
    top = float(alpha.max()) if alpha.size else 0.0
    return np.maximum(alpha, ALPHA_FLOOR * top) if top > 0 else np.ones_like(alpha)


def _calib_rows(graph: Graph, ctx: PassContext, why: str) -> list[np.ndarray]:
    from tinyc.evaluate import as_samples
    check(ctx.calib is not None, f"binarize: {why} needs calibration data (--calib)",
          "pass --calib X.npy, or use threshold=zero scale=mean-abs (data-free)")
    return [s[:FIT_SAMPLES] for s in as_samples(graph, ctx.calib, "calibration", "--calib")]


def _values(graph: Graph, samples: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """[N, *shape] arrays of the named values over the samples (float64)."""
    from tinyc.evaluate import run_batch
    return [a.astype(np.float64) for a in run_batch(graph, samples, names)]


def _channel_axes(x_rank: int, kind: str) -> tuple[int, ...]:
    """Axes of a [N, *input] stack averaged for a per-channel threshold: all but the channel
    (axis 1 of NCHW for conv, the last axis for linear)."""
    keep = 2 if kind == "conv2d" else x_rank          # in the stacked array (sample axis first)
    return tuple(i for i in range(x_rank + 1) if i != keep)


@register
@dataclass(frozen=True)
class Binarize(Pass):
    """XNOR-Net style binarization of conv2d/linear layers (default: all but the first and last):
    sign weights (u1) with a per-output-channel scale alpha; activations=binary also binarizes
    the layer's input (sign, u1) so the layer is XNOR + popcount. Float graphs; run
    quantize-int8 afterwards for int8 first/last layers."""

    name = "binarize"
    layers: tuple[str, ...] = option((), "conv2d/linear result names (default: all but the first and the last)")
    activations: Literal["float", "binary"] = option("float", "float: sign weights only; binary: sign inputs too")
    threshold: Literal["mean", "zero"] = option(
        "mean", "binary activations: per-channel threshold, the calibration mean (--calib) or 0")
    scale: Literal["auto", "mean-abs", "fit"] = option(
        "auto", "alpha: mean|W| per channel (mean-abs), least squares on --calib outputs with the bias (fit); "
                "auto: mean-abs for float activations, fit for binary")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        check(not any(has(op, Trait.INT_ONLY) or is_int_form(op.kind, [v.type for v in op.operands])
                      for op in graph.compute_ops()), "binarize runs on float graphs; this graph is quantized",
              "binarize before quantize-int8, e.g. -p 'fuse,binarize,quantize-int8'")
        graph = graph.copy()
        if self.layers:
            layers, _ = weight_layers(graph, self.layers, self.name, skip_scalar=False)
        else:
            every = [op for op in graph.compute_ops() if has(op, Trait.LAYER)]
            chosen, _ = weight_layers(graph, (), self.name, skip_scalar=False)
            inner = {id(op) for op in every[1:-1]}
            layers = [op for op in chosen if id(op) in inner]
        for op in layers:
            check(op.operands[1].type.dtype == "f32", f"binarize: %{op.result.name} has {op.operands[1].type.dtype} "
                  "weights", "binarize float weights, before quantize-int8 and share-weights")
        scale = self.scale if self.scale != "auto" else ("fit" if self.activations == "binary" else "mean-abs")
        needs_data = scale == "fit" or (self.activations == "binary" and self.threshold == "mean")
        samples = _calib_rows(graph, ctx, f"activations={self.activations} threshold={self.threshold} "
                              f"scale={scale}") if needs_data and layers else None
        reference = graph.copy()
        stats: dict = {"activations": self.activations, "threshold": self.threshold, "scale": scale, "layers": {}}
        rw = Rewriter(graph)
        for op in layers:
            stats["layers"][op.result.name] = self._binarize(rw, reference, op, scale, samples)
        graph.remove_dead()
        ctx.stats[self.name] = stats
        if not layers:
            ctx.notes.append("binarize: no layer selected (the first and last conv/linear stay)")
        return graph

    def _binarize(self, rw: Rewriter, reference: Graph, op: Op, scale: str, samples) -> dict:
        graph = rw.graph
        w = weight_const(graph, op).attrs["value"].astype(np.float64)
        o = w.shape[0]
        bits = (w >= 0).astype(np.uint8)
        alpha = alpha_floor(np.abs(w.reshape(o, -1)).mean(axis=1))
        bias = rw.const(op.operands[2]) if len(op.operands) == 3 else None
        check(len(op.operands) < 3 or bias is not None, f"binarize: %{op.result.name}: the bias is not a constant")
        x = op.operands[0]
        info: dict = {"weights": int(w.size)}

        # the binary input
        b = rw.before(op)
        if self.activations == "binary":
            operands = [x]
            if self.threshold == "mean":
                (xs,) = _values(graph, samples, [x.name])
                t = xs.mean(axis=_channel_axes(x.type.rank, op.kind))
                t = t.reshape((-1, 1, 1) if op.kind == "conv2d" else (-1,)).astype(np.float32)
                operands.append(b.const(x.name + ".threshold", t))
            x_in = b.create("sign", operands, {}, x.name + ".sign")
        else:
            x_in = x

        attrs = dict(op.attrs)
        kind = "bin_" + op.kind
        w_v = b.const(op.operands[1].name + ".bits", bits, dtype="u1")
        if scale == "fit":
            alpha, bias, flip = self._fit(rw, reference, op, kind, x_in, w_v, samples, alpha)
            if flip.any():
                bits = bits.copy()
                bits[flip] ^= 1
                rw.producer(w_v).attrs["value"] = bits
            info["flipped_channels"] = int(flip.sum())
        a_v = b.const(op.result.name + ".alpha", alpha.astype(np.float32))
        operands = [x_in, w_v, a_v]
        if bias is not None:
            b_v = op.operands[2] if scale != "fit" else b.const(op.result.name + ".bias", bias.astype(np.float32))
            operands.append(b_v)
        # the binary layer takes over the layer's place and name; a fused activation it cannot
        # apply (gelu, silu, hardsigmoid: binary layers fuse only relu, clamp, leaky_relu) follows it
        act = ACTIVATIONS.get(attrs.get("act", ""))
        if act is not None and not OPS[kind].accepts_act(act):
            core = {k: v for k, v in attrs.items() if k != "act" and k not in act.fused}
            pre = b.create(kind, operands, core, op.result.name + ".pre")
            new = b.create(act.kind, [pre], act.params_of(attrs, fused=True), op.result.name, fresh=False)
        else:
            new = b.create(kind, operands, attrs, op.result.name, fresh=False)
        rw.replace_op(op, new)
        info["alpha_mean"] = float(np.mean(alpha))
        return info

    def _fit(self, rw: Rewriter, reference: Graph, op: Op, kind: str, x_in: Value, w_v: Value,
             samples, alpha0: np.ndarray):
        """Per output channel, least squares y = a * s + b of the float layer's pre-activation y
        (the reference graph's layer on its own inputs) on the binary sum s (this graph's input)."""
        o = alpha0.shape[0]
        # the binary layer's sum s: alpha 1, no bias, no act, on this graph's (binarized) input
        probe_attrs = {k: v for k, v in op.attrs.items() if not k.startswith("act")}
        b = rw.before(op)
        ones = b.const(op.result.name + ".probe", np.ones(o, np.float32))
        probe = b.create(kind, [x_in, w_v, ones], probe_attrs, op.result.name + ".probe")
        try:
            (s,) = _values(rw.graph, samples, [probe.name])
        finally:
            for p in reversed(b.created):
                rw.erase(p)
        # the reference's pre-activation: the float layer on the reference's own input, all
        # samples stacked on the batch axis
        ref_op = next(p for p in reference.ops if p.result.name == op.result.name)
        (xr,) = _values(reference, samples, [ref_op.operands[0].name])
        plain = Op(ref_op.kind, ref_op.operands, ref_op.result, probe_attrs, ref_op.loc)
        consts = [reference.const_value(v) for v in ref_op.operands[1:]]
        x_shape = ref_op.operands[0].type.shape
        y = run_op(plain, xr.reshape((-1,) + x_shape[1:]).astype(np.float32), *consts)
        y = y.astype(np.float64).reshape(s.shape)
        # channel-major: [O, samples * positions]
        ch = 2 if kind == "bin_conv2d" else s.ndim - 1
        s2 = np.moveaxis(s, ch, 0).reshape(o, -1)
        y2 = np.moveaxis(y, ch, 0).reshape(o, -1)
        sm, ym = s2.mean(axis=1), y2.mean(axis=1)
        cov = ((s2 - sm[:, None]) * (y2 - ym[:, None])).mean(axis=1)
        var = ((s2 - sm[:, None]) ** 2).mean(axis=1)
        a = np.where(var > 0, cov / np.where(var > 0, var, 1), 0.0)
        flip = a < 0
        a = alpha_floor(np.where(a == 0, alpha0, np.abs(a)))
        # with flipped bits the sum is -s: y = |a| * (-s) + b
        s_signed = np.where(flip[:, None], -s2, s2)
        b = ym - a * s_signed.mean(axis=1)
        return a, b, flip
