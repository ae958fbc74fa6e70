"""PyTorch pt2e-quantized models: quantize/dequantize pairs folded into tinyc's quantization parameters.

A model quantized with pt2e (torchao's prepare_pt2e / prepare_qat_pt2e, then convert_pt2e) computes
in float between `quantized_decomposed` ops: quantize_per_tensor then dequantize_per_tensor on each
activation it quantizes, dequantize_per_channel (or _per_tensor) of int8 weight codes. The importer
keeps the model's own parameters instead of re-deriving them:

- quantize(x) then dequantize on an activation becomes one `fake_quant(x)` op with the model's
  scale, zero point and code range (float in, float out: the float interpreter computes what the
  quantized PyTorch model computes);
- dequantize of constant codes (weights) becomes the dequantized float constant (PyTorch's own
  values) read through a `fake_quant` carrying the model's per-channel scales.

quantize-int8 then takes these parameters as the values' int8 quantization (qparams=model, the
default for a graph with fake_quant ops: passes/quant_from_model.py) and removes the fake_quant ops.
The quantized_decomposed ops are defined by PyTorch (torch.ao.quantization.fx._decomposed);
`register_ops` loads that definition so a saved .pt2 using them can be loaded.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from tinyc.frontend_ops import Builder, ConstRef, clean_node_name
from tinyc.ir import Op, Value

_NS = "quantized_decomposed"
_CODE_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32)


def register_ops() -> None:
    """Define PyTorch's quantized_decomposed ops (torch.export.load of a pt2e model needs them)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401


@dataclass(eq=False)
class QuantizedRef(ConstRef):
    """A constant the model stores quantized: `array` is PyTorch's dequantized float value; once
    placed, its readers read it through a fake_quant with the model's parameters."""

    fq: dict = field(default_factory=dict)

    def place(self, b: Builder, v: Value) -> Value:
        """Named after its first reader (conv2d.weight), not the dequantize node that made it."""
        schema = getattr(b.node.target, "_schema", None)
        role = "weight" if schema is not None and any(x.name == "weight" for x in schema.arguments) else "const"
        v.name = b.unique(f"{clean_node_name(b.node.name)}.{role}")
        y = Value(b.unique(f"{v.name}.fq"), v.type)
        b.body.append(Op("fake_quant", [v], y, dict(self.fq), b.loc))
        return y


@dataclass(eq=False)
class Quantized:
    """The integer result of a quantize op: only a dequantize may read it."""

    x: Any                      # Value or ConstRef
    fq: dict


def _scalar(b: Builder, v, what: str):
    if isinstance(v, ConstRef):
        if v.array.size != 1:
            b.unsupported(f"a {what} of {v.array.size} elements for per-tensor quantization")
        return v.array.reshape(()).item()
    if isinstance(v, Value):
        b.unsupported(f"a {what} computed at run time (dynamic quantization)",
                      "tinyc imports statically quantized models (pt2e with a static quantization config)")
    return v


def _vector(b: Builder, v, what: str) -> np.ndarray:
    if not isinstance(v, ConstRef):
        b.unsupported(f"per-channel {what}s computed at run time")
    return np.asarray(v.array).reshape(-1)


def _params(b: Builder, a: dict, per_channel: bool) -> dict:
    dtype = a["dtype"]
    if dtype not in _CODE_DTYPES:
        b.unsupported(f"quantization to {dtype}", "tinyc imports integer quantization (int8, uint8)")
    qmin, qmax = (int(_scalar(b, a[k], k)) for k in ("quant_min", "quant_max"))
    if per_channel:
        scale = _vector(b, a["scales"], "scale")
        zp = np.zeros(scale.shape, np.int64) if a.get("zero_points") is None else _vector(b, a["zero_points"],
                                                                                             "zero point")
        fq = {"scale": [float(s) for s in scale], "zero_point": [int(z) for z in zp], "qmin": qmin, "qmax": qmax}
    else:
        fq = {"scale": [float(_scalar(b, a["scale"], "scale"))],
              "zero_point": [int(_scalar(b, a["zero_point"], "zero point"))], "qmin": qmin, "qmax": qmax}
    if any(np.float32(s) != s for s in fq["scale"]):
        b.unsupported("a scale that is not a float32 value", "pt2e observers compute float32 scales")
    return fq


def _with_axis(fq: dict, a: dict, rank: int) -> dict:
    axis = int(a["axis"])
    return {**fq, "axis": axis + rank if axis < 0 else axis}


def quantize(per_channel: bool) -> Callable:
    def lower(b: Builder, a: dict):
        x = a["input"]
        if not isinstance(x, (Value, ConstRef)):
            b.unsupported("quantizing a non-tensor")
        fq = _params(b, a, per_channel)
        if per_channel:
            fq = _with_axis(fq, a, len(b.out_shape()))
        return Quantized(x, fq)
    return lower


def dequantize(per_channel: bool) -> Callable:
    def lower(b: Builder, a: dict):
        src = a["input"]
        fq = _params(b, a, per_channel)
        if per_channel:
            fq = _with_axis(fq, a, len(b.out_shape()))
        if a.get("out_dtype") not in (None, torch.float32):
            b.unsupported(f"dequantization to {a['out_dtype']}")
        if isinstance(src, Quantized):
            if src.fq != fq:
                b.unsupported("a dequantize whose parameters differ from its quantize's "
                              f"({src.fq} and {fq})")
            if isinstance(src.x, ConstRef):   # a float constant the model quantizes: its fake-quantized value
                return _constant(b, _torch_fq(src.x.array, fq), fq)
            y = b.emit("fake_quant", [b.value(src.x)], b.out_shape(), fq)
            return y
        if isinstance(src, ConstRef):        # stored codes (weights): PyTorch's dequantized values
            return _constant(b, _torch_dq(b, src.array, a), fq)
        if isinstance(src, Value):
            b.unsupported("dequantizing an integer tensor the model computes", OPS_HINT_Q)
        b.unsupported(f"dequantizing a {type(src).__name__}")
    return lower


OPS_HINT_Q = "tinyc imports pt2e models in their reference form: quantize/dequantize pairs around float ops"


def _constant(b: Builder, array: np.ndarray, fq: dict) -> QuantizedRef:
    return QuantizedRef(f"{b.node.name}", array, fq=fq)


def _torch_dq(b: Builder, codes: np.ndarray, a: dict) -> np.ndarray:
    """PyTorch's own dequantization of stored codes (its float32 arithmetic, bit for bit)."""
    args = {k: (torch.from_numpy(v.array.copy()) if isinstance(v, ConstRef) else v) for k, v in a.items()}
    args["input"] = torch.from_numpy(codes.copy())
    with torch.no_grad():
        return b.node.target(**args).numpy().astype(np.float32)


def _torch_fq(array: np.ndarray, fq: dict) -> np.ndarray:
    from tinyc.ops.fake_quant import fake_quantize
    return fake_quantize(array, fq)


_NAMES = {
    "quantize_per_tensor.default": quantize(False), "quantize_per_tensor.tensor": quantize(False),
    "quantize_per_tensor.tensor2": quantize(False), "quantize_per_channel.default": quantize(True),
    "dequantize_per_tensor.default": dequantize(False), "dequantize_per_tensor.tensor": dequantize(False),
    "dequantize_per_tensor.tensor2": dequantize(False), "dequantize_per_channel.default": dequantize(True),
}

LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = {f"{_NS}.{k}": fn for k, fn in _NAMES.items()}
# Applied to constants too (instead of PyTorch folding them): a stored weight keeps its parameters.
PASSTHROUGH = frozenset(LOWERINGS.values())
