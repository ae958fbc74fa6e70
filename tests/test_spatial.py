"""Spatial and attention models end to end: ConvTranspose1d/2d, nn.Upsample / F.interpolate (nearest,
bilinear), F.scaled_dot_product_attention (causal, boolean and -inf masks), nn.MultiheadAttention and a
one-layer nn.TransformerEncoder, written as a third party would.

Each model: imported with from_torch; the float interpreter and the float C bundle on the host equal
PyTorch (rtol 1e-4 of the output scale); quantize-int8, then the int8 C bundle on the host equals the
integer interpreter bit for bit; the IR text round trip (float and int8) prints the same text. One
model (the U-Net) also runs int8 on QEMU Cortex-M4, bit-exact."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import assert_close
from tinyc import text
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.errors import FrontendError
from tinyc.frontend import from_torch
from tinyc.interpreter import run
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager

RTOL = 1e-4


# ---- models -----------------------------------------------------------------------------------

class UNet(nn.Module):
    """Two levels: conv down, maxpool, conv, ConvTranspose2d up, skip cat, conv, bilinear upsample head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.down = nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.head = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        e = self.enc(x)
        m = self.mid(self.pool(e))
        d = self.dec(torch.cat([self.up(m), e], dim=1))
        return self.out(self.head(self.down(d)))


class Decoder1d(nn.Module):
    """ConvTranspose1d with stride, padding and output_padding, grouped, then a linear upsample."""

    def __init__(self):
        super().__init__()
        self.a = nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.b = nn.ConvTranspose1d(6, 4, 4, stride=2, padding=1, groups=2, dilation=1)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return F.interpolate(y, scale_factor=1.5, mode="linear", align_corners=True)


class Nearest(nn.Module):
    """nn.Upsample(scale_factor=2) and F.interpolate(size=...) (nearest), around convs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.up(torch.relu(self.conv(x)))
        return F.interpolate(self.conv2(y), size=(11, 13)) + 0.5


class Attention(nn.Module):
    """Single-head attention projections around F.scaled_dot_product_attention, causal and masked."""

    def __init__(self, dim=16, heads=2, tokens=8):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        mask = torch.rand(tokens, tokens, generator=torch.Generator().manual_seed(3)) > 0.4
        mask |= torch.eye(tokens, dtype=torch.bool)
        self.register_buffer("mask", mask)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        b = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, scale=0.3)
        return self.proj((a + b).transpose(1, 2).reshape(n, t, d))


class MHA(nn.Module):
    """nn.MultiheadAttention, sequence first, with a causal float mask and a key padding mask, returning
    the output and the head-averaged weights (need_weights: the masks arrive as an add of -inf, which
    quantize-int8 turns into masked_softmax)."""

    def __init__(self, tokens=6):
        super().__init__()
        self.m = nn.MultiheadAttention(16, 4)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(tokens))
        pad = torch.zeros(1, tokens)
        pad[:, tokens - 2:] = float("-inf")
        self.register_buffer("padding", pad)

    def forward(self, x):
        y, w = self.m(x, x, x, attn_mask=self.causal, key_padding_mask=self.padding, need_weights=True)
        return y + w.transpose(0, 1)[..., :1]     # [N, L, S] weights -> [L, N, 1]


def encoder():
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)


MODELS = {
    "unet": (UNet, (1, 1, 32, 32)),
    "decoder1d": (Decoder1d, (1, 4, 10)),
    "nearest": (Nearest, (1, 3, 5, 6)),
    "attention": (Attention, (1, 8, 16)),
    "mha": (MHA, (6, 1, 16)),
    "encoder": (encoder, (1, 16, 64)),
}


# ---- helpers -----------------------------------------------------------------------------------

def build(name):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    for m in model.modules():       # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = from_torch(model, (x,), name=name)
    with torch.no_grad():
        want = model(x).numpy()
    return model, g, x.numpy(), want


def c_host(graph, xs: np.ndarray, out) -> np.ndarray:
    """The bundle's outputs on the host (under ASan/UBSan) for each row of xs (one input)."""
    emit_bundle(graph, out, target_name="host")
    write_target_files(out, "host", "model")
    return run_model(out, "host", "model", xs.reshape(len(xs), -1), sanitize=True)


def quantized(graph, shape, seed=1):
    rng = np.random.default_rng(seed)
    calib = rng.standard_normal((16, *shape)).astype(np.float32)
    return PassManager("fuse,quantize-int8").run(graph.copy(), PassContext(calib=calib))


def round_trips(graph) -> None:
    printed = text.print_graph(graph)
    assert text.print_graph(text.parse(printed)) == printed


# ---- end to end ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_and_int8_end_to_end(name, tmp_path):
    model, g, x, want = build(name)
    (got,) = run(g, [x])
    assert_close(got, want, RTOL)
    round_trips(g)
    assert_close(c_host(g, x[None], tmp_path / "f32")[0].reshape(want.shape), want, RTOL)

    q = quantized(g, x.shape)
    round_trips(q)
    rows = np.random.default_rng(7).standard_normal((2, *x.shape)).astype(np.float32)
    got8 = c_host(q, rows, tmp_path / "i8")
    for r in range(len(rows)):
        (want8,) = run(q, [rows[r]])
        assert np.array_equal(got8[r], want8.ravel()), f"row {r}: int8 C differs from the interpreter"
    (y8,) = run(q, [x])     # int8 stays close to PyTorch (a sanity bound, not the bit-exactness check)
    assert np.abs(y8 - want).max() <= 0.25 * np.abs(want).max() + 0.05


@pytest.mark.qemu
def test_unet_int8_on_cortex_m4_is_bit_exact(tmp_path):
    _, g, x, _ = build("unet")
    q = quantized(g, x.shape)
    emit_bundle(q, tmp_path, target_name="cortex-m4")
    write_target_files(tmp_path, "cortex-m4", "model")
    rows = np.random.default_rng(5).standard_normal((2, *x.shape)).astype(np.float32)
    got = run_model(tmp_path, "cortex-m4", "model", rows.reshape(2, -1))
    for r in range(2):
        (want,) = run(q, [rows[r]])
        assert np.array_equal(got[r].view(np.uint32), want.ravel().view(np.uint32))


# ---- what the importer produces and rejects ---------------------------------------------------------

def test_ir_ops():
    kinds = lambda name: sorted({op.kind for op in build(name)[1].compute_ops()})  # noqa: E731
    assert "conv_transpose2d" in kinds("unet") and "resize" in kinds("unet")
    assert "masked_softmax" in kinds("attention")
    _, g, x, _ = build("mha")       # need_weights: softmax(scores + mask) in float, masked_softmax in int8
    assert "softmax" in {op.kind for op in g.compute_ops()}
    assert "masked_softmax" in {op.kind for op in quantized(g, x.shape).compute_ops()}


class _SDPA(nn.Module):
    def __init__(self, mask=None, **kw):
        super().__init__()
        self.kw = kw
        self.register_buffer("mask", mask)

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, **self.kw)


def _qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 2, 4, 8, generator=g) for _ in range(3))


def test_float_masks_minus_inf_and_large_negatives_are_masked_positions():
    m = torch.zeros(4, 4)
    m[0, 1:] = float("-inf")
    m[2, :2] = -1e9
    m[3] = torch.tensor([0.5, -0.25, 1.0, 0.0])   # a finite bias stays additive
    model = _SDPA(m).eval()
    g = from_torch(model, _qkv())
    assert [op.kind for op in g.compute_ops()] == ["transpose", "matmul", "mul", "add", "masked_softmax", "matmul"]
    (got,) = run(g, [t.numpy() for t in _qkv()])
    with torch.no_grad():
        assert_close(got, model(*_qkv()).numpy(), RTOL)
    calib = [np.random.default_rng(i).standard_normal((8, 1, 2, 4, 8)).astype(np.float32) for i in range(3)]
    q = PassManager("quantize-int8").run(g.copy(), PassContext(calib=calib))
    scores = next(op for op in q.compute_ops() if op.kind == "masked_softmax").operands[0]
    assert scores.type.quant.scale[0] < 0.1       # the calibrated range holds no -1e9 / -inf


def test_rejections_name_the_problem():
    with pytest.raises(FrontendError, match="masks every key"):
        m = torch.ones(4, 4, dtype=torch.bool)
        m[1] = False
        from_torch(_SDPA(m), _qkv())
    with pytest.raises(FrontendError, match="dropout_p"):
        from_torch(_SDPA(dropout_p=0.1), _qkv())
