"""gru and lstm in C: one kernel call per layer (runtime_c/tinyc_kernels_rnn.c), float and int8.

The float lowering (c_ops.LOWERINGS["recurrent"]) and the int8 plan/emit (c_ops_int8's tables,
same key) live here, with the kernel library. Weights are const arrays the parameter struct
points to; the recurrent state lives in arena scratch (float: 2H or 3H floats; int8: 2H hidden
codes, plus H int16 cell states for lstm). The int8 constants (multipliers, tables) come from
tinyc.ops.recurrent.int8_constants, the interpreter's own, so C and interpreter agree bit for bit.
"""
from __future__ import annotations

import numpy as np

from tinyc.backends.c_ops import LOWERINGS, Call, Kernel, KernelLibrary, Lowered, Lowering, Param, Weight
from tinyc.backends.int8_layout import dim_strides
from tinyc.backends.planner import ALIGN, scratch_name
from tinyc.errors import BackendError
from tinyc.ir import Op, TensorType, Value
from tinyc.ops.recurrent import int8_constants, op_layout

LIBRARY = KernelLibrary("rnn", "TINYC_RNN_", "tinyc_kernels_rnn.c", ("tinyc_kernels_rnn.h", "tinyc_kernels_rnn.c"))


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


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

def plan_int8(low8, op: Op, p) -> None:
    """Strides of x, h0, c0 (a relayout copy if one has none), then the state scratch."""
    lay = op_layout(op)
    p.info["xs"] = low8.strides(op, 0, p)
    p.info["ss"] = [low8.strides(op, 1 + i, p) for i in range(lay.states)]
    hidden = _align(2 * lay.hidden)
    p.info["cell_at"] = hidden
    low8.kernel_scratch(p, hidden + (2 * lay.hidden if lay.kind == "lstm" else 0))


def _records(bias: np.ndarray, w: np.ndarray, zp: int, mult) -> np.ndarray:
    """Per weight row {bias - zp * sum(w row), M, n} as int32."""
    folded = np.asarray(bias, np.int64) - zp * w.astype(np.int64).sum(axis=1)
    if folded.size and (folded.min() < -2 ** 31 or folded.max() > 2 ** 31 - 1):
        raise BackendError("a recurrent bias with the zero point folded in overflows int32")
    m, n = mult
    return np.stack([folded, np.asarray(m, np.int64), np.asarray(n, np.int64)], axis=1).ravel().astype(np.int32)


def emit_int8(low8, op: Op, ctx, p) -> Lowered:
    lay = op_layout(op)
    k = int8_constants(op)
    y = op.result
    ys = dim_strides(low8.lay.of(y))
    if ys is None:
        raise BackendError(f"%{y.name}: {op.kind} result layout is not strided (internal error)")
    n, t, f = op.operands[0].type.shape
    weights, fields_w = [], {"w_ih": [], "w_hh": [], "q_ih": [], "q_hh": []}
    for d in range(lay.dirs):
        i_ih, i_hh, i_bih, i_bhh = lay.weights(d)
        arrays = [ctx.const(op.operands[i]) for i in (i_ih, i_hh, i_bih, i_bhh)]
        if any(a is None for a in arrays):
            raise BackendError(f"%{y.name} = {op.kind}: weights and biases must be constants", where=op.loc)
        w_ih, w_hh, b_ih, b_hh = arrays
        fields_w["w_ih"].append(ctx.ref(op.operands[i_ih]))
        fields_w["w_hh"].append(ctx.ref(op.operands[i_hh]))
        for role, b, w, zp, mult in (("q_ih", b_ih, w_ih, k.zx, k.dirs[d].x_mult),
                                     ("q_hh", b_hh, w_hh, k.zh, k.dirs[d].h_mult)):
            rec = Weight(ctx.weight_name(f"{role}{d}"), _records(b, w, zp, mult), "int32_t")
            weights.append(rec)
            fields_w[role].append(rec.cname)
    sig = Weight(ctx.weight_name("sigmoid"), k.sigmoid, "int16_t")
    tanh = Weight(ctx.weight_name("tanh"), k.tanh, "int16_t")
    weights += [sig, tanh]
    xs = p.info["xs"]
    ss = p.info["ss"] + [[0, 0, 0]] * (2 - len(p.info["ss"]))
    ints = (("n", n), ("t", t), ("f", f), ("h", lay.hidden), ("dirs", lay.dirs), ("cell", int(lay.result == "cell")),
            ("xs_n", xs[0]), ("xs_t", xs[1]), ("xs_f", xs[2]), ("hs_d", ss[0][0]), ("hs_n", ss[0][1]),
            ("hs_h", ss[0][2]), ("cs_d", ss[1][0]), ("cs_n", ss[1][1]), ("cs_h", ss[1][2]), ("ys_0", ys[0]),
            ("ys_1", ys[1]), ("ys_2", ys[2]), ("zh", k.zh), ("zy", k.zy), ("h15_m", k.h15[0]), ("h15_n", k.h15[1]),
            ("hid_m", k.to_hidden[0]), ("hid_n", k.to_hidden[1]), ("out_m", k.to_out[0]), ("out_n", k.to_out[1]),
            ("cell_frac", k.cell_frac), ("zc0", k.zc0), ("c0_m", k.c0[0]), ("c0_n", k.c0[1]))
    fields = tuple((name, str(int(v))) for name, v in ints) + \
        tuple((name, _pair(refs)) for name, refs in fields_w.items()) + \
        (("sig_table", sig.cname), ("tanh_table", tanh.cname))
    param = Param("tinyc_rnn_s8_params", ctx.param_name(), fields)
    x = low8.operand(op, 0, ctx, p)
    h0 = low8.operand(op, 1, ctx, p)
    hidden = ctx.scratch(p.kernel_scratch_at)
    if lay.kind == "gru":
        call = Call("tinyc_rnn_gru_s8", (x, h0, ctx.ref(y), hidden, "&" + param.cname))
    else:
        c0 = low8.operand(op, 2, ctx, p) if lay.states == 2 else "0"
        cell = f"(int16_t *)(void *)({ctx.scratch(p.kernel_scratch_at + p.info['cell_at'])})"
        call = Call("tinyc_rnn_lstm_s8", (x, h0, c0, ctx.ref(y), hidden, cell, "&" + param.cname))
    return Lowered((Kernel(LIBRARY.key, f"{lay.kind.upper()}_S8"),), (param,), tuple(weights), (call,))


# ---- registration (c_ops imports this module at its end; c_ops_int8 merges the int8 tables) ------

def _no_inplace(op: Op):
    return ()


LOWERINGS["recurrent"] = Lowering(lower_f32, _no_inplace, scratch_f32)
PLANS_S8 = {"recurrent": plan_int8}
EMIT_S8 = {"recurrent": emit_int8}
