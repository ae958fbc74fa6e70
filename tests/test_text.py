"""The IR text form: canonical printing, exact round trips, and located parse errors."""
import time

import numpy as np
import pytest

from tinyc.errors import ParseError
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.text import parse, parse_file, print_graph


def f32(*shape, **kw):
    return TensorType(tuple(shape), "f32", **kw)


def const(name, array, t=None, **attrs):
    array = np.asarray(array)
    return Op("const", [], Value(name, t or TensorType(array.shape, _dtype(array))), {"value": array, **attrs})


def _dtype(array):
    return {"float32": "f32", "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8"}[array.dtype.name]


def roundtrip(g):
    """Print, parse, print again; the texts must match and the graphs be equal."""
    text = print_graph(g)
    g2 = parse(text)
    assert print_graph(g2) == text
    assert_same_graph(g, g2)
    return text, g2


def assert_same_graph(a, b):
    assert a.name == b.name
    assert [(v.name, v.type) for v in a.inputs] == [(v.name, v.type) for v in b.inputs]
    assert [(v.name, v.type) for v in a.outputs] == [(v.name, v.type) for v in b.outputs]
    assert len(a.ops) == len(b.ops)
    for x, y in zip(a.ops, b.ops):
        assert (x.kind, x.loc, x.result.name, x.result.type) == (y.kind, y.loc, y.result.name, y.result.type)
        assert [v.name for v in x.operands] == [v.name for v in y.operands]
        assert x.attrs.keys() == y.attrs.keys()
        for k in x.attrs:
            assert_same_attr(x.attrs[k], y.attrs[k])
    # operands are the defining Values themselves, not copies with the same name
    defined = {v.name: v for v in b.inputs} | {op.result.name: op.result for op in b.ops}
    assert all(v is defined[v.name] for op in b.ops for v in op.operands)
    assert all(v is defined[v.name] for v in b.outputs)


def assert_same_attr(x, y):
    if isinstance(x, np.ndarray):
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes())
    elif isinstance(x, list):
        assert isinstance(y, list) and len(x) == len(y)
        for p, q in zip(x, y):
            assert_same_attr(p, q)
    else:
        assert type(x) is type(y) and repr(x) == repr(y)  # repr: nan == nan, -0.0 != 0.0


def conv_graph():
    x = Value("x", f32(1, 3, 8, 8))
    w = const("conv1.weight", np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32))
    b = const("conv1.bias", np.array([0.1, -0.0, 1e-45, -2.5], np.float32))
    y = Value("conv2d", f32(1, 4, 8, 8))
    conv = Op("conv2d", [x, w.result, b.result], y,
              {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1,
               "act": "clamp", "act_min": 0.0, "act_max": 6.0}, loc="net.py:12 in forward")
    r = Op("relu", [y], Value("relu", y.type))
    return Graph("net", [x], [r.result], [w, b, conv, r])


CONV_TEXT = """\
graph @net(%x: tensor<1x3x8x8xf32>) -> (tensor<1x4x8x8xf32>) {
  %conv1.weight = const : tensor<4x3x3x3xf32>
  %conv1.bias = const : tensor<4xf32>
  %conv2d = conv2d(%x, %conv1.weight, %conv1.bias) {act = "clamp", act_max = 6.0, act_min = 0.0, \
dilation = [1, 1], groups = 1, padding = [1, 1, 1, 1], stride = [1, 1]} : tensor<1x4x8x8xf32> \
loc("net.py:12 in forward")
  %relu = relu(%conv2d) : tensor<1x4x8x8xf32>
  return %relu
}

{-#
  resources: {
    conv1.weight: "0x"""


# ---- round trips -------------------------------------------------------------

def test_canonical_layout():
    text, _ = roundtrip(conv_graph())
    assert text.startswith(CONV_TEXT)
    assert text.endswith('",\n    conv1.bias: "0xCDCCCC3D0000008001000000000020C0"\n  }\n#-}\n')


def test_every_attribute_kind():
    x = Value("x", f32(2))
    attrs = {"i": -3, "big": 2**40, "f": 0.1, "tiny": 1e-45, "neg_zero": -0.0, "inf": float("inf"),
             "ninf": float("-inf"), "nan": float("nan"), "huge": 1.5e300, "whole": 2.0,
             "yes": True, "no": False, "s": 'quote " backslash \\ tab \t nl \n é ☃ 𝄞 \x00',
             "empty_s": "", "l": [1, 2.5, "a", True], "empty_l": [], "nested": [[1, 2], [], [[3.0]]]}
    op = Op("custom", [x], Value("y", f32(2)), attrs)
    text, g2 = roundtrip(Graph("g", [x], [op.result], [op]))
    assert "f = 0.1," in text and "tiny = 1e-45," in text and "neg_zero = -0.0," in text
    assert "nan = nan," in text and "ninf = -inf," in text and "whole = 2.0," in text
    assert "yes = true}" in text and "no = false," in text
    assert list(g2.ops[0].attrs) == sorted(attrs)


def test_numpy_scalars_print_as_plain_numbers():
    x = Value("x", f32(2))
    op = Op("custom", [x], Value("y", f32(2)), {"a": np.int64(3), "b": np.float32(0.5), "c": np.bool_(True),
                                                "d": (1, 2)})
    text = print_graph(Graph("g", [x], [op.result], [op]))
    assert "{a = 3, b = 0.5, c = true, d = [1, 2]}" in text
    assert parse(text).ops[0].attrs == {"a": 3, "b": 0.5, "c": True, "d": [1, 2]}


def test_quantized_types():
    per_tensor = TensorType((1, 4), "i8", QuantParams((0.0235,), (-128,)))
    per_channel = TensorType((3, 4), "i8", QuantParams((0.1, 1e-45, 3.0), (0, -1, 5), axis=0))
    x = Value("x", per_tensor)
    w = const("w", np.arange(12, dtype=np.int8).reshape(3, 4), per_channel)
    op = Op("linear", [x, w.result], Value("y", TensorType((1, 3), "i8", QuantParams((0.5,), (0,)))))
    text, _ = roundtrip(Graph("q", [x], [op.result], [w, op]))
    assert "tensor<1x4xi8, quant<scale=0.0235, zp=-128>>" in text
    assert "tensor<3x4xi8, quant<axis=0, scale=[0.1, 1e-45, 3.0], zp=[0, -1, 5]>>" in text


def test_scalars_subbyte_dtypes_and_multiple_outputs():
    x = Value("x", f32())
    consts = [const("s", np.array(-0.0, np.float32)),
              const("a4", np.array([-8, 7, 0, -1], np.int8), TensorType((4,), "i4")),
              const("a2", np.array([[-2, 1], [0, -1]], np.int8), TensorType((2, 2), "i2")),
              const("a1", np.array([0, -1, -1], np.int8), TensorType((3,), "i1")),
              const("u", np.array([0, 255], np.uint8)), const("h", np.array([-32768], np.int16)),
              const("i", np.array([2**31 - 1, -2**31], np.int32)), const("empty", np.zeros((0, 3), np.float32))]
    add = Op("add", [x, consts[0].result], Value("sum", f32()))
    g = Graph("scalars", [x], [add.result, consts[1].result, x], consts + [add])
    text, g2 = roundtrip(g)
    assert "graph @scalars(%x: tensor<f32>) -> (tensor<f32>, tensor<4xi4>, tensor<f32>) {" in text
    assert "  return %sum, %a4, %x\n" in text
    assert 'a4: "0xF80700FF"' in text and 'empty: "0x"' in text
    assert g2.ops[1].attrs["value"].dtype == np.int8


def test_odd_float_bits_survive():
    bits = np.array([0x7FC00001, 0xFFC00000, 0x7F800001, 0x80000000, 0x00000001, 0x7F800000, 0xFF800000],
                    np.uint32)
    w = const("w", bits.view(np.float32))
    g = Graph("bits", [], [w.result], [w])
    _, g2 = roundtrip(g)
    assert g2.ops[0].attrs["value"].view(np.uint32).tolist() == bits.tolist()


def test_big_endian_array_prints_little_endian_bytes():
    w = const("w", np.array([1.0], np.float32))
    w.attrs["value"] = np.array([1.0], ">f4")
    assert 'w: "0x0000803F"' in print_graph(Graph("g", [], [w.result], [w]))


def test_names_locs_and_const_attributes():
    x = Value("in.0_x", f32(2))
    w = const("layer.1.w", np.ones(2, np.float32), note="folded", orig=[1, 2])
    w.loc = "m.py:3"
    op = Op("mul", [x, w.result], Value("3", f32(2)), loc='weird "path" \\ é')
    text, g2 = roundtrip(Graph("my.net_2", [x], [op.result], [w, op]))
    assert '  %layer.1.w = const {note = "folded", orig = [1, 2]} : tensor<2xf32> loc("m.py:3")\n' in text
    assert g2.ops[0].attrs["note"] == "folded" and g2.ops[1].loc == 'weird "path" \\ é'
    assert text.isascii()


def test_parsed_consts_are_writable():
    g2 = parse(print_graph(conv_graph()))
    g2.ops[0].attrs["value"][0, 0, 0, 0] = 1.0  # passes may fold in place


def test_comments_and_whitespace_are_ignored():
    text = print_graph(conv_graph())
    noisy = "// produced by hand\n\n" + text.replace("\n  %relu", "  // trailing\n\n      %relu")
    assert print_graph(parse(noisy)) == text


def test_unprintable_names_are_refused():
    x = Value("bad name", f32(1))
    with pytest.raises(ValueError, match="bad name"):
        print_graph(Graph("g", [x], [x], []))
    with pytest.raises(ValueError, match="graph name"):
        print_graph(Graph("my-net", [], [], []))
    y = Value("y", f32(1))
    op = Op("custom", [y], Value("z", f32(1)), {"a": np.zeros(2)})
    with pytest.raises(TypeError, match="attribute 'a'"):
        print_graph(Graph("g", [y], [op.result], [op]))


def test_const_value_not_matching_its_type_is_refused():
    w = const("w", np.zeros(3, np.float64), f32(3))
    with pytest.raises(ValueError, match="const %w"):
        print_graph(Graph("g", [], [w.result], [w]))


def test_large_weights_round_trip_quickly():
    rng = np.random.default_rng(1)
    x = Value("x", f32(1, 128))
    cur, ops = x, []
    for i in range(5):  # 5 * (128*128 + 128) * 4 bytes ~ 330k
        w = const(f"fc{i}.weight", rng.standard_normal((128, 128)).astype(np.float32))
        b = const(f"fc{i}.bias", rng.standard_normal(128).astype(np.float32))
        lin = Op("linear", [cur, w.result, b.result], Value(f"fc{i}", f32(1, 128)), {"act": "relu"})
        ops += [w, b, lin]
        cur = lin.result
    g = Graph("mlp", [x], [cur], ops)
    assert sum(op.attrs["value"].nbytes for op in g.const_ops()) > 290_000
    start = time.perf_counter()
    roundtrip(g)
    assert time.perf_counter() - start < 1.0


# ---- elided weights --------------------------------------------------------

def test_elided_dump_is_readable_and_refused():
    text = print_graph(conv_graph(), elide_weights=True)
    first = text.splitlines()[0]
    assert first.startswith("//") and "elide" in first and "cannot be parsed" in first
    assert "  %conv1.bias = const : tensor<4xf32>  // 16 bytes, min -2.5, max 0.1\n" in text
    assert text.endswith("}\n\n{-# resources elided #-}\n")
    assert "0x" not in text
    with pytest.raises(ParseError) as e:
        parse(text, "dump.tir")
    assert "--elide-weights" in e.value.what and "cannot be parsed back" in e.value.what
    assert "without --elide-weights" in e.value.hint
    assert e.value.where == f"dump.tir:{text.count(chr(10))}:15"  # at "elided"


# ---- errors ----------------------------------------------------------------

SMALL = """\
graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {
  %w = const : tensor<2xf32>
  %y = add(%x, %w) {alpha = 1.5} : tensor<2xf32>
  return %y
}

{-#
  resources: {
    w: "0x0000803F00000040"
  }
#-}
"""


def test_small_text_parses():
    g = parse(SMALL)
    assert g.ops[0].attrs["value"].tolist() == [1.0, 2.0]
    assert print_graph(g) == SMALL


@pytest.mark.parametrize("old, new, where, message", [
    ("tensor<2xf32>) ->", "tensor<2xf32> ->", "1:28", "found '->', expected one of ')', ','"),
    (": tensor<2xf32>\n  return", ": tensr<2xf32>\n  return", "3:36", "found 'tensr', expected 'tensor'"),
    ("%w = const : tensor<2xf32>", "%w = const : tensor<2x>", "2:23", "expected a shape and dtype"),
    ("%w = const : tensor<2xf32>", "%w = const : tensor<2xf64>", "2:25", "unknown dtype 'f64'"),
    ("add(%x, %w)", "add(%x, %v)", "3:16", "use of undefined value %v"),
    ("add(%x, %w)", "add(%y, %w)", "3:12", "use of undefined value %y"),
    ("%y = add", "%w = add", "3:3", "value %w is defined twice"),
    ("{alpha = 1.5}", "{alpha = 1.5.0}", "3:32", "found '.0', expected one of ',', '}'"),
    ("{alpha = 1.5}", "{alpha = $}", "3:29", "found '$', expected one of '[', 'false'"),
    ("{alpha = 1.5}", '{alpha = "\\q"}', "3:30", "bad string escape"),
    ("{alpha = 1.5}", "{alpha = 1, alpha = 2}", "3:32", "attribute alpha is given twice"),
    ("%w = const : tensor<2xf32>", "%w = const {value = 1} : tensor<2xf32>", "2:14",
     "its value belongs in the resources section"),
    ("%w = const : tensor<2xf32>", "%w = const : tensor<2xf32, quant<axis=0, scale=[0.1, 0.2], zp=[0]>>",
     "2:30", "bad quantization parameters"),
    ("%w = const : tensor<2xf32>", "%w = const : tensor<2xf32, quant<axis=1, scale=[0.1], zp=[0]>>",
     "2:41", "axis 1 is out of range"),
    ("return %y", "return %y, %x", "4:3", "return gives 2 values, but the graph header declares 1"),
    ('w: "0x', 'v: "0x', "2:3", "const %w has no resource 'w'"),
    ('0x0000803F00000040', '0x0000803F0000004', "9:8", "odd number of hex digits"),
    ('0x0000803F00000040', '0x0000803F', "9:8", "resource 'w' has 4 bytes, but %w: tensor<2xf32> needs 8"),
    ('0x0000803F00000040', '0x0000803F0000z040', "9:23", "'z' is not a hex digit"),
    ('"0x0000803F00000040"', '"0000803F00000040"', "9:8", 'must be a string "0x<hex bytes>"'),
    ('    w: "0x0000803F00000040"\n', '    w: "0x0000803F00000040",\n    w: "0x"\n', "10:5",
     "resource 'w' is given twice"),
])
def test_errors_are_located(old, new, where, message):
    assert old in SMALL
    text = SMALL.replace(old, new, 1)
    with pytest.raises(ParseError) as e:
        parse(text, "m.tir")
    assert e.value.where == f"m.tir:{where}", e.value.format()
    assert message in e.value.what, e.value.format()


def test_resource_without_const():
    text = SMALL.replace('    w: "0x0000803F00000040"\n', '    w: "0x0000803F00000040",\n    extra.b: "0x00"\n')
    with pytest.raises(ParseError, match="resource 'extra.b' has no const op %extra.b") as e:
        parse(text, "m.tir")
    assert e.value.where == "m.tir:10:5"


@pytest.mark.parametrize("end, where", [
    (SMALL.index("  return"), "4:1"),       # mid-graph: end of file is at line 4, column 1
    (SMALL.index("0x") + 6, "9:8"),         # inside a resource string
    (SMALL.index("#-}"), "11:1"),
])
def test_truncated_file(end, where):
    with pytest.raises(ParseError, match="syntax error") as e:
        parse(SMALL[:end], "m.tir")
    assert e.value.where == f"m.tir:{where}"


def test_unterminated_string():
    with pytest.raises(ParseError, match="unterminated string") as e:
        parse(SMALL.replace("{alpha = 1.5}", '{s = "abc}'), "m.tir")
    assert e.value.where == "m.tir:3:25"


def test_no_inputs_no_outputs_and_const_parens():
    g = parse("graph @empty() -> () {\n  %w = const() : tensor<f32>\n  return\n}\n"
              '{-# resources: { w: "0x00000000" } #-}')
    assert print_graph(g) == ("graph @empty() -> () {\n  %w = const : tensor<f32>\n  return\n}\n\n"
                              '{-#\n  resources: {\n    w: "0x00000000"\n  }\n#-}\n')
    roundtrip(g)


def test_end_of_file_is_named():
    with pytest.raises(ParseError, match="found end of file, expected one of 'loc', 'return'"):
        parse(SMALL[:SMALL.index("  return")])
    with pytest.raises(ParseError, match="found end of file, expected 'graph'"):
        parse("// nothing here\n")


def test_parse_file_names_the_path(tmp_path):
    good = tmp_path / "good.tir"
    good.write_text(SMALL)
    assert print_graph(parse_file(good)) == SMALL
    bad = tmp_path / "bad.tir"
    bad.write_text(SMALL.replace("add(%x, %w)", "add(%x, %nope)"))
    with pytest.raises(ParseError) as e:
        parse_file(bad)
    assert e.value.where == f"{bad}:3:16"
    with pytest.raises(ParseError, match="cannot read"):
        parse_file(tmp_path / "missing.tir")
