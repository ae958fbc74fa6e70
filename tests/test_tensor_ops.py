"""Indexing, splitting and creation ops end to end: models written the way third-party code writes
them (chunk, split, unbind, x[:, -1], x[..., ::2], flip, expand, repeat, roll, zeros for initial
states) imported with from_torch, run by the interpreter and as C on the host (float = PyTorch within
1e-4; int8 bit-exact with the interpreter), printed and parsed back, pruned exactly, and one model
bit-exact under QEMU Cortex-M4."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import assert_close
from test_int8_backend import assert_exact, quantize
from test_prune_channels import kill_channels, prune
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.errors import FrontendError
from tinyc.frontend import from_torch
from tinyc.interpreter import run
from tinyc.passes import PassContext
from tinyc.passes.channels import ChannelAnalysis
from tinyc.passmanager import PassManager
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify


# ---- models --------------------------------------------------------------------------------------

def channel_shuffle(x, groups):
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class InvertedResidual(nn.Module):
    """A ShuffleNetV2 unit of stride 1, as torchvision writes it."""

    def __init__(self, channels):
        super().__init__()
        branch = channels // 2
        self.branch2 = nn.Sequential(
            nn.Conv2d(branch, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
            nn.Conv2d(branch, branch, 3, 1, 1, groups=branch, bias=False), nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True))

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch2(x2)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetTiny(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.stage = nn.Sequential(InvertedResidual(16), InvertedResidual(16))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stage(self.conv1(x))
        return self.fc(x.mean([2, 3]))


class SequenceHead(nn.Module):
    """Sequence features [N, T, F]: the last step, every other step, a split of the features, unbind,
    flip, expand, narrow, repeat, roll and a zero initial state sized from the batch."""

    def __init__(self, features=8, hidden=12, classes=5):
        super().__init__()
        self.hidden = hidden
        self.proj = nn.Linear(features, hidden)
        self.mix = nn.Linear(hidden, hidden)
        self.head = nn.Linear(6 * 6 + 2 * hidden + 3, classes)

    def forward(self, x):
        n = x.size(0)
        h = torch.tanh(self.proj(x))                                   # [N, T=6, 12]
        h0 = torch.zeros(n, self.hidden)                               # initial state, batch-sized
        last = self.mix(h[:, -1] + h0)                                 # [N, 12]
        even = h[:, ::2]                                               # [N, 3, 12]
        a, b, c = torch.split(h, [2, 4, 6], dim=2)
        first, _, third = even.unbind(1)
        gate = torch.sigmoid(a[..., :1]).expand(-1, -1, 6)             # [N, 6, 6]
        rev = torch.flip(c, dims=[1]) * gate + b.repeat(1, 1, 2)[:, :, 1:7]
        rolled = torch.roll(rev, shifts=2, dims=2) - rev.narrow(1, 0, 6)
        ones = torch.ones_like(first[:, :3])
        return self.head(torch.cat([rolled.flatten(1), last, third - first, ones * x[:, 0, -3:]], dim=1))


class SplitConvNet(nn.Module):
    """Convs whose channels pass through split (at group boundaries), flip, a strided slice, a mean
    expanded back and narrow: prune-channels must follow every one of them."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)
        self.d = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(8 * 4 * 8, 10)

    def forward(self, x):
        y = torch.relu(torch.cat([self.a(x), self.b(x)], 1))           # [N, 14, 8, 8]
        p, q = torch.split(y, [8, 6], dim=1)
        p = torch.flip(p, dims=[3])
        q = q[:, :, ::2]                                                # [N, 6, 4, 8]
        q = q + q.mean(3, keepdim=True).expand(-1, -1, -1, 8)
        out = torch.cat([self.c(p)[:, :, 1::2], self.d(q)], 1)          # [N, 8, 4, 8]
        return self.fc(F.relu(out).flatten(1))


def _build(cls, shape, seed=0):
    torch.manual_seed(seed)
    model = cls().eval()
    with torch.no_grad():   # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(*shape)
    return model, x


MODELS = {"shufflenet": (ShuffleNetTiny, (1, 3, 16, 16)), "sequence": (SequenceHead, (2, 6, 8)),
          "splitconv": (SplitConvNet, (1, 3, 8, 8))}


def _import(name):
    model, x = _build(*MODELS[name])
    graph = from_torch(model, (x,))
    verify(graph)
    return model, x, graph


def c_host(graph, rows, out):
    """The outputs of the C bundle on the host (ASan/UBSan) for each row of inputs."""
    emit_bundle(graph, out, target_name="host")
    flat = np.stack([np.concatenate([x.ravel() for x in xs]) for xs in rows])
    return run_model(out, "host", "model", flat, sanitize=True)


# ---- float: interpreter and C = PyTorch; the IR text round trip; int8 C = interpreter ------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_matches_pytorch_and_int8_c_matches_interpreter(name, tmp_path):
    model, x, graph = _import(name)
    with torch.no_grad():
        want = model(x).numpy()
    xs = [x.numpy()]
    (got,) = run(graph, xs)
    assert_close(got, want, rtol=1e-4)
    assert_close(c_host(graph, [xs], tmp_path / "f32")[0].reshape(want.shape), want, rtol=1e-4)
    text = print_graph(graph)
    assert print_graph(parse(text)) == text

    fused = PassManager("fuse").run(graph.copy())
    assert_close(run(fused, xs)[0], want, rtol=1e-4)
    q = quantize(fused)
    text = print_graph(q)
    assert print_graph(parse(text)) == text
    rng = np.random.default_rng(3)
    rows = [[rng.standard_normal(x.shape).astype(np.float32)] for _ in range(3)]
    got8 = c_host(q, rows, tmp_path / "i8")
    for r, xi in enumerate(rows):
        (want8,) = run(q, xi)
        assert np.array_equal(got8[r], want8.ravel())


def test_importer_builds_the_expected_ops():
    _, _, graph = _import("sequence")
    kinds = [op.kind for op in graph.compute_ops()]
    for kind in ("slice", "flip", "expand", "cat", "reshape"):
        assert kind in kinds, kind
    # x[:, 0, -3:] is two slices (select, then the last three) and a reshape; a full slice is no op
    starts = {(op.attrs["axis"], op.attrs["start"], op.attrs["stop"], op.attrs["step"])
              for op in graph.compute_ops() if op.kind == "slice"}
    assert (1, 0, 6, 2) in starts and (1, 5, 6, 1) in starts
    assert all(op.attrs["stop"] > op.attrs["start"] for op in graph.compute_ops() if op.kind == "slice")


class CopyForms(nn.Module):
    """The _copy forms functionalization writes for views, with negative and out-of-range bounds."""

    def forward(self, x):
        a = torch.slice_copy(x, 1, -4, 100, 2)
        b = torch.select_copy(x, 2, -1)
        c = torch.expand_copy(x[:, :1], [2, 5, 6])
        d = torch.narrow_copy(x, 2, -3, 2)
        e = torch.split_copy(x, 2, 1)
        f = torch.split_with_sizes_copy(x, [1, 4], 1)
        g = torch.unbind_copy(x, 2)
        return a, b, c, d, e[2], f[1], g[3], x[:, -100:2], x[:, 1:-1, ::4]


def test_copy_forms_and_bounds_follow_pytorch():
    x = torch.randn(2, 5, 6)
    model = CopyForms()
    graph = from_torch(model, (x,))
    assert {op.kind for op in graph.compute_ops()} == {"slice", "expand", "reshape"}
    for got, want in zip(run(graph, [x.numpy()]), model(x)):
        assert np.array_equal(got, want.numpy())


class ConstGather(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("order", torch.tensor([0, 2, 4, 5, 3, 0, 1]))

    def forward(self, x):
        return x.index_select(2, self.order) * 2, x.index_select(1, torch.tensor([2]))


def test_gather_const_slices_runs_and_cats(monkeypatch):
    """gather_const (for index_select / index.Tensor with a constant index, whose lowerings live in
    tinyc.frontend_tokens): evenly spaced runs become slices (descending ones flipped) joined by one cat."""
    from tinyc import frontend_table, frontend_tensor

    def index_select(b, a):
        x = b.value(a["self"])
        return frontend_tensor.gather_const(b, x, a["dim"] % x.type.rank, a["index"])
    monkeypatch.setitem(frontend_table.LOWERINGS, "aten.index_select.default", index_select)
    x = torch.randn(2, 3, 6)
    model = ConstGather()
    graph = from_torch(model, (x,))
    slices = [(op.attrs["start"], op.attrs["stop"], op.attrs["step"]) for op in graph.compute_ops()
              if op.kind == "slice" and op.attrs["axis"] == 2]
    assert slices == [(0, 5, 2), (3, 6, 2), (0, 2, 1)]     # 0 2 4 | 5 3 (flipped) | 0 1
    assert [op.attrs["axes"] for op in graph.compute_ops() if op.kind == "flip"] == [[2]]
    for got, want in zip(run(graph, [x.numpy()]), model(x)):
        assert np.array_equal(got, want.numpy())


# ---- QEMU -----------------------------------------------------------------------------------------

@pytest.mark.qemu
@pytest.mark.parametrize("name", ["shufflenet", "sequence"])
def test_int8_exact_on_cortex_m4(name, tmp_path):
    _, _, graph = _import(name)
    q = quantize(PassManager("fuse").run(graph))
    assert_exact(q, tmp_path, target="cortex-m4", rows=2)


# ---- passes ---------------------------------------------------------------------------------------

def test_pruning_through_split_flip_slice_and_expand_is_exact():
    _, x, graph = _import("splitconv")
    graph = PassManager("fuse").run(graph)
    groups = {g.key: g for g in ChannelAnalysis(graph).groups}
    assert not groups["conv2d"].frozen and not groups["conv2d_1"].frozen, {k: g.frozen for k, g in groups.items()}
    dead = kill_channels(graph)
    out, _ = prune(dead, "prune-channels{ratio=0.5}")
    assert graph_stats(out).macs < graph_stats(dead).macs
    assert_close(run(out, [x.numpy()])[0], run(dead, [x.numpy()])[0], rtol=1e-5)
    sliced = [op for op in out.compute_ops() if op.kind == "slice" and op.attrs["axis"] == 1]
    assert [(op.attrs["start"], op.attrs["stop"]) for op in sliced] == [(0, 4), (4, 7)]


def test_shufflenet_chunk_freezes_what_it_splits_and_prunes_the_branches_exactly():
    _, x, graph = _import("shufflenet")
    graph = PassManager("fuse").run(graph)
    analysis = ChannelAnalysis(graph)
    stem = [g for g in analysis.groups if g.producers[0].operands[0] is graph.inputs[0]]
    assert stem and any("slice cuts through them" in why for why in stem[0].frozen)
    assert any(not g.frozen for g in analysis.groups)
    dead = kill_channels(graph)
    out, _ = prune(dead, "prune-channels{ratio=0.5}")
    assert graph_stats(out).macs < graph_stats(dead).macs
    assert_close(run(out, [x.numpy()])[0], run(dead, [x.numpy()])[0], rtol=1e-5)


def test_fuse_drops_full_slices_flips_of_unit_dims_and_same_shape_expands():
    from tinyc.ir import Graph, Op, TensorType, Value
    x = Value("x", TensorType((2, 1, 5)))
    s = Value("s", TensorType((2, 1, 5)))
    f = Value("f", TensorType((2, 1, 5)))
    e = Value("e", TensorType((2, 1, 5)))
    y = Value("y", TensorType((2, 1, 2)))
    g = Graph("g", [x], [y], [Op("slice", [x], s, {"axis": 2, "start": 0, "stop": 5, "step": 1}),
                              Op("flip", [s], f, {"axes": [1]}),
                              Op("expand", [f], e, {"shape": [2, 1, 5]}),
                              Op("slice", [e], y, {"axis": 2, "start": 1, "stop": 5, "step": 2})])
    verify(g)
    out = PassManager("fuse").run(g)
    assert [op.kind for op in out.compute_ops()] == ["slice"]
    xs = [np.arange(10, dtype=np.float32).reshape(2, 1, 5)]
    assert np.array_equal(run(out, xs)[0], xs[0][:, :, 1::2])


# ---- errors ---------------------------------------------------------------------------------------

class _Empty(nn.Module):
    def forward(self, x):
        return x[:, 3:1] + 1


def test_empty_slice_is_a_clear_error():
    with pytest.raises(FrontendError) as e:
        from_torch(_Empty(), (torch.randn(1, 4),))
    assert "selecting no elements" in str(e.value) and "zero-size" in e.value.hint


@pytest.mark.parametrize("attrs", [dict(axis=1, start=2, stop=1, step=1), dict(axis=1, start=0, stop=5, step=1),
                                   dict(axis=2, start=0, stop=1, step=1), dict(axis=1, start=0, stop=2, step=0)])
def test_bad_slice_attributes_are_op_errors(attrs):
    from tinyc.ops import OpError, infer_type
    with pytest.raises(OpError):
        infer_type("slice", [TensorTypeOf((2, 4))], attrs)


def TensorTypeOf(shape):
    from tinyc.ir import TensorType
    return TensorType(shape)


def test_expand_and_flip_attribute_checks():
    from tinyc.ops import OpError, infer_type
    with pytest.raises(OpError, match="cannot expand"):
        infer_type("expand", [TensorTypeOf((2, 3))], {"shape": [4, 3]})
    with pytest.raises(OpError, match="cannot expand"):
        infer_type("expand", [TensorTypeOf((2, 3))], {"shape": [3]})
    with pytest.raises(OpError, match="distinct, increasing"):
        infer_type("flip", [TensorTypeOf((2, 3))], {"axes": [1, 0]})
    assert infer_type("expand", [TensorTypeOf((3, 1))], {"shape": [2, 3, 4]}).shape == (2, 3, 4)
