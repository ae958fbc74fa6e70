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


def test_conv1d_folds_batch_norm_and_activations_through_the_importers_reshapes():
    """The importer runs conv1d as conv2d on [N, C, 1, L] between two reshapes; batch norm (on the
    channel axis, which the reshape keeps) and activations still fold into the conv, and the
    reshape back to [N, C, L] disappears into the next conv's."""
    import numpy as np
    import torch
    import torch.nn as nn

    from tinyc.frontend import from_torch
    from tinyc.passmanager import PassManager

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1),
                          nn.Hardtanh(-1.0, 1.0), nn.Conv1d(8, 6, 1), nn.BatchNorm1d(6)).eval()
    with torch.no_grad():
        for bn in (model[1], model[6]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 4, 16)
    graph = PassManager("fuse").run(from_torch(model, (x,)))
    assert kinds(graph) == ["reshape", "conv2d", "conv2d", "conv2d", "reshape"]
    assert [op.attrs.get("act") for op in graph.compute_ops() if op.kind == "conv2d"] == ["relu", "clamp", None]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(run(graph, [x.numpy()])[0], want, rtol=1e-5, atol=1e-6)
