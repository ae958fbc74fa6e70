"""gru and lstm in C: one kernel call per layer (runtime_c/tinyc_kernels_rnn.c), float and int8.

The float lowering (c_ops.LOWERINGS["recurrent"]) and the int8 plan/emit (c_ops_int8's tables,
same key) live here, with the kernel library. Weights are const arrays the parameter struct
points to; the recurrent state lives in arena scratch (float: 2H or 3H floats; int8: the hidden
codes and x_t as int16, the gate pre-activations, H int16 cell states for lstm). The int8 weights
are rearranged for the SMLAD kernel; the constants (multipliers, tables) come from
tinyc.ops.recurrent.int8_constants, the interpreter's own, so C and interpreter agree bit for bit.
"""
from __future__ import annotations

import numpy as np

from tinyc.backends.c_ops import LOWERINGS, Call, Kernel, KernelLibrary, Lowered, Lowering, Param, Weight
from tinyc.backends.int8_layout import dim_strides
from tinyc.backends.planner import scratch_name
from tinyc.errors import BackendError
from tinyc.ir import Op, TensorType, Value
from tinyc.backends import int8_weights as iw
from tinyc.ops.recurrent import HIDDEN_CLAMP, int8_constants, op_layout, requant

LIBRARY = KernelLibrary("rnn", "TINYC_RNN_", "tinyc_kernels_rnn.c", ("tinyc_kernels_rnn.h", "tinyc_kernels_rnn.c"))


def _pair(names: list[str]) -> str:
    return "{" + ", ".join(names + ["0"] * (2 - len(names))) + "}"


def _consts(op: Op, ctx, slots) -> list[str]:
    refs = []
    for i in slots:
        v = op.operands[i]
        if ctx.const(v) is None:
            raise BackendError(f"%{op.result.name} = {op.kind}: the weight %{v.name} is not a constant; the C "
                               "kernels take constant weights", where=op.loc)
        refs.append(ctx.ref(v))
    return refs


# ---- float -----------------------------------------------------------------------------------------

def scratch_f32(op: Op) -> int:
    """Bytes of state: two hidden states (and the lstm cell state) of one direction and batch row."""
    lay = op_layout(op)
    return 4 * lay.hidden * (2 if lay.kind == "gru" else 3)


def lower_f32(op: Op, ctx) -> Lowered:
    lay = op_layout(op)
    n, t, f = op.operands[0].type.shape
    w = [_consts(op, ctx, lay.weights(d)) for d in range(lay.dirs)]
    fields = (("n", str(n)), ("t", str(t)), ("f", str(f)), ("h", str(lay.hidden)), ("dirs", str(lay.dirs)),
              ("cell", str(int(lay.result == "cell"))),
              *((name, _pair([wd[k] for wd in w])) for k, name in enumerate(("w_ih", "w_hh", "b_ih", "b_hh"))))
    param = Param("tinyc_rnn_f32_params", ctx.param_name(), fields)
    # the op's scratch, as a float pointer into the arena (the planner placed it under scratch_name)
    state = ctx.ref(Value(scratch_name(op), TensorType((scratch_f32(op) // 4,), "f32")))
    states = [ctx.ref(op.operands[1 + i]) if i < lay.states else "0" for i in range(2 if lay.kind == "lstm" else 1)]
    kernel = f"{lay.kind.upper()}_F32"
    call = Call(f"tinyc_rnn_{lay.kind}_f32", (ctx.ref(op.operands[0]), *states, ctx.ref(op.result), state,
                                               "&" + param.cname))
    return Lowered((Kernel(LIBRARY.key, kernel),), (param,), (), (call,))


# ---- int8 -------------------------------------------------------------------------------------------
#
# The SMLAD kernel (runtime_c/tinyc_kernels_rnn.c) reads weights arranged here: rows (G*H) padded
# to a multiple of 4 with zero rows, columns (F, H) to multiples of 4 with zero columns; per block
# of 4 rows, the W_ih chunks then the W_hh chunks, a chunk = one word per row with the bytes
# (w0, w2, w1, w3) of 4 consecutive columns. Records per block: 16 words for W_ih's rows, then 16 for
# W_hh's, [bias x4][M x4][X x4][Y x4] (the zero points folded into the biases), in one of the four
# requantization forms of tinyc_kernels_rnn.h, chosen per matrix kind (_preact_form).

def _pad4(n: int) -> int:
    return -(-n // 4) * 4


def _dims(op: Op) -> tuple[int, int, int]:
    """kx, kh, rows: F, H and G*H padded to multiples of 4."""
    lay = op_layout(op)
    f = op.operands[0].type.shape[2]
    return _pad4(f), _pad4(lay.hidden), _pad4(lay.gates * lay.hidden)


def scratch_int8(op: Op) -> int:
    """Bytes: hidden codes and x_t as int16 (kh + kx), px and ph (2 rows) int16, lstm: the H int16 cells."""
    lay = op_layout(op)
    kx, kh, rows = _dims(op)
    return 2 * (kh + kx + 2 * rows + (lay.hidden if lay.kind == "lstm" else 0))


def plan_int8(low8, op: Op, p) -> None:
    """Strides of x, h0, c0 (a relayout copy if one has none), then the kernel's scratch."""
    lay = op_layout(op)
    p.info["xs"] = low8.strides(op, 0, p)
    p.info["ss"] = [low8.strides(op, 1 + i, p) for i in range(lay.states)]
    low8.kernel_scratch(p, scratch_int8(op))


def _arrange(w: np.ndarray, rows: int, k: int) -> np.ndarray:
    """[R, K] int8 -> [rows/4, k/4, 4 rows, 4 bytes (w0, w2, w1, w3)], zero padded."""
    out = np.zeros((rows, k), np.int8)
    out[:w.shape[0], :w.shape[1]] = w
    return out.reshape(rows // 4, 4, k // 4, 4)[..., [0, 2, 1, 3]].transpose(0, 2, 1, 3)


_I31 = 2 ** 31


def _fast_shift(n: np.ndarray, bound: np.ndarray) -> int:
    """The shift L of the smmla form for accumulators |acc| <= bound and multipliers' n, or -1 if
    some row cannot take it exactly (33 <= n + L <= 62 and bound * 2^L < 2^31)."""
    n = np.asarray(n, np.int64)
    if n.size == 0:
        return 0
    shift = max(0, 33 - int(n.min()))
    ok = int(n.max()) + shift <= 62 and bool(np.all(np.asarray(bound, np.float64) * 2.0 ** shift < _I31))
    return shift if ok else -1


def _folded(bias: np.ndarray, w: np.ndarray, zp: int, mult) -> tuple[np.ndarray, ...]:
    """Per row: the bias with the zero point folded in (bias - zp * sum(w row)), M, n and a bound
    of |accumulator| (codes in [-128, 127])."""
    w64 = w.astype(np.int64)
    folded = np.asarray(bias, np.int64) - zp * w64.sum(axis=1)
    if folded.size and (folded.min() < -_I31 or folded.max() > _I31 - 1):
        raise BackendError("a recurrent bias with the zero point folded in overflows int32")
    m, n = (np.asarray(v, np.int64) for v in mult)
    return folded, m, n, np.abs(folded) + 128 * np.abs(w64).sum(axis=1)


def _preact_form(n: np.ndarray, bound: np.ndarray) -> tuple[list[int], np.ndarray | None]:
    """{mode, L, R, S} of one matrix's records (tinyc_kernels_rnn.h) for its rows' n and
    accumulator bounds (both directions), and the per-row shifts X of mode 1."""
    n = np.asarray(n, np.int64)
    fits = lambda shift: bool(np.all(np.asarray(bound, np.float64) * 2.0 ** np.asarray(shift, np.float64) < _I31))
    top = max(33, int(n.max()))
    if top <= 62 and fits(top - n):            # one S for every row: modes 0 and 1
        s = top - 32
        if int(n.min()) == int(n.max()):
            return [0, top - int(n.max()), 1 << (s - 1), s], None
        return [1, 0, 1 << (s - 1), s], top - n
    shift = _fast_shift(n, bound)
    if shift >= 0:
        return [2, shift, 0, 0], None
    return [3, 0, 0, 0], None


def _preact_records(folded, m, n, form: list[int], shifts, rows: int) -> np.ndarray:
    """[rows/4, 16]: per block of 4 rows [bias x4][M x4][X x4][Y x4], padded with rows giving 0."""
    mode, shift = form[0], form[1]
    zero = np.zeros_like(n)
    if mode == 0:
        x, y, pad = zero, zero, (0, 0)
    elif mode == 1:
        x, y, pad = shifts, zero, (0, 0)
    elif mode == 2:
        x, y, pad = np.int64(1) << (n + shift - 33), n + shift - 32, (0, 1)
    else:
        x, y, pad = n, zero, (1, 0)
    rec = np.zeros((rows, 4), np.int64)
    rec[:, 2:] = pad
    rec[:n.size] = np.stack([folded, m, x, y], axis=1)
    return rec.reshape(rows // 4, 4, 4).transpose(0, 2, 1).reshape(rows // 4, 16)


def _scalar(mult, bound: float) -> list[int]:
    """{M, S, R, L} of a Q0.15 (or cell) value |v| <= bound to a code, or {M, n, 0, -1}."""
    m, n = (int(v) for v in mult)
    shift = _fast_shift(np.array([n]), np.array([bound]))
    if shift < 0:
        return [m, n, 0, -1]
    return [m, n + shift - 32, 1 << (n + shift - 33), shift]


def _packed_table(table: np.ndarray) -> np.ndarray:
    """The 257-entry activation table as 256 words {t[i] (low half), t[i+1] - t[i] (high half)}."""
    t = np.asarray(table, np.int64)
    d = t[1:] - t[:-1]
    assert np.abs(d).max() < 2 ** 15
    return ((t[:-1] & 0xFFFF) | (d << 16)).astype(np.uint32).view(np.int32)


def _c_ints(v) -> str:
    return "{" + ", ".join(str(int(x)) for x in v) + "}"


def emit_int8(low8, op: Op, ctx, p) -> Lowered:
    lay = op_layout(op)
    k = int8_constants(op)
    y = op.result
    ys = dim_strides(low8.lay.of(y))
    if ys is None:
        raise BackendError(f"%{y.name}: {op.kind} result layout is not strided (internal error)")
    n, t, f = op.operands[0].type.shape
    kx, kh, rows = _dims(op)
    mats = []
    for d in range(lay.dirs):
        i_ih, i_hh, i_bih, i_bhh = lay.weights(d)
        arrays = [ctx.const(op.operands[i]) for i in (i_ih, i_hh, i_bih, i_bhh)]
        if any(a is None for a in arrays):
            raise BackendError(f"%{y.name} = {op.kind}: weights and biases must be constants", where=op.loc)
        w_ih, w_hh, b_ih, b_hh = arrays
        mats.append((w_ih, w_hh, _folded(b_ih, w_ih, k.zx, k.dirs[d].x_mult),
                     _folded(b_hh, w_hh, k.zh, k.dirs[d].h_mult)))
    # one form per matrix kind, over both directions' rows
    forms = [_preact_form(np.concatenate([m[i][2] for m in mats]), np.concatenate([m[i][3] for m in mats]))
             for i in (2, 3)]
    weights, w_refs, q_refs = [], [], []
    for d, (w_ih, w_hh, fx, fh) in enumerate(mats):
        blocks_w = np.concatenate([_arrange(w_ih, rows, kx), _arrange(w_hh, rows, kh)], axis=1)
        recs = []
        for (form, shifts), f_ in zip(forms, (fx, fh)):
            part = None if shifts is None else shifts[d * f_[2].size:(d + 1) * f_[2].size]
            recs.append(_preact_records(*f_[:3], form, part, rows))
        blocks_q = np.concatenate(recs, axis=1)
        wt = Weight(ctx.weight_name(f"w{d}"), iw.words(blocks_w), "int32_t")
        qt = Weight(ctx.weight_name(f"q{d}"), blocks_q.ravel().astype(np.int32), "int32_t")
        weights += [wt, qt]
        w_refs.append(wt.cname)
        q_refs.append(qt.cname)
    return _emit(low8, op, ctx, p, k, ys, weights, w_refs, q_refs, forms[0][0], forms[1][0])


def _emit(low8, op: Op, ctx, p, k, ys, weights, w_refs, q_refs, rq_x, rq_h) -> Lowered:
    lay = op_layout(op)
    y = op.result
    n, t, f = op.operands[0].type.shape
    kx, kh, rows = _dims(op)
    extra = []
    if lay.kind == "gru":
        prev = np.clip(requant(np.arange(-128, 128, dtype=np.int64) - k.zh, k.h15), -HIDDEN_CLAMP, HIDDEN_CLAMP)
        prev_w = Weight(ctx.weight_name("prev"), prev.astype(np.int32), "int32_t")
        extra.append(prev_w)
        h_bound = max(32768, int(np.abs(prev).max())) + 1
        # z (hp - n) + 2^14 in 32 bits: z <= 32767, |n| <= 32767
        narrow = 32767 * (int(np.abs(prev).max()) + 32767) + 2 ** 14 < _I31
    else:
        prev_w, h_bound, narrow = None, 32768, False
    out_bound = 32768 if lay.result == "cell" else h_bound
    act = Weight(ctx.weight_name("act"), np.concatenate([_packed_table(k.sigmoid), _packed_table(k.tanh)]), "int32_t")
    weights = list(weights) + extra + [act]
    xs = p.info["xs"]
    ss = p.info["ss"] + [[0, 0, 0]] * (2 - len(p.info["ss"]))
    ints = (("n", n), ("t", t), ("f", f), ("h", lay.hidden), ("dirs", lay.dirs), ("cell", int(lay.result == "cell")),
            ("xs_n", xs[0]), ("xs_t", xs[1]), ("xs_f", xs[2]), ("hs_d", ss[0][0]), ("hs_n", ss[0][1]),
            ("hs_h", ss[0][2]), ("cs_d", ss[1][0]), ("cs_n", ss[1][1]), ("cs_h", ss[1][2]), ("ys_0", ys[0]),
            ("ys_1", ys[1]), ("ys_2", ys[2]), ("zh", k.zh), ("zy", k.zy), ("kx", kx), ("kh", kh), ("rows", rows))
    fields = tuple((name, str(int(v))) for name, v in ints) + (
        ("rq_x", _c_ints(rq_x)), ("rq_h", _c_ints(rq_h)), ("out_q", _c_ints(_scalar(k.to_out, out_bound))), ("hid_q", _c_ints(_scalar(k.to_hidden, h_bound))),
        ("cell_frac", str(int(k.cell_frac))), ("zc0", str(int(k.zc0))), ("c0_m", str(int(k.c0[0]))),
        ("c0_n", str(int(k.c0[1]))), ("w", _pair(w_refs)), ("q", _pair(q_refs)),
        ("prev", prev_w.cname if prev_w else "0"), ("narrow", str(int(narrow))), ("act", act.cname))
    param = Param("tinyc_rnn_s8_params", ctx.param_name(), fields)
    x = low8.operand(op, 0, ctx, p)
    h0 = low8.operand(op, 1, ctx, p)
    scratch = ctx.scratch(p.kernel_scratch_at)
    if lay.kind == "gru":
        call = Call("tinyc_rnn_gru_s8", (x, h0, ctx.ref(y), scratch, "&" + param.cname))
    else:
        c0 = low8.operand(op, 2, ctx, p) if lay.states == 2 else "0"
        call = Call("tinyc_rnn_lstm_s8", (x, h0, c0, ctx.ref(y), scratch, "&" + param.cname))
    return Lowered((Kernel(LIBRARY.key, f"{lay.kind.upper()}_S8"),), (param,), tuple(weights), (call,))


# ---- registration (c_ops imports this module at its end; c_ops_int8 merges the int8 tables) ------

def _no_inplace(op: Op):
    return ()


LOWERINGS["recurrent"] = Lowering(lower_f32, _no_inplace, scratch_f32)
PLANS_S8 = {"recurrent": plan_int8}
EMIT_S8 = {"recurrent": emit_int8}
