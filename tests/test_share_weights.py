"""share-weights and decode: at most 2^N values per layer / channel, zeros kept, decode exact
(a gather against a loop reference), valid per-channel int8 weights after quantize-int8 (both
orders), packed weight bytes, determinism, and the digits figures."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc.errors import ParseError, PassError, TinycError
from tinyc.interpreter import run, run_all
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.ops import OpError, infer_type
from tinyc.passes import PassContext, parse_pipeline
from tinyc.passes.share_weights import kmeans_1d, share
from tinyc.passmanager import PassManager
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify

from test_prune_weights import calib, small_cnn

rng = np.random.default_rng(5)


def decoded(g: Graph) -> dict[str, np.ndarray]:
    """Layer name -> its weight as computed by the interpreter (decode evaluated)."""
    env = run_all(g, [np.zeros(g.inputs[0].type.shape, np.float32)])
    return {op.result.name: env[op.operands[1].name] for op in g.compute_ops() if op.kind in ("conv2d", "linear")}


def materialised(g: Graph) -> Graph:
    """The graph with every decode replaced by a const of its value."""
    g = g.copy()
    env = run_all(g, [np.zeros(g.inputs[0].type.shape, np.float32)])
    for i, op in enumerate(g.ops):
        if op.kind == "decode":
            g.ops[i] = Op("const", [], op.result, {"value": np.array(env[op.result.name])})
    g.remove_dead()
    verify(g)
    return g


def roundtrip(g: Graph) -> None:
    text = print_graph(g)
    g2 = parse(text)
    verify(g2)
    assert print_graph(g2) == text


# ---- decode ----------------------------------------------------------------------------------

def ref_decode(idx: np.ndarray, book: np.ndarray) -> np.ndarray:
    out = np.empty(idx.shape, book.dtype)
    for i in np.ndindex(*idx.shape):
        out[i] = book[idx[i]] if book.ndim == 1 else book[i[0], idx[i]]
    return out


@pytest.mark.parametrize("idx_dtype,k", [("u1", 2), ("u2", 3), ("u4", 16), ("u8", 200)])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("book_dtype", ["f32", "i8", "i4"])
def test_decode_is_an_exact_gather(idx_dtype, k, per_channel, book_dtype):
    shape = (4, 3, 2, 2)
    idx = rng.integers(0, k, shape).astype(np.uint8)
    bshape = (4, k) if per_channel else (k,)
    if book_dtype == "f32":
        book, q = rng.standard_normal(bshape).astype(np.float32), None
    else:
        hi = 127 if book_dtype == "i8" else 7
        book = rng.integers(-hi, hi + 1, bshape).astype(np.int8)
        q = QuantParams(tuple(rng.uniform(0.01, 0.1, 4)), (0,) * 4, 0)
    g = Graph("d", [], [])
    iv = g.add_const("idx", idx, dtype=idx_dtype)
    bv = g.add_const("book", book, dtype=book_dtype)
    t = infer_type("decode", [iv.type, bv.type], {})
    assert t == TensorType(shape, book_dtype)
    y = Value("w", TensorType(shape, book_dtype, q))
    g.ops.append(Op("decode", [iv, bv], y, {}))
    g.outputs = [y]
    verify(g)
    got = run(g, [])[0]
    assert got.dtype == book.dtype and np.array_equal(got, ref_decode(idx, book))
    roundtrip(g)


def test_decode_index_out_of_range_is_an_error():
    g = Graph("d", [], [])
    iv = g.add_const("idx", np.array([0, 3], np.uint8), dtype="u2")
    bv = g.add_const("book", np.zeros(3, np.float32))
    y = Value("w", TensorType((2,)))
    g.ops.append(Op("decode", [iv, bv], y, {}))
    g.outputs = [y]
    with pytest.raises(TinycError, match="decode index 3 is outside the codebook's 3 entries"):
        verify(g)  # constant indices are checked against the codebook (issue 13)
    with pytest.raises(TinycError, match="index 3 is out of range"):
        run(g, [])  # and the interpreter still refuses them when verification is skipped


@pytest.mark.parametrize("types,msg", [
    ([TensorType((4, 4), "i8"), TensorType((4,))], "indices must be u1/u2/u4/u8"),
    ([TensorType((4, 4), "u2"), TensorType((5,))], "u2 indices address 1 to 4"),
    ([TensorType((4, 4), "u4"), TensorType((3, 16))], r"neither \[K\] nor \[4, K\]"),
    ([TensorType((4, 4), "u4"), TensorType((16,), "i32")], "codebook must be f32 or"),
    ([TensorType((4, 4), "u4"), TensorType((16,), "i8", QuantParams((0.1,), (0,)))], "codebook must not carry quant"),
])
def test_decode_verifier_errors(types, msg):
    with pytest.raises(OpError, match=msg):
        infer_type("decode", types, {})


def test_decode_result_quant_rules():
    from tinyc.errors import VerifyError
    g = Graph("d", [], [])
    iv = g.add_const("idx", np.zeros((2, 3), np.uint8), dtype="u4")
    bv = g.add_const("book", np.zeros(16, np.int8))
    y = Value("w", TensorType((2, 3), "i8"))
    g.ops.append(Op("decode", [iv, bv], y, {}))
    g.outputs = [y]
    with pytest.raises(VerifyError, match="weight must be"):
        verify(g)
    y.type = TensorType((2, 3), "i8", QuantParams((0.1, 0.2), (0, 0), 0))
    verify(g)


# ---- clustering ----------------------------------------------------------------------------------

@pytest.mark.parametrize("init", ["linear", "kmeans++", "density"])
def test_kmeans_1d_inits_converge_to_sorted_centroids(init):
    x = np.concatenate([rng.normal(-2, 0.1, 100), rng.normal(0.5, 0.1, 100), rng.normal(3, 0.1, 100)])
    c = kmeans_1d(x, 3, init, 50, np.random.default_rng(0))
    np.testing.assert_allclose(c, [-2, 0.5, 3], atol=0.05)
    assert kmeans_1d(np.array([1.0, 1.0, 2.0]), 4, init, 10, np.random.default_rng(0)).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("bits", range(1, 9))
def test_share_keeps_zeros_and_at_most_2n_values(bits):
    x = rng.standard_normal((6, 50)).astype(np.float32)
    x[rng.random(x.shape) < 0.4] = 0.0
    book, idx = share(x, 2 ** bits, "linear", 30, np.random.default_rng(0), None)
    assert book.shape == (2 ** bits,) and idx.max() < 2 ** bits
    y = book[idx]
    assert len(np.unique(y)) <= 2 ** bits
    assert np.array_equal(y == 0, x == 0)                      # zeros exactly; no new zeros for floats
    codes = rng.integers(-127, 128, (6, 50))
    codes[:, :10] = 0
    book, idx = share(codes, 2 ** bits, "density", 30, np.random.default_rng(0), 127)
    y = book[idx]
    assert np.all(y[codes == 0] == 0) and np.all(np.abs(y) <= 127) and np.all(y == np.round(y))
    assert len(np.unique(y)) <= 2 ** bits


# ---- the pass ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits,idx_dtype", [(1, "u1"), (2, "u2"), (3, "u4"), (4, "u4"), (6, "u8")])
@pytest.mark.parametrize("per_channel", [False, True])
def test_float_graph_sharing(bits, idx_dtype, per_channel):
    g = PassManager("prune-weights{sparsity=0.5}").run(small_cnn())
    zeros = {op.result.name: g.const_value(op.operands[1]) == 0 for op in g.compute_ops() if op.kind in ("conv2d", "linear")}
    ctx = PassContext()
    out = PassManager(f"share-weights{{bits={bits} per-channel={str(per_channel).lower()}}}").run(g, ctx)
    decodes = [op for op in out.compute_ops() if op.kind == "decode"]
    assert len(decodes) == 3
    for d in decodes:
        idx, book = d.operands
        assert idx.type.dtype == idx_dtype and book.type.dtype == "f32"
        assert book.type.shape == ((d.result.type.shape[0], 2 ** bits) if per_channel else (2 ** bits,))
    for name, w in decoded(out).items():
        groups = w.reshape(len(w), -1) if per_channel else [w]
        assert all(len(np.unique(r)) <= 2 ** bits for r in groups)
        assert np.array_equal(w == 0, zeros[name])
    assert ctx.stats["share-weights"]["layers"]["c1"]["zeros_after"] == int(zeros["c1"].sum())
    x = calib(1)
    np.testing.assert_array_equal(run(out, [x[0][None]])[0], run(materialised(out), [x[0][None]])[0])
    roundtrip(out)


def test_int8_graph_sharing_keeps_a_valid_per_channel_weight():
    q = PassManager("prune-weights{sparsity=0.3},quantize-int8").run(small_cnn(), PassContext(calib=calib()))
    wtypes = {op.result.name: op.operands[1].type for op in q.compute_ops() if op.kind in ("conv2d", "linear")}
    bias_before = {op.result.name: q.const_value(op.operands[2]) for op in q.compute_ops() if op.kind in ("conv2d", "linear")}
    before = decoded(q)
    for per_channel in (False, True):
        out = PassManager(f"share-weights{{bits=3 per-channel={str(per_channel).lower()}}}").run(q.copy())
        after = decoded(out)
        for op in out.compute_ops():
            if op.kind in ("conv2d", "linear"):
                assert op.operands[1].type == wtypes[op.result.name]          # dtype and quant unchanged
                np.testing.assert_array_equal(out.const_value(op.operands[2]), bias_before[op.result.name])
        for name, w in after.items():
            assert w.dtype == np.int8 and np.abs(w).max() <= 127
            assert np.all(w[before[name] == 0] == 0)
            for r in (w.reshape(len(w), -1) if per_channel else [w]):
                assert len(np.unique(r)) <= 8
        x = calib(1)[0][None]
        np.testing.assert_array_equal(run(out, [x])[0], run(materialised(out), [x])[0])
        roundtrip(out)


def test_share_then_quantize():
    g = PassManager("prune-weights{sparsity=0.4}").run(small_cnn())
    fz = {k: w == 0 for k, w in decoded(g).items()}
    for per_channel in (False, True):
        g2 = PassManager(f"share-weights{{bits=4 per-channel={str(per_channel).lower()}}}").run(
            PassManager("prune-weights{sparsity=0.4}").run(small_cnn()))
        q = PassManager("quantize-int8").run(g2, PassContext(calib=calib()))
        ds = [op for op in q.compute_ops() if op.kind == "decode"]
        assert len(ds) == 3 and all(d.result.type.dtype == "i8" and d.operands[1].type.dtype == "i8" for d in ds)
        for d in ds:
            scales = d.result.type.quant.scale
            if not per_channel:
                assert d.operands[1].type.shape == (16,) and len(set(scales)) == 1
            else:
                assert d.operands[1].type.shape == (d.result.type.shape[0], 16)
        for k, w in decoded(q).items():
            assert np.all(w[fz[k]] == 0) and len(np.unique(w)) <= (16 if not per_channel else 16 * len(w))
        x = calib(1)[0][None]
        np.testing.assert_array_equal(run(q, [x])[0], run(materialised(q), [x])[0])
        roundtrip(q)


def test_weight_bytes_drop_to_index_bits():
    q = PassManager("quantize-int8").run(small_cnn(), PassContext(calib=calib()))
    weights = sum(op.operands[1].type.numel for op in q.compute_ops() if op.kind in ("conv2d", "linear"))
    base = graph_stats(q).weight_bytes
    for bits, per_byte in ((4, 2), (2, 4), (1, 8)):
        out = PassManager(f"share-weights{{bits={bits}}}").run(q.copy())
        books = 3 * 2 ** bits
        assert graph_stats(out).weight_bytes == base - weights + weights // per_byte + books


def test_deterministic_and_seeded():
    a = print_graph(PassManager("share-weights{bits=3 init=kmeans++}").run(small_cnn()))
    b = print_graph(PassManager("share-weights{bits=3 init=kmeans++}").run(small_cnn()))
    c = print_graph(PassManager("share-weights{bits=3 init=kmeans++ seed=1}").run(small_cnn()))
    assert a == b and a != c


def test_errors():
    with pytest.raises(ParseError, match="bits must be in"):
        parse_pipeline("share-weights{bits=9}")
    with pytest.raises(ParseError, match="bad value"):
        parse_pipeline("share-weights{init=random}")
    g = PassManager("share-weights{bits=2}").run(small_cnn())
    with pytest.raises(PassError, match="already has shared weights"):
        PassManager("share-weights").run(g)


def test_layers_option_and_shared_const():
    out = PassManager("share-weights{bits=2 layers=c1}").run(small_cnn())
    assert [op.kind for op in out.compute_ops()].count("decode") == 1
    assert next(op for op in out.compute_ops() if op.kind == "decode").result.name == "w1.shared"


# ---- digits: within a point of int8 (checked-in weights, tests/data; k-means is seeded, nothing trains) --

@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_digits_int8_share_4bit_within_a_point_of_int8(which):
    from bench.compression_eval import accuracy, compile_digits
    q, _ = compile_digits(which, "fuse,quantize-int8")
    s = PassManager("share-weights{bits=4}").run(q.copy())
    int8_acc, shared_acc = accuracy(q, which), accuracy(s, which)
    assert shared_acc >= int8_acc - 1.0, (int8_acc, shared_acc)
    shared = sum(op.operands[0].type.nbytes for op in s.compute_ops() if op.kind == "decode")
    dense = sum(op.operands[1].type.nbytes for op in q.compute_ops() if op.kind in ("conv2d", "linear"))
    assert shared * 2 == dense                                  # 4-bit indices: half the int8 bytes
    s2 = PassManager("share-weights{bits=2}").run(q.copy())
    assert accuracy(s2, which) >= {"mlp": 95.00, "cnn": 96.39}[which] - 0.5
