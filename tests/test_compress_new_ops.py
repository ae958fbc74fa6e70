"""Weight-level compression on the new ops (issue 10 item 3): prune-weights, share-weights and svd
on gru / lstm weight matrices (named by the registry's weight_operands facet, not by op kind)
and on the linears of attention (a TransformerEncoderLayer), then distill through them. Each pass
reaches the asked sparsity / codebook size / rank on the recurrent weights, the float result is
exact where the math says it is (prune 0 %, a codebook holding every value, svd at full rank up
to float32 rounding of the factors, svd at rank r = the model with W_ih replaced by its rank-r
truncation), and the int8 C build on the host is bit-exact with the interpreter afterwards."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from helpers import assert_close, zoo_graph
from test_int8_backend import assert_exact
from test_recurrent import _import
from tinyc.backends.c_ops_packed import describe
from tinyc.evaluate import make_context
from tinyc.interpreter import run, run_all
from tinyc.ops import OPS
from tinyc.ops.core import WeightOperand
from tinyc.passes import PassContext
from tinyc.passes.svd import factorize, factors
from tinyc.passmanager import PassManager

SHAPES = {"gru_kws": (49, 10), "lstm_imu": (32, 6), "bigru": (7, 2, 8), "lstm_state": (12, 6)}


@functools.lru_cache(maxsize=None)
def _model(name):
    """(float graph, one input) of a test_recurrent model; callers copy the graph."""
    _, x, graph = _import(name)
    return graph, x.numpy()


def graph_of(name):
    g, x = _model(name)
    return g.copy(), x


def recurrent_ops(graph):
    return [op for op in graph.compute_ops() if any(w.dense for w in OPS[op.kind].weights(op))]


def weight_arrays(graph, op):
    """role -> the array of each registry weight matrix of `op` (constants only)."""
    return {w.role: graph.const_value(op.operands[w.slot]) for w in OPS[op.kind].weights(op)}


def passes(graph, spec, **ctx):
    c = PassContext(**ctx)
    return PassManager(spec).run(graph, c), c


def quantize(graph, name, rows=16):
    calib = np.random.default_rng(1).standard_normal((rows, *SHAPES[name])).astype(np.float32)
    return PassManager("fuse,quantize-int8").run(graph.copy(), PassContext(calib=calib))


def outputs(graph, x):
    return np.concatenate([np.asarray(o, np.float64).ravel() for o in run(graph, [x])])


# ---- the facet -------------------------------------------------------------------------------------

def test_registry_names_each_direction_s_weight_matrices():
    g, _ = graph_of("bigru")
    for op in recurrent_ops(g):
        ws = OPS[op.kind].weights(op)
        assert [w.role for w in ws] == ["w_ih", "w_hh", "w_ih.reverse", "w_hh.reverse"]
        assert [w.projects_input for w in ws] == [True, False, True, False] and all(w.dense for w in ws)
        f = op.operands[0].type.shape[-1]
        assert [op.operands[w.slot].type.shape for w in ws] == [(48, f), (48, 16)] * 2   # 3 gates x 16
    layers = [op for op in g.compute_ops() if OPS[op.kind].weights(op) and not recurrent_ops_has(op)]
    assert layers and all(OPS[op.kind].weights(op) == (WeightOperand(1, "weight"),) for op in layers)


def recurrent_ops_has(op):
    return any(w.dense for w in OPS[op.kind].weights(op))


# ---- prune-weights ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gru_kws", "lstm_imu"])
def test_prune_reaches_the_sparsity_on_recurrent_weights_and_int8_c_is_exact(name, tmp_path):
    g, x = graph_of(name)
    (rnn,) = recurrent_ops(g)
    # 0 %: no weight changes, so the outputs are the same bits
    p0, _ = passes(g.copy(), "prune-weights{sparsity=0}")
    assert np.array_equal(outputs(p0, x), outputs(g, x))

    # per matrix: each of w_ih, w_hh (and the head) has exactly round(0.6 n) zeros
    pl, ctx = passes(g.copy(), "prune-weights{sparsity=0.6 scope=layer}")
    (op,) = recurrent_ops(pl)
    for role, a in weight_arrays(pl, op).items():
        assert np.count_nonzero(a == 0) == int(np.floor(0.6 * a.size + 0.5)), role
        assert ctx.stats["prune-weights"]["layers"][f"{rnn.result.name}.{role}"]["storage"].startswith("dense")
    assert any(f"{rnn.result.name}.w_ih" in n and "stored dense" in n for n in ctx.notes)

    # global: one threshold over the recurrent and linear weights, exactly round(0.6 n) in all
    pg, ctx = passes(g.copy(), "prune-weights{sparsity=0.6}")
    (op,) = recurrent_ops(pg)
    mats = [a for o in pg.compute_ops() for a in weight_arrays(pg, o).values()]
    total = sum(a.size for a in mats)
    assert sum(np.count_nonzero(a == 0) for a in mats) == int(np.floor(0.6 * total + 0.5))
    zeros = {role: a == 0 for role, a in weight_arrays(pg, op).items()}
    assert all(m.any() for m in zeros.values())          # the recurrent matrices took their share
    assert not np.array_equal(outputs(pg, x), outputs(g, x))

    # int8: the zeros stay zero codes, and the C build agrees with the interpreter bit for bit
    q = quantize(pg, name)
    (qop,) = recurrent_ops(q)
    for role, a in weight_arrays(q, qop).items():
        assert a.dtype == np.int8 and np.all(a[zeros[role]] == 0), role
    assert rnn.result.name not in describe(q)          # no packed format: the kernel reads dense int8
    assert_exact(q, tmp_path, rows=2)


# ---- share-weights -------------------------------------------------------------------------------------

def test_share_with_a_codebook_holding_every_row_value_is_exact():
    # per channel, 2^8 entries: every row of the gru (10 or 64 weights) and the head (64) fits its
    # own codebook, so decode gives back the same float32 values
    g, x = graph_of("gru_kws")
    s, ctx = passes(g.copy(), "share-weights{bits=8 per-channel=true}")
    (rnn,) = recurrent_ops(g)
    assert {f"{rnn.result.name}.w_ih", f"{rnn.result.name}.w_hh"} <= set(ctx.stats["share-weights"]["layers"])
    assert np.array_equal(outputs(s, x), outputs(g, x))


def test_share_clusters_pruned_lstm_weights_says_they_stay_dense_and_int8_c_is_exact(tmp_path):
    g, x = graph_of("lstm_imu")
    pruned, _ = passes(g.copy(), "prune-weights{sparsity=0.5}")
    (before,) = recurrent_ops(pruned)
    w0 = weight_arrays(pruned, before)
    s, ctx = passes(pruned.copy(), "share-weights{bits=4}")
    (op,) = recurrent_ops(s)
    st = ctx.stats["share-weights"]
    for role, a in w0.items():
        (slot,) = [w.slot for w in OPS[op.kind].weights(op) if w.role == role]
        decoded = run_all(s, [x])[op.operands[slot].name]
        assert len(np.unique(decoded)) <= 16 and np.array_equal(decoded == 0, a == 0), role   # zeros stay
        info = st["layers"][f"{op.result.name}.{role}"]
        # honest storage: decoded and dense (4 bytes a float weight), more than the IR's index + codebook
        assert info["storage"].startswith("dense f32") and info["stored_bytes"] == 4 * a.size > info["ir_bytes"]
    assert set(st["stored_dense"]) == {f"{op.result.name}.w_ih", f"{op.result.name}.w_hh"}
    assert any("no fewer bytes" in n for n in ctx.notes)
    assert "storage" in st["layers"]["linear"] and "stored_bytes" not in st["layers"]["linear"]
    q = quantize(s, "lstm_imu")
    assert op.result.name not in describe(q)
    assert_exact(q, tmp_path, rows=2)


def test_share_after_int8_keeps_codes_exactly_with_8_bits_and_c_is_exact_with_4(tmp_path):
    g, x = graph_of("gru_kws")
    q = quantize(g, "gru_kws")
    # int8 codes take at most 255 values: a 2^8 codebook per matrix holds them all
    s8, _ = passes(q.copy(), "share-weights{bits=8}")
    assert np.array_equal(outputs(s8, x), outputs(q, x))
    s4, ctx = passes(q.copy(), "share-weights{bits=4}")
    (op,) = recurrent_ops(s4)
    assert all(ctx.stats["share-weights"]["layers"][f"{op.result.name}.{r}"]["storage"].startswith("dense i8")
               for r in ("w_ih", "w_hh"))
    assert_exact(s4, tmp_path, rows=2)


# ---- svd -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bigru", "lstm_state"])
def test_svd_at_full_rank_is_exact_up_to_float32_factors(name):
    # bigru: both directions' w_ih factored jointly (they read one x); lstm_state: the cell-state op
    # of each layer shares x and w_ih with the sequence op and is rewritten with it
    g, x = graph_of(name)
    from tinyc.passes.svd import factorable
    ops = [op for op in factorable(g) if op in recurrent_ops(g)]
    fs = {op.result.name: factors(g, op) for op in ops}
    full = factorize(g, {n: len(f.s) for n, f in fs.items()}, fs)
    assert_close(outputs(full, x), outputs(g, x), rtol=1e-4)
    for op in recurrent_ops(full):
        producer = full.producers()[id(op.operands[0])]
        assert producer.result.name.endswith(".lowrank") and len(producer.operands) == 2   # a linear, no bias
    if name == "lstm_state":
        assert len(recurrent_ops(full)) == 4 and len(ops) == 2   # 2 layers x (sequence, cell)


def test_svd_factors_w_ih_to_the_rank_keeps_w_hh_and_int8_c_is_exact(tmp_path):
    g, x = graph_of("gru_kws")
    (rnn,) = recurrent_ops(g)
    w = weight_arrays(g, rnn)
    out, ctx = passes(g.copy(), f"svd{{rank=4 min-size=0 layers={rnn.result.name}}}")
    st = ctx.stats["svd"]["layers"][rnn.result.name]
    u, s, vt = np.linalg.svd(w["w_ih"].astype(np.float64), full_matrices=False)
    truncated = (u[:, :4] * s[:4]) @ vt[:4]
    assert st["rank"] == 4 and st["full_rank"] == 10
    assert st["error"] == pytest.approx(np.linalg.norm(w["w_ih"] - truncated) / np.linalg.norm(w["w_ih"]), rel=1e-9)
    (op,) = recurrent_ops(out)
    after = weight_arrays(out, op)
    assert after["w_ih"].shape == (192, 4) and np.array_equal(after["w_hh"], w["w_hh"])
    assert any("w_hh stay dense" in n for n in ctx.notes)
    # the split graph computes the model with W_ih replaced by its rank-4 truncation
    want = g.copy()
    (ref,) = recurrent_ops(want)
    want.producers()[id(ref.operands[OPS[ref.kind].weights(ref)[0].slot])].attrs["value"] = truncated.astype(np.float32)
    assert_close(outputs(out, x), outputs(want, x), rtol=1e-4)
    assert_exact(quantize(out, "gru_kws"), tmp_path, rows=2)


# ---- attention ---------------------------------------------------------------------------------------

def test_transformer_linears_are_pruned_shared_and_split_and_int8_c_is_exact(tmp_path):
    g = zoo_graph("transformer_encoder").copy()
    linears = [op.result.name for op in g.compute_ops() if OPS[op.kind].weights(op)]
    assert len(linears) == 5             # in_proj (q, k, v), out_proj, feed-forward x 2, head
    _, ctx = passes(g.copy(), "prune-weights{sparsity=0.5}")
    assert set(ctx.stats["prune-weights"]["layers"]) == set(linears)
    _, ctx = passes(g.copy(), "svd{rank=16}")
    ranks = {n: v["rank"] for n, v in ctx.stats["svd"]["layers"].items()}
    assert ranks == {n: 16 for n in linears[:4]}           # the 64 -> 10 head: no rank 16 saves
    out, ctx = passes(g.copy(), "svd{rank=16},prune-weights{sparsity=0.5},share-weights{bits=4}")
    assert len(ctx.stats["share-weights"]["layers"]) == 9 and not ctx.stats["share-weights"]["stored_dense"]
    calib = np.random.default_rng(1).standard_normal((16, 16, 64)).astype(np.float32)
    q = PassManager("fuse,quantize-int8").run(out, PassContext(calib=calib))
    assert_exact(q, tmp_path, rows=2)


# ---- distill -----------------------------------------------------------------------------------------

def _distilled(teacher, graph, shape, spec):
    rng = np.random.default_rng(0)
    ctx = make_context(teacher, train=rng.standard_normal((256, *shape)).astype(np.float32),
                       eval_inputs=rng.standard_normal((128, *shape)).astype(np.float32))
    out = PassManager(spec).run(graph.copy(), ctx)
    return out, ctx


def zero_masks(graph):
    return {op.result.name: op.attrs["value"] == 0 for op in graph.const_ops()}


def test_distill_through_a_pruned_gru_recovers_agreement_and_keeps_its_zeros():
    g, _ = graph_of("gru_kws")
    pruned, _ = passes(g.copy(), "prune-weights{sparsity=0.7}")
    out, ctx = _distilled(g, pruned, SHAPES["gru_kws"], "distill{epochs=3}")
    st = ctx.stats["distill"]
    assert st["loss_after"] < st["loss_before"] and not st["kept_weights"]
    assert st["score_after"] > st["score_before"]      # top-1 agreement with the unpruned model
    (op,) = recurrent_ops(out)
    before, after = zero_masks(pruned), zero_masks(out)
    for w in OPS[op.kind].weights(op):
        name = op.operands[w.slot].name
        assert after[name].any() and np.array_equal(before[name], after[name]), w.role
    assert st["masked_zero_weights"] == sum(int(m.sum()) for n, m in before.items() if n in
                                            {o.operands[w.slot].name for o in out.compute_ops()
                                             for w in OPS[o.kind].weights(o)})


def test_distill_through_layer_norm_and_attention_trains_a_zero_norm_bias():
    g = zoo_graph("transformer_encoder").copy()
    pruned, _ = passes(g.copy(), "prune-weights{sparsity=0.5}")
    out, ctx = _distilled(g, pruned, (16, 64), "distill{epochs=2}")
    st = ctx.stats["distill"]
    assert st["loss_after"] < st["loss_before"] and not st["kept_weights"]
    before, after = zero_masks(pruned), zero_masks(out)
    weights = {o.operands[w.slot].name for o in out.compute_ops() for w in OPS[o.kind].weights(o)}
    assert all(np.array_equal(before[n], after[n]) for n in weights)          # pruned zeros stay
    # a LayerNorm bias initialised to zero is a parameter, not a pruned connection: it trains
    norm_bias = [n for n in before if n.endswith("norm1.bias")]
    assert norm_bias and before[norm_bias[0]].all() and not after[norm_bias[0]].all()
