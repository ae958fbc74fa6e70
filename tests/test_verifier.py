"""The verifier accepts valid IR and catches each kind of break, naming the op."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc.errors import VerifyError
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.verifier import verify

CONV_ATTRS = dict(stride=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)


def small_graph() -> Graph:
    """x -> conv2d{relu} -> max_pool2d -> reshape -> linear: a valid graph to break."""
    x = Value("x", TensorType((1, 3, 8, 8)))
    g = Graph("net", [x], [])
    w = g.add_const("conv.weight", np.zeros((4, 3, 3, 3), np.float32))
    b = g.add_const("conv.bias", np.zeros(4, np.float32))
    conv = Value("conv2d", TensorType((1, 4, 8, 8)))
    g.ops.append(Op("conv2d", [x, w, b], conv, dict(CONV_ATTRS, act="relu"), loc="net.py:10 in forward"))
    pool = Value("pool", TensorType((1, 4, 4, 4)))
    g.ops.append(Op("max_pool2d", [conv], pool, dict(kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 0],
                                                     dilation=[1, 1], ceil_mode=False)))
    flat = Value("flat", TensorType((1, 64)))
    g.ops.append(Op("reshape", [pool], flat, dict(shape=[1, 64])))
    fw = g.add_const("fc.weight", np.zeros((10, 64), np.float32))
    logits = Value("logits", TensorType((1, 10)))
    g.ops.append(Op("linear", [flat, fw], logits))
    g.outputs = [logits]
    return g


def op(g: Graph, name: str) -> Op:
    return next(o for o in g.ops if o.result.name == name)


def fails(g: Graph, *fragments: str) -> VerifyError:
    with pytest.raises(VerifyError) as info:
        verify(g)
    for f in fragments:
        assert f in str(info.value), str(info.value)
    return info.value


def test_valid_graph_passes():
    verify(small_graph())


def test_quantized_graph_passes():
    x = Value("x", TensorType((1, 4, 8, 8), "i8", QuantParams((0.05,), (-3,))))
    g = Graph("q", [x], [])
    w = g.add_const("w", np.zeros((6, 4, 3, 3), np.int8), quant=QuantParams((0.01,) * 6, (0,) * 6, axis=0))
    w4 = g.add_const("w4", np.zeros((6, 4, 1, 1), np.int8), dtype="i4")
    y = Value("y", TensorType((1, 6, 8, 8), "i8", QuantParams((0.1,), (5,))))
    g.ops.append(Op("conv2d", [x, w], y, dict(CONV_ATTRS)))
    g.outputs = [y, w4]
    verify(g)


def test_shape_mismatch_message():
    g = small_graph()
    op(g, "conv2d").result.type = TensorType((1, 4, 6, 6))
    e = fails(g, "verify: %conv2d = conv2d: result shape [1, 4, 6, 6] does not match inferred [1, 4, 8, 8]")
    assert e.where == "net.py:10 in forward"
    assert "at net.py:10 in forward" in str(e)


def test_dtype_mismatch():
    g = small_graph()
    op(g, "flat").result.type = TensorType((1, 64), "i8")
    fails(g, "%flat = reshape", "result dtype i8 does not match inferred f32")


# ---- names and def-use -----------------------------------------------------------------

def test_duplicate_name():
    g = small_graph()
    op(g, "pool").result.name = "conv2d"
    fails(g, "%conv2d = max_pool2d", "defined twice")


def test_duplicate_of_input():
    g = small_graph()
    op(g, "flat").result.name = "x"
    fails(g, "%x = reshape", "defined twice")


@pytest.mark.parametrize("bad", ["has space", "a-b", "", "é"])
def test_bad_name(bad):
    g = small_graph()
    op(g, "flat").result.name = bad
    fails(g, "bad value name")


def test_use_before_definition():
    g = small_graph()
    g.ops.remove(pool := op(g, "pool"))
    g.ops.append(pool)
    fails(g, "%flat = reshape", "operand %pool is not defined before this op")


def test_operand_is_a_copy():
    g = small_graph()
    flat = op(g, "flat")
    flat.operands = [Value("pool", flat.operands[0].type)]
    fails(g, "%flat = reshape", "different Value object")


def test_output_undefined():
    g = small_graph()
    g.outputs = [Value("ghost", TensorType((1, 10)))]
    fails(g, "output 0 %ghost", "not defined")


# ---- consts --------------------------------------------------------------------------------

def test_const_shape():
    g = small_graph()
    op(g, "conv.bias").attrs["value"] = np.zeros(5, np.float32)
    fails(g, "%conv.bias = const", "value shape [5] does not match type [4]")


def test_const_dtype():
    g = small_graph()
    op(g, "conv.bias").attrs["value"] = np.zeros(4, np.float64)
    fails(g, "%conv.bias = const", "value dtype float64 is not the storage dtype float32 of f32")


def test_const_not_an_array():
    g = small_graph()
    op(g, "conv.bias").attrs["value"] = [0.0] * 4
    fails(g, "%conv.bias = const", "attribute 'value' must be ndarray")


# ---- op kinds, operands, attributes ---------------------------------------------------------

def test_unknown_kind():
    g = small_graph()
    op(g, "flat").kind = "flatten"
    fails(g, "%flat = flatten", "unknown op kind 'flatten'")


def test_operand_count():
    g = small_graph()
    logits = op(g, "logits")
    logits.operands = logits.operands[:1]
    fails(g, "%logits = linear", "takes 2 to 3 operands, got 1")


def test_unknown_attribute_typo():
    g = small_graph()
    attrs = op(g, "conv2d").attrs
    attrs["strides"] = attrs.pop("stride")
    e = fails(g, "%conv2d = conv2d", "unknown attribute 'strides'")
    assert "stride" in e.hint


def test_missing_attribute():
    g = small_graph()
    del op(g, "pool").attrs["ceil_mode"]
    fails(g, "%pool = max_pool2d", "missing attribute ceil_mode")


@pytest.mark.parametrize("name,value,expected", [
    ("groups", 1.0, "must be int"),
    ("groups", True, "must be int"),
    ("stride", (1, 1), "must be list[int]"),
    ("stride", [1.0, 1.0], "must be list[int]"),
])
def test_attribute_type(name, value, expected):
    g = small_graph()
    op(g, "conv2d").attrs[name] = value
    fails(g, "%conv2d = conv2d", f"attribute '{name}' {expected}")


def test_float_attribute_must_be_float():
    g = small_graph()
    x = op(g, "flat").result
    y = Value("clamped", x.type)
    g.ops.append(Op("clamp", [x], y, dict(min=0, max=6.0)))
    fails(g, "%clamped = clamp", "attribute 'min' must be float, got int")


def test_attribute_values_checked_by_shape_rules():
    g = small_graph()
    op(g, "conv2d").attrs["padding"] = [1, 1]
    fails(g, "%conv2d = conv2d", "padding must be 4 integers")


# ---- fused act -----------------------------------------------------------------------------

@pytest.mark.parametrize("attrs,expected", [
    (dict(act="frobnicate"), "unknown act 'frobnicate'"),
    (dict(act="clamp", act_min=0.0), "act 'clamp' takes attributes [act_max, act_min]"),
    (dict(act="relu", act_alpha=0.1), "act 'relu' takes attributes []"),
    (dict(act="clamp", act_min=6.0, act_max=0.0), "act_min 6.0 > act_max 0.0"),
    (dict(act_alpha=0.1), "act_alpha given without act"),
])
def test_bad_act(attrs, expected):
    g = small_graph()
    conv = op(g, "conv2d")
    conv.attrs = dict(CONV_ATTRS, **attrs)
    fails(g, "%conv2d = conv2d", expected)


def test_act_only_on_fusable_ops():
    g = small_graph()
    op(g, "pool").attrs["act"] = "relu"
    e = fails(g, "%pool = max_pool2d", "unknown attribute 'act'")
    assert "only allowed on" in e.hint


# ---- quantization parameters ----------------------------------------------------------------

def _quant_graph(quant: QuantParams, dtype: str = "i8") -> Graph:
    x = Value("x", TensorType((1, 4), "f32"))
    g = Graph("q", [x], [])
    w = g.add_const("w", np.zeros((3, 4), np.int8), quant=quant)
    w.type = TensorType((3, 4), dtype, quant)
    g.outputs = [w]
    return g


@pytest.mark.parametrize("quant,expected", [
    (QuantParams((0.1,) * 3, (0,) * 3, axis=2), "quant axis 2 is out of range for rank 2"),
    (QuantParams((0.1,) * 4, (0,) * 4, axis=0), "4 quant scales for 3 channels along axis 0"),
    (QuantParams((0.0,), (0,)), "scales must be finite and > 0"),
    (QuantParams((0.1,), (200,)), "zero points must lie in [-128, 127]"),
])
def test_bad_quant(quant, expected):
    fails(_quant_graph(quant), "%w = const", expected)


def test_quant_on_float():
    g = _quant_graph(QuantParams((0.1,), (0,)))
    w = g.outputs[0]
    w.type = TensorType((3, 4), "f32", w.type.quant)
    op(g, "w").attrs["value"] = np.zeros((3, 4), np.float32)
    fails(g, "%w = const", "f32 tensor carries quantization parameters")


def test_quant_on_input():
    g = small_graph()
    g.inputs[0].type = TensorType((1, 3, 8, 8), "i8", QuantParams((0.1,) * 2, (0,) * 2, axis=1))
    fails(g, "input %x", "2 quant scales for 3 channels")
