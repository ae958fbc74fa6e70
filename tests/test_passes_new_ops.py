"""prune-channels and fuse through the ops beyond convnets: gru/lstm hidden units, group_norm in whole
groups, layer_norm as a barrier, conv_transpose2d as a layer, resize and the elementwise/math ops,
embedding columns, transformer FFN hidden units and whole attention heads; fuse of linear -> GELU
over [N, T, D] and of batch_norm/activations after conv_transpose2d.

Exactness: channels the pass removes are first made dead in the original (their producer's rows
zeroed: a zero filter stays zero through relu/gelu/resize/prelu/max/sum/amax, a GRU/LSTM unit with
zero rows stays at its zero initial state, a head with zero q/k/v rows and output columns adds
nothing), so the pruned graph must compute what the original did on everything, and the kept
channels of intermediate values must be unchanged; MACs must shrink. The int8 builds of a pruned
GRU and a pruned transformer are bit-exact with the interpreter on the host."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import assert_close
from test_int8_backend import assert_exact
from tinyc.frontend import from_torch
from tinyc.interpreter import run, run_all
from tinyc.ops.recurrent import op_layout
from tinyc.passes import PassContext, parse_pipeline
from tinyc.passes.channels import ChannelAnalysis, filter_norms
from tinyc.passes.heads import find_heads, head_norms
from tinyc.passes.prune_channels import choose_kept, kept_count
from tinyc.passmanager import PassManager
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify


def imported(model, *example):
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.uniform_(-0.5, 0.5)
    return PassManager("fuse").run(from_torch(model.eval(), tuple(example)))


def prune(graph, spec="prune-channels{ratio=0.5}"):
    (p,) = parse_pipeline(spec)
    ctx = PassContext()
    out = p.apply(graph, ctx)
    verify(out)
    assert print_graph(parse(print_graph(out))) == print_graph(out)
    return out, ctx


def const_values(graph):
    return {op.result.name: op.attrs["value"] for op in graph.const_ops()}


def kill(graph):
    """A copy where what prune-channels{ratio=0.5} removes is dead: per prunable group the channels
    the pass would drop (lowest l1 norms) get zero rows in their producers (conv/linear/conv_transpose
    filters and bias, every gate row of a recurrent unit, embedding columns); per attention region
    the dropped heads get zero q/k/v rows and output-projection columns. Returns (graph, kept)."""
    g = graph.copy()
    a = ChannelAnalysis(g)
    kept = {}
    for grp in a.groups:
        if grp.frozen:
            continue
        k = choose_kept(grp, filter_norms(a, grp, "l1"), kept_count(grp, 0.5))
        dead = np.setdiff1d(np.arange(grp.size), k)
        kept[grp.key] = k
        for p in grp.producers:
            rule = p.kind
            if rule in ("gru", "lstm"):
                lay = op_layout(p)
                for d in range(lay.dirs):
                    units = dead[(dead >= d * lay.hidden) & (dead < (d + 1) * lay.hidden)] - d * lay.hidden
                    rows = (np.arange(lay.gates)[:, None] * lay.hidden + units).ravel()
                    for i in lay.weights(d):
                        a.consts[id(p.operands[i])].attrs["value"][rows] = 0.0
            elif rule == "embedding":
                a.consts[id(p.operands[0])].attrs["value"][:, dead] = 0.0
            else:
                for v in p.operands[1:]:
                    a.consts[id(v)].attrs["value"][dead] = 0.0
    for r in find_heads(g).regions:
        k = choose_kept_heads(g, r)
        kept[r.key] = k
        for h in sorted(set(range(r.heads)) - set(k.tolist())):
            for lin in r.linears:
                rows = r.features[h][id(lin)]
                for v in lin.operands[1:]:
                    a.consts[id(v)].attrs["value"][rows] = 0.0
            a.consts[id(r.out.operands[1])].attrs["value"][:, r.columns[h]] = 0.0
    return g, kept


def choose_kept_heads(graph, region):
    from tinyc.passes.channels import ChannelGroup
    grp = ChannelGroup(region.key, region.heads, [region.linears[0]])
    return choose_kept(grp, head_norms(graph, region, "l1"), kept_count(grp, 0.5))


def assert_prunes_exactly(graph, xs, values=()):
    """Kill what the pass removes, prune: same outputs, smaller MACs; `values`: (name, axis, group
    key) of intermediate values whose kept channels must be unchanged."""
    dead, kept = kill(graph)
    out, ctx = prune(dead)
    for got, want in zip(run(out, xs), run(dead, xs)):
        assert_close(got, want, rtol=1e-5)
    assert graph_stats(out).macs < graph_stats(dead).macs and graph_stats(out).params < graph_stats(dead).params
    before, after = run_all(dead, xs), run_all(out, xs)
    for name, axis, key in values:
        want = np.take(before[name], kept[key], axis=axis)
        assert_close(after[name], want, rtol=1e-5)
    return out, ctx, kept


# ---- recurrent hidden units -------------------------------------------------------------------------

class BiGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 12, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(24, 4)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


class LSTMZeroState(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 10, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        h0 = torch.zeros(1, x.shape[0], 10)
        out, _ = self.lstm(x, (h0, torch.zeros_like(h0)))
        return self.fc(F.relu(out.mean(dim=1)))


@pytest.mark.parametrize("model, shape", [(BiGRU, (1, 7, 5)), (LSTMZeroState, (1, 9, 6))])
def test_recurrent_hidden_units_prune_exactly(model, shape):
    g = imported(model(), torch.randn(*shape))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    rec = [op for op in g.compute_ops() if op.kind in ("gru", "lstm")]
    values = [(op.result.name, 2, op.result.name) for op in rec]
    out, _, kept = assert_prunes_exactly(g, [x], values)
    for op in out.compute_ops():
        if op.kind in ("gru", "lstm"):
            assert op.attrs["hidden"] == {"gru": 6, "lstm": 5}[op.kind]
    if model is BiGRU:   # the same count per direction, each direction its own units
        k = kept[rec[0].result.name]
        assert len(k[k < 12]) == len(k[k >= 12]) == 6


def test_recurrent_state_from_outside_freezes_the_hidden_size():
    class StateIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru, self.fc = nn.GRU(4, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x, h0):
            return self.fc(self.gru(x, h0)[0][:, -1])

    g = imported(StateIn(), torch.randn(1, 5, 4), torch.randn(1, 1, 8))
    (grp,) = [gr for gr in ChannelAnalysis(g).groups if gr.key == "gru"]
    assert grp.frozen and "not a constant it can shrink" in grp.frozen[0]


# ---- group_norm, layer_norm ---------------------------------------------------------------------------

class ConvNorm(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.c1, self.norm, self.c2 = nn.Conv2d(3, 8, 3, padding=1), norm, nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(F.relu(self.norm(self.c1(x))))


def test_group_norm_prunes_whole_groups_and_kept_channels_compute_what_they_did():
    g = imported(ConvNorm(nn.GroupNorm(4, 8)), torch.randn(1, 3, 6, 6))
    (grp,) = [gr for gr in ChannelAnalysis(g).groups if gr.key == "conv2d"]
    assert grp.unit == 2 and not grp.frozen
    kept = choose_kept(grp, filter_norms(ChannelAnalysis(g), grp, "l1"), kept_count(grp, 0.5))
    assert len(kept) == 4 and all(kept[0::2] % 2 == 0) and all(kept[1::2] == kept[0::2] + 1)   # whole groups
    out, _ = prune(g)
    (norm,) = [op for op in out.compute_ops() if op.kind == "group_norm"]
    assert norm.attrs["groups"] == 2 and graph_stats(out).macs < graph_stats(g).macs
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)
    want = run_all(g, [x])[norm.result.name][:, kept]
    assert_close(run_all(out, [x])[norm.result.name], want, rtol=1e-6)


class ChannelsLastLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.norm, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.norm(self.c1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.c2(F.relu(y))


@pytest.mark.parametrize("model, reason", [(lambda: ConvNorm(nn.GroupNorm(1, 8)), "group_norm (groups=1)"),
                                           (ChannelsLastLayerNorm, "layer_norm normalizes over them")])
def test_norms_over_all_channels_are_barriers_named_in_the_notes(model, reason):
    g = imported(model(), torch.randn(1, 3, 6, 6))
    out, ctx = prune(g)
    summary = next(n for n in ctx.notes if "not pruned:" in n)
    assert f"conv2d (%" in summary and reason in summary
    assert [op.result.type for op in out.compute_ops() if op.result.name == "conv2d"][0].shape[1] == 8


# ---- conv_transpose2d, resize and the elementwise/math ops ----------------------------------------------

class UpMath(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.bn = nn.BatchNorm2d(6)
        self.prelu = nn.PReLU(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y = F.gelu(self.bn(self.up(F.relu(self.c1(x)))))
        y = self.prelu(F.interpolate(y, scale_factor=2.0, mode="bilinear"))
        y = torch.flip(torch.maximum(y, 0.5 * y), [3])[:, :, 1:]
        z = y.sum(dim=(2, 3)) + y.amax(dim=(2, 3))
        return F.log_softmax(self.fc(z), dim=1)


def test_conv_transpose2d_is_a_layer_and_resize_and_math_ops_keep_channels():
    m = UpMath()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    g = imported(m, torch.randn(1, 2, 4, 4))
    kinds = [op.kind for op in g.compute_ops()]
    assert "batch_norm" not in kinds      # folded into conv_transpose2d
    (up,) = [op for op in g.compute_ops() if op.kind == "conv_transpose2d"]
    assert up.attrs["act"] == "gelu"
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 4)).astype(np.float32)
    out, _, _ = assert_prunes_exactly(g, [x], [("conv2d", 1, "conv2d"), (up.result.name, 1, up.result.name)])
    shapes = {op.result.name: op.result.type.shape for op in out.ops}
    assert shapes[up.result.name][1] == 3 and shapes[up.operands[1].name] == (3, 4, 2, 2)


# ---- embedding ----------------------------------------------------------------------------------------

class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc1, self.fc2 = nn.Embedding(20, 16), nn.Linear(16, 12), nn.Linear(12, 3)

    def forward(self, ids):
        return self.fc2(F.relu(self.fc1(self.emb(ids))).mean(dim=1))


def test_embedding_columns_prune_when_everything_downstream_allows():
    g = imported(Tokens(), torch.randint(0, 20, (1, 6)))
    ids = np.random.default_rng(4).integers(0, 20, (1, 6)).astype(np.int32)
    out, _, _ = assert_prunes_exactly(g, [ids], [("embedding", 2, "embedding")])
    assert [v for k, v in const_values(out).items() if k.startswith("emb")][0].shape == (20, 8)


# ---- transformers: FFN hidden units and attention heads ----------------------------------------------

class SDPABlock(nn.Module):
    """Hand-written attention: separate q/k/v linears, view/transpose into heads, SDPA, out projection,
    then a GELU FFN; mean over tokens and a head."""

    def __init__(self, d=16, heads=4):
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ff1, self.ff2, self.head = nn.Linear(d, 32), nn.Linear(32, d), nn.Linear(d, 3)

    def forward(self, x):
        n, t, d = x.shape
        split = lambda y: y.view(n, t, self.h, d // self.h).transpose(1, 2)
        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(n, t, d))
        x = x + self.ff2(F.gelu(self.ff1(x)))
        return self.head(x.mean(dim=1))


def encoder_layer():
    return nn.Sequential(nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation="gelu", batch_first=True))


class Pool(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body, self.head = body, nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=1))


@pytest.mark.parametrize("make", [SDPABlock, lambda: Pool(encoder_layer())], ids=["sdpa", "encoder_layer"])
def test_ffn_hidden_units_and_attention_heads_prune_exactly(make):
    g = imported(make(), torch.randn(1, 8, 16))
    ffn = [op for op in g.compute_ops() if op.kind == "linear" and op.attrs.get("act") == "gelu"]
    assert len(ffn) == 1 and ffn[0].result.type.rank == 3          # linear -> GELU fused over [N, T, D]
    (region,) = find_heads(g).regions
    assert region.heads == 4
    x = np.random.default_rng(5).standard_normal((1, 8, 16)).astype(np.float32)
    out, ctx, kept = assert_prunes_exactly(g, [x], [(ffn[0].result.name, 2, ffn[0].result.name)])
    (after,) = find_heads(out).regions
    assert after.heads == 2 and any("4 -> 2 heads" in n for n in ctx.notes)
    assert ctx.stats["prune-channels"]["layers"][region.key]["kept"] == 2


def test_attention_read_outside_its_projection_keeps_its_heads_and_says_why():
    class Leaky(SDPABlock):
        def forward(self, x):
            n, t, d = x.shape
            split = lambda y: y.view(n, t, self.h, d // self.h).transpose(1, 2)
            a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
            return self.head(self.o(a.transpose(1, 2).reshape(n, t, d)).mean(dim=1)), a

    g = imported(Leaky(), torch.randn(1, 8, 16))
    assert not find_heads(g).regions
    out, ctx = prune(g)
    assert any("attention heads not pruned" in n and "graph output" in n for n in ctx.notes)
    q = [op for op in out.compute_ops() if op.kind == "linear"][0]
    assert q.result.type.shape[-1] == 16


# ---- int8 builds of pruned models ----------------------------------------------------------------------

@pytest.mark.parametrize("make, shape", [(BiGRU, (1, 7, 5)), (SDPABlock, (1, 8, 16))], ids=["gru", "transformer"])
def test_pruned_int8_build_is_bit_exact_with_the_interpreter(make, shape, tmp_path):
    g = imported(make(), torch.randn(*shape))
    pruned, _ = prune(g)
    calib = np.random.default_rng(6).standard_normal((16, *shape[1:])).astype(np.float32)
    q = PassManager("quantize-int8").run(pruned, PassContext(calib=calib))
    assert graph_stats(q).macs < graph_stats(g).macs
    assert_exact(q, tmp_path, rows=2)


# ---- fuse -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act, fused", [(nn.ReLU(), "relu"), (nn.SiLU(), "silu"), (nn.Hardtanh(-1.0, 1.0), "clamp")])
def test_batch_norm_and_activation_after_conv_transpose2d_fuse(act, fused):
    m = nn.Sequential(nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(5), act)
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
        m[1].weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 4, 4)
    raw = from_torch(m.eval(), (x,))
    g = PassManager("fuse").run(raw.copy())
    (op,) = g.compute_ops()
    assert op.kind == "conv_transpose2d" and op.attrs["act"] == fused
    with torch.no_grad():
        want = m(x).numpy()
    assert_close(run(g, [x.numpy()])[0], want, rtol=1e-5)
    assert_close(run(g, [x.numpy()])[0], run(raw, [x.numpy()])[0], rtol=1e-6)
