"""svd: low-rank splits of linear and conv2d, exact at full energy, only where they save, auto mode."""
import json

import numpy as np
import pytest

from helpers import assert_close, fused_graph, zoo_inputs
from tinyc.errors import ParseError, PassError
from tinyc.interpreter import run
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.ops import infer_type
from tinyc.passes import PassContext, parse_pipeline
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify
from bench.zoo import names as zoo_names


def svd(graph, spec="svd", ctx=None):
    (p,) = parse_pipeline(spec)
    ctx = ctx or PassContext()
    out = p.apply(graph, ctx)
    verify(out)
    assert print_graph(parse(print_graph(out))) == print_graph(out)
    return out, ctx


def low_rank_graph(rank=2):
    """x [1,4,8,8] -> conv 3x3 stride 2, 16 filters -> flatten -> linear 256 -> 32; both weights
    (the conv's as a 16 x 36 matrix) have rank `rank`."""
    rng = np.random.default_rng(0)
    g = Graph("g", [Value("x", TensorType((1, 4, 8, 8)))], [])

    def const(name, arr):
        v = Value(name, TensorType(arr.shape))
        g.ops.append(Op("const", [], v, {"value": np.asarray(arr, np.float32)}))
        return v

    def op(name, kind, operands, **attrs):
        v = Value(name, infer_type(kind, [o.type for o in operands], attrs))
        g.ops.append(Op(kind, operands, v, attrs, loc="net.py:1"))
        return v

    def product(rows, cols):
        return rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols)) / np.sqrt(cols)

    wc = product(16, 36).reshape(16, 4, 3, 3)
    h = op("conv", "conv2d", [g.inputs[0], const("conv.w", wc), const("conv.b", rng.standard_normal(16))],
           stride=[2, 2], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1, act="relu")
    h = op("flat", "reshape", [h], shape=[1, 256])
    out = op("fc", "linear", [h, const("fc.w", product(32, 256)), const("fc.b", rng.standard_normal(32))])
    g.outputs = [out]
    verify(g)
    return g


X = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)


def test_full_energy_of_low_rank_weights_is_exact():
    graph = low_rank_graph(rank=2)
    out, ctx = svd(graph, "svd{energy=1.0}")
    layers = ctx.stats["svd"]["layers"]
    assert {k: v["rank"] for k, v in layers.items()} == {"conv": 2, "fc": 2}
    assert all(v["error"] < 1e-5 for v in layers.values())
    assert_close(run(out, [X])[0], run(graph, [X])[0], rtol=1e-5)
    assert kinds(out) == ["conv2d", "conv2d", "reshape", "linear", "linear"]
    assert graph_stats(out).macs < graph_stats(graph).macs and graph_stats(out).params < graph_stats(graph).params


def kinds(graph):
    return [op.kind for op in graph.compute_ops()]


def test_split_layers_keep_stride_padding_bias_and_act():
    out, _ = svd(low_rank_graph(), "svd{rank=3}")
    ops = {op.result.name: op for op in out.ops}
    first, second = ops["conv.lowrank"], ops["conv"]
    assert first.attrs["stride"] == [2, 2] and first.attrs["padding"] == [1, 1, 1, 1] and "act" not in first.attrs
    assert len(first.operands) == 2 and first.operands[1].type.shape == (3, 4, 3, 3) and first.loc == "net.py:1"
    assert second.attrs["stride"] == [1, 1] and second.attrs["act"] == "relu"
    assert second.operands[1].type.shape == (16, 3, 1, 1) and second.operands[2].name == "conv.b"
    assert ops["fc.lowrank"].operands[1].type.shape == (3, 256) and ops["fc"].operands[1].type.shape == (32, 3)


def test_reported_error_is_the_reconstruction_error():
    graph = low_rank_graph(rank=6)
    out, ctx = svd(graph, "svd{rank=3}")
    consts = {op.result.name: op.attrs["value"].astype(np.float64) for op in out.const_ops()}
    w = graph.const_value(graph.ops[[op.result.name for op in graph.ops].index("fc.w")].result).astype(np.float64)
    approx = consts["fc.w.u"] @ consts["fc.w.v"]
    err = np.linalg.norm(w - approx) / np.linalg.norm(w)
    assert ctx.stats["svd"]["layers"]["fc"]["error"] == pytest.approx(err, rel=1e-4)
    assert 0.05 < err < 1


def test_rank_that_saves_nothing_leaves_the_layer_and_notes_it():
    graph = low_rank_graph()
    out, ctx = svd(graph, "svd{rank=32}")  # conv: 32 > 16*36/52; fc: 32 = full rank
    assert print_graph(out) == print_graph(graph)
    assert set(ctx.stats["svd"]["skipped"]) == {"conv", "fc"}
    assert any("left alone" in n and "would not lower" in n for n in ctx.notes)


def test_min_size_and_layers_restrict():
    graph = low_rank_graph()
    _, ctx = svd(graph, "svd{rank=2 min-size=1000}")
    assert set(ctx.stats["svd"]["layers"]) == {"fc"} and "min-size" in ctx.stats["svd"]["skipped"]["conv"]
    _, ctx = svd(graph, "svd{rank=2 layers=conv}")
    assert set(ctx.stats["svd"]["layers"]) == {"conv"}
    with pytest.raises(PassError) as e:
        svd(graph, "svd{layers=nosuch}")
    assert "fc" in e.value.hint


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_energy_verifies_and_shrinks(name):
    graph = fused_graph(name)
    out, ctx = svd(graph, "svd{energy=0.8 min-size=0}")
    before, after = graph_stats(graph), graph_stats(out)
    assert after.macs < before.macs and after.params < before.params
    assert [v.type for v in out.outputs] == [v.type for v in graph.outputs]
    for layer in ctx.stats["svd"]["layers"].values():
        assert layer["rank"] < layer["full_rank"] and 0 <= layer["error"] < 1
    json.dumps(ctx.stats)  # the report stores the stats as JSON


@pytest.mark.parametrize("name", ["mlp", "ds_cnn", "resnet8", "fc_autoencoder"])
def test_zoo_full_energy_reproduces_the_function(name):
    graph = fused_graph(name)
    out, _ = svd(graph, "svd{energy=1.0 min-size=0}")
    x = zoo_inputs(name, rows=1)
    assert_close(run(out, [x])[0], run(graph, [x])[0], rtol=1e-5)


def agreement(reference, inputs):
    want = [int(np.argmax(run(reference, [x])[0])) for x in inputs]
    return lambda g: 100.0 * np.mean([int(np.argmax(run(g, [x])[0])) == w for x, w in zip(inputs, want)])


@pytest.mark.parametrize("budget", [0.0, 25.0])
def test_auto_rank_stays_within_budget(budget):
    graph = fused_graph("cnn_bn")
    evaluate = agreement(graph, list(zoo_inputs("cnn_bn", rows=10, seed=6)[:, None]))
    ctx = PassContext(evaluate=evaluate, max_accuracy_drop=budget)
    out, ctx = svd(graph, "svd{rank=auto min-size=0}", ctx)
    assert 100.0 - evaluate(out) <= budget
    assert any("rank=auto" in n for n in ctx.notes)


def test_auto_rank_finds_the_exact_low_rank():
    graph = low_rank_graph(rank=1)
    inputs = list(np.random.default_rng(2).standard_normal((6, 1, 4, 8, 8)).astype(np.float32))
    ref = [run(graph, [x])[0] for x in inputs]

    def evaluate(g):  # SQNR-like: higher is better, 100 when exact
        err = max(float(np.abs(run(g, [x])[0] - r).max() / np.abs(r).max()) for x, r in zip(inputs, ref))
        return 100.0 - 1e4 * err

    out, ctx = svd(graph, "svd{rank=auto}", PassContext(evaluate=evaluate, max_accuracy_drop=0.1))
    # every rank tried is lossless, so each layer gets the smallest: 1/8 of its break-even rank
    # (conv 16x36: 11 -> 1; fc 32x256: 28 -> 4)
    assert {k: v["rank"] for k, v in ctx.stats["svd"]["layers"].items()} == {"conv": 1, "fc": 4}
    assert 100.0 - evaluate(out) <= 0.1


@pytest.mark.parametrize("text", ["svd{energy=0}", "svd{energy=1.5}", "svd{rank=-1}", "svd{rank=full}",
                                  "svd{min-size=-5}"])
def test_bad_options_are_parse_errors(text):
    with pytest.raises(ParseError):
        parse_pipeline(text)


def test_auto_without_evaluation_data_is_an_error():
    with pytest.raises(PassError) as e:
        svd(fused_graph("mlp"), "svd{rank=auto}")
    assert "--eval" in e.value.hint and "--max-accuracy-drop" in e.value.hint


def test_quantized_graph_is_refused():
    from tinyc.passmanager import PassManager
    q = PassManager("quantize-int8").run(fused_graph("mlp").copy(), PassContext(calib=zoo_inputs("mlp", 8)))
    with pytest.raises(PassError) as e:
        svd(q, "svd{rank=4}")
    assert "quantized" in e.value.what
