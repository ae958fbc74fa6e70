"""The SMLAD kernels of the recurrent layers (runtime_c/tinyc_kernels_rnn.c: weights arranged in
blocks of 4 rows, the four requantization forms of the gate pre-activations, packed activation
tables) and of the int8 batched matmul (int16 panels with the zero points subtracted at packing,
2x2 output blocks): bit-exact with the integer interpreter at odd sizes (hidden 5, 7, 33; 1 and 3
input features; 1 and 3 heads; one time step), on the host (ASan/UBSan), on QEMU cortex-m4 (DSP
path: inline SMLAD/SXTB16 assembly) and cortex-m3 (portable C)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from test_planner import Builder
from tinyc.backends import c_ops_recurrent
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.interpreter import random_inputs, run as interpret
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager

GATES = {"gru": 3, "lstm": 4}


def _w(rng, *shape, scale=0.5):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def rnn(kind, n, t, f, h, dirs=1, states=0, result="sequence", equal_rows=False, tiny_row=False, seed=0):
    """x [n, t, f] -> one gru/lstm layer; `states` initial states as graph inputs (h0, then c0).
    equal_rows: every weight row has the same max |w| (one quantization scale: one S for all rows);
    tiny_row: row 1 (weights and bias) 1e-5 times smaller (its n far from the others')."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", (n, t, f))
    operands = [x] + [b.input(f"s{i}", (dirs, n, h)) for i in range(states)]
    g = GATES[kind]
    for d in range(dirs):
        for name, shape in ((f"w_ih{d}", (g * h, f)), (f"w_hh{d}", (g * h, h)), (f"b_ih{d}", (g * h,)),
                            (f"b_hh{d}", (g * h,))):
            w = _w(rng, *shape)
            if w.ndim == 2 and equal_rows:
                w = np.clip(w, -0.9, 0.9)
                w[:, 0] = 1.0
            if tiny_row:
                w[1] *= 1e-5
            operands.append(b.const(name, w))
    attrs = {"hidden": h, "bidirectional": dirs == 2}
    if result == "cell":
        attrs["result"] = "cell"
    y = b.op(kind, *operands, name="y", **attrs)
    return b.graph(y)


def attention(heads, tokens, dim, kv_tokens=None, seed=0):
    """Scores q k^T (k^T a transposed view), softmax, then attn v, over `heads` batched heads."""
    kv = kv_tokens or tokens
    b = Builder()
    q = b.input("q", (heads, tokens, dim))
    k = b.input("k", (heads, kv, dim))
    v = b.input("v", (heads, kv, dim))
    kt = b.op("transpose", k, name="kt", perm=[0, 2, 1])
    s = b.op("matmul", q, kt, name="scores")
    a = b.op("softmax", s, name="attn", axis=2)
    return b.graph(b.op("matmul", a, v, name="out"))


def matmul(a_shape, b_shape, **attrs):
    b = Builder()
    return b.graph(b.op("matmul", b.input("a", a_shape), b.input("b", b_shape), name="y", **attrs))


def quantize(graph, rows=16, seed=1):
    rng = np.random.default_rng(seed)
    calib = [rng.standard_normal((rows, *v.type.shape)).astype(np.float32) for v in graph.inputs]
    return PassManager("quantize-int8").run(graph, PassContext(calib=calib[0] if len(calib) == 1 else calib))


def assert_exact(graph, out_dir, target="host", rows=3, seed=7):
    emit_bundle(graph, out_dir, target_name=target)
    if target != "host":
        write_target_files(out_dir, target, "model")
    rng = np.random.default_rng(seed)
    samples = [random_inputs(graph, rng, scale=1.5) for _ in range(rows)]
    flat = np.stack([np.concatenate([x.ravel() for x in row]) for row in samples])
    got = run_model(out_dir, target, "model", flat, **({"sanitize": True} if target == "host" else {}))
    for r, xs in enumerate(samples):
        want = np.concatenate([np.asarray(o, np.float32).ravel() for o in interpret(graph, xs)])
        assert got[r].shape == want.shape
        bad = np.flatnonzero(got[r].view(np.uint32) != want.view(np.uint32))
        assert bad.size == 0, f"row {r}: {bad.size} of {want.size} outputs differ, first at {bad[:8]}"
    return (out_dir / "model.c").read_text()


def forms(source: str) -> tuple[int, int]:
    """The record modes (W_ih, W_hh) the emitter chose, read back from the parameter struct."""
    m = re.search(r"\.rq_x = \{(-?\d+),[^}]*\}, \.rq_h = \{(-?\d+),", source)
    return int(m.group(1)), int(m.group(2))


# ---- recurrent layers ----------------------------------------------------------------------------

RNN_CASES = {
    "gru_h5_f1_t1": ("gru", dict(n=1, t=1, f=1, h=5)),
    "gru_h7_f3_bi_h0": ("gru", dict(n=2, t=4, f=3, h=7, dirs=2, states=1)),
    "gru_h33_f3": ("gru", dict(n=1, t=5, f=3, h=33)),
    "lstm_h5_f3_t1": ("lstm", dict(n=2, t=1, f=3, h=5)),
    "lstm_h7_f1_bi_states": ("lstm", dict(n=1, t=3, f=1, h=7, dirs=2, states=2)),
    "lstm_h33_f3_cell": ("lstm", dict(n=1, t=4, f=3, h=33, states=2, result="cell")),
}


@pytest.mark.parametrize("case", sorted(RNN_CASES))
def test_recurrent_exact_on_host(case, tmp_path):
    kind, kw = RNN_CASES[case]
    assert_exact(quantize(rnn(kind, **kw)), tmp_path)


def test_recurrent_record_forms(tmp_path, monkeypatch):
    """Every form of the pre-activation records: one S for all rows (mode 0), per-row shifts
    (mode 1), per-row R and S (mode 2), 64 bits (mode 3); and the 64-bit output conversions."""
    src = assert_exact(quantize(rnn("gru", 1, 3, 3, 7, equal_rows=True)), tmp_path / "equal")
    assert forms(src) == (0, 0)
    src = assert_exact(quantize(rnn("lstm", 1, 3, 3, 5)), tmp_path / "random")
    assert 1 in forms(src)
    src = assert_exact(quantize(rnn("gru", 1, 3, 3, 5, tiny_row=True)), tmp_path / "tiny")
    assert forms(src) == (2, 2)

    chosen = c_ops_recurrent._preact_form

    def form(mode):
        def pick(n, bound):
            if mode == 2:
                shift = c_ops_recurrent._fast_shift(n, bound)
                assert shift >= 0
                return [2, shift, 0, 0], None
            return [3, 0, 0, 0], None
        return pick

    for mode in (2, 3):
        monkeypatch.setattr(c_ops_recurrent, "_preact_form", form(mode))
        src = assert_exact(quantize(rnn("lstm", 2, 3, 3, 7, dirs=2, states=2)), tmp_path / f"forced{mode}")
        assert forms(src) == (mode, mode)
    monkeypatch.setattr(c_ops_recurrent, "_preact_form", chosen)
    monkeypatch.setattr(c_ops_recurrent, "_scalar", lambda mult, bound: [int(mult[0]), int(mult[1]), 0, -1])
    src = assert_exact(quantize(rnn("gru", 1, 3, 1, 5, states=1)), tmp_path / "generic_out")
    assert re.search(r"\.hid_q = \{-?\d+, \d+, 0, -1\}", src)


# ---- batched matmul ------------------------------------------------------------------------------

MATMUL_CASES = {
    "attention_1_head": lambda: attention(1, 5, 7),
    "attention_3_heads": lambda: attention(3, 4, 6, kv_tokens=5),
    "attention_1_token": lambda: attention(2, 1, 3),
    "odd_mkn": lambda: matmul((3, 5, 7), (3, 7, 9)),
    "k1": lambda: matmul((2, 3, 1), (2, 1, 4)),
    "vector": lambda: matmul((1, 3), (3, 1)),
    "broadcast_leaky": lambda: matmul((2, 1, 3, 5), (4, 5, 3), act="leaky_relu", act_alpha=0.1),
}


@pytest.mark.parametrize("case", sorted(MATMUL_CASES))
def test_matmul_exact_on_host(case, tmp_path):
    assert_exact(quantize(MATMUL_CASES[case]()), tmp_path)


# ---- QEMU: the DSP path (cortex-m4) and the portable path (cortex-m3) --------------------------------

def combined():
    """A bidirectional GRU (hidden 7, 3 features) with h0, an LSTM (hidden 5, 1 feature, c0) and
    3-head attention in one graph: one QEMU run covers every new code path."""
    rng = np.random.default_rng(2)
    b = Builder()
    x = b.input("x", (1, 4, 3))
    x1 = b.input("x1", (1, 3, 1))
    h0 = b.input("h0", (2, 1, 7))
    c0 = b.input("c0", (1, 1, 5))
    hl = b.input("hl", (1, 1, 5))
    q = b.input("q", (3, 4, 5))
    k = b.input("k", (3, 5, 5))
    v = b.input("v", (3, 5, 5))
    gw = [b.const(f"g{i}", _w(rng, *s)) for i, s in enumerate([(21, 3), (21, 7), (21,), (21,)] * 2)]
    lw = [b.const(f"l{i}", _w(rng, *s)) for i, s in enumerate([(20, 1), (20, 5), (20,), (20,)])]
    gru = b.op("gru", x, h0, *gw, name="gru", hidden=7, bidirectional=True)
    lstm = b.op("lstm", x1, hl, c0, *lw, name="lstm", hidden=5, bidirectional=False)
    s = b.op("matmul", q, b.op("transpose", k, name="kt", perm=[0, 2, 1]), name="scores")
    att = b.op("matmul", b.op("softmax", s, name="attn", axis=2), v, name="out")
    return b.graph(gru, lstm, att)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m3"])
def test_new_kernels_exact_on_qemu(target, tmp_path):
    assert_exact(quantize(combined()), tmp_path, target=target, rows=2)
