"""`fuse`: layer fusion. Folds batch-norm into the preceding conv/linear, attaches a following
activation to its producer, folds a zero pad into conv padding and removes no-ops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinyc.ir import Graph, Op, Value
from tinyc.ops import ACTIVATIONS, OPS, Trait, has
from tinyc.passes.base import Pass, PassContext, register


class Rewriter:
    """A graph plus def/use maps, refreshed after every change (graphs are small)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.refresh()

    def refresh(self) -> None:
        self.producer = self.graph.producers()
        self.users = self.graph.users()
        self.outputs = {id(v) for v in self.graph.outputs}

    def const(self, v: Value) -> np.ndarray | None:
        op = self.producer.get(id(v))
        return op.attrs["value"] if op is not None and op.is_const else None

    def sole_user(self, v: Value) -> Op | None:
        """The one op using `v`, if `v` has exactly one use and is not a graph output."""
        users = self.users.get(id(v), [])
        return users[0] if len(users) == 1 and id(v) not in self.outputs else None

    def forward(self, op: Op, to: Value) -> bool:
        """Make `op` a no-op by pointing its uses at `to`, keeping the output's name if needed."""
        if id(op.result) in self.outputs and id(to) in self.outputs | {id(v) for v in self.graph.inputs}:
            return False  # a graph output must stay a distinct value
        self.graph.replace_uses(op.result, to)
        self.graph.ops.remove(op)
        return True

    def set_const(self, v: Value, array: np.ndarray, before: Op) -> Value:
        """A const holding `array` to use in place of `v`; rewritten in place when `v` has no other user."""
        producer = self.producer.get(id(v))
        if producer is not None and producer.is_const and len(self.users.get(id(v), [])) == 1:
            producer.attrs["value"] = array.astype(np.float32)
            return v
        return self.graph.add_const(v.name, array.astype(np.float32), before=before)


# ---- rewrites: each takes (rewriter, op) and returns True when it changed the graph ----

def fold_batch_norm(rw: Rewriter, bn: Op) -> bool:
    """conv/linear -> batch_norm  ==>  conv/linear with scaled weights and shifted bias."""
    x = bn.operands[0]
    layer = rw.producer.get(id(x))
    if layer is None or not has(layer, Trait.LAYER) or "act" in layer.attrs:
        return False
    if rw.sole_user(x) is not bn or (layer.kind == "linear" and x.type.rank != 2):
        return False
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
    weight = rw.set_const(layer.operands[1], new_w, layer)
    if len(layer.operands) > 2:
        bias = rw.set_const(layer.operands[2], new_b, layer)
    else:
        bias = rw.graph.add_const(layer.result.name + ".bias", new_b.astype(np.float32), before=layer)
    layer.operands = [layer.operands[0], weight, bias]
    layer.result.type = bn.result.type
    rw.graph.replace_uses(bn.result, layer.result)
    rw.graph.ops.remove(bn)
    return True


def fold_activation(rw: Rewriter, act: Op) -> bool:
    """layer -> activation  ==>  layer {act = ...}, for a fusable activation (relu, clamp,
    leaky_relu, gelu, silu, hardsigmoid) and a producer that accepts it."""
    a = ACTIVATIONS[act.kind]
    x = act.operands[0]
    layer = rw.producer.get(id(x))
    if not a.fusable or layer is None or "act" in layer.attrs:
        return False
    d = OPS[layer.kind]
    if not d.has(Trait.FUSABLE) or not d.accepts_act(a) or rw.sole_user(x) is not act:
        return False
    layer.attrs.update(a.fused_attrs(act.attrs))
    rw.graph.replace_uses(act.result, layer.result)
    rw.graph.ops.remove(act)
    return True


def fold_pad_into_conv(rw: Rewriter, conv: Op) -> bool:
    """pad (zeros, spatial dims only) -> conv2d  ==>  conv2d with larger padding."""
    pad = rw.producer.get(id(conv.operands[0]))
    if pad is None or pad.kind != "pad" or pad.attrs["value"] != 0.0:
        return False
    pads = pad.attrs["pads"]
    begin, end = pads[:4], pads[4:]
    if any(p < 0 for p in pads) or begin[:2] != [0, 0] or end[:2] != [0, 0]:
        return False
    top, left, bottom, right = conv.attrs["padding"]
    conv.attrs["padding"] = [top + begin[2], left + begin[3], bottom + end[2], right + end[3]]
    conv.operands = [pad.operands[0]] + conv.operands[1:]
    return True


def collapse_views(rw: Rewriter, op: Op) -> bool:
    """view of a view  ==>  one view of the original (reshape chains)."""
    inner = rw.producer.get(id(op.operands[0]))
    if inner is None or inner.kind != op.kind:
        return False
    op.operands = [inner.operands[0]]
    return True


def drop_noop(rw: Rewriter, op: Op) -> bool:
    """Remove an op that computes one of its operands, by its definition's `identity` facet:
    same-shape reshape, identity transpose, zero pad, x+0, x-0, x*1, x/1, unbounded clamp."""
    keep = OPS[op.kind].identity(op, rw.const)
    return keep is not None and rw.forward(op, op.operands[keep])


def rewrites(op: Op) -> tuple[Callable[[Rewriter, Op], bool], ...]:
    """The rewrites that may apply at `op`, read from its definition's traits and facets."""
    d = OPS[op.kind]
    found = []
    if d.has(Trait.CHANNEL_AFFINE):
        found.append(fold_batch_norm)
    if d.has(Trait.VIEW):
        found.append(collapse_views)
    if d.identity is not None:
        found.append(drop_noop)
    if d.has(Trait.ACTIVATION):
        found.append(fold_activation)
    if d.has(Trait.PADDED_WINDOW):
        found.append(fold_pad_into_conv)
    return tuple(found)


@register
@dataclass(frozen=True)
class Fuse(Pass):
    """Layer fusion: fold batch-norm into the preceding conv/linear, attach a following
    fusable activation (relu, relu6/clamp, leaky_relu, gelu, silu, hardsigmoid) to its producer, fold a
    zero pad into conv padding, remove no-ops."""

    name = "fuse"

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        graph = graph.copy()
        rw = Rewriter(graph)
        changed = True
        while changed:
            changed = False
            for op in list(graph.ops):
                if any(rewrite(rw, op) for rewrite in rewrites(op)):
                    rw.refresh()
                    changed = True
                    break
        graph.remove_dead()
        return graph
