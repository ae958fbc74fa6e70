"""`fuse`: layer fusion. Folds batch-norm into the preceding conv/linear, attaches a following
activation to its producer, folds a zero pad into conv padding and removes no-ops."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyc.ir import Graph, Op, Value
from tinyc.ops import ACTIVATIONS, OPS, Trait, has
from tinyc.passes.base import Pass, PassContext, register
from tinyc.rewrite import Pattern, Rewriter, apply_patterns, pattern


def forward(rw: Rewriter, op: Op, to: Value) -> bool:
    """Make `op` a no-op by pointing its uses at `to`, keeping the output's name if needed."""
    if rw.is_output(op.result) and (rw.is_output(to) or rw.is_input(to)):
        return False  # a graph output must stay a distinct value
    rw.replace_op(op, to)
    return True


def producing_layer(rw: Rewriter, x: Value, consumer: Op, keep_axes: int = 0) -> tuple[Op | None, Op | None]:
    """The op computing `x` for `consumer` alone, looking through one view (the importer's
    reshapes around conv1d: [N, C, L] <-> [N, C, 1, L]): (producer, view or None). A view is
    looked through only if `consumer` is its sole user, the producer's result has the view as its
    sole user, and the view keeps the first `keep_axes` dims (a per-channel op needs axis 1)."""
    op = rw.producer(x)
    if op is None or not has(op, Trait.VIEW) or rw.sole_user(x) is not consumer:
        return op, None
    inner = op.operands[0]
    layer = rw.producer(inner)
    if layer is None or rw.sole_user(inner) is not op or rw.is_output(inner):
        return op, None
    if inner.type.shape[:keep_axes] != x.type.shape[:keep_axes]:
        return op, None
    return layer, op


# ---- patterns: each takes (rewriter, op) and returns True when it changed the graph ----

@pattern(lambda d: d.has(Trait.CHANNEL_AFFINE))
def fold_batch_norm(rw: Rewriter, bn: Op) -> bool:
    """conv/linear/conv_transpose2d -> batch_norm  ==>  the layer with scaled weights and shifted
    bias (any op whose `folds` facet is "out_rows"; also conv1d's conv2d -> reshape -> batch_norm:
    the reshape keeps the channel axis)."""
    x = bn.operands[0]
    layer, view = producing_layer(rw, x, bn, keep_axes=2)
    if layer is None or OPS[layer.kind].folds != "out_rows" or "act" in layer.attrs:
        return False
    out = layer.result if view is None else view.operands[0]
    if rw.sole_user(x) is not bn or (OPS[layer.kind].channels == "features" and out.type.rank != 2):
        return False   # a linear's channels are on its last axis, batch_norm's on axis 1
    mean, var, gamma, beta = (rw.const(v) for v in bn.operands[1:])
    w = rw.const(layer.operands[1])
    if any(a is None for a in (mean, var, gamma, beta, w)):
        return False
    b = rw.const(layer.operands[2]) if len(layer.operands) > 2 else np.zeros(w.shape[0], np.float32)
    if b is None:
        return False
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.attrs["eps"])
    new_w = w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    new_b = (b.astype(np.float64) - mean) * scale + beta
    rw.replace_const_operand(layer, 1, new_w.astype(np.float32))
    if len(layer.operands) > 2:
        rw.replace_const_operand(layer, 2, new_b.astype(np.float32))
    else:
        bias = rw.before(layer).const(layer.result.name + ".bias", new_b.astype(np.float32))
        rw.set_operands(layer, layer.operands + [bias])
    if view is None:
        layer.result.type = bn.result.type
    rw.replace_op(bn, x)
    return True


@pattern(lambda d: d.has(Trait.ACTIVATION))
def fold_activation(rw: Rewriter, act: Op) -> bool:
    """layer -> activation  ==>  layer {act = ...}, for a fusable activation (relu, clamp,
    leaky_relu, gelu, silu, hardsigmoid) and a producer that accepts it; also through a view
    between them (conv1d's reshape): layer -> view -> act  ==>  layer {act} -> view."""
    a = ACTIVATIONS[act.kind]
    x = act.operands[0]
    layer, _ = producing_layer(rw, x, act)
    if not a.fusable or layer is None or "act" in layer.attrs:
        return False
    d = OPS[layer.kind]
    if not d.has(Trait.FUSABLE) or not d.accepts_act(a) or rw.sole_user(x) is not act:
        return False
    layer.attrs.update(a.fused_attrs(act.attrs))
    rw.changed(layer)
    rw.replace_op(act, x)
    return True


@pattern(lambda d: d.has(Trait.PADDED_WINDOW))
def fold_pad_into_conv(rw: Rewriter, conv: Op) -> bool:
    """pad (zeros, spatial dims only) -> conv2d  ==>  conv2d with larger padding."""
    pad = rw.producer(conv.operands[0])
    if pad is None or pad.kind != "pad" or pad.attrs["value"] != 0.0:
        return False
    pads = pad.attrs["pads"]
    begin, end = pads[:4], pads[4:]
    if any(p < 0 for p in pads) or begin[:2] != [0, 0] or end[:2] != [0, 0]:
        return False
    top, left, bottom, right = conv.attrs["padding"]
    conv.attrs["padding"] = [top + begin[2], left + begin[3], bottom + end[2], right + end[3]]
    rw.set_operands(conv, [pad.operands[0]] + conv.operands[1:])
    return True


@pattern(lambda d: d.has(Trait.VIEW))
def collapse_views(rw: Rewriter, op: Op) -> bool:
    """view of a view  ==>  one view of the original (reshape chains)."""
    inner = rw.producer(op.operands[0])
    if inner is None or inner.kind != op.kind:
        return False
    rw.set_operands(op, [inner.operands[0]])
    return True


@pattern(lambda d: d.identity is not None)
def drop_noop(rw: Rewriter, op: Op) -> bool:
    """Remove an op that computes one of its operands, by its definition's `identity` facet:
    same-shape reshape, identity transpose, zero pad, x+0, x-0, x*1, x/1, unbounded clamp."""
    keep = OPS[op.kind].identity(op, rw.const)
    return keep is not None and forward(rw, op, op.operands[keep])


# Tried in this order at each op (the first that changes the graph wins); which ops each is
# tried on is its predicate over the op's definition (traits and facets, tinyc.ops).
PATTERNS: tuple[Pattern, ...] = (fold_batch_norm, collapse_views, drop_noop, fold_activation, fold_pad_into_conv)


@register
@dataclass(frozen=True)
class Fuse(Pass):
    """Layer fusion: fold batch-norm into the preceding conv/linear, attach a following
    fusable activation (relu, relu6/clamp, leaky_relu, gelu, silu, hardsigmoid) to its producer, fold a
    zero pad into conv padding, remove no-ops."""

    name = "fuse"

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        graph = graph.copy()
        apply_patterns(graph, PATTERNS)
        graph.remove_dead()
        return graph
