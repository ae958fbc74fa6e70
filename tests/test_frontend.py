"""PyTorch frontend and model zoo: import, verify, match PyTorch; file loading; errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import zoo_graph, zoo_model
from bench import zoo
from tinyc.errors import FrontendError
from tinyc.frontend import from_torch, import_exported_program, load_model, supported_ops
from tinyc.interpreter import run
from tinyc.verifier import verify

warnings.filterwarnings("ignore", category=FutureWarning)
THIS_FILE = Path(__file__).name


def line_of(marker: str) -> int:
    """Line number of the source line in this file carrying `marker`."""
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if marker in ln and "line_of(" not in ln)


def torch_run(module, *xs) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*xs)
    return [o.detach().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def check_matches(graph, module, *xs) -> None:
    verify(graph)
    got = run(graph, [x.numpy() for x in xs])
    want = torch_run(module, *xs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))


def import_fn(fn, *xs, **params):
    """Import a one-off model whose forward is `fn(self, *xs)`; returns (graph, module)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in params.items():
                setattr(self, k, v)

        def forward(self, *args):
            return fn(self, *args)
    m = M().eval()
    return from_torch(m, xs, name="t"), m


# ---------------------------------------------------------------- zoo

@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_imports_verifies_and_matches_torch(name):
    module, example = zoo_model(name)
    graph = zoo_graph(name)
    assert graph.name == name
    check_matches(graph, module, example)
    # a second input, not the one traced with
    gen = torch.Generator().manual_seed(7)
    vocab = zoo.ZOO[name].vocab
    other = torch.randint(0, vocab, example.shape, generator=gen) if vocab else torch.randn(example.shape, generator=gen)
    check_matches(graph, module, other)


@pytest.mark.parametrize("name, macs", [("ds_cnn", 2.66e6), ("resnet8", 12.5e6),
                                        ("mobilenet_v1_025", 7.49e6), ("fc_autoencoder", 0.26e6)])
def test_mlperf_tiny_mac_counts(name, macs):
    from tinyc.stats import graph_stats
    got = graph_stats(zoo_graph(name)).macs
    assert abs(got - macs) / macs < 0.03, f"{name}: {got} MACs, MLPerf Tiny reference {macs:.3g}"
    assert zoo.ZOO[name].reference_macs == got


def test_zoo_is_deterministic_with_nontrivial_batch_norm():
    a, xa = zoo.get("cnn_bn")
    b, xb = zoo.get("cnn_bn")
    assert torch.equal(xa, xb)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    bn = a.block1[1]
    assert bn.running_mean.abs().max() > 0.01 and (bn.running_var - 1).abs().max() > 0.05
    assert (bn.weight - 1).abs().max() > 0.05 and bn.bias.abs().max() > 0.01
    state = torch.random.get_rng_state()
    zoo.get("mlp")
    assert torch.equal(state, torch.random.get_rng_state()), "zoo must not disturb the caller's RNG"


def test_zoo_registry():
    assert {"mlp", "cnn_bn", "ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder", "conv1d",
            "kitchen_sink"} <= set(zoo.names())
    for name, entry in zoo.ZOO.items():
        assert entry.name == name and entry.input_shape[0] == 1
    with pytest.raises(Exception, match="unknown zoo model"):
        zoo.get("nope")


def test_zoo_graphs_use_parameter_names_and_user_locations():
    g = zoo_graph("cnn_bn")
    consts = {op.result.name for op in g.const_ops()}
    assert {"block1.0.weight", "block1.1.running_mean", "block1.1.running_var", "fc.weight"} <= consts
    for op in g.compute_ops():
        assert op.loc and op.loc.startswith("zoo.py:") and " in forward" in op.loc, op


def test_kitchen_sink_covers_the_op_set():
    kinds = {op.kind for op in zoo_graph("kitchen_sink").ops}
    assert {"leaky_relu", "sigmoid", "tanh", "hardswish", "clamp", "cat", "softmax", "pad", "transpose",
            "matmul", "mean", "sub", "mul", "div", "add", "reshape", "avg_pool2d", "linear"} <= kinds
    convs = [op for op in zoo_graph("kitchen_sink").ops if op.kind == "conv2d"]
    assert {op.attrs["groups"] for op in convs} == {1, 4} and [2, 2] in [op.attrs["dilation"] for op in convs]


# ---------------------------------------------------------------- lowering details

def test_inplace_ops_and_aliasing_are_functionalized():
    relu_ = nn.ReLU(inplace=True)

    def fwd(self, x):
        y = x * 2
        z = relu_(y)      # mutates y: later reads of y see the relu
        z += y            # in place on the alias
        return z, y
    g, m = import_fn(fwd, torch.randn(1, 3, 4, 4))
    check_matches(g, m, torch.randn(1, 3, 4, 4))


def test_ops_outside_the_table_import_by_decomposition():
    g, m = import_fn(lambda self, x: F.tanhshrink(x) + x, torch.randn(1, 8))   # x - tanh(x)
    assert {op.kind for op in g.compute_ops()} <= {"tanh", "sub", "add"}
    check_matches(g, m, torch.randn(1, 8) * 4)


def test_silu_hardsigmoid_gelu_import_as_registry_ops():
    g, m = import_fn(lambda self, x: F.silu(x) + F.hardsigmoid(x) + F.gelu(x) + F.gelu(x, approximate="tanh"),
                     torch.randn(1, 8))
    assert sorted(op.kind for op in g.compute_ops() if op.kind != "add") == ["gelu", "gelu", "hardsigmoid", "silu"]
    assert sorted(op.attrs["approximate"] for op in g.compute_ops() if op.kind == "gelu") == ["none", "tanh"]
    check_matches(g, m, torch.randn(1, 8) * 4)


def test_matmul_with_a_parameter_becomes_linear_named_after_it():
    w = nn.Parameter(torch.randn(5, 8))
    g, m = import_fn(lambda self, x: (x @ self.w.t(), x @ self.w.t().t().t(), F.relu(x) @ self.w.t()),
                     torch.randn(2, 8), w=w)
    lin = [op for op in g.compute_ops() if op.kind == "linear"]
    assert len(lin) == 3 and {op.operands[1].name for op in lin} == {"w"}
    check_matches(g, m, torch.randn(2, 8))


def test_scalars_become_rank0_consts_and_alpha_is_applied():
    g, m = import_fn(lambda self, x: (torch.sub(x, 2.5, alpha=2), torch.rsub(x, 1.0, alpha=3),
                                      torch.add(x, x.relu(), alpha=-0.5), 1 - x / 4), torch.randn(1, 6))
    scalars = [op for op in g.const_ops() if op.attrs["value"].ndim == 0]
    assert scalars and all(op.result.type.shape == () for op in scalars)
    check_matches(g, m, torch.randn(1, 6))


def test_conv_same_padding_even_kernel_is_asymmetric():
    conv, conv1 = nn.Conv2d(2, 3, 4, padding="same"), nn.Conv1d(2, 3, 4, padding="same", dilation=2)
    g, m = import_fn(lambda self, x, y: (self.conv(x), self.conv1(y)),
                     torch.randn(1, 2, 7, 6), torch.randn(1, 2, 9), conv=conv, conv1=conv1)
    convs = [op for op in g.compute_ops() if op.kind == "conv2d"]
    assert convs[0].attrs["padding"] == [1, 1, 2, 2] and convs[1].attrs["padding"] == [0, 3, 0, 3]
    check_matches(g, m, torch.randn(1, 2, 7, 6), torch.randn(1, 2, 9))


def test_pool_and_reshape_forms():
    def fwd(self, x):
        a = F.adaptive_avg_pool2d(x, (2, 3))                       # exact divisor: plain avg pool
        b = F.adaptive_avg_pool2d(x, 1).flatten(1)                  # global: mean
        c = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True, return_indices=True)[0]
        d = F.avg_pool1d(x[0], 3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        return a, b, c, d, x[:, :, :, :].squeeze(0).unsqueeze(-1)
    g, m = import_fn(fwd, torch.randn(1, 3, 8, 9))
    kinds = {op.kind for op in g.compute_ops()}
    assert {"avg_pool2d", "mean", "max_pool2d", "reshape"} >= kinds - {"transpose"}
    check_matches(g, m, torch.randn(1, 3, 8, 9))


def test_constant_subexpressions_are_folded():
    g, m = import_fn(lambda self, x: x * (self.s.abs() + torch.ones(4)) + torch.arange(4.0),
                     torch.randn(2, 4), s=nn.Parameter(torch.randn(4)))
    assert [op.kind for op in g.compute_ops()] == ["mul", "add"]
    check_matches(g, m, torch.randn(2, 4))


def test_export_program_and_tuple_outputs():
    module, x = zoo_model("mlp")
    ep = torch.export.export(module, (x,))
    g = import_exported_program(ep, name="mlp2")
    assert g.name == "mlp2" and [v.type.shape for v in g.inputs] == [(1, 64)]
    check_matches(g, module, x)
    assert "aten.conv2d.default" in supported_ops() and "aten.linear.default" in supported_ops()


# ---------------------------------------------------------------- errors

class SortModel(nn.Module):
    def forward(self, x):
        y = x.relu()
        return torch.sort(y, dim=-1)[0] * 2  # SORT-LINE


def test_unsupported_op_names_op_node_and_source_line():
    # (torch.export records only `forward` frames, so the location is a line of a forward method)
    with pytest.raises(FrontendError) as info:
        from_torch(SortModel(), (torch.randn(1, 5),))
    e = info.value
    assert "aten.sort" in e.what
    assert "sort" in e.where and f"{THIS_FILE}:{line_of('SORT-LINE')}" in e.where
    assert "tinyc ops" in e.hint and "docs/ir.md" in e.hint


class ManyUnsupported(nn.Module):
    def forward(self, x):
        y = torch.cumprod(x, 1)  # CUMPROD-LINE
        z = torch.floor(x) + F.silu(x) + F.gelu(x) + torch.cumsum(x, 1)  # FLOOR-LINE
        return torch.sort(y + z, dim=-1)[0]  # SORT2-LINE


def test_every_unsupported_op_is_listed_in_one_error_and_no_supported_one():
    with pytest.raises(FrontendError) as info:
        from_torch(ManyUnsupported(), (torch.randn(1, 5),))
    what = info.value.what
    assert what.startswith("3 unsupported PyTorch ops")
    for op, tag in (("aten.cumprod.default", "CUMPROD-LINE"), ("aten.floor.default", "FLOOR-LINE"),
                    ("aten.sort.default", "SORT2-LINE")):
        line = next(x for x in what.splitlines() if op in x)
        assert f"{THIS_FILE}:{line_of(tag)}" in line, line
    assert "silu" not in what and "gelu" not in what and "add" not in what and "cumsum" not in what
    assert "cumprod" in info.value.where


@pytest.mark.parametrize("fn, words", [
    (lambda self, x: torch.cumprod(x, 1), ["cumprod"]),
    (lambda self, x: F.max_pool2d(x, 2, return_indices=True)[1].float(), ["indices"]),
    (lambda self, x: F.adaptive_avg_pool2d(x, 3), ["adaptive", "uneven"]),
    (lambda self, x: torch.div(x, 2, rounding_mode="floor"), ["rounding_mode"]),
    (lambda self, x: F.pad(x, (-1, 1)), ["negative padding"]),
    (lambda self, x: (x * 2, 3), ["returns a int"]),
], ids=["cumprod", "pool-indices", "adaptive-uneven", "floor-div", "crop", "int-output"])
def test_unsupported_forms(fn, words):
    circ = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
    with pytest.raises(FrontendError) as info:
        import_fn(fn, torch.randn(1, 3, 8, 8), circ=circ)
    for w in words:
        assert w in str(info.value)


def test_inputs_must_be_static_float32_tensors():
    with pytest.raises(FrontendError, match="float32"):
        import_fn(lambda self, x: x * 2, torch.ones(1, 3, dtype=torch.int16))
    with pytest.raises(FrontendError, match="reads the integer tensor"):   # int32/int64 are token ids
        import_fn(lambda self, x: x * 2, torch.ones(1, 3, dtype=torch.int32))

    class M(nn.Module):
        def forward(self, x):
            return x.relu()
    ep = torch.export.export(M(), (torch.randn(2, 3),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    with pytest.raises(FrontendError, match="dynamic shape"):
        import_exported_program(ep)


def test_training_mode_export_is_refused_with_eval_hint():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    ep = torch.export.export(m, (torch.randn(2, 3, 8, 8),))
    with pytest.raises(FrontendError) as info:
        import_exported_program(ep)
    assert "training mode" in info.value.what and "model.eval()" in info.value.hint


# ---------------------------------------------------------------- model files

def test_export_archive_is_detected_by_content(tmp_path):
    module, x = zoo_model("cnn_bn")
    path = tmp_path / "my-model.v2.bin"
    torch.export.save(torch.export.export(module, (x,)), str(path))
    g = load_model(path)
    assert g.name == "my_model_v2"
    check_matches(g, module, x)
    assert load_model(str(path), name="other").name == "other"


@pytest.fixture
def pickled_mlp(tmp_path):
    module, x = zoo_model("mlp")
    path = tmp_path / "mlp.pt2"  # a misleading extension: detection is by content
    torch.save(module, path)
    return path, module, x


def test_pickled_module_is_refused_without_trust(pickled_mlp):
    path, _, _ = pickled_mlp
    with pytest.raises(FrontendError) as info:
        load_model(path, input_shape=(1, 64))
    text = str(info.value)
    assert "arbitrary code" in text
    assert "torch.export.save(torch.export.export(model, example_inputs), 'model.pt2')" in text
    assert "--trust-pickle --input-shape 1,3,32,32" in text


def test_trusted_pickle_needs_input_shape(pickled_mlp):
    path, _, _ = pickled_mlp
    with pytest.raises(FrontendError, match="--input-shape"):
        load_model(path, trust_pickle=True)


@pytest.mark.parametrize("shape", [(1, 64), "1,64"])
def test_trusted_pickle_loads(pickled_mlp, shape):
    path, module, x = pickled_mlp
    g = load_model(path, trust_pickle=True, input_shape=shape)
    assert g.name == "mlp"
    check_matches(g, module, x)


def test_legacy_pickle_format_is_recognized(tmp_path):
    module, _ = zoo_model("mlp")
    path = tmp_path / "legacy.pt"
    torch.save(module, path, _use_new_zipfile_serialization=False)
    with pytest.raises(FrontendError, match="arbitrary code"):
        load_model(path)


def test_state_dict_is_refused(tmp_path):
    module, _ = zoo_model("mlp")
    path = tmp_path / "weights.pt"
    torch.save(module.state_dict(), path)
    with pytest.raises(FrontendError) as info:
        load_model(path, trust_pickle=True, input_shape=(1, 64))
    assert "state_dict" in info.value.what and "load_state_dict" in info.value.hint


def test_ir_text_garbage_and_missing_files(tmp_path):
    ir = tmp_path / "model.pt2"
    ir.write_text("// a dump\ngraph @m(%x: tensor<1xf32>) -> (tensor<1xf32>) {\n  return %x\n}\n")
    with pytest.raises(FrontendError, match="IR text"):
        load_model(ir)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(FrontendError, match="not a PyTorch model"):
        load_model(junk)
    with pytest.raises(FrontendError, match="not found"):
        load_model(tmp_path / "missing.pt2")
    with pytest.raises(FrontendError, match="not a file"):
        load_model(tmp_path)
