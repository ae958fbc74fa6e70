"""`fuse` on every zoo model: same function, fewer ops, no batch-norm left behind a conv/linear."""
import pytest

from helpers import assert_close, fused_graph, zoo_graph, zoo_inputs
from tinyc.interpreter import run
from tinyc.stats import graph_stats
from bench.zoo import names as zoo_names


def kinds(graph):
    return [op.kind for op in graph.compute_ops()]


@pytest.mark.parametrize("name", zoo_names())
def test_fused_graph_computes_the_same_function(name):
    x = zoo_inputs(name, rows=1)
    before, after = zoo_graph(name), fused_graph(name)
    assert_close(run(after, [x])[0], run(before, [x])[0], rtol=1e-5)
    assert graph_stats(after).macs == graph_stats(before).macs
    assert graph_stats(after).ops <= graph_stats(before).ops


@pytest.mark.parametrize("name", ["cnn_bn", "ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder"])
def test_batch_norm_and_relu_fold_away(name):
    before, after = kinds(zoo_graph(name)), kinds(fused_graph(name))
    assert "batch_norm" in before and "batch_norm" not in after
    assert after.count("relu") < before.count("relu")
    assert graph_stats(fused_graph(name)).params < graph_stats(zoo_graph(name)).params


def test_fuse_is_idempotent():
    from tinyc.passmanager import PassManager
    from tinyc.text import print_graph
    once = fused_graph("resnet8")
    assert print_graph(PassManager("fuse").run(once.copy())) == print_graph(once)


def test_fuse_does_not_mutate_its_input():
    from tinyc.text import print_graph
    graph = zoo_graph("cnn_bn")
    text = print_graph(graph)
    fused_graph.__wrapped__("cnn_bn")
    assert print_graph(graph) == text
