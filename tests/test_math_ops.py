"""The long tail of math end to end, in models written the way a third party writes them: ELU, SELU,
Mish, Softplus, PReLU, abs/sqrt, torch.maximum/minimum, amax over time, log_softmax heads, x ** 2,
torch.exp, rsqrt normalization, sum, adaptive max pooling. Imported with from_torch; float = PyTorch
(interpreter and C on the host, rtol 1e-4); int8 C bit-exact with the integer interpreter (host, and
QEMU Cortex-M4 for one model); the IR text round trip; the frontend's clear errors; what an int8 table
does with NaN and inf."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import assert_close
from tinyc import quant
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.errors import FrontendError
from tinyc.frontend import from_torch
from tinyc.interpreter import run as interpret
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager
from tinyc.text import parse, print_graph
from tinyc.verifier import verify


# ---- the models --------------------------------------------------------------------------------

class KeywordNet(nn.Module):
    """A 1-D conv keyword spotter: ELU, Mish, Softplus, PReLU, |x| ** 0.5 gating with torch.maximum,
    max over time, a log-probability head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 8, 3, padding=1)
        self.elu = nn.ELU(alpha=0.8)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=1)
        self.mish = nn.Mish()
        self.conv3 = nn.Conv1d(8, 6, 1)
        self.softplus = nn.Softplus(beta=1.5, threshold=4.0)
        self.prelu = nn.PReLU(6, init=0.2)
        self.selu = nn.SELU()
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        h = self.elu(self.conv1(x))
        h = self.mish(self.conv2(h))
        h = torch.maximum(h, h.abs().sqrt() - 0.5)
        h = self.prelu(self.softplus(self.conv3(h)))
        h = self.selu(h - h.mean(dim=2, keepdim=True))
        pooled = h.amax(dim=2)
        return F.log_softmax(self.head(pooled), dim=-1)


class GatedRMSNet(nn.Module):
    """An MLP with a hand-written RMS norm (x ** 2, rsqrt), a Gaussian gate exp(-x ** 2), a clamp to a
    learned floor (torch.clamp with a tensor bound), a sum over features and a min over them."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 24)
        self.gain = nn.Parameter(1.0 + 0.1 * torch.randn(24))
        self.floor = nn.Parameter(-0.5 + 0.1 * torch.randn(24))
        self.fc2 = nn.Linear(24, 6)

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.rsqrt((h ** 2).mean(-1, keepdim=True) + 1e-5) * self.gain
        h = torch.clamp(h * torch.exp(-h ** 2), min=self.floor)
        y = self.fc2(h)
        return torch.cat([y, y.sum(-1, keepdim=True), torch.min(y, dim=-1, keepdim=True).values], dim=-1)


class PooledCNN(nn.Module):
    """A small 2-D CNN: CELU, a single-slope PReLU, adaptive max pooling to 2x2 (a max pool) and to
    1x1 (a max over space), log(1 + softplus) and 1 / (1 + |x|)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.CELU(alpha=1.2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.PReLU()
        self.pool = nn.AdaptiveMaxPool2d(2)
        self.gpool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(8 * 4 + 8, 4)

    def forward(self, x):
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        feats = torch.cat([self.pool(h).flatten(1), self.gpool(h).flatten(1)], dim=1)
        z = self.fc(feats)
        return torch.log(1.0 + F.softplus(z)) + torch.reciprocal(1.0 + z.abs())


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = model
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.PReLU):     # slopes that differ per channel, some negative
                mod.weight.copy_(torch.linspace(-0.3, 0.4, mod.weight.numel()))
    return m.eval()


MODELS = {
    "keyword": (lambda: _seeded(KeywordNet(), 0), (4, 20)),
    "gated_rms": (lambda: _seeded(GatedRMSNet(), 1), (16,)),
    "pooled_cnn": (lambda: _seeded(PooledCNN(), 2), (3, 8, 8)),
}
_CACHE: dict = {}


def model_and_graph(name: str):
    if name not in _CACHE:
        torch.manual_seed(123)
        build, shape = MODELS[name]
        m = build()
        g = from_torch(m, (torch.randn(1, *shape),), name=name)
        _CACHE[name] = (m, g, shape)
    return _CACHE[name]


def inputs(shape, rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 1, *shape)).astype(np.float32)


def torch_out(m: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def quantized(name: str) -> Graph:
    key = name + ".int8"
    if key not in _CACHE:
        _, g, shape = model_and_graph(name)
        _CACHE[key] = PassManager("fuse,quantize-int8").run(g.copy(), PassContext(calib=inputs(shape, 128, 1)))
    return _CACHE[key]


def run_c(graph: Graph, out_dir, xs: np.ndarray, target: str = "host") -> np.ndarray:
    emit_bundle(graph, out_dir, target_name=target)
    if target != "host":
        write_target_files(out_dir, target, "model")
    return run_model(out_dir, target, "model", xs.reshape(len(xs), -1))


# ---- import and float ------------------------------------------------------------------------------

def test_models_import_to_the_math_ops():
    kinds = {name: {op.kind for op in model_and_graph(name)[1].compute_ops()} for name in MODELS}
    assert {"elu", "mish", "softplus", "prelu", "selu", "abs", "sqrt", "maximum", "amax", "log_softmax"} \
        <= kinds["keyword"]
    assert {"pow", "rsqrt", "exp", "maximum", "sum", "amin"} <= kinds["gated_rms"]
    assert {"celu", "prelu", "max_pool2d", "amax", "log", "softplus", "reciprocal"} <= kinds["pooled_cnn"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_interpreter_and_host_c_match_pytorch(name, tmp_path):
    m, g, shape = model_and_graph(name)
    xs = inputs(shape, 3, 5)
    want = np.concatenate([torch_out(m, x) for x in xs])
    got = np.concatenate([interpret(g, [x])[0] for x in xs])
    assert_close(got, want, 1e-4)
    fused = PassManager("fuse").run(g.copy())
    assert_close(run_c(fused, tmp_path, xs).reshape(want.shape), want, 1e-4)


def test_fuse_attaches_the_math_activations_and_c_applies_them():
    """conv1d -> ELU / Mish / Softplus become conv2d {act = ...}: the float kernels' tinyc_act cases."""
    _, g, _ = model_and_graph("keyword")
    fused = PassManager("fuse").run(g.copy())
    acts = {op.attrs.get("act") for op in fused.compute_ops() if op.kind == "conv2d"}
    assert acts == {"elu", "mish", "softplus"}


# ---- int8 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_host_c_is_bit_exact_and_close_to_float(name, tmp_path):
    m, _, shape = model_and_graph(name)
    q = quantized(name)
    kinds = {op.kind for op in q.compute_ops()}
    assert "lut" in kinds and not kinds & {"elu", "mish", "exp", "sqrt", "rsqrt", "pow"}   # tables
    xs = inputs(shape, 4, 9)
    want = np.stack([np.concatenate([o.ravel() for o in interpret(q, [x])]) for x in xs])
    got = run_c(q, tmp_path, xs)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    ref = np.stack([torch_out(m, x).ravel() for x in xs])
    assert np.abs(want - ref).max() <= 0.05 * max(1.0, np.abs(ref).max())


def test_int8_log_softmax_uses_the_fixed_output_quantization():
    q = quantized("keyword")
    (op,) = [op for op in q.compute_ops() if op.kind == "log_softmax"]
    assert op.result.type.quant == quant.LOG_SOFTMAX_OUT
    assert op.operands[1].type.dtype == "i32" and op.operands[1].type.shape == (256,)


@pytest.mark.qemu
def test_int8_keyword_net_exact_on_cortex_m4(tmp_path):
    q = quantized("keyword")
    xs = inputs(model_and_graph("keyword")[2], 2, 3)
    want = np.stack([np.concatenate([o.ravel() for o in interpret(q, [x])]) for x in xs])
    got = run_c(q, tmp_path, xs, target="cortex-m4")
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# ---- the IR text -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_ir_text_round_trips_float_and_int8(name):
    for g in (model_and_graph(name)[1], quantized(name)):
        text = print_graph(g)
        again = parse(text)
        verify(again)
        assert print_graph(again) == text


# ---- int8 tables: NaN and inf ------------------------------------------------------------------

def _unary_graph(kind: str, attrs: dict | None = None) -> Graph:
    x = Value("x", TensorType((1, 64)))
    y = Value("y", TensorType((1, 64)))
    return Graph(kind, [x], [y], [Op(kind, [x], y, attrs or {})])


@pytest.mark.parametrize("kind,attrs", [("sqrt", {}), ("log", {}), ("pow", {"exponent": 1.5}),
                                        ("reciprocal", {}), ("rsqrt", {})])
def test_int8_table_of_nan_is_the_zero_point_and_inf_saturates(kind, attrs, tmp_path):
    g = _unary_graph(kind, attrs)
    calib = np.random.default_rng(0).uniform(-2.0, 2.0, (16, 1, 64)).astype(np.float32)
    q = PassManager("quantize-int8").run(g.copy(), PassContext(calib=calib))
    (lut,) = [op for op in q.compute_ops() if op.kind == "lut"]
    xq, yq = lut.operands[0].type.quant, lut.result.type.quant
    table = next(op.attrs["value"] for op in q.const_ops() if op.result is lut.operands[1])
    codes = np.arange(-128, 128)
    real = quant.dequantize(codes, xq)
    with np.errstate(all="ignore"):
        f = {"sqrt": np.sqrt, "log": np.log, "pow": lambda v: np.power(v, 1.5), "reciprocal": lambda v: 1 / v,
             "rsqrt": lambda v: 1 / np.sqrt(v)}[kind](real.astype(np.float64))
    assert np.all(table[np.isnan(f)] == yq.zero_point[0])
    assert np.all(table[np.isposinf(f)] == 127) and np.all(table[np.isneginf(f)] == -128)
    assert np.isnan(f).any() or np.isinf(f).any()
    xs = np.linspace(-2, 2, 64, dtype=np.float32).reshape(1, 1, 64)
    want = interpret(q, [xs[0]])[0]
    assert np.array_equal(run_c(q, tmp_path, xs)[0], want.ravel())


# ---- frontend errors ---------------------------------------------------------------------------

class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn,match", [
    (lambda x: x.max(dim=1)[1].float(), "uses output 1 of aten.max.dim"),
    (lambda x: F.adaptive_max_pool2d(x, 3), "uneven windows"),
    (lambda x: x ** x, "tensor exponent"),
    (lambda x: torch.ops.aten.elu(x, 1.0, 2.0, 1.0), "scale=2.0"),
])
def test_unsupported_forms_are_clear_errors(fn, match):
    with pytest.raises(FrontendError, match=match):
        from_torch(_Fn(fn).eval(), (torch.randn(1, 3, 4, 4),))


def test_reductions_over_everything_and_along_a_dim(tmp_path):
    """max() / min() / sum() of the whole tensor are 0-d; max(dim) keeps the values only."""
    class Reduce(nn.Module):
        def forward(self, x):
            v = x.max(dim=1).values + x.min(dim=1).values
            return torch.stack([x.max(), x.min(), x.sum(), v.sum()])

    m = Reduce().eval()
    x = torch.randn(1, 3, 5)
    g = from_torch(m, (x,))
    assert {"amax", "amin", "sum"} <= {op.kind for op in g.compute_ops()}
    want = torch_out(m, x.numpy())
    assert_close(interpret(g, [x.numpy()])[0], want, 1e-5)
    assert_close(run_c(g, tmp_path, x.numpy()[None]).reshape(want.shape), want, 1e-5)


# ---- prune-channels through a per-channel PReLU ----------------------------------------------------

def test_prune_channels_slices_the_prelu_slopes():
    """conv -> PReLU(8) -> conv: halving the first conv's filters slices the slopes the same way; the
    kept channels of the PReLU's output are unchanged."""
    from tinyc.interpreter import run_all
    from tinyc.passes.channels import ChannelAnalysis, filter_norms
    from tinyc.passes.prune_channels import choose_kept, kept_count

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.PReLU(8)
            self.conv2 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.conv2(self.act(self.conv1(x)))

    m = _seeded(Net(), 4)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
    g = PassManager("fuse").run(from_torch(m, (torch.from_numpy(x),)))
    a = ChannelAnalysis(g)
    (group,) = [grp for grp in a.groups if not grp.frozen]
    kept = choose_kept(group, filter_norms(a, group, "l1"), kept_count(group, 0.5))
    out = PassManager("prune-channels{ratio=0.5}").run(g.copy())
    (prelu,) = [op for op in out.compute_ops() if op.kind == "prelu"]
    assert prelu.operands[1].type.shape == (4,) and prelu.result.type.shape[1] == 4
    name = prelu.result.name
    np.testing.assert_allclose(run_all(out, [x])[name], run_all(g, [x])[name][:, kept], rtol=1e-6, atol=1e-6)
