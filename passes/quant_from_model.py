"""quantize-int8{qparams=model}: an imported model's own quantization (PyTorch pt2e) instead of
calibration (docs/quantization.md "Importing a pt2e-quantized model").

The frontend imports each quantize/dequantize pair of a pt2e-converted model as a `fake_quant` op
(float in, float out, the model's scale / zero point / code range). Here those parameters become
the int8 quantization of the values, and the fake_quant ops disappear:

- y = fake_quant(x) per tensor (an activation): y gets the model's parameters. So does x when every
  fake_quant reading x (or a value sharing x's quantization through reshape, pools, ...: ops that
  keep their input's quantization) has the same parameters: PyTorch rounds x to them, and tinyc's
  int8 op computing x requantizes to them directly; the fake_quant is then no op at all. A
  fake_quant whose input already has another quantization (its producer's result must keep its
  input's, as a max pool; an int8 softmax's output is fixed at 1/256) becomes a `lut`: the table
  of quantize(dequantize(q)) for the 256 input codes, PyTorch's rounding, clamped to the model's
  code range (a narrower range than [-128, 127] is honoured the same way).
- Codes in [0, 255] (uint8 models) are shifted to [-128, 127] with zp - 128: the same real values.
- w = fake_quant(const) read only as a conv2d / linear weight: the model's integer codes become
  the i8 weight with the model's per-channel (or per-tensor, repeated) scales. The bias (pt2e
  keeps it float) is quantized with input scale x weight scale, as tinyc always does.
- A value the model left in float (no fake_quant decides its quantization: e.g. a conv whose relu
  was not fused, an op the quantizer did not annotate) stays float, and so does every op reading
  or producing one: PyTorch computed it in float too. Run `fuse` first so conv + relu is one op.

What tinyc's int8 scheme cannot honour is an error naming the value, never a different result:
per-channel activation quantization, codes wider than 8 bits, asymmetric or per-channel-on-another-
axis weights, weight codes of -128 (tinyc's weights are symmetric in [-127, 127]).
"""
from __future__ import annotations

import numpy as np

from tinyc import quant
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.ops import OPS, Trait, has
from tinyc.ops.fake_quant import codes as fq_codes, fake_quantize, per_channel
from tinyc.passes.base import check

RULE = "model_quant"   # the int8 facet of the op that carries a model's quantization


def is_fake_quant(op: Op) -> bool:
    return OPS[op.kind].int8 == RULE


def has_model_quant(graph: Graph) -> bool:
    return any(is_fake_quant(op) for op in graph.compute_ops())


def _keep_hint(name: str) -> str:
    return f"keep it in float: quantize-int8{{keep-float={name}}}"


def int8_codes(op: Op) -> tuple[int, int, int]:
    """(shift, qmin, qmax): the model's code range moved into int8 (uint8 codes shift by -128)."""
    qmin, qmax = op.attrs["qmin"], op.attrs["qmax"]
    for shift in (0, -128):
        if quant.QMIN <= qmin + shift and qmax + shift <= quant.QMAX:
            return shift, qmin + shift, qmax + shift
    check(False, f"%{op.result.name} = fake_quant: the model quantizes to codes in [{qmin}, {qmax}], wider than "
          "tinyc's int8 activations", _keep_hint(op.result.name))


def activation_params(op: Op) -> QuantParams:
    """The model's per-tensor parameters of a fake_quant result, in int8 codes."""
    name = op.result.name
    check(not per_channel(op.attrs), f"%{name} = fake_quant: the model quantizes this activation per channel "
          f"(axis {op.attrs.get('axis')}); tinyc's int8 activations are quantized per tensor", _keep_hint(name))
    shift, _, _ = int8_codes(op)
    return QuantParams((float(np.float32(op.attrs["scale"][0])),), (op.attrs["zero_point"][0] + shift,))


def _full_range(op: Op) -> bool:
    _, lo, hi = int8_codes(op)
    return (lo, hi) == (quant.QMIN, quant.QMAX)


class ModelQuantization:
    """Which values take which of the model's parameters, which ops stay float, which fake_quants
    are weights."""

    def __init__(self, graph: Graph, keep: set[str]):
        self.graph, self.keep = graph, set(keep)
        self.users: dict[str, list[Op]] = {}
        for op in graph.ops:
            for v in op.operands:
                self.users.setdefault(v.name, []).append(op)
        self.consts = {op.result.name: op for op in graph.const_ops()}
        self.weights = {op.result.name: op for op in graph.compute_ops()
                        if is_fake_quant(op) and op.result.name not in self.keep and self._is_weight(op)}
        self.qmap: dict[str, QuantParams] = {}
        self.notes: list[str] = []
        self._assign()

    def _is_weight(self, op: Op) -> bool:
        """A fake_quant of a constant read only as the weight of conv2d / linear."""
        users = self.users.get(op.result.name, [])
        return op.operands[0].name in self.consts and bool(users) and all(
            has(u, Trait.LAYER) and u.operands[1] is op.result and op.result not in u.operands[2:] and
            op.result is not u.operands[0] for u in users)

    def _assign(self) -> None:
        g = self.graph
        names = [v.name for v in g.inputs] + [op.result.name for op in g.ops]
        parent = {n: n for n in names}

        def find(n: str) -> str:
            while parent[n] != n:
                n = parent[n]
            return n

        fq_of = {op.result.name: op for op in g.compute_ops() if is_fake_quant(op)}
        for op in g.compute_ops():   # values sharing a quantization: the int8 form requires it
            if has(op, Trait.SAME_QUANT) and op.result.name not in self.keep and op.result.type.dtype == "f32":
                parent[op.result.name] = find(op.operands[0].name)
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(find(n), []).append(n)
        for root, members in groups.items():
            if root in self.weights or (root in fq_of and root in self.keep):
                continue
            if root in fq_of:
                q = activation_params(fq_of[root])
            else:   # the first fake_quant reading the group (in graph order) decides
                readers = [u for m in members for u in self.users.get(m, []) if is_fake_quant(u)
                           and u.result.name not in self.keep and u.result.name not in self.weights]
                if readers:
                    q = activation_params(min(readers, key=g.ops.index))
                elif root in self.consts:   # a constant operand: exact from its own range, as tinyc does
                    a = self.consts[root].attrs["value"]
                    q = quant.range_params(float(a.min()), float(a.max())) if a.size else quant.range_params(0, 0)
                else:
                    continue
            for m in members:
                self.qmap[m] = q
        # what stays float: the user's keep-float, and every op with a float operand or result the
        # model gives no quantization (consts and weights have theirs)
        for op in g.compute_ops():
            name = op.result.name
            if name in self.weights or name in self.keep:
                continue
            if is_fake_quant(op):
                activation_params(op)   # (per-channel activations, wide codes: the error names the op)
                continue
            operands = [v for i, v in enumerate(op.operands)
                        if v.type.dtype == "f32" and not (has(op, Trait.LAYER) and i > 0)]
            if name not in self.qmap or any(v.name not in self.qmap for v in operands):
                self.keep.add(name)
        # an int8 softmax's result has its fixed quantization: a different model parameter is
        # reached through a lut after it
        for op in g.compute_ops():
            if OPS[op.kind].int8 == "exp_table" and op.result.name not in self.keep:
                q = self.qmap[op.result.name]
                if q != quant.SOFTMAX_OUT:
                    self.notes.append(f"%{op.result.name} = softmax: the model quantizes its result with scale "
                                      f"{q.scale[0]:g}, zp {q.zero_point[0]}; tinyc's int8 softmax produces scale "
                                      "1/256, zp -128, requantized by a table to the model's")
                for m in groups[find(op.result.name)]:
                    self.qmap[m] = quant.SOFTMAX_OUT

    def auto_kept(self, user_keep: set[str]) -> list[str]:
        return sorted(n for n in self.keep - set(user_keep) if n not in self.weights)


def model_weight(lw, op: Op) -> tuple[Value, QuantParams]:
    """conv2d / linear weight = fake_quant(const): the model's codes as i8, its scales per channel."""
    w = op.operands[1]
    name = op.result.name
    fq = lw.model.weights.get(w.name)
    check(fq is not None, f"%{name} = {op.kind}: the model gives no quantization for its weight %{w.name}",
          _keep_hint(name))
    a = fq.attrs
    c = lw.consts[fq.operands[0].name]
    o = c.shape[0]
    if per_channel(a):
        check(a["axis"] == 0, f"%{name} = {op.kind}: the model quantizes weight %{w.name} per channel along axis "
              f"{a['axis']}; tinyc's weights are quantized per output channel (axis 0)", _keep_hint(name))
        scales, zps = list(a["scale"]), list(a["zero_point"])
    else:
        scales, zps = list(a["scale"]) * o, list(a["zero_point"]) * o
    check(not any(zps), f"%{name} = {op.kind}: the model's weight %{w.name} has zero points {sorted(set(zps))}; "
          "tinyc's weights are symmetric (zero point 0)", _keep_hint(name))
    codes = fq_codes(c, a).astype(np.int64)
    worst = int(np.abs(codes).max(initial=0))
    check(worst <= quant.WEIGHT_MAX, f"%{name} = {op.kind}: the model's weight %{w.name} has codes of magnitude "
          f"{worst}; tinyc's i8 weights are in [-{quant.WEIGHT_MAX}, {quant.WEIGHT_MAX}]", _keep_hint(name))
    q = QuantParams(tuple(float(np.float32(s)) for s in scales), (0,) * o, axis=0)
    v = lw.const((fq.operands[0].name, "model-weight"), codes.astype(np.int8), "i8", q)
    return v, q


def lower_fake_quant(lw, op: Op) -> None:
    """y = fake_quant(x), an activation: no op when x already has y's parameters (and the model's
    code range is all of int8), else a lut requantizing x's codes the way PyTorch does."""
    name = op.result.name
    if name in lw.model.weights:
        return   # lowered where it is used: as the layer's integer weight (or a float constant)
    x = op.operands[0]
    q = lw.qmap[name]
    xi = lw.int_of(x)
    if xi.type.quant == q and _full_range(op):
        lw.ints[name] = xi
        return
    shift, _, _ = int8_codes(op)
    levels = quant.dequantize(np.arange(quant.QMIN, quant.QMAX + 1), xi.type.quant)
    table = (fq_codes(levels, op.attrs) + shift).astype(np.int8)
    t = TensorType(op.result.type.shape, "i8", q)
    lw.ints[name] = lw._emit("lut", [xi, lw.const((name + ".table",), table, "i8", None)], name, t, {}, op.loc)


def weight_float(lw, v: Value) -> Value | None:
    """A weight fake_quant read in float (its layer kept float): the constant it computes."""
    fq = lw.model.weights.get(v.name)
    if fq is None:
        return None
    c = lw.consts[fq.operands[0].name]
    return lw.const((v.name, "float"), fake_quantize(c, fq.attrs), "f32", None)


def strip(graph: Graph) -> Graph:
    """qparams=calibrate: ignore the model's parameters. A fake_quant of a constant folds into the
    constant it computes (the model's dequantized weight); an activation's is dropped, its readers
    reading its input (one that is a graph output computed from a graph input or output stays, as
    a table on calibrated ranges)."""
    from tinyc.rewrite import Rewriter
    rw = Rewriter(graph)
    for op in [op for op in graph.compute_ops() if is_fake_quant(op)]:
        x = op.operands[0]
        c = rw.const(x)
        if c is not None:
            rw.replace_op(op, rw.before(op).const(op.result.name, fake_quantize(c, op.attrs)))
        elif not (rw.is_output(op.result) and (rw.is_output(x) or rw.is_input(x))):
            rw.replace_op(op, x)
    graph.remove_dead()
    return graph


def lower(graph: Graph, keep: set[str]) -> tuple[Graph, ModelQuantization]:
    from tinyc.passes.quantize_int8 import Lowering

    class ModelLowering(Lowering):
        def __init__(self, src: Graph, model: ModelQuantization):
            super().__init__(src, model.qmap, model.keep, 8)
            self.model = model

        def weight(self, op: Op):
            return model_weight(self, op)

        def float_of(self, v: Value) -> Value:
            w = weight_float(self, v)
            return w if w is not None else super().float_of(v)

        def fake_quant(self, op: Op) -> None:
            lower_fake_quant(self, op)

    model = ModelQuantization(graph, keep)
    return ModelLowering(graph, model).run(), model
