"""quantize-int8's rule for gru and lstm (int8 rule "recurrent"; docs/quantization.md, "Recurrent
layers"): one int8 op per float op, with

- x: the input's calibrated int8 quantization;
- h0: always present, in the hidden state's quantization (the codes fed back step to step): the
  result's own calibrated quantization for the sequence result; for an lstm returning its cell
  state, the range [-1, 1] (|o tanh(c)| < 1) widened by h0's. A constant h0 is quantized to it, a
  computed one requantized by a lut when its quantization differs; without h0, zero codes;
- c0 (lstm): its own calibrated quantization (the kernel rescales it to the cell state);
- weights i8 per row, b_ih i32 at x scale x w_ih scales, b_hh at hidden scale x w_hh scales; a
  shared weight (share-weights: decode of an f32 codebook) becomes a decode of an i8 codebook
  (per row [G*H, K] row by row; per matrix [K] with one scale for every row), as for a layer;
- lstm: cell_frac from max |c| over every step of the float reference run on the calibration
  data (without calibration data, the bound max |c0| + T: |f| < 1 and |i g| < 1 per step).
"""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.interpreter import run_all
from tinyc.ir import Op, QuantParams, TensorType, Value
from tinyc.ops import OPS
from tinyc.ops.recurrent import cell_frac, op_layout, run_float
from tinyc.passes.base import check


def _hidden_quant(lw, op: Op, lay) -> QuantParams:
    """The hidden state's quantization: the sequence result's calibrated range (for an lstm
    returning its cell state, the hidden states seen by the float reference on the calibration
    data, or [-1, 1] without data), widened by h0's range. When h0 lies within the sequence's
    range the hidden codes are the result's own."""
    if lay.result == "sequence":
        q = lw.qmap[op.result.name]
        lo, hi = _span(q)
    else:
        q = None
        lo, hi = _traced(lw, op, lay)["h"] if lw.samples else (-1.0, 1.0)
    if lay.states >= 1:
        a, b = _range(lw, op.operands[1])
        if q is not None and lo <= a and b <= hi:
            return q
        lo, hi = min(lo, a), max(hi, b)
    elif q is not None:
        return q
    return quant.range_params(lo, hi)


def _span(q: QuantParams) -> tuple[float, float]:
    return q.scale[0] * (quant.QMIN - q.zero_point[0]), q.scale[0] * (quant.QMAX - q.zero_point[0])


def _range(lw, v: Value) -> tuple[float, float]:
    """A value's float range: a constant's min and max, else its calibrated quantization's span."""
    if v.name in lw.consts:
        a = lw.consts[v.name]
        return (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    return _span(lw.qmap[v.name])


def _hidden(lw, op: Op, lay, hq: QuantParams) -> Value:
    """h0 in the hidden state's quantization."""
    name = op.result.name
    d, n, h = lay.dirs, op.operands[0].type.shape[0], lay.hidden
    if lay.states == 0:
        zeros = np.full((d, n, h), hq.zero_point[0], np.int8)
        return lw.const((name + ".h0", "hidden", hq), zeros, "i8", hq)
    v = op.operands[1]
    if v.name in lw.consts:
        return lw.const((v.name, "hidden", hq), quant.quantize(lw.consts[v.name], hq).astype(np.int8), "i8", hq)
    hv = lw.int_of(v)
    if hv.type.quant == hq:
        return hv
    cache = lw.__dict__.setdefault("_recurrent_hidden", {})
    if (v.name, hq) not in cache:
        table = quant.lut_table(lambda a: a, hv.type.quant, hq)
        t = lw.const((v.name + ".requant", hq), table, "i8", None)
        cache[(v.name, hq)] = lw._emit("lut", [hv, t], lw.fresh(v.name + ".hidden"), TensorType(hv.type.shape, "i8", hq),
                                       {}, op.loc)
    return cache[(v.name, hq)]


def _const(lw, op: Op, v: Value) -> np.ndarray:
    check(v.name in lw.consts, f"%{op.result.name} = {op.kind}: the weight %{v.name} is not a constant",
          f"keep this op in float: quantize-int8{{keep-float={op.result.name}}}")
    return lw.consts[v.name]


def _shared(lw, w: Value) -> tuple[Value, QuantParams]:
    """decode(idx, f32 codebook) ==> decode(idx, i8 codebook) with an i8 per-row weight quant
    (quantize-int8's shared_weight, at 8 bits whatever weight-bits says: the recurrent kernels
    read int8 weights)."""
    key = (w.name, "shared", "i8", "recurrent")
    if key not in lw.derived:
        op = lw.decodes[w.name]
        idx, book = op.operands
        check(idx.name in lw.consts and book.name in lw.consts,
              f"%{w.name} = decode: indices and codebook must be constants to quantize")
        check(book.type.dtype == "f32", f"%{w.name} = decode: the codebook is already integer")
        cb = lw.consts[book.name].astype(np.float32)
        rows = cb if cb.ndim == 2 else cb.reshape(1, -1)
        rq = quant.weight_params(rows, 8)
        codes = quant.quantize_weight(rows, rq, 8)
        o = w.type.shape[0]
        if cb.ndim == 1:
            q, codes = QuantParams(rq.scale * o, (0,) * o, axis=0), codes.reshape(-1)
        else:
            q = rq
        idx_v = lw.const((idx.name, "float"), lw.consts[idx.name], idx.type.dtype, None)
        book_v = lw.const((book.name, "codes", "i8"), codes, "i8", None)
        lw.derived[key] = lw._emit("decode", [idx_v, book_v], lw.fresh_decode(w.name),
                                   TensorType(w.type.shape, "i8", q), {}, op.loc)
    v = lw.derived[key]
    return v, v.type.quant


def _weights(lw, op: Op, lay, xq: QuantParams, hq: QuantParams) -> list[Value]:
    out = []
    for d in range(lay.dirs):
        w_ih, w_hh, b_ih, b_hh = (op.operands[i] for i in lay.weights(d))
        pairs = []
        for w, b, q_in in ((w_ih, b_ih, xq), (w_hh, b_hh, hq)):
            if w.name in lw.decodes:
                wv, wq = _shared(lw, w)
            else:
                wa = _const(lw, op, w)
                wq = quant.weight_params(wa, 8)
                wv = lw.const((w.name, "weight", 8), quant.quantize_weight(wa, wq, 8), "i8", wq)
            bq = quant.bias_params(q_in, wq)
            bv = lw.const((b.name, "bias", bq), quant.quantize_bias(_const(lw, op, b), bq), "i32", bq)
            pairs.append((wv, bv))
        out += [pairs[0][0], pairs[1][0], pairs[0][1], pairs[1][1]]     # w_ih, w_hh, b_ih, b_hh
    return out


def _traced(lw, op: Op, lay) -> dict[str, tuple[float, float]]:
    """The ranges of the hidden ("h") and cell ("c") states of this op over every step of the float
    reference on the calibration samples (one float run of the graph per sample serves every
    recurrent op of the graph)."""
    cache = lw.__dict__.get("_recurrent_states")
    if cache is None:
        ops = [o for o in lw.src.compute_ops() if OPS[o.kind].int8 == "recurrent"]
        cache = lw._recurrent_states = {o.result.name: {"h": (0.0, 0.0), "c": (0.0, 0.0)} for o in ops}
        for s in lw.samples:
            env = run_all(lw.src, s)
            for o in ops:
                seen = cache[o.result.name]

                def trace(d, t, h, c, seen=seen):
                    for key, a in (("h", h), ("c", c)):
                        if a.size:
                            seen[key] = (min(seen[key][0], float(a.min())), max(seen[key][1], float(a.max())))
                run_float(o, [np.asarray(env[v.name], np.float64) for v in o.operands], trace=trace)
    return cache[op.result.name]


def _cell_max(lw, op: Op, lay) -> float:
    """max |c| of this lstm over the calibration data, or the bound max |c0| + T without data
    (|f| < 1 and |i g| < 1 at every step)."""
    if not lw.samples:
        c0 = max(abs(x) for x in _range(lw, op.operands[2])) if lay.states == 2 else 0.0
        return c0 + op.operands[0].type.shape[1]
    return max(abs(x) for x in _traced(lw, op, lay)["c"])


def lower_recurrent(lw, op: Op) -> None:
    lay = op_layout(op)
    name = op.result.name
    x = lw.int_of(op.operands[0])
    hq = _hidden_quant(lw, op, lay)
    states = [_hidden(lw, op, lay, hq)]
    if lay.states == 2:
        states.append(lw.int_of(op.operands[2]))
    attrs = dict(op.attrs)
    if op.kind == "lstm":
        attrs["cell_frac"] = cell_frac(_cell_max(lw, op, lay))
    t = TensorType(op.result.type.shape, "i8", lw.qmap[name])
    operands = [x, *states, *_weights(lw, op, lay, x.type.quant, hq)]
    lw.ints[name] = lw._emit(op.kind, operands, name, t, attrs, op.loc)
