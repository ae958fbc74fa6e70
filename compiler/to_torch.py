"""The IR back to PyTorch: a trainable `nn.Module` that computes what the interpreter computes.

`to_torch(graph)` builds a `GraphModule`: weights and biases of `conv2d` / `linear` and the
affine `weight` / `bias` of `batch_norm` become `nn.Parameter`s, every other const a buffer.
`update_graph(graph, module)` writes the module's tensors back into a copy of the graph.
Together they are the road from IR to training (distillation now, quantization-aware
training later): convert, train, write back.

Each op kind is one entry of `TORCH_OPS` (docs/ir.md has the semantics; tinyc.interpreter is
the oracle). Pads, pools with ceil_mode / count_include_pad / asymmetric padding follow the
interpreter exactly: windows are padded explicitly and cropped to the IR's output size.

The module runs on the graph's own input shapes (batch dimension included), and on stacks of
such samples: `[N, *input_shape]`, or `[N, *input_shape[1:]]` when the graph's batch is 1. Stacks
go through `torch.func.vmap`, so any graph batches, whatever its reshapes do with the batch.
Float graphs only: int8 graphs (quantize-int8's output) are refused. Shared weights convert
(`decode`: the indices are a buffer, the codebook trains); binarized layers do not.
"""
from __future__ import annotations

import functools
import re
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyc.errors import TinycError
from tinyc.ir import Graph, Op
from tinyc.ops import FUSABLE_ACT_OPS, is_int_form, window_out

# Operand slots whose (float) const becomes a trainable nn.Parameter, by op kind. decode's codebook
# trains too: that is the fine-tuning of shared weights.
TRAINABLE: dict[str, tuple[int, ...]] = {"conv2d": (1, 2), "linear": (1, 2), "batch_norm": (3, 4), "decode": (1,)}


# ---- windows (conv and pools) ----------------------------------------------------------

def _pad_hw(x: torch.Tensor, top: int, left: int, bottom: int, right: int, value: float = 0.0) -> torch.Tensor:
    if not (top or left or bottom or right):
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


@functools.lru_cache(maxsize=None)
def _pool_geometry(hw: tuple[int, int], kernel: tuple, stride: tuple, dilation: tuple, padding: tuple,
                   ceil_mode: bool) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(OH, OW) by the IR's rule and the padding [t, l, b, r] that makes every window fit,
    ceil_mode's last window included (as the interpreter pads)."""
    out = tuple(window_out(n, k, s, d, p0, p1, ceil_mode) for n, k, s, d, p0, p1 in
                zip(hw, kernel, stride, dilation, padding[:2], padding[2:]))
    extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - (n + p0 + p1))
             for o, s, d, k, n, p0, p1 in zip(out, stride, dilation, kernel, hw, padding[:2], padding[2:])]
    t, l, b, r = padding
    return out, (t, l, b + extra[0], r + extra[1])


@functools.lru_cache(maxsize=None)
def _avg_divisor(hw: tuple[int, int], out: tuple[int, int], kernel: tuple, stride: tuple, padding: tuple,
                 include_pad: bool) -> np.ndarray:
    """PyTorch's [OH, OW] divisors (tinyc.interpreter._avg_divisor on both axes)."""
    def axis(size, o, k, s, p0, p1):
        start = np.arange(o) * s - p0
        end = np.minimum(start + k, size + p1)
        return end - start if include_pad else np.minimum(end, size) - np.maximum(start, 0)
    dh, dw = (axis(*a) for a in zip(hw, out, kernel, stride, padding[:2], padding[2:]))
    return np.outer(dh, dw).astype(np.float64)


def _window_args(op: Op, dilation) -> tuple:
    a = op.attrs
    hw = tuple(op.operands[0].type.shape[2:])
    return hw, tuple(a["kernel"]), tuple(a["stride"]), tuple(dilation), tuple(a["padding"]), bool(a["ceil_mode"])


def _conv2d(op: Op, x, w, b=None):
    a = op.attrs
    top, left, bottom, right = a["padding"]
    if top == bottom and left == right:
        padding = (top, left)
    else:
        x, padding = _pad_hw(x, top, left, bottom, right), (0, 0)
    return F.conv2d(x, w, b, tuple(a["stride"]), padding, tuple(a["dilation"]), a["groups"])


def _max_pool2d(op: Op, x):
    hw, kernel, stride, dilation, padding, ceil = _window_args(op, op.attrs["dilation"])
    (oh, ow), pads = _pool_geometry(hw, kernel, stride, dilation, padding, ceil)
    y = F.max_pool2d(_pad_hw(x, *pads, value=float("-inf")), kernel, stride, 0, dilation)
    return y[..., :oh, :ow]


def _avg_pool2d(op: Op, x):
    hw, kernel, stride, dilation, padding, ceil = _window_args(op, (1, 1))
    (oh, ow), pads = _pool_geometry(hw, kernel, stride, dilation, padding, ceil)
    total = F.avg_pool2d(_pad_hw(x, *pads), kernel, stride, 0, divisor_override=1)[..., :oh, :ow]
    divisor = _avg_divisor(hw, (oh, ow), kernel, stride, padding, bool(op.attrs["count_include_pad"]))
    return total / torch.as_tensor(divisor, dtype=x.dtype, device=x.device)


def _batch_norm(op: Op, x, mean, var, weight, bias):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = weight / torch.sqrt(var + op.attrs["eps"])
    return (x - mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)


def _pad(op: Op, x):
    pads, r = op.attrs["pads"], x.dim()
    begin, end = pads[:r], pads[r:]
    # Negative pads crop (as F.pad and the interpreter do): slice, then pad with the positive parts.
    x = x[tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begin, end)))]
    flat = []
    for b, e in zip(reversed(begin), reversed(end)):   # F.pad lists the last dimension first
        flat += [max(0, b), max(0, e)]
    return F.pad(x, flat, value=op.attrs["value"]) if any(flat) else x


def _decode(op: Op, idx, codebook):
    """codebook[idx] (codebook [K]) or codebook[c, idx[c, ...]] (codebook [O, K]); see the interpreter."""
    i = idx.long()
    if codebook.dim() == 1:
        return codebook[i]
    return torch.gather(codebook, 1, i.reshape(i.shape[0], -1)).reshape(i.shape)


def _clamp(x, lo: float, hi: float):
    # min(max(x, lo), hi) like the interpreter and torch.clamp, so lo > hi gives hi.
    return torch.clamp(x, min=lo, max=hi)


def _leaky_relu(x, alpha: float):
    return torch.where(x >= 0, x, x * alpha)


# Fused activations, applied after the op.
ACTS: dict[str, Callable] = {
    "relu": lambda x, a: torch.relu(x),
    "clamp": lambda x, a: _clamp(x, a["act_min"], a["act_max"]),
    "leaky_relu": lambda x, a: _leaky_relu(x, a["act_alpha"]),
}

# op kind -> f(op, *operand tensors) -> result tensor (the fused act is applied by the caller).
TORCH_OPS: dict[str, Callable] = {
    "conv2d": _conv2d,
    "linear": lambda op, x, w, b=None: F.linear(x, w, b),
    "matmul": lambda op, a, b: torch.matmul(a, b),
    "batch_norm": _batch_norm,
    "relu": lambda op, x: torch.relu(x),
    "sigmoid": lambda op, x: torch.sigmoid(x),
    "tanh": lambda op, x: torch.tanh(x),
    "hardswish": lambda op, x: x * _clamp(x + 3.0, 0.0, 6.0) / 6.0,
    "clamp": lambda op, x: _clamp(x, op.attrs["min"], op.attrs["max"]),
    "leaky_relu": lambda op, x: _leaky_relu(x, op.attrs["alpha"]),
    "add": lambda op, a, b: a + b,
    "sub": lambda op, a, b: a - b,
    "mul": lambda op, a, b: a * b,
    "div": lambda op, a, b: a / b,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "mean": lambda op, x: torch.mean(x, dim=tuple(op.attrs["axes"]), keepdim=op.attrs["keepdim"]),
    "reshape": lambda op, x: x.reshape(op.attrs["shape"]),
    "transpose": lambda op, x: x.permute(op.attrs["perm"]),
    "cat": lambda op, *xs: torch.cat(xs, dim=op.attrs["axis"]),
    "softmax": lambda op, x: torch.softmax(x, dim=op.attrs["axis"]),
    "pad": _pad,
    "decode": _decode,
}


def run_op(op: Op, *args: torch.Tensor) -> torch.Tensor:
    """One op on torch tensors, fused activation included."""
    y = TORCH_OPS[op.kind](op, *args)
    if op.kind in FUSABLE_ACT_OPS and "act" in op.attrs:
        y = ACTS[op.attrs["act"]](y, op.attrs)
    return y


# ---- the module ----------------------------------------------------------------------------

def _attr_name(value_name: str, taken: set[str]) -> str:
    """A module attribute name for a const (nn.Module names cannot contain dots)."""
    base = "c_" + re.sub(r"[^A-Za-z0-9_]", "_", value_name)
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def check_float(graph: Graph, what: str = "to_torch") -> None:
    """Raise TinycError unless every op converts: float ops of TORCH_OPS, float consts, and
    integer consts only as the indices of `decode` (shared weights: the codebook trains)."""
    users = graph.users()
    for op in graph.ops:
        t = op.result.type
        if op.is_const:
            uses = users.get(id(op.result), [])
            if t.dtype != "f32" and not all(u.kind == "decode" and u.operands[0] is op.result for u in uses):
                quantized = " (quantized)" if t.quant else ""
                raise TinycError(f"{what}: const %{op.result.name} is {t.dtype}{quantized}; only float graphs "
                                 "convert to PyTorch", where=op.loc, hint=f"run {what} before quantize-int8")
            continue
        int_form = op.kind in ("quantize", "dequantize", "lut") or is_int_form(op.kind, [v.type for v in op.operands])
        if int_form or t.quant is not None:
            raise TinycError(f"{what}: %{op.result.name} = {op.kind} is an int8 op; only float graphs convert to "
                             "PyTorch", where=op.loc, hint=f"run {what} before quantize-int8")
        if op.kind not in TORCH_OPS or t.dtype != "f32":
            raise TinycError(f"{what}: no PyTorch form for %{op.result.name} = {op.kind} ({t.dtype})",
                             where=op.loc, hint=f"run {what} before the pass that introduced it")


class GraphModule(nn.Module):
    """A tinyc graph as a torch module (see the module docstring). `consts` maps each const's
    value name to its attribute (`const(name)` returns the tensor)."""

    def __init__(self, graph: Graph, trainable: bool = True):
        super().__init__()
        check_float(graph)
        self.graph_name = graph.name
        self.input_names = [v.name for v in graph.inputs]
        self.input_shapes = [tuple(v.type.shape) for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self.output_shapes = [tuple(v.type.shape) for v in graph.outputs]
        train_ids = {id(op.operands[i]) for op in graph.compute_ops()
                     for i in TRAINABLE.get(op.kind, ()) if i < len(op.operands)}
        self.consts: dict[str, str] = {}
        taken = set(dir(self))
        for op in graph.const_ops():
            attr = _attr_name(op.result.name, taken)
            tensor = torch.from_numpy(np.array(op.attrs["value"], copy=True))
            if trainable and id(op.result) in train_ids and tensor.is_floating_point():
                self.register_parameter(attr, nn.Parameter(tensor))
            else:
                self.register_buffer(attr, tensor)
            self.consts[op.result.name] = attr
        # The compute ops without their const data (that lives in the parameters and buffers).
        self._ops = [Op(op.kind, op.operands, op.result, dict(op.attrs), op.loc) for op in graph.compute_ops()]

    def const(self, name: str) -> torch.Tensor:
        """The parameter or buffer holding the const value `name`."""
        return getattr(self, self.consts[name])

    def named_consts(self):
        """(value name, tensor) for every const of the graph."""
        for name, attr in self.consts.items():
            yield name, getattr(self, attr)

    def parameter_names(self) -> list[str]:
        """Value names of the consts that are trainable parameters."""
        return [n for n, t in self.named_consts() if isinstance(t, nn.Parameter)]

    # ---- running ----
    def run_values(self, inputs, names=None) -> list[torch.Tensor]:
        """Values by name (default: the graph's outputs) for inputs of exactly the graph's shapes."""
        env = {n: getattr(self, a) for n, a in self.consts.items()}
        env.update(zip(self.input_names, inputs))
        for op in self._ops:
            env[op.result.name] = self.run_op(op, *(env[v.name] for v in op.operands))
        return [env[n] for n in (names or self.output_names)]

    def run_op(self, op: Op, *args: torch.Tensor) -> torch.Tensor:
        """One op (the hook a subclass overrides, e.g. to fake-quantize for quantization-aware training)."""
        return run_op(op, *args)

    def forward(self, *inputs: torch.Tensor, names: list[str] | None = None):
        """The graph's outputs (a tensor, or a tuple for several) for one sample of the graph's
        input shapes or a stack of them (see the module docstring). `names` picks other values."""
        names = list(names or self.output_names)
        if len(inputs) != len(self.input_shapes):
            raise TinycError(f"graph @{self.graph_name} takes {len(self.input_shapes)} inputs, got {len(inputs)}")
        mode = self._batch_mode(inputs)
        if mode == "one":
            outs = self.run_values(inputs, names)
        else:
            if mode == "rows":
                inputs = [x.unsqueeze(1) for x in inputs]
            outs = list(torch.func.vmap(lambda *xs: tuple(self.run_values(xs, names)))(*inputs))
            if mode == "rows":
                outs = [o.squeeze(1) if o.dim() > 1 and o.shape[1] == 1 else o for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _batch_mode(self, inputs) -> str:
        shapes = [tuple(x.shape) for x in inputs]
        if shapes == self.input_shapes:
            return "one"
        n = {s[0] for s in shapes if s}
        if len(n) == 1 and all(s[1:] == want for s, want in zip(shapes, self.input_shapes)):
            return "stack"
        if len(n) == 1 and all(want[:1] == (1,) and s[1:] == want[1:] for s, want in zip(shapes, self.input_shapes)):
            return "rows"
        want = ", ".join(str(list(s)) for s in self.input_shapes)
        raise TinycError(f"graph @{self.graph_name} got inputs of shapes {', '.join(str(list(s)) for s in shapes)}; "
                         f"it takes {want}",
                         hint="give one sample of the graph's input shape or a stack [N, *shape]")


def to_torch(graph: Graph, trainable: bool = True) -> GraphModule:
    """A torch module computing `graph` (float graphs). With `trainable`, conv2d/linear weights
    and biases and batch_norm weights/biases are nn.Parameters; other consts are buffers."""
    return GraphModule(graph, trainable)


def update_graph(graph: Graph, module: GraphModule) -> Graph:
    """A copy of `graph` whose consts hold the module's (trained) tensors, in the graph's dtypes."""
    out = graph.copy()
    for op in out.const_ops():
        name = op.result.name
        if name not in module.consts:
            raise TinycError(f"update_graph: the module has no const %{name}",
                             hint="pass the module that to_torch built from this graph")
        old = op.attrs["value"]
        new = module.const(name).detach().cpu().numpy()
        if new.shape != old.shape:
            raise TinycError(f"update_graph: const %{name} has shape {list(new.shape)} in the module, "
                             f"{list(old.shape)} in the graph")
        op.attrs["value"] = np.require(new.astype(old.dtype), requirements="C")
    return out
