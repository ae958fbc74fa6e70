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
(`decode`: the indices are a buffer, the codebook trains). Binarized layers convert in their float
form: `sign` gives float 0/1 with a straight-through gradient (hardtanh window), and a bin_conv2d /
bin_linear's u1 sign weight becomes a latent float parameter, (2b - 1) * alpha[o] (latent_weight),
used as sign(latent) with the identity as gradient; alpha and the bias train as they are, and
update_graph writes back the sign bits (latent >= 0). `FakeQuantModule` is the
quantization-aware form (distill{qat=on}): weights and activations rounded as quantize-int8 will.
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn as nn

from tinyc import quant
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


def _bin_weight_users(graph: Graph) -> dict[int, list[Op]]:
    """id(const value) -> the binary layers (Trait.BINARY_LAYER) reading it as their u1 weight (operand 1)."""
    out: dict[int, list[Op]] = {}
    for op in graph.compute_ops():
        if OPS[op.kind].has(Trait.BINARY_LAYER) and len(op.operands) > 1:
            out.setdefault(id(op.operands[1]), []).append(op)
    return out


def check_float(graph: Graph, what: str = "to_torch") -> None:
    """Raise TinycError unless every op converts: float ops with a torch form, float consts,
    integer consts only as the indices of `decode` (shared weights: the codebook trains) or as the
    u1 sign weights of binary layers (float forms), and u1 values only from ops with a torch form
    (`sign`: float 0/1 in torch)."""
    users = graph.users()
    bin_weights = _bin_weight_users(graph)
    for op in graph.ops:
        t = op.result.type
        if op.is_const:
            uses = users.get(id(op.result), [])
            index = all(u.kind == "decode" and u.operands[0] is op.result for u in uses)
            sign_bits = t.dtype == "u1" and t.quant is None and uses and \
                len(bin_weights.get(id(op.result), [])) == len(uses) and \
                all(u.operands.count(op.result) == 1 for u in uses)
            if t.dtype != "f32" and not index and not sign_bits:
                quantized = " (quantized)" if t.quant else ""
                raise TinycError(f"{what}: const %{op.result.name} is {t.dtype}{quantized}; only float graphs "
                                 "convert to PyTorch", where=op.loc, hint=f"run {what} before quantize-int8")
            continue
        d = OPS.get(op.kind)
        int_form = d is not None and (d.has(Trait.INT_ONLY) or is_int_form(op.kind, [v.type for v in op.operands]))
        if int_form or t.quant is not None:
            raise TinycError(f"{what}: %{op.result.name} = {op.kind} is an int8 op; only float graphs convert to "
                             "PyTorch", where=op.loc, hint=f"run {what} before quantize-int8")
        if d is None or d.torch is None or t.dtype not in ("f32", "i32", "u1"):   # i32: views of token ids
            raise TinycError(f"{what}: no PyTorch form for %{op.result.name} = {op.kind} ({t.dtype})",
                             where=op.loc, hint=f"run {what} before the pass that introduced it")


def latent_weight(bits: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The trainable float form of a binary layer's u1 sign weight: (2b - 1) * alpha[o], per output
    channel o (axis 0), float32; an alpha of 0 counts as 1 so the sign survives. The latent's
    magnitude is the distance to a sign flip: at alpha[o], roughly the size of the channel's float
    weights before binarize (mean |W[o]|), Adam at learning rate lr flips a weight after about
    alpha[o] / lr consistent steps (tens of steps at the defaults), neither on every noisy
    gradient nor never. update_graph writes back (latent >= 0)."""
    a = np.abs(np.asarray(alpha, np.float32))
    a = np.where(a > 0, a, np.float32(1.0)).reshape((-1,) + (1,) * (bits.ndim - 1))
    return ((2 * bits.astype(np.float32) - 1) * a).astype(np.float32)


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
        bin_weights = _bin_weight_users(graph)
        values = {op.result.name: op.attrs["value"] for op in graph.const_ops()}
        self.consts: dict[str, str] = {}
        self.latent: set[str] = set()     # u1 sign weights held as latent float parameters
        taken = set(dir(self))
        for op in graph.const_ops():
            attr = _attr_name(op.result.name, taken)
            tensor = torch.from_numpy(np.array(op.attrs["value"], copy=True))
            layers = bin_weights.get(id(op.result))
            if trainable and id(op.result) in train_ids and layers and op.result.type.dtype == "u1":
                alpha = values.get(layers[0].operands[2].name)
                if alpha is None:
                    raise TinycError(f"to_torch: %{layers[0].result.name} = {layers[0].kind}: alpha is not a constant",
                                     where=layers[0].loc)
                latent = latent_weight(op.attrs["value"], alpha)
                self.register_parameter(attr, nn.Parameter(torch.from_numpy(latent)))
                self.latent.add(op.result.name)
            elif trainable and id(op.result) in train_ids and tensor.is_floating_point():
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


# ---- quantization-aware training -------------------------------------------------------------

def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """tinyc.quant.round_half_away (C's roundf) on float32 tensors."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def fake_quant_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """w rounded as quantize-int8 stores it: codes * scale with quant.weight_params' symmetric
    per-row scales (axis 0; a 1-D tensor, a shared codebook [K], is one row) at `bits`, the same
    float32 division and rounding as quant.quantize_weight. The scales follow the current weights
    (as quantize-int8 will compute them after training); the gradient passes straight through."""
    rows = w.detach().reshape(1, -1) if w.dim() == 1 else w.detach().reshape(w.shape[0], -1)
    q = quant.weight_params(rows.cpu().numpy(), bits)
    qmax = quant.WEIGHT_BITS[bits][1]
    scale = torch.tensor(q.scale, dtype=torch.float32).reshape((-1,) + (1,) * (w.dim() - 1))
    if w.dim() == 1:
        scale = scale.reshape(())
    fq = torch.clamp(_round_half_away(w.detach() / scale), -qmax, qmax) * scale
    return fq + (w - w.detach())     # exactly fq forward, identity gradient


def fake_quant_act(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """x rounded to the int8 grid real = scale * (q - zp), q in [-128, 127] (quant.quantize then
    quant.dequantize, in float32); the gradient is 1 inside the grid's range, 0 outside (clamped)."""
    s = torch.tensor(scale, dtype=torch.float32)
    q = torch.clamp(_round_half_away(x.detach() / s) + zero_point, quant.QMIN, quant.QMAX)
    fq = (q - zero_point) * s
    xc = torch.clamp(x, float((quant.QMIN - zero_point) * s), float((quant.QMAX - zero_point) * s))
    return fq + (xc - xc.detach())   # exactly fq forward, clamp's gradient


class FakeQuantModule(GraphModule):
    """A GraphModule whose forward rounds as the int8 graph will (quantization-aware training):
    the consts named in `weights` (const name -> bits: layer weights, shared-weight codebooks)
    through fake_quant_weight wherever an op reads them, and the values named in `acts`
    (value name -> per-tensor QuantParams: graph inputs and op results) through fake_quant_act
    where they are produced or, for graph inputs, read. The parameters are the float ones
    (GraphModule's): update_graph writes them back unrounded, for quantize-int8 to quantize."""

    def __init__(self, graph: Graph, acts: dict, weights: dict[str, int], trainable: bool = True):
        super().__init__(graph, trainable)
        known = {v.name for v in graph.inputs} | {op.result.name for op in graph.ops}
        unknown = sorted((set(acts) | set(weights)) - known)
        if unknown:
            raise TinycError(f"FakeQuantModule: no value {', '.join(unknown)} in graph @{graph.name}")
        self.weight_bits = dict(weights)
        self._inputs = set(self.input_names)
        self.enabled = True     # False: the plain float forward (to observe ranges)
        self.set_acts(acts)

    def set_acts(self, acts: dict) -> None:
        """New activation quantization (value name -> per-tensor QuantParams)."""
        self.act_quant = {n: (float(q.scale[0]), int(q.zero_point[0])) for n, q in acts.items()}

    def run_op(self, op: Op, *args: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return super().run_op(op, *args)
        args = list(args)
        for i, v in enumerate(op.operands):
            if v.name in self.weight_bits:
                args[i] = fake_quant_weight(args[i], self.weight_bits[v.name])
            elif v.name in self._inputs and v.name in self.act_quant:
                args[i] = fake_quant_act(args[i], *self.act_quant[v.name])
        y = super().run_op(op, *args)
        q = self.act_quant.get(op.result.name)
        return y if q is None else fake_quant_act(y, *q)


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
        if op.result.type.dtype == "u1" and np.issubdtype(new.dtype, np.floating):
            new = new >= 0          # a binary layer's latent weight: its sign bits (1 = +1)
        op.attrs["value"] = np.require(new.astype(old.dtype), requirements="C")
    return out
