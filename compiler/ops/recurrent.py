"""Recurrent layers: gru and lstm, one op per layer and direction pair (never unrolled into
per-timestep ops), as PyTorch's nn.GRU / nn.LSTM compute them.

Operands: x [N, T, F] (batch first), optional initial states [D, N, H] (gru: h0; lstm: h0, then
c0), then for each direction (D = 2 if bidirectional) w_ih [G*H, F], w_hh [G*H, H], b_ih [G*H],
b_hh [G*H]; G = 3 gates for gru (r, z, n), 4 for lstm (i, f, g, o), PyTorch's order. Result: the
output sequence [N, T, D*H] (the reverse direction in the second half of the last axis), or for
an lstm with `result = "cell"` the final cell state [D, N, H].

The int8 form (docs/quantization.md, "Recurrent layers") always has h0: its quantization is the
hidden state's, fed back step to step as int8 codes. Gates go through int16: pre-activations
Q3.12, sigmoid and tanh from 257-entry interpolated tables to Q0.15, the lstm cell state int16
with scale 2^-cell_frac. Every rounding is defined here, once: `int8_constants` gives the
interpreter and the C emitter the same multipliers and tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinyc import quant
from tinyc.errors import TinycError
from tinyc.ir import Op, QuantParams, TensorType
from tinyc.ops.core import (OpDef, OpError, WeightOperand, act_q, fmt_shape, need, rank_is, register, sample,
                            torch)

GATES = {"gru": 3, "lstm": 4}
STATES = {"gru": 1, "lstm": 2}       # initial states an op may take: h0 (and c0)
RESULTS = ("sequence", "cell")


# ---- the int8 arithmetic ------------------------------------------------------------------------

GATE_FRAC = 12                     # gate pre-activations: int16 Q3.12 (real = q / 2^12, in [-8, 8))
ACT_FRAC = 15                      # sigmoid / tanh outputs and the hidden update: Q0.15
ACT_TABLE_SHIFT = 8                # the tables sample the Q3.12 input every 2^8 codes: 257 entries
HIDDEN_CLAMP = 2 ** 24             # the previous hidden state in Q0.15 is clamped to +-2^24 (real 512)
I16_MIN, I16_MAX = -2 ** 15, 2 ** 15 - 1
CELL_FRAC_MAX = 15


def sat16(x) -> np.ndarray:
    return np.clip(np.asarray(x, np.int64), I16_MIN, I16_MAX)


def _act16_table(fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    step = 2 ** ACT_TABLE_SHIFT
    u = np.arange(2 ** 16 // step + 1, dtype=np.float64) * step - 2 ** 15
    return np.clip(quant.round_half_away(fn(u / 2 ** GATE_FRAC) * 2 ** ACT_FRAC), -I16_MAX, I16_MAX).astype(np.int16)


def sigmoid_table() -> np.ndarray:
    """257 int16: round(2^15 sigmoid(x)) at the Q3.12 inputs x = -8, -8 + 1/16, ..., 8 (at most 32767)."""
    return _act16_table(lambda x: 1.0 / (1.0 + np.exp(-x)))


def tanh_table() -> np.ndarray:
    """257 int16: round(2^15 tanh(x)) at the same inputs, clamped to [-32767, 32767]."""
    return _act16_table(np.tanh)


def act16(table: np.ndarray, x) -> np.ndarray:
    """Table lookup with linear interpolation of an int16 Q3.12 input: u = x + 2^15,
    i = u >> 8, f = u & 255, y = t[i] + (((t[i+1] - t[i]) * f + 128) >> 8) (arithmetic shift)."""
    u = np.asarray(x, np.int64) + 2 ** 15
    i, f = u >> ACT_TABLE_SHIFT, u & (2 ** ACT_TABLE_SHIFT - 1)
    t = np.asarray(table, np.int64)
    return t[i] + (((t[i + 1] - t[i]) * f + 2 ** (ACT_TABLE_SHIFT - 1)) >> ACT_TABLE_SHIFT)


def shift_round(x, s: int) -> np.ndarray:
    """x / 2^s rounded half up (arithmetic shift), s >= 0."""
    x = np.asarray(x, np.int64)
    return x if s == 0 else (x + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def mul_q15(a, b) -> np.ndarray:
    """(a * b + 2^14) >> 15: a Q0.15 factor times b, in b's units (int64 product)."""
    return shift_round(np.asarray(a, np.int64) * np.asarray(b, np.int64), ACT_FRAC)


def cell_frac(max_abs: float) -> int:
    """Fraction bits of the int16 lstm cell state for a calibrated max |c|: the finest
    power-of-two scale 2^-frac whose range [-2^(15-frac), 2^(15-frac)) holds max_abs, frac in [0, 15]."""
    if not (max_abs > 0 and math.isfinite(max_abs)):
        return CELL_FRAC_MAX
    return max(0, CELL_FRAC_MAX - max(0, math.ceil(math.log2(max_abs))))


def cell_to_gate(c, frac: int) -> np.ndarray:
    """int16 cell state (scale 2^-frac) to a Q3.12 tanh input: a rounded shift right, or a
    saturating shift left."""
    if frac >= GATE_FRAC:
        return shift_round(c, frac - GATE_FRAC)
    return sat16(np.asarray(c, np.int64) << (GATE_FRAC - frac))


def cell_update(c, f, i, g, frac: int) -> np.ndarray:
    """c' = sat16(round(f * c / 2^15) + round(i * g / 2^(30 - frac))): f, i, g in Q0.15."""
    return sat16(mul_q15(f, c) + shift_round(np.asarray(i, np.int64) * np.asarray(g, np.int64), 2 * ACT_FRAC - frac))


def _mult(real: float) -> tuple[int, int]:
    """(M, n): real ~= M / 2^n, n = 31 - shift of quant.quantize_multiplier (C's form)."""
    m, s = quant.quantize_multiplier(float(real))
    return m, 31 - s


def _mults(reals) -> tuple[np.ndarray, np.ndarray]:
    m, s = quant.quantize_multipliers(np.asarray(reals, np.float64))
    return m, 31 - s


def requant(acc, mn) -> np.ndarray:
    """quant.requantize with (M, n): (acc * M + 2^(n-1)) >> n."""
    m, n = mn
    return quant.requantize(acc, m, 31 - np.asarray(n, np.int64))


# ---- operand layout -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where an op's operands are: `states` initial states after x, then 4 per direction."""

    kind: str
    dirs: int
    states: int
    hidden: int
    result: str

    @property
    def gates(self) -> int:
        return GATES[self.kind]

    def weights(self, d: int) -> range:
        """Operand slots of direction d: w_ih, w_hh, b_ih, b_hh."""
        first = 1 + self.states + 4 * d
        return range(first, first + 4)


def layout(kind: str, n_operands: int, attrs: dict) -> Layout:
    dirs = 2 if attrs["bidirectional"] else 1
    states = n_operands - 1 - 4 * dirs
    most = STATES[kind]
    names = "h0" if most == 1 else "h0, c0"
    need(0 <= states <= most, f"{kind} takes x, up to {most} initial state{'s' if most > 1 else ''} ({names}) "
         f"and w_ih, w_hh, b_ih, b_hh for each of its {dirs} direction{'s' if dirs > 1 else ''}: "
         f"{1 + 4 * dirs} to {1 + most + 4 * dirs} operands, got {n_operands}")
    result = attrs.get("result", "sequence")
    need(result in RESULTS, f"result must be one of {', '.join(map(repr, RESULTS))}, got {result!r}")
    return Layout(kind, dirs, states, attrs["hidden"], result)


def op_layout(op: Op) -> Layout:
    return layout(op.kind, len(op.operands), op.attrs)


# ---- shapes -------------------------------------------------------------------------------------

def _shape(kind: str):
    def infer(ts, a):
        lay = layout(kind, len(ts), a)
        h, g = lay.hidden, lay.gates
        need(h >= 1, f"hidden must be >= 1, got {h}")
        x = ts[0]
        rank_is(x, 3, "input")
        n, t, f = x.shape
        need(t >= 1, f"input has no time steps: {fmt_shape(x.shape)}", "x is [N, T, F] (batch first)")
        for i, role in zip(range(lay.states), ("h0", "c0")):
            need(ts[1 + i].shape == (lay.dirs, n, h), f"{role} shape {fmt_shape(ts[1 + i].shape)} is not "
                 f"[{lay.dirs}, {n}, {h}] (directions, batch, hidden)")
        for d in range(lay.dirs):
            w_ih, w_hh, b_ih, b_hh = (ts[i] for i in lay.weights(d))
            for role, tt, want in (("w_ih", w_ih, (g * h, f)), ("w_hh", w_hh, (g * h, h)),
                                   ("b_ih", b_ih, (g * h,)), ("b_hh", b_hh, (g * h,))):
                need(tt.shape == want, f"{role} of direction {d} has shape {fmt_shape(tt.shape)}, "
                     f"expected {fmt_shape(want)} ({g} gates x hidden {h})")
        need(not (lay.result == "cell" and kind != "lstm"), "only lstm has a cell state")
        if x.quant is None:
            need("cell_frac" not in a, "cell_frac is an attribute of the int8 form only")
        if lay.result == "cell":
            return (lay.dirs, n, h)
        return (n, t, lay.dirs * h)
    return infer


def _int_operands(kind: str):
    """The int8 form: x, h0 (always: the hidden state's quant), c0 i8 per tensor; weights i8
    per row (axis 0, zp 0); b_ih i32 at x scale x w_ih scales, b_hh at h0 scale x w_hh scales."""
    def check(ts, a):
        lay = layout(kind, len(ts), a)
        act_q(ts[0], "input")
        need(lay.states >= 1, f"the int8 form of {kind} takes h0 (the hidden state's quantization)",
             "quantize-int8 adds it")
        for i, role in zip(range(lay.states), ("h0", "c0")):
            act_q(ts[1 + i], role)
        if kind == "lstm":
            frac = a.get("cell_frac")
            need(frac is not None and 0 <= frac <= CELL_FRAC_MAX,
                 f"the int8 form of lstm needs cell_frac in [0, {CELL_FRAC_MAX}] (cell state scale 2^-cell_frac), "
                 f"got {frac}", "quantize-int8 sets it from the calibrated cell range")
        for d in range(lay.dirs):
            w_ih, w_hh, b_ih, b_hh = (ts[i] for i in lay.weights(d))
            for role, w, b, src in (("w_ih", w_ih, b_ih, ts[0]), ("w_hh", w_hh, b_hh, ts[1])):
                q = w.quant
                need(w.dtype == "i8" and q is not None and q.axis == 0 and not any(q.zero_point),
                     f"{role} of direction {d} must be i8 quantized per row (axis 0, zp 0)")
                bq = b.quant
                need(b.dtype == "i32" and bq is not None and bq.axis == 0 and not any(bq.zero_point),
                     f"the bias after {role} of direction {d} must be i32 quantized per row (axis 0, zp 0)")
                want = quant.bias_params(src.quant, q).scale
                need(all(math.isclose(s, w_, rel_tol=1e-6) for s, w_ in zip(bq.scale, want)),
                     f"the bias after {role} of direction {d}: scales are not "
                     f"{'input' if role == 'w_ih' else 'h0'} scale x weight scales",
                     "requantize the bias after changing a scale")
    return check


def _weight_operands(op: Op) -> tuple[WeightOperand, ...]:
    """w_ih and w_hh of each direction (the biases are not compressed). w_ih meets x only as
    x @ w_ih^T; the kernels read dense weights (runtime_c/tinyc_kernels_rnn.c)."""
    lay = op_layout(op)
    out = []
    for d in range(lay.dirs):
        w_ih, w_hh = lay.weights(d)[:2]
        tail = ".reverse" if d else ""
        out += [WeightOperand(w_ih, "w_ih" + tail, projects_input=True, dense=True),
                WeightOperand(w_hh, "w_hh" + tail, dense=True)]
    return tuple(out)


def _keeps_batch(a, types, flags, result) -> bool:
    """Samples stay independent along axis 0 of the sequence when only x is batched."""
    return flags[0] and not any(flags[1:]) and a.get("result", "sequence") == "sequence"


def _macs(kind: str):
    def macs(ts, result) -> int:
        n, t, f = ts[0].shape
        gh, h = ts[-3].shape                 # w_hh of the last direction
        return n * t * ((len(ts) - 1) // 4) * gh * (f + h)
    return macs


# ---- float semantics (numpy float64 and torch) -------------------------------------------------

def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _Numpy:
    sigmoid, tanh = staticmethod(_np_sigmoid), staticmethod(np.tanh)
    stack, cat = staticmethod(np.stack), staticmethod(np.concatenate)

    @staticmethod
    def zeros_like(x, n, h):
        return np.zeros((n, h), x.dtype)


class _Torch:
    @staticmethod
    def sigmoid(x):
        return torch.sigmoid(x)

    @staticmethod
    def tanh(x):
        return torch.tanh(x)

    @staticmethod
    def stack(xs, axis):
        return torch.stack(list(xs), dim=axis)

    @staticmethod
    def cat(xs, axis):
        return torch.cat(list(xs), dim=axis)

    @staticmethod
    def zeros_like(x, n, h):
        return x.new_zeros((n, h))


def run_float(op: Op, arrays, xp=_Numpy, trace: Callable | None = None):
    """The float recurrence (PyTorch's formulas): numpy or torch arrays. `trace(d, t, h, c)` sees
    every step's state (calibration of the int8 form)."""
    lay = op_layout(op)
    x = arrays[0]
    n, steps, _ = x.shape
    h_size = lay.hidden
    seqs, cells = [], []
    for d in range(lay.dirs):
        w_ih, w_hh, b_ih, b_hh = (arrays[i] for i in lay.weights(d))
        h = arrays[1][d] if lay.states >= 1 else xp.zeros_like(x, n, h_size)
        c = arrays[2][d] if lay.states >= 2 else xp.zeros_like(x, n, h_size)
        seq = [None] * steps
        for t in (range(steps - 1, -1, -1) if d else range(steps)):
            gi = x[:, t] @ w_ih.T + b_ih
            gh = h @ w_hh.T + b_hh
            if lay.kind == "gru":
                r = xp.sigmoid(gi[:, :h_size] + gh[:, :h_size])
                z = xp.sigmoid(gi[:, h_size:2 * h_size] + gh[:, h_size:2 * h_size])
                nn_ = xp.tanh(gi[:, 2 * h_size:] + r * gh[:, 2 * h_size:])
                h = (1 - z) * nn_ + z * h
            else:
                g = gi + gh
                i_, f_ = xp.sigmoid(g[:, :h_size]), xp.sigmoid(g[:, h_size:2 * h_size])
                g_, o_ = xp.tanh(g[:, 2 * h_size:3 * h_size]), xp.sigmoid(g[:, 3 * h_size:])
                c = f_ * c + i_ * g_
                h = o_ * xp.tanh(c)
            if trace is not None:
                trace(d, t, h, c)
            seq[t] = h
        seqs.append(xp.stack(seq, 1))
        cells.append(c)
    if lay.result == "cell":
        return xp.stack(cells, 0)
    return xp.cat(seqs, 2)


def _ref(op, *arrays):
    return run_float(op, arrays)


def _torch(op, *tensors):
    return run_float(op, tensors, _Torch)


# ---- int8 semantics ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Direction:
    """Per weight row (G*H): (M, n) to Q3.12 of the input and the recurrent accumulators."""

    x_mult: tuple[np.ndarray, np.ndarray]
    h_mult: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Int8Constants:
    """Everything the int8 form derives from its types and attributes (both the interpreter and
    the C emitter read these). Multipliers are (M, n) pairs: real = M / 2^n."""

    zx: int
    zh: int                  # the hidden state (h0's quant)
    zy: int                  # the result
    dirs: tuple[Direction, ...]
    h15: tuple[int, int]     # hidden code - zh -> Q0.15 (ratio sh * 2^15)
    to_hidden: tuple[int, int]   # Q0.15 -> hidden code (2^-15 / sh)
    to_out: tuple[int, int]      # Q0.15 -> result code (2^-15 / sy); the cell result: cell -> code
    cell_frac: int = 0
    zc0: int = 0
    c0: tuple[int, int] = (0, 0)  # c0 code - zc0 -> cell (sc0 * 2^cell_frac)
    sigmoid: np.ndarray = None
    tanh: np.ndarray = None


def int8_constants(op: Op) -> Int8Constants:
    lay = op_layout(op)
    ts = [v.type for v in op.operands]
    qx, qh, qy = ts[0].quant, ts[1].quant, op.result.type.quant
    dirs = []
    for d in range(lay.dirs):
        w_ih, w_hh = (ts[i] for i in list(lay.weights(d))[:2])
        dirs.append(Direction(_mults(qx.scale[0] * np.asarray(w_ih.quant.scale, np.float64) * 2.0 ** GATE_FRAC),
                              _mults(qh.scale[0] * np.asarray(w_hh.quant.scale, np.float64) * 2.0 ** GATE_FRAC)))
    frac = op.attrs.get("cell_frac", 0)
    extra = {}
    if lay.kind == "lstm":
        extra["cell_frac"] = frac
        if lay.states == 2:
            qc = ts[2].quant
            extra.update(zc0=qc.zero_point[0], c0=_mult(qc.scale[0] * 2.0 ** frac))
    out = 2.0 ** -frac if lay.result == "cell" else 2.0 ** -ACT_FRAC
    return Int8Constants(qx.zero_point[0], qh.zero_point[0], qy.zero_point[0], tuple(dirs),
                         _mult(qh.scale[0] * 2.0 ** ACT_FRAC), _mult(2.0 ** -ACT_FRAC / qh.scale[0]),
                         _mult(out / qy.scale[0]), sigmoid=sigmoid_table(), tanh=tanh_table(), **extra)


def _check_acc(op: Op, acc: np.ndarray) -> None:
    if acc.size and (acc.min() < quant.I32_MIN or acc.max() > quant.I32_MAX):
        raise TinycError(f"interpreter: %{op.result.name} = {op.kind}: int32 accumulator overflows",
                         where=op.loc, hint=f"keep this op in float (quantize-int8{{keep-float={op.result.name}}})")


def _code(v, mn, zp) -> np.ndarray:
    return quant.saturate(requant(v, mn) + zp).astype(np.int64)


def _ref_int(op, *arrays):
    lay = op_layout(op)
    k = int8_constants(op)
    h_size = lay.hidden
    x = arrays[0].astype(np.int64) - k.zx
    n, steps, _ = x.shape
    seqs, cells = [], []
    for d in range(lay.dirs):
        w_ih, w_hh, b_ih, b_hh = (arrays[i].astype(np.int64) for i in lay.weights(d))
        dk = k.dirs[d]
        hq = arrays[1][d].astype(np.int64)
        if lay.states == 2:
            c = sat16(requant(arrays[2][d].astype(np.int64) - k.zc0, k.c0))
        else:
            c = np.zeros((n, h_size), np.int64)
        seq = np.zeros((n, steps, h_size), np.int64)
        for t in (range(steps - 1, -1, -1) if d else range(steps)):
            ax = x[:, t] @ w_ih.T + b_ih
            ah = (hq - k.zh) @ w_hh.T + b_hh
            _check_acc(op, ax)
            _check_acc(op, ah)
            px, ph = sat16(requant(ax, dk.x_mult)), sat16(requant(ah, dk.h_mult))
            gate = [slice(i * h_size, (i + 1) * h_size) for i in range(lay.gates)]
            if lay.kind == "gru":
                r = act16(k.sigmoid, sat16(px[:, gate[0]] + ph[:, gate[0]]))
                z = act16(k.sigmoid, sat16(px[:, gate[1]] + ph[:, gate[1]]))
                nn_ = act16(k.tanh, sat16(px[:, gate[2]] + mul_q15(r, ph[:, gate[2]])))
                h_prev = np.clip(requant(hq - k.zh, k.h15), -HIDDEN_CLAMP, HIDDEN_CLAMP)
                h15 = nn_ + mul_q15(z, h_prev - nn_)
            else:
                pre = [sat16(px[:, s] + ph[:, s]) for s in gate]
                i_, f_, o_ = (act16(k.sigmoid, p) for p in (pre[0], pre[1], pre[3]))
                g_ = act16(k.tanh, pre[2])
                c = cell_update(c, f_, i_, g_, k.cell_frac)
                h15 = mul_q15(o_, act16(k.tanh, cell_to_gate(c, k.cell_frac)))
            seq[:, t] = _code(h15, k.to_out, k.zy)
            hq = _code(h15, k.to_hidden, k.zh)
        seqs.append(seq)
        cells.append(c)
    if lay.result == "cell":
        return np.stack([_code(c, k.to_out, k.zy) for c in cells], 0).astype(np.int8)
    return np.concatenate(seqs, 2).astype(np.int8)


def _result_quant(ts: list[TensorType], result: TensorType) -> None:
    if result.dtype == "f32" or ts[0].quant is None:
        return
    act_q(result, "result")


# ---- conformance samples ----------------------------------------------------------------------

def _weights(rng, kind: str, dirs: int, f: int, h: int, scale: float = 0.5) -> list[np.ndarray]:
    g = GATES[kind]
    out = []
    for _ in range(dirs):
        out += [(scale * rng.standard_normal(s)).astype(np.float32) for s in ((g * h, f), (g * h, h), (g * h,), (g * h,))]
    return out


def _samples(kind: str):
    def samples(rng):
        out = [sample((2, 4, 3), *_weights(rng, kind, 1, 3, 4), hidden=4, bidirectional=False),
               sample((1, 3, 2), *[(2, 1, 3)] * STATES[kind], *_weights(rng, kind, 2, 2, 3), hidden=3,
                      bidirectional=True)]
        if kind == "lstm":
            out += [sample((2, 3, 3), (1, 2, 4), *_weights(rng, kind, 1, 3, 4), hidden=4, bidirectional=False,
                           result="cell")]
        return out
    return samples


_DOC = {"gru": "GRU layer (PyTorch's r, z, n gates; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))), x [N, T, F] "
               "batch first, optional h0 [D, N, H], then w_ih [3H, F], w_hh [3H, H], b_ih, b_hh per direction; "
               "result the sequence [N, T, D*H]",
        "lstm": "LSTM layer (PyTorch's i, f, g, o gates), x [N, T, F] batch first, optional h0 and c0 [D, N, H], "
                "then w_ih [4H, F], w_hh [4H, H], b_ih, b_hh per direction; result the sequence [N, T, D*H], "
                "or with result = \"cell\" the final cell state [D, N, H]"}

for _kind in GATES:
    _optional = {"result": str, "cell_frac": int} if _kind == "lstm" else {}
    register(OpDef(
        _kind, _shape(_kind), 1 + 4, 1 + STATES[_kind] + 8, {"hidden": int, "bidirectional": bool}, _optional,
        macs=_macs(_kind), doc=_DOC[_kind], ref=_ref, ref_int=_ref_int, torch=_torch,
        trainable=tuple(range(1, 1 + STATES[_kind] + 8)), int_operands=_int_operands(_kind),
        result_quant_rule=_result_quant, int8="recurrent", c="recurrent", channels="hidden_units",
        keeps_batch=_keeps_batch, weight_operands=_weight_operands,
        samples=_samples(_kind)))
