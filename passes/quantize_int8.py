"""`quantize-int8`: post-training int8 quantization (docs/quantization.md).

Three steps: float rewrites that give every op an integer form (batch_norm becomes a 1x1
depthwise conv, division by a constant a multiplication), calibration (quant_calibrate),
and lowering every op to its int8 form. The graph's inputs and outputs stay float, behind
`quantize` and `dequantize`; ops named in keep-float stay float the same way.
Quantization parameters go in the types; multipliers are derived from them (tinyc.quant).

`weight-bits=4|2` stores conv/linear weights as i4 / i2 codes (docs/compression_formats.md).
The compressed representations lower too: a shared weight (decode of a float codebook) becomes
a decode of an integer codebook, `sign` compares codes, and bin_conv2d / bin_linear take their
int8 form (i32 bias in units of input scale x alpha, output requantized to i8).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from tinyc import quant
from tinyc.interpreter import run_op
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value, unique_name
from tinyc.ops import ACTIVATIONS, OPS, Trait, has, is_int_form
from tinyc.ops.norms import norm_count
from tinyc.passes.base import Pass, PassContext, check, option, register
from tinyc.passes.quant_calibrate import calibration_samples, observe_ranges
from tinyc.passes.quantize_recurrent import lower_recurrent
from tinyc.rewrite import Rewriter


# ---- float rewrites: give every op an integer form ---------------------------------------------

def batch_norm_to_conv(rw: Rewriter, bn: Op) -> None:
    """batch_norm(x) ==> conv2d 1x1 depthwise (reshaped to [N, C, 1, L] unless x is 4-D):
    its one-element channels quantize exactly, so batch_norm needs no integer form."""
    x, name = bn.operands[0], bn.result.name
    params = [rw.const(v) for v in bn.operands[1:]]
    check(all(p is not None for p in params), f"%{name} = batch_norm: mean, var, weight and bias must be "
          "constants to quantize", f"keep it in float: quantize-int8{{keep-float={name}}}")
    mean, var, gamma, beta = (p.astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + bn.attrs["eps"])
    n, c = x.type.shape[:2]
    b = rw.before(bn)
    w = b.const(name + ".weight", scale.astype(np.float32).reshape(c, 1, 1, 1))
    bias = b.const(name + ".bias", (beta - mean * scale).astype(np.float32))
    conv = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": c}
    if x.type.rank == 4:    # the conv takes over bn's name
        y = b.create("conv2d", [x, w, bias], conv, name, fresh=False)
    else:
        x4 = b.create("reshape", [x], {"shape": [n, c, 1, x.type.numel // (n * c)]}, name + ".in")
        y4 = b.create("conv2d", [x4, w, bias], conv, name + ".conv")
        y = b.create("reshape", [y4], {"shape": list(x.type.shape)}, name, fresh=False)
    rw.replace_op(bn, y)


def div_by_const_to_mul(rw: Rewriter, div: Op) -> None:
    """div(x, c) ==> mul(x, 1/c) for a constant c without zeros: a scalar 1/c is an exact int8
    constant, and a multiplication rounds once where the integer division rounds twice."""
    c = rw.const(div.operands[1])
    if c is None or not np.all(c != 0) or rw.const(div.operands[0]) is not None:
        return
    recip = (1.0 / c.astype(np.float64)).astype(np.float32)
    b = rw.before(div)
    r = b.const(div.operands[1].name + ".recip", recip)
    rw.replace_op(div, b.create("mul", [div.operands[0], r], dict(div.attrs), div.result.name, fresh=False))


def split_activation(rw: Rewriter, op: Op) -> None:
    """op {act = a} ==> op; a, for a fused activation that no int8 requantization computes
    (gelu, silu, hardsigmoid): the activation becomes its own op, lowered to a table. The
    activation's result keeps the name; op's result is renamed NAME.pre."""
    a = ACTIVATIONS[op.attrs["act"]]
    out = op.result
    pre_name = rw.graph.fresh_name(out.name + ".pre")
    attrs = a.params_of(op.attrs, fused=True)
    for k in [k for k in op.attrs if k == "act" or k in a.fused]:
        del op.attrs[k]
    y = rw.after(op).create(a.kind, [out], attrs, out.name, fresh=False)
    rw.replace_all_uses(out, y, exclude=[rw.producer(y)])
    out.name = pre_name
    rw.changed(op)


# The float rewrites, by the `prepare` rule of an op's definition.
def additive_mask_to_masked_softmax(rw: Rewriter, sm: Op) -> None:
    """softmax(add(x, c)) with a constant c holding -inf entries (an attention mask: nn.MultiheadAttention
    with need_weights adds its merged masks) ==> masked_softmax(add(x, c'), keep), keep = c is finite,
    c' = c with 0 at -inf (the add goes if c' is all 0): the same values in float, and no -inf in the
    calibrated range of the scores. A row with nothing kept is NaN in float, as before; in int8 -128s."""
    x = sm.operands[0]
    add = rw.producer(x)
    if add is None or add.kind != "add" or "act" in add.attrs or rw.sole_user(x) is not sm or rw.is_output(x):
        return
    for i in (0, 1):
        c = rw.const(add.operands[i])
        if c is not None and c.ndim <= x.type.rank and np.isneginf(c).any() and not np.isnan(c).any() \
                and not np.isposinf(c).any():
            break
    else:
        return
    keep, finite = np.isfinite(c), np.where(np.isfinite(c), c, 0.0).astype(np.float32)
    other = add.operands[1 - i]
    b = rw.before(sm)
    mask = b.const(sm.result.name + ".keep", keep.astype(np.float32))
    if finite.any() or other.type.shape != x.type.shape:
        rw.replace_const_operand(add, i, finite)
        scores = x
    else:
        scores = other
    rw.replace_op(sm, b.create("masked_softmax", [scores, mask], {"axis": sm.attrs["axis"]}, sm.result.name,
                               fresh=False))


def finite_branches(rw: Rewriter, op: Op) -> None:
    """where(c, a, b) with a constant branch holding +-inf or NaN (masked_fill(mask, -inf) by a mask computed at
    run time) has no int8 form: no scale covers an infinity. Said here, before calibration tries."""
    for v in op.operands[1:]:
        c = rw.const(v)
        check(c is None or bool(np.isfinite(c).all()), f"%{op.result.name} = where: the constant %{v.name} holds "
              "inf or NaN, which int8 cannot represent (masked_fill(mask, -inf) with a mask computed at run time)",
              "fill with a finite value, or compile this model in float; a -inf fill by a constant mask before "
              "softmax is supported (masked_softmax)")


PREPARE: dict[str, Callable[[Rewriter, Op], None]] = {
    "batch_norm_to_conv": batch_norm_to_conv,
    "div_by_const": div_by_const_to_mul,
    "additive_mask": additive_mask_to_masked_softmax,
    "finite_branches": finite_branches,
}


def prepare(graph: Graph, keep: set[str]) -> Graph:
    """The float rewrites, one sweep in graph order (each op is rewritten at most once, and
    what a rewrite creates needs none)."""
    rw = Rewriter(graph)
    for op in list(graph.ops):
        if op.result.name in keep:
            continue
        if "act" in op.attrs and not ACTIVATIONS[op.attrs["act"]].requant:
            split_activation(rw, op)
        rule = OPS[op.kind].prepare
        if rule is not None:
            PREPARE[rule](rw, op)
    graph.remove_dead()
    return graph


# ---- quantization parameters of every value -----------------------------------------------------

def assign_quant(graph: Graph, ranges: dict[str, tuple[float, float]], keep: set[str]) -> dict[str, QuantParams]:
    """name -> activation quant. Ops that keep their input's quantization (SAME_QUANT_OPS) put
    input and result in one group whose range is the union of the members' ranges; a group
    holding an int8 softmax (log_softmax) result takes its fixed output quantization. Which ops do
    is a facet of their definition (Trait.SAME_QUANT, an int8 rule in quant.FIXED_OUTPUT_QUANT)."""
    ranges = dict(ranges)
    for op in graph.const_ops():
        a = op.attrs["value"]
        ranges[op.result.name] = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    parent = {name: name for name in ranges}

    def find(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for op in graph.compute_ops():
        # (integer values, e.g. a reshape of i32 token ids, have no range and no quantization)
        if has(op, Trait.SAME_QUANT) and op.result.name not in keep and op.result.name in parent \
                and op.operands[0].name in parent:
            parent[find(op.result.name)] = find(op.operands[0].name)
    groups: dict[str, list[str]] = {}
    for name in ranges:
        groups.setdefault(find(name), []).append(name)
    # results whose int8 rule fixes their quantization (softmax, log_softmax: quant.FIXED_OUTPUT_QUANT)
    fixed = {op.result.name: quant.FIXED_OUTPUT_QUANT[OPS[op.kind].int8] for op in graph.compute_ops()
             if OPS[op.kind].int8 in quant.FIXED_OUTPUT_QUANT and op.result.name not in keep}
    qmap = {}
    for members in groups.values():
        lo, hi = min(ranges[m][0] for m in members), max(ranges[m][1] for m in members)
        pinned = [fixed[m] for m in members if m in fixed]
        q = pinned[0] if pinned else quant.range_params(lo, hi)
        qmap.update(dict.fromkeys(members, q))
    return qmap


# ---- lowering to int8 ----------------------------------------------------------------------------

class Lowering:
    """Builds the int8 graph op by op. Values keep their names; converted copies are made on
    demand (`int_of`, `float_of`) and named NAME.q (quantized) and NAME.dq (dequantized)."""

    def __init__(self, src: Graph, qmap: dict[str, QuantParams], keep: set[str], weight_bits: int = 8,
                 samples: list | None = None):
        self.src, self.qmap, self.keep, self.weight_bits = src, qmap, keep, weight_bits
        self.samples = list(samples or [])     # the calibration inputs (lstm's cell range runs the float graph)
        self.consts = {op.result.name: op.attrs["value"] for op in src.const_ops()}
        self.decodes = {op.result.name: op for op in src.compute_ops() if OPS[op.kind].int8 == "codebook"}
        self.bits: dict[str, Value] = {}        # u1 results of lowered sign ops
        self.decode_names: set[str] = set()     # decode results emitted under their own name
        self.out = Graph(src.name, list(src.inputs), [])
        self.taken = src.value_names()
        self.ints: dict[str, Value] = {}
        self.floats: dict[str, Value] = {v.name: v for v in src.inputs}
        self.derived: dict[tuple, Value] = {}   # (const name, role, ...) -> derived const

    def run(self) -> Graph:
        for op in self.src.compute_ops():
            name = op.result.name
            rule = OPS[op.kind].int8
            if rule == "codebook":
                continue        # emitted where used: as an integer weight, or in float (float_of)
            if rule in SPECIAL and name not in self.keep:
                SPECIAL[rule](self, op)
            elif name in self.keep or op.result.type.dtype != "f32":
                operands = [self.float_of(v) for v in op.operands]
                self.floats[name] = self._emit(op.kind, operands, name, op.result.type, dict(op.attrs), op.loc)
            else:
                check(rule in LOWER, f"%{name} = {op.kind}: no int8 form",
                      f"keep it in float: quantize-int8{{keep-float={name}}}")
                kind, operands, attrs = LOWER[rule](self, op)
                t = TensorType(op.result.type.shape, "i8", self.qmap[name])
                self.ints[name] = self._emit(kind, operands, name, t, attrs, op.loc)
        self.out.outputs = [self.float_of(v) for v in self.src.outputs]
        # Constants first, as the importer writes them.
        self.out.ops = [op for op in self.out.ops if op.is_const] + [op for op in self.out.ops if not op.is_const]
        return self.out

    # -- values
    def fresh(self, base: str) -> str:
        return unique_name(base, self.taken)

    def _emit(self, kind, operands, name, t, attrs, loc=None) -> Value:
        v = Value(name, t)
        self.out.ops.append(Op(kind, operands, v, attrs, loc))
        return v

    def const(self, key: tuple, array: np.ndarray, dtype: str, q: QuantParams | None) -> Value:
        """The const for `key` = (base name, role, ...): the first const derived from a source
        const takes its name, others get fresh names."""
        if key not in self.derived:
            reuse = key[0] in self.consts and not any(k[0] == key[0] for k in self.derived)
            v = Value(key[0] if reuse else self.fresh(key[0]), TensorType(tuple(array.shape), dtype, q))
            self.out.ops.append(Op("const", [], v, {"value": np.array(array, order="C")}))
            self.derived[key] = v
        return self.derived[key]

    def int_of(self, v: Value) -> Value:
        if v.name in self.ints:
            return self.ints[v.name]
        q = self.qmap[v.name]
        if v.name in self.consts:
            return self.const((v.name, "act"), quant.quantize(self.consts[v.name], q).astype(np.int8), "i8", q)
        t = TensorType(v.type.shape, "i8", q)
        self.ints[v.name] = self._emit("quantize", [self.float_of(v)], self.fresh(v.name + ".q"), t, {})
        return self.ints[v.name]

    def float_of(self, v: Value) -> Value:
        if v.name in self.floats:
            return self.floats[v.name]
        if v.name in self.bits:
            return self.bits[v.name]
        if v.name in self.decodes:
            op = self.decodes[v.name]
            operands = [self.float_of(x) for x in op.operands]
            self.floats[v.name] = self._emit("decode", operands, self.fresh_decode(v.name), v.type, {}, op.loc)
            return self.floats[v.name]
        if v.name in self.consts:
            return self.const((v.name, "float"), self.consts[v.name], v.type.dtype, v.type.quant)
        t = TensorType(v.type.shape, "f32")
        self.floats[v.name] = self._emit("dequantize", [self.int_of(v)], self.fresh(v.name + ".dq"), t, {})
        return self.floats[v.name]

    def fresh_decode(self, name: str) -> str:
        """A decode result's own name for its first emitted form (float or integer), else a fresh one."""
        if name not in self.decode_names:
            self.decode_names.add(name)
            return name
        return self.fresh(name)

    def weight(self, op: Op) -> tuple[Value, QuantParams]:
        w = op.operands[1]
        bits = self.weight_bits
        dtype = quant.WEIGHT_BITS[bits][0]
        if w.name in self.decodes:
            return self.shared_weight(w, dtype)
        check(w.name in self.consts, f"%{op.result.name} = {op.kind}: the weight %{w.name} is not a constant",
              f"keep this op in float: quantize-int8{{keep-float={op.result.name}}}")
        array = self.consts[w.name]
        q = quant.weight_params(array, bits)
        return self.const((w.name, "weight", bits), quant.quantize_weight(array, q, bits), dtype, q), q

    def shared_weight(self, w: Value, dtype: str) -> tuple[Value, QuantParams]:
        """decode(idx, f32 codebook) ==> decode(idx, integer codebook) with the weight's quant: a
        per-channel codebook [O, K] quantizes row by row (scale per channel); a per-layer codebook
        [K] with one scale for the layer (every channel's scale is the same), so it stays [K]."""
        key = (w.name, "shared", dtype)
        if key in self.derived:
            return self.derived[key], self.derived[key].type.quant
        op = self.decodes[w.name]
        idx, book = op.operands
        check(idx.name in self.consts and book.name in self.consts,
              f"%{w.name} = decode: indices and codebook must be constants to quantize")
        check(book.type.dtype == "f32", f"%{w.name} = decode: the codebook is already integer")
        cb = self.consts[book.name].astype(np.float32)
        bits = self.weight_bits
        o = w.type.shape[0]
        rows = cb if cb.ndim == 2 else cb.reshape(1, -1)
        rq = quant.weight_params(rows, bits)
        codes = quant.quantize_weight(rows, rq, bits)
        if cb.ndim == 1:
            q = QuantParams(rq.scale * o, (0,) * o, axis=0)
            codes = codes.reshape(-1)
        else:
            q = rq
        idx_v = self.const((idx.name, "float"), self.consts[idx.name], idx.type.dtype, None)
        book_v = self.const((book.name, "codes", dtype), codes, dtype, None)
        t = TensorType(w.type.shape, dtype, q)
        v = self._emit("decode", [idx_v, book_v], self.fresh_decode(w.name), t, {}, op.loc)
        self.derived[key] = v
        return v, q

    def bits_of(self, v: Value) -> Value:
        """A u1 value (a sign result): the same bits in either domain."""
        if v.name in self.bits:
            return self.bits[v.name]
        return self.float_of(v)


# Each lowering returns (kind, operands, attrs) of the int8 op computing `op`.

def _layer(lw: Lowering, op: Op):
    x = lw.int_of(op.operands[0])
    w, wq = lw.weight(op)
    operands = [x, w]
    if len(op.operands) == 3:
        b = op.operands[2]
        check(b.name in lw.consts, f"%{op.result.name} = {op.kind}: the bias %{b.name} is not a constant")
        bq = quant.bias_params(x.type.quant, wq)
        operands.append(lw.const((b.name, "bias", bq), quant.quantize_bias(lw.consts[b.name], bq), "i32", bq))
    return op.kind, operands, dict(op.attrs)


def _same(lw: Lowering, op: Op):
    return op.kind, [lw.int_of(v) for v in op.operands], dict(op.attrs)


def _lut(lw: Lowering, op: Op):
    """Unary activations become a 256-entry table of the float op on every input code."""
    x = lw.int_of(op.operands[0])
    table = quant.lut_table(lambda a: run_op(op, a), x.type.quant, lw.qmap[op.result.name])
    return "lut", [x, lw.const((op.result.name + ".table",), table, "i8", None)], {}


def _softmax(lw: Lowering, op: Op):
    x = lw.int_of(op.operands[0])
    n = x.type.shape[op.attrs["axis"]]
    check(n <= quant.SOFTMAX_MAX_LEN, f"%{op.result.name} = softmax: {n} elements along the axis; the int8 "
          f"form handles at most {quant.SOFTMAX_MAX_LEN}", f"quantize-int8{{keep-float={op.result.name}}}")
    table = quant.softmax_exp_table(x.type.quant)
    return "softmax", [x, lw.const((op.result.name + ".exp",), table, "i32", None)], dict(op.attrs)


def _log_softmax(lw: Lowering, op: Op):
    """log_softmax(x) ==> log_softmax(x i8, exp_table i32[256]), softmax's table; the result has the
    fixed quantization quant.LOG_SOFTMAX_OUT (assign_quant)."""
    x = lw.int_of(op.operands[0])
    n = x.type.shape[op.attrs["axis"]]
    check(n <= quant.SOFTMAX_MAX_LEN, f"%{op.result.name} = log_softmax: {n} elements along the axis; the int8 "
          f"form handles at most {quant.SOFTMAX_MAX_LEN}", f"quantize-int8{{keep-float={op.result.name}}}")
    table = quant.softmax_exp_table(x.type.quant)
    return op.kind, [x, lw.const((op.result.name + ".exp",), table, "i32", None)], dict(op.attrs)


def _masked_softmax(lw: Lowering, op: Op):
    """masked_softmax(x, mask) ==> masked_softmax(x i8, mask, exp_table i32[256]): softmax's table and
    fixed output quantization (quant.FIXED_OUTPUT_QUANT); the constant f32 0/1 mask stays as it is.
    The calibrated range of x is the scores', without the -inf a masked position has in PyTorch."""
    x = lw.int_of(op.operands[0])
    n = x.type.shape[op.attrs["axis"]]
    check(n <= quant.SOFTMAX_MAX_LEN, f"%{op.result.name} = masked_softmax: {n} elements along the axis; the "
          f"int8 form handles at most {quant.SOFTMAX_MAX_LEN}", f"quantize-int8{{keep-float={op.result.name}}}")
    check(op.operands[1].name in lw.consts, f"%{op.result.name} = masked_softmax: the mask is not a constant",
          f"keep it in float: quantize-int8{{keep-float={op.result.name}}}")
    table = quant.softmax_exp_table(x.type.quant)
    return op.kind, [x, lw.float_of(op.operands[1]), lw.const((op.result.name + ".exp",), table, "i32", None)], \
        dict(op.attrs)


def _sign(lw: Lowering, op: Op) -> None:
    """sign(x f32, t?) ==> sign(x i8, t i32): bit = q >= ceil(t / scale + zp) (q >= zp without t)."""
    x = lw.int_of(op.operands[0])
    operands = [x]
    if len(op.operands) == 2:
        t = op.operands[1]
        check(t.name in lw.consts, f"%{op.result.name} = sign: the threshold %{t.name} is not a constant")
        codes = quant.sign_threshold(lw.consts[t.name], x.type.quant)
        operands.append(lw.const((t.name, "codes", x.type.quant), codes, "i32", None))
    lw.bits[op.result.name] = lw._emit("sign", operands, op.result.name, op.result.type, {}, op.loc)


def _bin_layer(lw: Lowering, op: Op) -> None:
    """bin_conv2d / bin_linear ==> the int8 form: a u1 input stays u1 (in scale 2^-8: its sum is
    shifted by BIN_SHIFT), an f32 input becomes i8; the bias becomes i32 in units of
    in_scale * alpha[c] (zeros when absent); the result is i8 with the calibrated quant."""
    x, w, alpha = op.operands[:3]
    for v in op.operands[1:]:
        check(v.name in lw.consts, f"%{op.result.name} = {op.kind}: %{v.name} is not a constant")
    if x.type.dtype == "u1":
        xv, in_scale = lw.bits_of(x), quant.BIN_U1_SCALE
    else:
        xv = lw.int_of(x)
        in_scale = xv.type.quant.scale[0]
    a = lw.consts[alpha.name]
    bq = quant.bin_bias_params(in_scale, a)
    b = lw.consts[op.operands[3].name] if len(op.operands) == 4 else np.zeros(len(a), np.float32)
    bname = op.operands[3].name if len(op.operands) == 4 else op.result.name + ".bias"
    operands = [xv, lw.float_of(w), lw.float_of(alpha),
                lw.const((bname, "bias", bq), quant.quantize_bias(b, bq), "i32", bq)]
    t = TensorType(op.result.type.shape, "i8", lw.qmap[op.result.name])
    lw.ints[op.result.name] = lw._emit(op.kind, operands, op.result.name, t, dict(op.attrs), op.loc)


def _gather_table(lw: Lowering, op: Op):
    """embedding(table, indices i32) ==> embedding(table i8, indices): the table quantized per tensor
    with the quantization its result shares (Trait.SAME_QUANT puts both in one group, whose range is
    the table's); the i32 indices stay as they are (no quantize)."""
    table, indices = op.operands
    check(indices.type.dtype == "i32", f"%{op.result.name} = {op.kind}: indices %{indices.name} are "
          f"{indices.type.dtype}, not i32")
    return op.kind, [lw.int_of(table), lw.float_of(indices)], dict(op.attrs)


def _float_op(lw: Lowering, op: Op) -> None:
    """An op that stays float in an int8 graph (cast of i32 token ids to f32): its consumers
    quantize its result like any float value."""
    operands = [lw.float_of(v) for v in op.operands]
    lw.floats[op.result.name] = lw._emit(op.kind, operands, op.result.name, op.result.type, dict(op.attrs), op.loc)


def _norm_affine(lw: Lowering, op: Op):
    """layer_norm / group_norm ==> the int8 form: x i8, weight and bias kept as the float32 constants
    they are (the per-element multipliers and Q8 biases derive from them and the result's quant,
    quant.norm_out_params); the result is i8 with the calibrated quant."""
    name = op.result.name
    for v in op.operands[1:]:
        check(v.name in lw.consts, f"%{name} = {op.kind}: the parameter %{v.name} is not a constant",
              f"keep it in float: quantize-int8{{keep-float={name}}}")
    count = norm_count(op)
    check(count <= quant.NORM_MAX_COUNT, f"%{name} = {op.kind}: {count} elements are normalized together; the "
          f"int8 form handles at most {quant.NORM_MAX_COUNT}", f"quantize-int8{{keep-float={name}}}")
    if len(op.operands) == 3:
        beta = lw.consts[op.operands[2].name].astype(np.float64)
        worst = float(np.abs(beta).max(initial=0.0)) / lw.qmap[name].scale[0] * 2 ** quant.NORM_OUT_BITS
        check(worst <= quant.NORM_BIAS_MAX, f"%{name} = {op.kind}: a bias is {worst / 256:.3g} output steps, "
              f"beyond the int8 form's {quant.NORM_BIAS_MAX // 256}", f"quantize-int8{{keep-float={name}}}")
    return op.kind, [lw.int_of(op.operands[0])] + [lw.float_of(v) for v in op.operands[1:]], dict(op.attrs)


def _fake_quant(lw: Lowering, op: Op) -> None:
    """fake_quant (an imported model's quantization): with the model's parameters (qparams=model,
    passes/quant_from_model.py) no op or a requantizing lut; on calibrated ranges (qparams=calibrate,
    where it cannot be dropped) the table of its float function."""
    model_rule = getattr(lw, "fake_quant", None)
    if model_rule is not None:
        model_rule(op)
        return
    kind, operands, attrs = _lut(lw, op)
    t = TensorType(op.result.type.shape, "i8", lw.qmap[op.result.name])
    lw.ints[op.result.name] = lw._emit(kind, operands, op.result.name, t, attrs, op.loc)


# By the `int8` rule of an op's definition. Rules lowered by a function that emits the op itself
# (their results are not plain i8 activations):
SPECIAL: dict[str, Callable[[Lowering, Op], None]] = {"threshold_codes": _sign, "bin_layer": _bin_layer}
SPECIAL["recurrent"] = lower_recurrent          # gru, lstm (passes/quantize_recurrent.py)
SPECIAL["float_op"] = _float_op
SPECIAL["model_quant"] = _fake_quant

# Rules whose function returns (kind, operands, attrs) of the int8 op:
LOWER: dict[str, Callable[[Lowering, Op], tuple]] = {"layer": _layer, "same": _same, "table": _lut,
                                                     "exp_table": _softmax}
LOWER["norm_affine"] = _norm_affine
LOWER["gather_table"] = _gather_table
LOWER["log_exp_table"] = _log_softmax
LOWER["masked_exp_table"] = _masked_softmax
LOWER["mask"] = _same          # compare, logical: the result's quantization is fixed (quant.MASK_OUT)


@register
@dataclass(frozen=True)
class QuantizeInt8(Pass):
    """Post-training int8 quantization: per-channel symmetric weights, per-tensor asymmetric
    activations calibrated on --calib data, int32 biases, fixed-point requantization. Inputs
    and outputs stay float (quantize/dequantize at the edges). Run fuse first."""

    name = "quantize-int8"
    observer: Literal["minmax", "percentile", "mse"] = option(
        "minmax", "activation range: minmax, percentile (clip to the percentile) or mse (least squared error)")
    percentile: float = option(99.99, "percentile kept by observer=percentile (each side)")
    keep_float: tuple[str, ...] = option((), "value names of ops to leave in float, e.g. keep-float=softmax,fc")
    weight_bits: int = option(8, "conv/linear weight bits: 8 (i8), 4 (i4, codes in [-7, 7]) or 2 (i2, ternary "
                                 "[-1, 1]); low-bit scales minimise the squared error")
    qparams: Literal["auto", "model", "calibrate"] = option(
        "auto", "model: an imported model's own quantization (its fake_quant ops, PyTorch pt2e) instead of "
                "calibration; calibrate: ignore it; auto: model if the graph has fake_quant ops")

    def __post_init__(self):
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.weight_bits not in quant.WEIGHT_BITS:
            raise ValueError(f"weight-bits must be 8, 4 or 2, got {self.weight_bits}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        check(not any(is_int_form(op.kind, [v.type for v in op.operands]) or has(op, Trait.INT_ONLY)
                      for op in graph.compute_ops()), "the graph is already quantized",
              "run quantize-int8 once, on the float graph")
        keep = set(self.keep_float)
        results = {op.result.name for op in graph.compute_ops()}
        unknown = sorted(keep - results)
        check(not unknown, f"keep-float names no op result: {', '.join(unknown)}",
              "use value names from the IR dump (tinyc opt --print-ir-after-all)")
        graph = prepare(graph.copy(), keep)
        from tinyc.passes import quant_from_model   # (it builds on this module's Lowering)
        mode = self.qparams
        if mode == "auto":
            mode = "model" if quant_from_model.has_model_quant(graph) else "calibrate"
        if mode == "model":
            check(self.weight_bits == 8, f"weight-bits={self.weight_bits} with the model's own quantization",
                  "the model's weights are int8 codes: drop weight-bits, or pass qparams=calibrate")
            out, model = quant_from_model.lower(graph, keep)
            samples = []
            auto = model.auto_kept(keep)
            ctx.notes.extend(f"quantize-int8: {n}" for n in model.notes)
            if auto:
                ctx.notes.append("quantize-int8: float in the model (no quantization parameters), kept in float: "
                                 + ", ".join(auto))
        else:
            if quant_from_model.has_model_quant(graph):
                graph = quant_from_model.strip(graph)
            samples = calibration_samples(graph, ctx.calib)
            ranges = observe_ranges(graph, samples, self.observer, self.percentile)
            out = Lowering(graph, assign_quant(graph, ranges, keep), keep, self.weight_bits, samples).run()
        kinds = [op.kind for op in out.compute_ops()]
        floats = sum(op.result.type.dtype == "f32" and op.kind != "dequantize" for op in out.compute_ops())
        ctx.stats[self.name] = {"qparams": mode, "observer": self.observer, "weight_bits": self.weight_bits,
                                "calibration_samples": len(samples),
                                "float_ops": floats, "int8_ops": len(kinds) - floats - kinds.count("quantize")}
        if keep:
            ctx.notes.append(f"quantize-int8: kept in float: {', '.join(sorted(keep))}")
        return out
