"""The IR back to PyTorch: a trainable `nn.Module` that computes what the interpreter computes.

`to_torch(graph)` builds a `GraphModule`: weights and biases of `conv2d` / `linear` and the
affine `weight` / `bias` of `batch_norm` become `nn.Parameter`s, every other const a buffer.
`update_graph(graph, module)` writes the module's tensors back into a copy of the graph.
Together they are the road from IR to training (distillation now, quantization-aware
training later): convert, train, write back.

Each op's torch form is a facet of its registry definition (tinyc.ops), beside its numpy
semantics (the interpreter, the oracle). Pads, pools with ceil_mode / count_include_pad /
asymmetric padding follow the interpreter exactly: windows are padded explicitly and cropped to
the IR's output size.

The module runs on the graph's own input shapes (batch dimension included), and on stacks of
such samples: `[N, *input_shape]`, or `[N, *input_shape[1:]]` when the graph's batch is 1. Stacks
go through `torch.func.vmap`, so any graph batches, whatever its reshapes do with the batch.
Float graphs only: int8 graphs (quantize-int8's output) are refused. Shared weights convert
(`decode`: the indices are a buffer, the codebook trains); binarized layers do not.
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn as nn

from tinyc.errors import TinycError
from tinyc.ir import Graph, Op
from tinyc.ops import ACTIVATIONS, OPS, Trait, is_int_form

def run_op(op: Op, *args: torch.Tensor) -> torch.Tensor:
    """One op on torch tensors (its registry definition's torch form), fused activation included."""
    d = OPS[op.kind]
    y = d.torch(op, *args)
    if "act" in op.attrs and d.has(Trait.FUSABLE):
        a = ACTIVATIONS[op.attrs["act"]]
        y = a.torch(y, a.params_of(op.attrs, fused=True))
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
    """Raise TinycError unless every op converts: float ops with a torch form, float consts, and
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
        d = OPS.get(op.kind)
        int_form = d is not None and (d.has(Trait.INT_ONLY) or is_int_form(op.kind, [v.type for v in op.operands]))
        if int_form or t.quant is not None:
            raise TinycError(f"{what}: %{op.result.name} = {op.kind} is an int8 op; only float graphs convert to "
                             "PyTorch", where=op.loc, hint=f"run {what} before quantize-int8")
        if d is None or d.torch is None or t.dtype not in ("f32", "i32"):   # i32: views of token ids
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
                     for i in OPS[op.kind].trainable if i < len(op.operands)}
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
