"""prune-channels: channel groups, consumers rewritten, zero filters pruned without change, auto mode, errors."""
import json

import numpy as np
import pytest

from helpers import assert_close, fused_graph, zoo_inputs
from tinyc.errors import ParseError, PassError
from tinyc.interpreter import run, run_all
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.ops import infer_type
from tinyc.passes import PassContext, parse_pipeline
from tinyc.passes.prune_channels import choose_kept, kept_count
from tinyc.passes.budget import Trial, budgeted_search, greedy_plan
from tinyc.passes.channels import ChannelAnalysis, filter_norms
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify
from bench.zoo import names as zoo_names

# sigmoid(0) != 0 and a batch-norm after a conv shifts zeros: there zeroed filters are not dead.
DEAD_WHEN_ZERO = ["mlp", "cnn_bn", "ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder"]


def prune(graph, spec="prune-channels", ctx=None):
    (p,) = parse_pipeline(spec)
    ctx = ctx or PassContext()
    out = p.apply(graph, ctx)
    verify(out)
    assert print_graph(parse(print_graph(out))) == print_graph(out)
    return out, ctx


def kill_channels(graph, ratio=0.5, seed=0):
    """A copy where, in every prunable group, random channels (as many as `ratio` prunes) are dead:
    zero filters and biases in the producers, zero biases of the depthwise convs that follow."""
    g = graph.copy()
    a = ChannelAnalysis(g)
    rng = np.random.default_rng(seed)
    keep = {}
    for grp in a.groups:
        if grp.frozen:
            continue
        size = grp.size // grp.blocks
        per = kept_count(grp, ratio) // grp.blocks
        kept = np.concatenate([b * size + np.sort(rng.permutation(size)[:per]) for b in range(grp.blocks)])
        dead = np.setdiff1d(np.arange(grp.size), kept)
        for p in grp.producers:
            for v in p.operands[1:]:
                a.consts[id(v)].attrs["value"][dead] = 0.0
        keep[grp.gid] = kept
    for op in g.ops:
        if any(act[1] == "depthwise" for act in a.actions.get(id(op), [])):
            kept = a.positions(a.layout[id(op.operands[0])], keep)
            dead = np.setdiff1d(np.arange(op.operands[0].type.shape[1]), kept)
            a.consts[id(op.operands[2])].attrs["value"][dead] = 0.0
    return g


# ---- hand-built graphs --------------------------------------------------------------------

class Builder:
    def __init__(self, shape, seed=0):
        self.g = Graph("g", [Value("x", TensorType(shape))], [])
        self.rng = np.random.default_rng(seed)

    def const(self, name, shape):
        arr = self.rng.standard_normal(shape).astype(np.float32)
        v = Value(name, TensorType(arr.shape))
        self.g.ops.append(Op("const", [], v, {"value": arr}))
        return v

    def op(self, name, kind, operands, **attrs):
        v = Value(name, infer_type(kind, [o.type for o in operands], attrs))
        self.g.ops.append(Op(kind, operands, v, attrs))
        return v

    def conv(self, name, x, out, k=3, groups=1, act="relu"):
        c = x.type.shape[1]
        w, b = self.const(name + ".w", (out, c // groups, k, k)), self.const(name + ".b", (out,))
        extra = {"act": act} if act else {}
        return self.op(name, "conv2d", [x, w, b], stride=[1, 1], padding=[k // 2] * 4, dilation=[1, 1],
                       groups=groups, **extra)

    def done(self, *outs):
        self.g.outputs = list(outs)
        verify(self.g)
        return self.g


def cat_grouped_graph():
    """x -> A -> grouped G, x -> B; cat(G, B) * s -> C (1x1) -> flatten -> linear."""
    b = Builder((1, 2, 6, 6))
    x = b.g.inputs[0]
    a = b.conv("A", x, 4)
    g = b.conv("G", a, 4, groups=2)
    bb = b.conv("B", x, 4)
    cat = b.op("cat", "cat", [g, bb], axis=1)
    s = b.const("s", (8, 1, 1))
    m = b.op("scaled", "mul", [cat, s])
    c = b.conv("C", m, 3, k=1)
    flat = b.op("flat", "reshape", [c], shape=[1, 108])
    out = b.op("fc", "linear", [flat, b.const("fc.w", (2, 108)), b.const("fc.b", (2,))])
    return b.done(out)


def test_cat_grouped_const_and_flatten_consumers_shrink_consistently():
    graph = cat_grouped_graph()
    groups = {g.key: g for g in ChannelAnalysis(graph).groups}
    assert groups["A"].blocks == 2 and groups["G"].blocks == 2 and not groups["fc"].tied
    out, _ = prune(graph, "prune-channels{ratio=0.5}")
    shapes = {op.result.name: op.result.type.shape for op in out.ops}
    assert shapes["A"][1] == 2 and shapes["G"][1] == 2 and shapes["B"][1] == 2
    assert shapes["cat"][1] == 4 and shapes["s"] == (4, 1, 1) and shapes["C"][1] == 2
    assert shapes["flat"] == (1, 72) and shapes["fc.w"] == (2, 72) and shapes["G.w"] == (2, 1, 3, 3)


def test_dead_channels_through_cat_and_grouped_conv_prune_without_change():
    graph = kill_channels(cat_grouped_graph())
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)
    out, _ = prune(graph, "prune-channels{ratio=0.5}")
    assert_close(run(out, [x])[0], run(graph, [x])[0], rtol=1e-5)
    assert graph_stats(out).macs < graph_stats(graph).macs


def kept_channels(graph, key, ratio=0.5, criterion="l1"):
    """The channels prune-channels keeps of group `key`."""
    a = ChannelAnalysis(graph)
    (g,) = [g for g in a.groups if g.key == key]
    return choose_kept(g, filter_norms(a, g, criterion), kept_count(g, ratio))


@pytest.mark.parametrize("name, key, value, first", [
    ("conv1d", "conv1d_2d", "max_pool1d_2d", 0),   # conv (batch norm and relu folded) -> max pool
    ("kitchen_sink", "conv2d", "sub", 0),  # cat(sigmoid(conv), ...) -> pad -> pool -> * scale - shift
])
def test_kept_channels_compute_what_they_did(name, key, value, first):
    """Per-channel parameters (batch_norm, constants of mul/sub) are sliced like the channels:
    the kept channels of a layer's output and of what follows up to the next layer are unchanged."""
    graph = fused_graph(name)
    kept = kept_channels(graph, key)
    out, _ = prune(graph, "prune-channels{ratio=0.5}")
    x = zoo_inputs(name, rows=1, seed=2)
    want = run_all(graph, [x])[value][:, kept]
    got = run_all(out, [x])[value][:, first:first + len(kept)]
    assert_close(got, want, rtol=1e-6)


def test_residual_add_ties_producers_and_notes_it():
    graph = fused_graph("resnet8")
    tied = [g for g in ChannelAnalysis(graph).groups if g.tied]
    assert [g.key for g in tied] == ["conv2d+conv2d_2", "conv2d_4+conv2d_5", "conv2d_7+conv2d_8"]
    out, ctx = prune(graph, "prune-channels{ratio=0.5 criterion=l2}")
    shapes = {op.result.name: op.result.type.shape for op in out.ops}
    assert shapes["conv2d"][1] == shapes["conv2d_2"][1] == shapes["add"][1] == 8
    assert any("tied group conv2d+conv2d_2" in n and "jointly" in n for n in ctx.notes)
    assert ctx.stats["prune-channels"]["ratios"]["conv2d+conv2d_2"] == 0.5
    _, ctx = prune(graph, "prune-channels{ratio=0.5 tied=skip}")
    assert ctx.stats["prune-channels"]["ratios"]["conv2d+conv2d_2"] == 0.0
    assert any("tied=skip" in n for n in ctx.notes)


def test_layers_option_restricts_pruning():
    graph = fused_graph("ds_cnn")
    out, ctx = prune(graph, "prune-channels{ratio=0.5 layers=conv2d_4}")
    changed = {k for k, v in ctx.stats["prune-channels"]["layers"].items() if v["kept"] < v["channels"]}
    assert changed == {"conv2d_4"}
    shapes = {op.result.name: op.result.type.shape for op in out.ops}
    assert shapes["conv2d_4"][1] == shapes["conv2d_5"][1] == 32 and shapes["conv2d_2"][1] == 64
    with pytest.raises(PassError) as e:
        prune(graph, "prune-channels{layers=nosuch}")
    assert "conv2d_4" in e.value.hint


# ---- the zoo ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", zoo_names())
def test_ratio_zero_changes_nothing(name):
    graph = fused_graph(name)
    out, _ = prune(graph, "prune-channels{ratio=0.0}")
    assert print_graph(out) == print_graph(graph)
    x = zoo_inputs(name, rows=1)
    assert_close(run(out, [x])[0], run(graph, [x])[0], rtol=1e-5)


@pytest.mark.parametrize("name", zoo_names())
def test_half_the_channels_verifies_and_shrinks(name):
    graph = fused_graph(name)
    out, ctx = prune(graph, "prune-channels{ratio=0.5}")
    before, after = graph_stats(graph), graph_stats(out)
    assert after.macs < before.macs and after.params < before.params
    assert [v.type for v in out.outputs] == [v.type for v in graph.outputs]
    assert ctx.stats["prune-channels"]["macs"] == [before.macs, after.macs]
    json.dumps(ctx.stats)  # the report stores the stats as JSON


@pytest.mark.parametrize("name", DEAD_WHEN_ZERO)
def test_pruning_dead_filters_keeps_the_function(name):
    graph = kill_channels(fused_graph(name))
    out, _ = prune(graph, "prune-channels{ratio=0.5}")
    x = zoo_inputs(name, rows=1, seed=3)
    assert_close(run(out, [x])[0], run(graph, [x])[0], rtol=1e-5)
    assert graph_stats(out).macs < graph_stats(graph).macs


# ---- ratio=auto ---------------------------------------------------------------------------

def agreement(reference, inputs):
    """Top-1 agreement (%) with `reference` on `inputs`: a simple evaluate for the auto modes."""
    want = [int(np.argmax(run(reference, [x])[0])) for x in inputs]

    def evaluate(graph):
        return 100.0 * np.mean([int(np.argmax(run(graph, [x])[0])) == w for x, w in zip(inputs, want)])
    return evaluate


def test_auto_stays_within_the_accuracy_budget():
    graph = fused_graph("ds_cnn")
    evaluate = agreement(graph, list(zoo_inputs("ds_cnn", rows=8, seed=5)[:, None]))
    ctx = PassContext(evaluate=evaluate, max_accuracy_drop=40.0, metric="top-1 agreement %")
    out, ctx = prune(graph, "prune-channels{ratio=auto}", ctx)
    assert 100.0 - evaluate(out) <= 40.0
    stats = ctx.stats["prune-channels"]
    assert stats["drop"] <= 40.0 and set(stats["sensitivity"]) == {g for g in stats["ratios"] if g != "linear"}
    assert any(r > 0 for r in stats["ratios"].values()) and graph_stats(out).macs < graph_stats(graph).macs
    assert any("ratio=auto" in n for n in ctx.notes)


def test_auto_takes_what_costs_nothing():
    """With half the channels of every layer dead, pruning half costs no accuracy: a zero budget
    still prunes every group at least that far."""
    graph = kill_channels(fused_graph("ds_cnn"))
    evaluate = agreement(graph, list(zoo_inputs("ds_cnn", rows=6, seed=5)[:, None]))
    ctx = PassContext(evaluate=evaluate, baseline=100.0, max_accuracy_drop=0.0)
    out, ctx = prune(graph, "prune-channels{ratio=auto}", ctx)
    ratios = ctx.stats["prune-channels"]["ratios"]
    assert all(r >= 0.5 for k, r in ratios.items() if k != "linear") and evaluate(out) == 100.0


def test_budgeted_search_undoes_steps_until_the_combined_check_passes():
    """Alone each setting costs 1 point; together they cost more, so the last steps are undone."""
    trials = {k: [Trial(0.5, 10, 1.0)] for k in "abc"}
    built = []

    def build(settings):
        built.append(dict(settings))
        return settings

    settings, _, drop, undone = budgeted_search(trials, 3.0, 100.0, build, lambda s: 100.0 - 2.0 * len(s) ** 2 / 2)
    assert len(greedy_plan(trials, 3.0)) == 3 and len(greedy_plan(trials, 2.5)) == 2
    assert len(settings) == 1 and undone == 2 and drop <= 3.0 and len(built) == 3


# ---- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["prune-channels{ratio=1.0}", "prune-channels{ratio=-0.1}",
                                  "prune-channels{ratio=half}", "prune-channels{criterion=l3}"])
def test_bad_options_are_parse_errors(text):
    with pytest.raises(ParseError):
        parse_pipeline(text)


def test_auto_without_evaluation_data_says_what_to_pass():
    with pytest.raises(PassError) as e:
        prune(fused_graph("mlp"), "prune-channels{ratio=auto}")
    assert "--eval" in e.value.hint and "--max-accuracy-drop" in e.value.hint
    with pytest.raises(PassError) as e:
        prune(fused_graph("mlp"), "prune-channels{ratio=auto}", PassContext(evaluate=lambda g: 1.0))
    assert "--max-accuracy-drop" in e.value.hint


def test_quantized_graph_is_refused():
    from tinyc.passmanager import PassManager
    q = PassManager("quantize-int8").run(fused_graph("mlp").copy(), PassContext(calib=zoo_inputs("mlp", 8)))
    with pytest.raises(PassError) as e:
        prune(q, "prune-channels{ratio=0.5}")
    assert "quantized" in e.value.what and "before quantize-int8" in e.value.hint
