"""Normalization layers: layer_norm, group_norm, instance_norm.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others.

What torch.export (2.13) emits and how it lands:
- nn.LayerNorm / F.layer_norm (any elementwise_affine / bias): aten.layer_norm.default; after
  PyTorch's decompositions aten.native_layer_norm.default (out, mean, rstd) -> `layer_norm`.
- nn.RMSNorm / F.rms_norm: aten.rms_norm.default -> `layer_norm {rms = true}` (eps None is
  torch.finfo(float32).eps, as PyTorch computes it for a float32 input).
- nn.GroupNorm: aten.group_norm.default (decomposed: native_group_norm.default) -> `group_norm`.
- nn.InstanceNorm1d/2d: aten.instance_norm.default. With use_input_stats (the default,
  track_running_stats=False, or any InstanceNorm in training mode) it is `group_norm` with
  groups = C; an eval-mode InstanceNorm with track_running_stats=True normalizes with the running
  statistics: that is `batch_norm` (fuse folds it into the producer).
A bias without a weight gets a weight of ones (the IR's operand order is x, weight, bias).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from tinyc.frontend_ops import Builder, ConstRef, _first_of


def _affine(b: Builder, weight, bias, shape) -> list:
    """[weight, bias] operands, trailing absent ones dropped; a lone bias gets a weight of ones."""
    if weight is None and bias is None:
        return []
    if weight is None:
        weight = ConstRef(f"{b.node.name}.weight", np.ones(shape, np.float32))
    out = [b.value(weight, "weight")]
    if bias is not None:
        out.append(b.value(bias, "bias"))
    for v in out:
        if v.type.shape != tuple(shape):
            b.unsupported(f"a normalization parameter of shape {list(v.type.shape)} (expected {list(shape)})")
    return out


def _layer_norm(b: Builder, a: dict, rms: bool = False):
    x = b.value(a["input"])
    shape = [int(d) for d in a["normalized_shape"]]
    k = len(shape)
    if k == 0 or k > x.type.rank or list(x.type.shape[x.type.rank - k:]) != shape:
        b.unsupported(f"normalized_shape {shape} for an input of shape {list(x.type.shape)}",
                      "normalized_shape must be the input's trailing dimensions")
    eps = a.get("eps")
    if eps is None:   # rms_norm's default: the machine epsilon of the input's dtype
        eps = torch.finfo(torch.float32).eps
    attrs = {"axis": x.type.rank - k, "eps": float(eps)}
    if rms:
        attrs["rms"] = True
    operands = [x] + _affine(b, a.get("weight"), a.get("bias"), shape)
    return b.emit("layer_norm", operands, x.type.shape, attrs)


def layer_norm(b, a):
    return _layer_norm(b, a)


def native_layer_norm(b, a):
    return _first_of(b, _layer_norm(b, a))


def rms_norm(b, a):
    return _layer_norm(b, a, rms=True)


def _group_norm(b: Builder, x, groups: int, weight, bias, eps: float):
    x = b.value(x)
    if x.type.rank < 2:
        b.unsupported(f"group norm of a rank-{x.type.rank} tensor", "the input must be [N, C, ...]")
    c = x.type.shape[1]
    if groups < 1 or c % groups:
        b.unsupported(f"{groups} groups for {c} channels", "num_groups must divide the channels")
    operands = [x] + _affine(b, weight, bias, [c])
    return b.emit("group_norm", operands, x.type.shape, {"groups": int(groups), "eps": float(eps)})


def group_norm(b, a):
    return _group_norm(b, a["input"], int(a["num_groups"]), a["weight"], a["bias"], a["eps"])


def native_group_norm(b, a):
    return _first_of(b, _group_norm(b, a["input"], int(a["group"]), a["weight"], a["bias"], a["eps"]))


def instance_norm(b, a):
    x = b.value(a["input"])
    if x.type.rank < 3:
        b.unsupported(f"instance norm of a rank-{x.type.rank} tensor", "the input must be [N, C, L] or [N, C, H, W]")
    c = x.type.shape[1]
    if a["use_input_stats"]:
        return _group_norm(b, x, c, a["weight"], a["bias"], a["eps"])
    # eval mode with track_running_stats=True: the running statistics normalize, as batch norm does
    if a["running_mean"] is None or a["running_var"] is None:
        b.unsupported("instance norm without input statistics or running statistics")
    weight = a["weight"] if a["weight"] is not None else ConstRef(f"{b.node.name}.weight", np.ones(c, np.float32))
    bias = a["bias"] if a["bias"] is not None else ConstRef(f"{b.node.name}.bias", np.zeros(c, np.float32))
    operands = [x, b.value(a["running_mean"]), b.value(a["running_var"]), b.value(weight, "weight"),
                b.value(bias, "bias")]
    for v in operands[1:]:
        if v.type.shape != (c,):
            b.unsupported(f"instance norm statistics of shape {list(v.type.shape)} (expected [{c}])")
    return b.emit("batch_norm", operands, x.type.shape, {"eps": float(a["eps"])})


LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = {
    "aten.layer_norm.default": layer_norm,
    "aten.native_layer_norm.default": native_layer_norm,
    "aten.rms_norm.default": rms_norm,
    "aten.group_norm.default": group_norm,
    "aten.native_group_norm.default": native_group_norm,
    "aten.instance_norm.default": instance_norm,
}
