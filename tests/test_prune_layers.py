"""prune-layers: residual blocks become identities, shape-preserving layers go, cheapest first."""
import json

import numpy as np
import pytest

from helpers import assert_close, fused_graph, zoo_inputs
from tinyc.errors import ParseError, PassError
from tinyc.interpreter import run
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.ops import infer_type
from tinyc.passes import PassContext, parse_pipeline
from tinyc.passes.prune_layers import candidates
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify

WITH_CANDIDATES = ["ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder", "kitchen_sink"]
WITHOUT = ["mlp", "cnn_bn", "conv1d"]   # no residual block, no layer with equal in/out shapes


def prune(graph, spec, ctx=None):
    (p,) = parse_pipeline(spec)
    ctx = ctx or PassContext()
    out = p.apply(graph, ctx)
    verify(out)
    assert print_graph(parse(print_graph(out))) == print_graph(out)
    return out, ctx


def kinds(graph):
    return [op.kind for op in graph.compute_ops()]


def mlp_graph(identity_act=None, dead_branch=False):
    """x -> fc0 (relu) -> fc1 (the identity, act `identity_act`) -> [fc2 -> fc3 (zeros)] + -> head."""
    rng = np.random.default_rng(0)
    g = Graph("g", [Value("x", TensorType((1, 8)))], [])

    def const(name, arr):
        v = Value(name, TensorType(arr.shape))
        g.ops.append(Op("const", [], v, {"value": np.asarray(arr, np.float32)}))
        return v

    def op(name, kind, operands, **attrs):
        v = Value(name, infer_type(kind, [o.type for o in operands], attrs))
        g.ops.append(Op(kind, operands, v, attrs))
        return v

    h = op("fc0", "linear", [g.inputs[0], const("w0", rng.standard_normal((8, 8))),
                             const("b0", rng.standard_normal(8))])
    h = op("fc1", "linear", [h, const("w1", np.eye(8)), const("b1", np.zeros(8))],
           **({"act": identity_act} if identity_act else {}))
    if dead_branch:
        f = op("fc2", "linear", [h, const("w2", rng.standard_normal((8, 8))), const("b2", rng.standard_normal(8))],
               act="relu")
        f = op("fc3", "linear", [f, const("w3", np.zeros((8, 8))), const("b3", np.zeros(8))])
        h = op("sum", "add", [f, h], act="relu")
    g.outputs = [op("head", "linear", [h, const("wh", rng.standard_normal((3, 8)))])]
    verify(g)
    return g


X = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)


@pytest.mark.parametrize("act", [None, "relu"])
def test_identity_layer_goes_first_and_keeps_the_function(act):
    graph = mlp_graph(identity_act=act)
    out, ctx = prune(graph, "prune-layers{count=1}")
    assert kinds(out).count("linear") == 2
    if act:  # fc0 has no activation: the relu stays as an op of its own
        assert "relu" in kinds(out)
    assert_close(run(out, [X])[0], run(graph, [X])[0], rtol=1e-5)
    assert ctx.stats["prune-layers"]["removed"][0]["op"] == "fc1"
    assert ctx.stats["prune-layers"]["scored_by"].startswith("weight norms")


def test_dead_residual_branch_becomes_identity():
    graph = mlp_graph(dead_branch=True)
    out, ctx = prune(graph, "prune-layers{count=1}")
    removed = ctx.stats["prune-layers"]["removed"]
    assert removed[0]["kind"] == "block" and removed[0]["op"] == "sum" and removed[0]["score"] == 0.0
    assert "add" not in kinds(out) and "fc2" not in {op.result.name for op in out.ops}
    assert_close(run(out, [X])[0], run(graph, [X])[0], rtol=1e-5)
    assert graph_stats(out).macs == graph_stats(graph).macs - 128


def test_calibration_data_scores_by_relative_change():
    graph = mlp_graph(dead_branch=True)
    calib = np.random.default_rng(2).standard_normal((4, 1, 8)).astype(np.float32)
    out, ctx = prune(graph, "prune-layers{count=2}", PassContext(calib=calib))
    stats = ctx.stats["prune-layers"]
    assert "calibration inputs" in stats["scored_by"]
    assert [r["score"] for r in stats["removed"]] == [0.0, 0.0]  # the dead branch and the identity
    assert_close(run(out, [X])[0], run(graph, [X])[0], rtol=1e-5)


def test_resnet_identity_block_is_a_candidate():
    found = {(r.kind, r.op, r.keep) for r in candidates(fused_graph("resnet8"))}
    assert ("block", "add", "conv2d") in found      # stack1: y = relu(x + f(x)) -> x
    assert ("block", "add_1", "conv2d_4") in found  # stack2: drop the projection shortcut


@pytest.mark.parametrize("name", WITH_CANDIDATES)
def test_zoo_removal_verifies_and_shrinks(name):
    graph = fused_graph(name)
    out, ctx = prune(graph, "prune-layers{count=1}")
    before, after = graph_stats(graph), graph_stats(out)
    assert after.macs < before.macs and after.params < before.params
    assert [v.type for v in out.outputs] == [v.type for v in graph.outputs]
    assert len(ctx.stats["prune-layers"]["removed"]) == 1
    json.dumps(ctx.stats)  # the report stores the stats as JSON


@pytest.mark.parametrize("name", WITHOUT)
def test_zoo_without_candidates_is_left_alone_with_a_note(name):
    graph = fused_graph(name)
    out, ctx = prune(graph, "prune-layers{count=1}")
    assert print_graph(out) == print_graph(graph)
    assert any("no further removable" in n for n in ctx.notes)


def test_budget_removes_at_least_that_fraction_of_macs():
    graph = fused_graph("ds_cnn")
    out, ctx = prune(graph, "prune-layers{budget=0.3}")
    before, after = graph_stats(graph).macs, graph_stats(out).macs
    assert after <= 0.7 * before
    assert ctx.stats["prune-layers"]["macs"] == [before, after]


def agreement(reference, inputs):
    want = [int(np.argmax(run(reference, [x])[0])) for x in inputs]
    return lambda g: 100.0 * np.mean([int(np.argmax(run(g, [x])[0])) == w for x, w in zip(inputs, want)])


def test_auto_removes_what_the_budget_allows():
    graph = mlp_graph(dead_branch=True)
    rng = np.random.default_rng(3)
    evaluate = agreement(graph, list(rng.standard_normal((8, 1, 8)).astype(np.float32)))
    out, ctx = prune(graph, "prune-layers{count=auto}", PassContext(evaluate=evaluate, max_accuracy_drop=0.0))
    assert 100.0 - evaluate(out) <= 0.0
    assert len(ctx.stats["prune-layers"]["removed"]) >= 2   # the dead branch and the identity are free
    assert "drop" in ctx.stats["prune-layers"]["scored_by"]


def test_auto_on_ds_cnn_stays_within_budget():
    graph = fused_graph("ds_cnn")
    evaluate = agreement(graph, list(zoo_inputs("ds_cnn", rows=6, seed=4)[:, None]))
    out, ctx = prune(graph, "prune-layers{count=auto}", PassContext(evaluate=evaluate, max_accuracy_drop=20.0))
    assert 100.0 - evaluate(out) <= 20.0
    assert any("count=auto" in n for n in ctx.notes)


@pytest.mark.parametrize("text", ["prune-layers{count=-1}", "prune-layers{count=all}", "prune-layers{budget=1.5}"])
def test_bad_options_are_parse_errors(text):
    with pytest.raises(ParseError):
        parse_pipeline(text)


@pytest.mark.parametrize("spec", ["prune-layers", "prune-layers{count=1 budget=0.2}"])
def test_exactly_one_of_count_and_budget(spec):
    with pytest.raises(PassError) as e:
        prune(fused_graph("resnet8"), spec)
    assert "exactly one" in e.value.what


def test_auto_without_evaluation_data_is_an_error():
    with pytest.raises(PassError) as e:
        prune(fused_graph("resnet8"), "prune-layers{count=auto}")
    assert "--eval" in e.value.hint


def test_quantized_graph_is_refused():
    from tinyc.passmanager import PassManager
    q = PassManager("quantize-int8").run(fused_graph("fc_autoencoder").copy(),
                                         PassContext(calib=zoo_inputs("fc_autoencoder", 8)))
    with pytest.raises(PassError) as e:
        prune(q, "prune-layers{count=1}")
    assert "quantized" in e.value.what
