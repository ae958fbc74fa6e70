"""prune-weights: exact sparsity, smallest magnitudes first (float and int8 weights), biases
untouched, sparsity=auto within the budget, zeros surviving quantize-int8 and distill, and the
digits figures."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc.errors import ParseError, PassError
from tinyc.interpreter import run
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.ops import infer_type
from tinyc.passes import PASSES, PassContext, parse_pipeline
from tinyc.passes.prune_weights import magnitudes, prune_mask
from tinyc.passmanager import PassManager
from tinyc.text import parse, print_graph
from tinyc.verifier import verify

rng = np.random.default_rng(3)


def small_cnn(seed=0) -> Graph:
    """conv(3->8)+relu, conv(8->8)+relu, reshape, linear(8*4*4 -> 5): random float weights of
    different scales per layer."""
    r = np.random.default_rng(seed)
    x = Value("x", TensorType((1, 3, 6, 6)))
    g = Graph("cnn", [x], [])
    attrs = dict(stride=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1], groups=1, act="relu")

    def emit(kind, operands, name, **a):
        v = Value(name, infer_type(kind, [o.type for o in operands], a))
        g.ops.append(Op(kind, operands, v, a))
        return v

    w0 = g.add_const("w0", r.standard_normal((8, 3, 2, 2)).astype(np.float32))
    b0 = g.add_const("b0", r.standard_normal(8).astype(np.float32))
    w1 = g.add_const("w1", (0.3 * r.standard_normal((8, 8, 2, 2))).astype(np.float32))
    b1 = g.add_const("b1", r.standard_normal(8).astype(np.float32))
    w2 = g.add_const("w2", (0.1 * r.standard_normal((5, 128))).astype(np.float32))
    b2 = g.add_const("b2", r.standard_normal(5).astype(np.float32))
    h = emit("conv2d", [x, w0, b0], "c0", **attrs)
    h = emit("conv2d", [h, w1, b1], "c1", **attrs)
    h = emit("reshape", [h], "flat", shape=[1, 128])
    g.outputs = [emit("linear", [h, w2, b2], "fc")]
    verify(g)
    return g


def weights(g: Graph) -> dict[str, np.ndarray]:
    return {op.result.name: g.const_value(op.operands[1]) for op in g.compute_ops() if op.kind in ("conv2d", "linear")}


def biases(g: Graph) -> list[np.ndarray]:
    return [g.const_value(op.operands[2]) for op in g.compute_ops() if op.kind in ("conv2d", "linear")]


def calib(n=32):
    return rng.standard_normal((n, 3, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.97, 1.0])
def test_global_sparsity_is_exact_and_prunes_smallest_magnitudes(sparsity):
    g = small_cnn()
    before = weights(g)
    ctx = PassContext()
    out = PassManager(f"prune-weights{{sparsity={sparsity}}}").run(g.copy(), ctx)
    after = weights(out)
    n = sum(w.size for w in before.values())
    zeros = sum(int((w == 0).sum()) for w in after.values())
    assert zeros == int(np.floor(sparsity * n + 0.5))
    pruned = np.concatenate([np.abs(before[k][after[k] == 0]) for k in before])
    kept = np.concatenate([np.abs(before[k][after[k] != 0]) for k in before])
    if pruned.size and kept.size:
        assert pruned.max() <= kept.min()
    for k in before:   # kept weights unchanged
        np.testing.assert_array_equal(after[k][after[k] != 0], before[k][after[k] != 0])
    for b0, b1 in zip(biases(g), biases(out)):
        np.testing.assert_array_equal(b0, b1)
    st = ctx.stats["prune-weights"]
    assert st["zeros"] == zeros and set(st["layers"]) == {"c0", "c1", "fc"}
    assert all(v["zeros"] == int((after[k] == 0).sum()) for k, v in st["layers"].items())


def test_layer_scope_prunes_each_layer_to_the_sparsity():
    out = PassManager("prune-weights{sparsity=0.6 scope=layer}").run(small_cnn())
    for w in weights(out).values():
        assert abs(int((w == 0).sum()) - 0.6 * w.size) <= 0.5


def test_global_raw_magnitudes_favour_large_layers_rms_normalises():
    ctx = PassContext()
    PassManager("prune-weights{sparsity=0.5}").run(small_cnn(), ctx)
    raw = {k: v["sparsity"] for k, v in ctx.stats["prune-weights"]["layers"].items()}
    assert raw["fc"] > 0.6 and raw["c0"] < 0.05           # fc's weights are 10x smaller
    PassManager("prune-weights{sparsity=0.5 normalize=rms}").run(small_cnn(), ctx)
    rms = {k: v["sparsity"] for k, v in ctx.stats["prune-weights"]["layers"].items()}
    assert all(0.3 < s < 0.7 for s in rms.values())


def test_layers_option_and_existing_zeros():
    g = small_cnn()
    w = g.const_value(g.ops[[op.result.name for op in g.ops].index("w1")].result)
    w[0] = 0.0                                             # 32 zeros already
    out = PassManager("prune-weights{sparsity=0.25 layers=c1}").run(g)
    after = weights(out)
    assert int((after["c1"] == 0).sum()) == 64 and not (after["c0"] == 0).any() and not (after["fc"] == 0).any()


def test_ties_break_by_position():
    masks = prune_mask([np.array([1.0, 1.0, 1.0, 1.0]), np.array([1.0, 0.5])], 0.5)
    assert [m.tolist() for m in masks] == [[True, True, False, False], [False, True]]


def test_int8_graph_zeroes_codes_by_real_magnitude():
    q = PassManager("quantize-int8").run(small_cnn(), PassContext(calib=calib()))
    before = {op.result.name: (op.operands[1], q.const_value(op.operands[1]).copy()) for op in q.compute_ops()
              if op.kind in ("conv2d", "linear")}
    ctx = PassContext()
    out = PassManager("prune-weights{sparsity=0.7}").run(q, ctx)
    n = sum(a.size for _, a in before.values())
    zeros = 0
    prods = {op.result.name: op for op in out.compute_ops()}
    pruned, kept = [], []
    for name, (v, a) in before.items():
        b = out.const_value(prods[name].operands[1])
        assert b.dtype == np.int8 and prods[name].operands[1].type == v.type   # quant unchanged
        zeros += int((b == 0).sum())
        real = np.abs(a.astype(np.float64)) * np.asarray(v.type.quant.scale).reshape((-1,) + (1,) * (a.ndim - 1))
        pruned.append(real[b == 0])
        kept.append(real[b != 0])
        np.testing.assert_array_equal(b[b != 0], a[b != 0])
    assert zeros == round(0.7 * n)
    assert np.concatenate(pruned).max() <= np.concatenate(kept).min()
    x = calib(1)[0][None]
    run(out, [x])


def test_zeros_survive_quantize_int8_including_an_all_zero_channel():
    g = small_cnn()
    w0 = g.const_value(g.ops[[op.result.name for op in g.ops].index("w0")].result)
    w0[2] = 0.0                                            # a whole output channel
    pruned = PassManager("prune-weights{sparsity=0.8}").run(g)
    fz = {k: w == 0 for k, w in weights(pruned).items()}
    q = PassManager("quantize-int8").run(pruned.copy(), PassContext(calib=calib()))
    for k, w in weights(q).items():
        assert w.dtype == np.int8
        assert np.all(w[fz[k]] == 0)
    # quantize(0.0) with zp 0 is 0 whatever the scale; an all-zero channel gets scale 1/127 so
    # that its bias stays representable: the channel still outputs relu(bias)
    layer = next(op for op in q.compute_ops() if op.result.name == "c0")
    assert layer.operands[1].type.quant.scale[2] == np.float32(1 / 127)
    from tinyc.interpreter import run_all
    x = calib(1)
    want = run_all(pruned, [x])["c0"][0, 2]
    got = run_all(q, [x])
    real = (got["c0"][0, 2].astype(np.float64) - layer.result.type.quant.zero_point[0]) * layer.result.type.quant.scale[0]
    assert np.all(want == want.flat[0]) and abs(real - want).max() <= layer.result.type.quant.scale[0]


def test_sparsity_auto_bisects_within_the_budget():
    g = small_cnn()
    total = sum(w.size for w in weights(g).values())

    def evaluate(graph):               # a monotone stand-in score: 100 - 20 * sparsity^2 ... in points
        s = sum(int((w == 0).sum()) for w in weights(graph).values()) / total
        return 100.0 - 20.0 * s * s

    ctx = PassContext(evaluate=evaluate, baseline=100.0, max_accuracy_drop=5.0, metric="accuracy %")
    out = PassManager("prune-weights{sparsity=auto}").run(g, ctx)
    st = ctx.stats["prune-weights"]
    assert len(st["trials"]) == 8
    assert evaluate(out) >= 95.0
    assert 0.5 - 1 / 128 <= st["target"] <= 0.5          # 100 - 20 s^2 >= 95  <=>  s <= 0.5
    assert any("sparsity=auto chose" in n for n in ctx.notes)


def test_sparsity_auto_needs_evaluation_and_budget():
    with pytest.raises(PassError, match="needs evaluation data"):
        PassManager("prune-weights{sparsity=auto}").run(small_cnn(), PassContext())
    with pytest.raises(PassError, match="needs an accuracy budget"):
        PassManager("prune-weights{sparsity=auto}").run(small_cnn(), PassContext(evaluate=lambda g: 1.0))


def test_option_errors_and_spec():
    with pytest.raises(ParseError, match="sparsity must be in"):
        parse_pipeline("prune-weights{sparsity=1.5}")
    with pytest.raises(ParseError, match="bad value"):
        parse_pipeline("prune-weights{scope=channel}")
    (p,) = parse_pipeline("prune-weights{sparsity=auto scope=global layers=a,b}")
    assert p.spec() == "prune-weights{sparsity=auto layers=a,b}"
    with pytest.raises(PassError, match="layers names no"):
        PassManager("prune-weights{layers=flat}").run(small_cnn())


def test_prune_after_share_weights_is_refused():
    g = PassManager("share-weights{bits=2}").run(small_cnn())
    with pytest.raises(PassError, match="decoded from a codebook"):
        PassManager("prune-weights{layers=c1}").run(g)
    out = PassManager("prune-weights").run(g, ctx := PassContext())     # default: skipped, noted
    assert ctx.stats["prune-weights"]["skipped"] == ["c0", "c1", "fc"]


def test_text_roundtrip():
    out = PassManager("prune-weights{sparsity=0.5}").run(small_cnn())
    text = print_graph(out)
    assert print_graph(parse(text)) == text


@pytest.mark.skipif("distill" not in PASSES, reason="distill pass not available")
def test_distill_keeps_pruned_zeros():
    from tinyc.evaluate import make_context
    g = small_cnn()
    ctx = make_context(g, train=calib(64))
    pruned = PassManager("prune-weights{sparsity=0.8}").run(g.copy(), ctx)
    out = PassManager("distill{epochs=2}").run(pruned.copy(), ctx)
    for k, w in weights(pruned).items():
        after = weights(out)[k]
        assert np.all(after[w == 0] == 0)
        assert not np.array_equal(after, w)


# ---- digits (checked-in weights, tests/data) -------------------------------------------------------
# Without distill the pipeline trains nothing: on the checked-in weights its result moves only with
# float rounding in calibration, so the broken-model check is a plain bound. With distill the result
# comes out of training and moves from CPU to CPU: it is judged against the figure measured on the
# machine in tests/data/digits_weights.json with the 99 % binomial margin of 360 test images.

D = "distill{epochs=10 lr=0.003}"


@pytest.mark.parametrize("which,pipeline,measured", [
    ("mlp", f"fuse,prune-weights{{sparsity=0.9}},{D},quantize-int8", 94.44),
    # layer scope leaves all-zero conv channels: their biases must survive int8 (was 73.89 %)
    ("cnn", f"fuse,prune-weights{{sparsity=0.9 scope=layer}},{D},quantize-int8", 87.22),
])
def test_digits_pruned_and_distilled_accuracy(which, pipeline, measured):
    if "distill" not in PASSES:
        pytest.skip("distill pass not available")
    from helpers import binomial_margin
    from bench.compression_eval import accuracy, compile_digits
    g, ctx = compile_digits(which, pipeline)
    assert accuracy(g, which) >= measured - binomial_margin(measured, 360)
    assert abs(ctx.stats["prune-weights"]["sparsity"] - 0.9) < 1e-4


def test_digits_global_90_percent_pruning_without_distill_breaks_the_mlp():
    """90 % global magnitude pruning of the MLP, no recovery: the model is broken (29.17 % on the
    checked-in weights, float 97.50 %); the sparsity is reached exactly and the zeros are where the
    smallest magnitudes were."""
    from bench.compression_eval import accuracy, compile_digits, trained
    g, ctx = compile_digits("mlp", "fuse,prune-weights{sparsity=0.9}")
    float_acc = accuracy(trained("mlp")[0], "mlp")
    assert accuracy(g, "mlp") < float_acc - 50
    assert abs(ctx.stats["prune-weights"]["sparsity"] - 0.9) < 1e-4


def test_digits_sparsity_auto_stays_within_the_budget():
    from bench.compression_eval import context, trained
    graph, _ = trained("mlp")
    ctx = context("mlp")
    ctx.max_accuracy_drop = 2.0
    out = PassManager("fuse,prune-weights{sparsity=auto}").run(graph.copy(), ctx)
    st = ctx.stats["prune-weights"]
    assert ctx.evaluate(out) >= ctx.baseline - 2.0
    assert 0.3 < st["target"] < 0.9 and abs(st["sparsity"] - st["target"]) < 1e-4
    # the next bisection step up failed the budget
    assert any(s > st["target"] and score < st["floor"] for s, score in st["trials"])
