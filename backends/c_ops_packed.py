"""Packed weight storage in the C backend: sparse, codebook (shared) and low-bit weights.

For every conv2d / linear whose weight is a constant, or `decode(indices, codebook)` of
constants (share-weights), `Packing` picks a storage format (tinyc.backends.weight_formats:
the smallest, if it beats the dense arrays by the policy's margin) and lowers the layer to
the kernels of runtime_c/tinyc_kernels_packed.c; other layers keep the ordinary kernels.

- Float graphs: `linear` and `conv2d` (any groups) read entries / bitmap / codebook rows of
  float values or float codebooks.
- int8 graphs: `linear` (weights in the input's physical order, as tinyc_s8_fc) and
  non-depthwise `conv2d` (im2col order (ky, kx, c), as tinyc_s8_conv_gemm) read int8 codes,
  i4 / i2 codes or int8 codebooks; the zero point is folded into the bias with the sum of
  the stored weights, and the output stage uses compact records (8 bytes a channel: the
  bias with the shift in its low 5 bits, and M; an M or shift every channel shares is a
  literal), see tinyc_kernels_packed.h.
- `decode` ops emit no code: the planner treats them as views (no arena), and a decoded
  weight a kernel still reads whole is emitted as a dense constant.

Its kernels are `Kernel("packed", NAME)` (TINYC_PK_<NAME> of LIBRARY, tinyc_kernels_packed.c); the
emitter includes that library when any is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinyc import quant
from tinyc.backends import int8_weights as iw
from tinyc.backends import weight_formats as wf
from tinyc.backends.c_ops import Kernel, KernelLibrary, Lowered, Param, Weight, act_kernels, fused_act
from tinyc.backends.int8_layout import dim_strides, is_depthwise, is_int8_op
from tinyc.backends.planner import Location
from tinyc.errors import BackendError
from tinyc.ir import Graph, Op
from tinyc.ops import Trait, has

LIBRARY = KernelLibrary("packed", "TINYC_PK_", "tinyc_kernels_packed.c",
                        ("tinyc_kernels_packed.h", "tinyc_kernels_packed.c"))
LAYOUT_CODES = {"dense_lut": 1, "dense_i4": 2, "dense_i2": 3, "entries": 4, "bitmap": 5, "dense_bits": 6, "stream": 7}
VALUE_CODES = {"f32": 0, "i8": 1, "i4": 2, "i2": 3, "lut": 4, "i3": 5, "i5": 5, "i6": 5, "i7": 5}
WORD_LAYOUTS = ("dense_lut", "dense_i4", "dense_i2")     # rows of 32-bit words
SUB_BYTE_CONSTS = ("u1", "u2", "u4", "u8", "i4", "i2", "i1")
ALIGN = 8

@dataclass(frozen=True)
class PackingPolicy:
    """How emit_bundle chooses weight formats: `rules` (margins), `force` maps layer result names to
    (layout, value kind, per_channel) or "dense"; `disable` keeps every layer dense (the ordinary
    kernels), e.g. to measure what packing saves."""

    rules: wf.Policy = field(default_factory=wf.Policy)
    force: dict = field(default_factory=dict)
    disable: bool = False


def accepts(op: Op) -> bool:
    """Ops and constants the packed lowering makes emittable: `decode` and the sub-byte
    constants (indices, i4 / i2 weights and codebooks)."""
    return op.kind == "decode" or (op.is_const and op.result.type.dtype in SUB_BYTE_CONSTS)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class Choice:
    """The storage picked for one layer."""

    kernel: str                  # F32_FC, F32_CONV2D, S8_FC_SPARSE, S8_FC_DENSE, S8_CONV
    enc: wf.Encoded
    dense_bytes: int             # what the ordinary kernels would store
    info: dict = field(default_factory=dict)


class Packing:
    """The packed-weight decisions of one graph (deterministic: a function of the graph)."""

    def __init__(self, graph: Graph, low8=None, plans: dict | None = None, policy: PackingPolicy | None = None):
        self.graph = graph
        self.policy = policy or PackingPolicy()
        producers = self._producers = graph.producers()
        consts = {op.result.name: op.attrs["value"] for op in graph.const_ops()}
        self.decoded: dict[str, np.ndarray] = {}
        from tinyc.interpreter import run_op
        for op in graph.compute_ops():
            if op.kind != "decode":
                continue
            srcs = [producers.get(id(v)) for v in op.operands]
            if not all(s is not None and s.is_const for s in srcs):
                raise BackendError(f"%{op.result.name} = decode: the C backend needs constant indices and codebook",
                                   where=op.loc)
            self.decoded[op.result.name] = np.asarray(run_op(op, *(consts[s.result.name] for s in srcs)))
        self.values = {**consts, **self.decoded}
        self.choices: dict[str, Choice] = {}
        # layer -> {"format", "bytes", "dense_bytes", "why"}: what report.json says of its weights
        self.storage: dict[str, dict] = {}
        self._why: dict[str, str] = {}
        self._dense: dict[str, int] = {}        # layer -> bytes of its ordinary (dense) weight arrays
        for op in graph.compute_ops():
            if not has(op, Trait.LAYER) or op.operands[1].name not in self.values:
                continue
            if len(op.operands) > 2 and op.operands[2].name not in self.values:
                continue
            if low8 is not None and is_int8_op(op):
                choice = None if self.policy.disable else self._choose_int8(op, plans[op.result.name])
                if choice is not None:
                    self.choices[op.result.name] = choice
                    low8.overrides[op.result.name] = _emit_int8
                    _plan_int8(op, plans[op.result.name], choice)
            elif op.operands[0].type.quant is None and op.result.type.dtype == "f32":
                choice = None if self.policy.disable else self._choose_float(op)
                if choice is not None:
                    self.choices[op.result.name] = choice
            else:
                continue
            self.storage[op.result.name] = self._storage(op, choice, low8 is not None and is_int8_op(op))
        if low8 is not None:
            low8.packing = self

    # -- choice
    def _pick(self, op: Op, w2d: np.ndarray, int8: bool, dense_bytes: int) -> wf.Encoded | None:
        self._dense[op.result.name] = dense_bytes
        forced = self.policy.force.get(op.result.name)
        if forced == "dense":
            self._why[op.result.name] = f"{wf.label(None, int8)}: forced (PackingPolicy.force)"
            return None
        if forced is not None:
            layout, kind, per_channel, *gap = forced
            try:
                enc = wf.encode(w2d, layout, kind, int8, per_channel, *gap)
            except ValueError as e:
                raise BackendError(f"%{op.result.name}: cannot store the weights as {forced}: {e}") from None
            self._why[op.result.name] = f"{wf.label(enc)}: {enc.nbytes:,} B, forced (PackingPolicy.force)"
            return enc
        enc, why = wf.choose_explained(w2d, int8, dense_bytes, self.policy.rules)
        self._why[op.result.name] = why
        return enc

    def _storage(self, op: Op, choice: Choice | None, int8: bool) -> dict:
        """The storage of one layer's weights and why (report.json)."""
        w = self.values[op.operands[1].name]
        dense = self._dense.get(op.result.name, int(np.asarray(w).size) * (1 if int8 else 4))
        if choice is not None:
            out = {"format": wf.label(choice.enc), "bytes": choice.enc.nbytes, "dense_bytes": dense,
                   "detail": choice.enc.describe(), "why": self._why.get(op.result.name, "")}
            bits = self._requested_bits(op)
            if bits is not None and choice.enc.values.bits > bits:
                out["requested_bits"] = bits
                out["fallback"] = (f"weights with {bits}-bit indices stored as {out['format']} "
                                   f"({choice.enc.nbytes:,} B): {out['why']}")
            return out
        name = wf.label(None, int8)
        why = self._why.get(op.result.name)
        bits = self._requested_bits(op)
        if bits is not None and bits < (8 if int8 else 32) and not self.policy.disable:
            return {"format": name, "bytes": dense, "dense_bytes": dense, "detail": name, "why": why or name,
                    "requested_bits": bits,
                    "fallback": f"weights with {bits}-bit indices stored as {name} ({dense:,} B): {why}"}
        if why is None:
            why = (f"{name}: packing disabled (PackingPolicy.disable)" if self.policy.disable else
                   f"{name}: this {op.kind}'s kernel reads dense weights (depthwise or direct conv)")
        return {"format": name, "bytes": dense, "dense_bytes": dense, "detail": name, "why": why}

    def _requested_bits(self, op: Op) -> int | None:
        """The index bits of a layer whose weights are decode(indices, codebook) (share-weights,
        low-bit): the width the user asked the weights to be stored in."""
        src = self._producers.get(id(op.operands[1]))
        if src is None or src.result.name not in self.decoded:
            return None
        return wf.lut_bits(int(src.operands[1].type.shape[-1]))

    def _choose_float(self, op: Op) -> Choice | None:
        w = self.values[op.operands[1].name]
        w2d = np.asarray(w, np.float32).reshape(w.shape[0], -1)
        enc = self._pick(op, w2d, False, w2d.size * 4)
        if enc is None:
            return None
        return Choice("F32_FC" if op.kind == "linear" else "F32_CONV2D", enc, w2d.size * 4)

    def _choose_int8(self, op: Op, p) -> Choice | None:
        w = np.asarray(self.values[op.operands[1].name]).astype(np.int64)
        if op.kind == "linear":
            w2d = w
            if p.info["perm"] is not None:     # the input's physical order (tinyc_s8_fc's)
                w2d = np.zeros_like(w)
                w2d[:, p.info["perm"]] = w
            dense = w.shape[0] * p.info["kp"]
        else:
            if is_depthwise(op) or p.info.get("kind") != "gemm":
                return None
            w2d = iw.conv_gemm_weights(w)
            dense = w.shape[0] * p.info["kp"]
        enc = self._pick(op, w2d, True, dense)
        if enc is None:
            return None
        if enc.layout in ("dense_i4", "dense_i2"):
            # the scaled sum (x 2^4 / 2^6) of |x| <= 128 times |code| must fit int32
            shift = wf.RAW_SCALE_SHIFT[enc.layout[-2:]]
            qmax = {"dense_i4": 8, "dense_i2": 2}[enc.layout]
            if w2d.shape[1] * 128 * qmax << shift >= 2 ** 31:
                self._why[op.result.name] = (f"int8 dense: {wf.label(enc)} ({enc.nbytes:,} B) would overflow its scaled "
                                             f"int32 sums over K = {w2d.shape[1]}")
                return None
        kernel = "S8_FC_" + ("SPARSE" if enc.sparse else "DENSE") if op.kind == "linear" else "S8_CONV"
        return Choice(kernel, enc, dense, {"w2d": w2d})

    # -- emitter hooks
    def register(self, lowerer) -> None:
        """Decoded weights become constants of the lowerer (emitted only if a kernel refs them)."""
        for name, value in self.decoded.items():
            lowerer.consts[name] = value
            lowerer.const_names[name] = lowerer._weight_cname(name)
            lowerer.plan.locations[name] = Location("const", 0, name)

    def emit(self, op: Op, ctx) -> Lowered | None:
        """The float lowering of a packed layer (None: not packed)."""
        choice = self.choices.get(op.result.name)
        if choice is None or choice.kernel not in ("F32_FC", "F32_CONV2D"):
            return None
        return _emit_float(op, ctx, choice)

    def summary(self) -> dict[str, str]:
        """layer name -> the chosen format (for reports and tests)."""
        return {name: c.enc.describe() for name, c in self.choices.items()}


def describe(graph: Graph) -> dict[str, str]:
    """Layer result name -> the format emit_bundle stores its weights in (packed layers only)."""
    from tinyc.backends import c_emitter, c_ops_int8, int8_layout
    ops = list(graph.compute_ops())
    if any(c_emitter._is_int8_op(op) for op in ops):
        low8 = c_ops_int8.Int8Lowering(int8_layout.assign(graph))
        plans = {op.result.name: low8.plan(op) for op in ops if c_emitter._is_int8_op(op)}
        return Packing(graph, low8, plans).summary()
    return Packing(graph).summary()


# ---- shared emission helpers --------------------------------------------------------------------

def _nonempty(a: np.ndarray) -> np.ndarray:
    return a if a.size else np.zeros(1, a.dtype)


def _format_weights(ctx, enc: wf.Encoded, words: bool) -> tuple[list[Weight], dict[str, str]]:
    """The arrays of an encoding as weights, and the C expressions of the kernel's pointers."""
    weights, ptr = [], {"w": "0", "vals": "0", "counts": "0", "cb": "0"}
    a = enc.arrays
    if words:
        wt = Weight(ctx.weight_name("pw"), np.ascontiguousarray(a["w"]).view("<i4").astype(np.int32), "int32_t")
    else:
        wt = Weight(ctx.weight_name("pw"), _nonempty(a["w"]), "uint8_t")
    weights.append(wt)
    ptr["w"] = wt.cname
    if "vals" in a:
        if a["vals"].dtype.kind == "f":
            vt = Weight(ctx.weight_name("pv"), _nonempty(a["vals"]).astype(np.float32))
        else:
            vt = Weight(ctx.weight_name("pv"), _nonempty(a["vals"]).astype(np.int8), "int8_t")
        weights.append(vt)
        ptr["vals"] = vt.cname
    if "counts" in a:
        ct = Weight(ctx.weight_name("pc"), a["counts"], "uint16_t" if a["counts"].dtype == np.uint16 else "uint8_t")
        weights.append(ct)
        ptr["counts"] = ct.cname
    if "cb" in a:
        cb = a["cb"]
        bt = Weight(ctx.weight_name("cb"), cb.astype(np.float32) if cb.dtype.kind == "f" else cb.astype(np.int8),
                    "float" if cb.dtype.kind == "f" else "int8_t")
        weights.append(bt)
        ptr["cb"] = bt.cname
    return weights, ptr


def _format_literals(enc: wf.Encoded) -> list[int]:
    """layout, value kind, value bits, per_channel, codebook row length, wide counts, gap bits"""
    v = enc.values
    kcb = v.codebook.shape[-1] if v.lut else 0
    wide = int("counts" in enc.arrays and enc.arrays["counts"].dtype == np.uint16)
    return [LAYOUT_CODES[enc.layout], VALUE_CODES[v.kind], v.bits if v.kind != "f32" else 32, int(v.per_channel),
            kcb, wide, enc.gap_bits]


# ---- float ----------------------------------------------------------------------------------------

def _emit_float(op: Op, ctx, choice: Choice) -> Lowered:
    enc = choice.enc
    weights, ptr = _format_weights(ctx, enc, words=False)
    bias = ctx.ref(op.operands[2]) if len(op.operands) > 2 else "0"
    x, y = ctx.ref(op.operands[0]), ctx.ref(op.result)
    layout, vkind, bits, per_channel, kcb, wide, gbits = _format_literals(enc)
    tail = [layout, vkind, bits, per_channel, kcb, enc.row_bytes, wide, gbits]
    pointers = [("const float *", x), ("const uint8_t *", ptr["w"]), ("const float *", ptr["vals"]),
                ("const void *", ptr["counts"]), ("const float *", ptr["cb"]), ("const float *", bias),
                ("float *", y)]
    if op.kind == "linear":
        n, k = op.operands[1].type.shape
        # fused_act gives the initializer "{kind, lo, hi}"
        act = Param("tinyc_act", ctx.param_name(), tuple(zip(("kind", "lo", "hi"),
                                                              fused_act(op.attrs)[1:-1].split(", "))))
        call = ctx.specialize("tinyc_pk_f32_fc", pointers + [("const tinyc_act *", "&" + act.cname)],
                              [op.operands[0].type.numel // k, k, n] + tail)
        return Lowered((Kernel("packed", "F32_FC"), *act_kernels(op.attrs.get("act"))), (act,), tuple(weights), (call,))
    (n, c, h, w), (o, _, kh, kw) = op.operands[0].type.shape, op.operands[1].type.shape
    _, _, oh, ow = op.result.type.shape
    a = op.attrs
    top, left, _, _ = a["padding"]
    fields = (("n", n), ("c", c), ("h", h), ("w", w), ("o", o), ("oh", oh), ("ow", ow), ("kh", kh), ("kw", kw),
              ("sh", a["stride"][0]), ("sw", a["stride"][1]), ("dh", a["dilation"][0]), ("dw", a["dilation"][1]),
              ("pad_top", top), ("pad_left", left), ("groups", a["groups"]))
    param = Param("tinyc_f32_conv2d_params", ctx.param_name(),
                  tuple((f, str(v)) for f, v in fields) + (("act", fused_act(a)),))
    call = ctx.specialize("tinyc_pk_f32_conv2d", pointers + [("const tinyc_f32_conv2d_params *", "&" + param.cname)],
                          tail)
    return Lowered((Kernel("packed", "F32_CONV2D"), *act_kernels(a.get("act"))), (param,), tuple(weights), (call,))


# ---- int8 -----------------------------------------------------------------------------------------

def _table_bytes(enc: wf.Encoded) -> int:
    """A pair table (all 2^2b int16 pairs) for dense codebook rows of a per-layer codebook."""
    v = enc.values
    return 4 << (2 * v.bits) if enc.layout == "dense_lut" and not v.per_channel else 0


def _chunks_per_word(enc: wf.Encoded) -> int:
    return {"dense_i4": 2, "dense_i2": 4, "dense_bits": 2}.get(enc.layout) or 8 // enc.values.bits


def _wpr(enc: wf.Encoded) -> int:
    """Words per row of a word layout; groups of 8 fields per row of dense_bits."""
    return enc.groups_per_row if enc.layout == "dense_bits" else enc.row_bytes // 4


def _plan_int8(op: Op, p, choice: Choice) -> None:
    """Replace the kernel scratch of the ordinary lowering (always the last region it asked
    for) with the packed kernel's."""
    enc = choice.enc
    kp = p.info["kp"]
    if op.kind == "linear":
        base = p.kernel_scratch_at if not p.info["direct"] else p.scratch
        if enc.sparse:
            p.scratch = base
            return
        wpr = _wpr(enc)
        gather = 0 if p.info["direct"] else _align(kp)
        col = _align(8 * wpr * _chunks_per_word(enc))
        p.info.update(pk_gather=base, pk_col=base + gather, pk_table=base + gather + col)
        p.kernel_scratch_at = base
        p.scratch = base + gather + col + _align(_table_bytes(enc))
        return
    base = p.kernel_scratch_at
    if enc.sparse:
        size = 4 * kp
        p.info.update(pk_table=base)
    else:
        wpr = _wpr(enc)
        size = _align(32 * wpr * _chunks_per_word(enc) + kp)
        p.info.update(pk_table=base + size)
        size += _table_bytes(enc)
    p.scratch = base + _align(size)


BIAS_SHIFT_BITS = 5     # qmode 0: the bias word holds bias * 32 + S (S = n - 32 in [1, 30])


def _out_records(ctx, stage: iw.OutStage) -> tuple[list[Weight], dict[str, str], list[int]]:
    """Compact fast records or the generic ones (tinyc_kernels_packed.h): (weights, pointers,
    literals qmode, m_uni, m_lit, s_uni, s_lit)."""
    rec = stage.records.astype(np.int64)
    if stage.mode == iw.GENERIC:
        qw = Weight(ctx.weight_name("q"), rec.ravel().astype(np.int32), "int32_t")
        return [qw], {"qb": qw.cname, "qm": "0", "qs": "0"}, [1, 0, 0, 0, 0]
    bias, m, s = rec[:, 0], rec[:, 1], rec[:, 3]
    s_uni = bool(np.all(s == s[0]))
    limit = 2 ** (31 - BIAS_SHIFT_BITS)
    qmode = 2 if s_uni or bias.min() < -limit or bias.max() >= limit else 0
    word = bias if qmode == 2 else bias * 2 ** BIAS_SHIFT_BITS + s
    qb = Weight(ctx.weight_name("qb"), word.astype(np.int32), "int32_t")
    weights, ptr = [qb], {"qb": qb.cname, "qm": "0", "qs": "0"}
    lits = [qmode]
    if np.all(m == m[0]):
        lits += [1, int(m[0])]
    else:
        qm = Weight(ctx.weight_name("qm"), m.astype(np.int32), "int32_t")
        weights.append(qm)
        ptr["qm"] = qm.cname
        lits += [0, 0]
    if s_uni:
        lits += [1, int(s[0])]
    elif qmode == 2:
        qs = Weight(ctx.weight_name("qs"), s.astype(np.uint8), "uint8_t")
        weights.append(qs)
        ptr["qs"] = qs.cname
        lits += [0, 0]
    else:
        lits += [0, 0]
    return weights, ptr, lits


def _emit_int8(self, op: Op, ctx, p):
    """Int8Lowering override: the packed lowering of an int8 linear / conv2d."""
    from tinyc.backends.c_ops_int8 import Lowered8, _conv_geometry, _out_strides, _q, _zp
    choice = self.packing.choices[op.result.name]
    enc = choice.enc
    x, wv, y = op.operands[0], op.operands[1], op.result
    w = np.asarray(ctx.const(wv)).astype(np.int64)
    b = ctx.const(op.operands[2]) if len(op.operands) > 2 else None
    w2d = choice.info["w2d"]
    # the zero point folds with the sum of the stored weights (w2d: the same codes, reordered)
    stage = iw.out_stage(op, quant.conv_ratios(_q(x), _q(wv), _q(y)), iw.folded_bias(w2d, b, _zp(x)), w.shape[0])
    qweights, qptr, qlits = _out_records(ctx, stage)
    weights, ptr = _format_weights(ctx, enc, words=enc.layout in WORD_LAYOUTS)
    layout, vkind, bits, per_channel, kcb, wide, gbits = _format_literals(enc)
    tail = qlits + [stage.zp, stage.lo, stage.hi]
    cb_ptr = ("const int8_t *", ptr["cb"])
    q_ptrs = [("const int32_t *", qptr["qb"]), ("const int32_t *", qptr["qm"]), ("const uint8_t *", qptr["qs"])]
    xin = self.operand(op, 0, ctx, p)
    if op.kind == "linear":
        n, k = w.shape
        ys = dim_strides(self.lay.of(y).reshape(-1, n))
        if ys is None:
            raise BackendError(f"%{y.name}: linear result layout is not strided (internal error)")
        rows = x.type.numel // k
        if enc.sparse:
            call = ctx.specialize(
                "tinyc_pk_s8_fc_sparse",
                [("const int8_t *", xin), ("const uint8_t *", ptr["w"]), ("const int8_t *", ptr["vals"]),
                 ("const void *", ptr["counts"]), cb_ptr, *q_ptrs, ("int8_t *", ctx.ref(y))],
                [rows, k, n, p.info["xs_r"], p.info["xs_k"], ys[0], ys[1], layout, vkind, bits, per_channel, kcb,
                 wide, gbits] + tail)
            kernels = (Kernel("packed", "S8_FC_SPARSE"),)
        else:
            gather = ctx.scratch(p.info["pk_gather"]) if not p.info["direct"] else "0"
            table = f"(tinyc_s8_word *)(void *)({ctx.scratch(p.info['pk_table'])})" if _table_bytes(enc) else "0"
            col = f"(tinyc_s8_word *)(void *)({ctx.scratch(p.info['pk_col'])})"
            wtype = "const int32_t *" if enc.layout in WORD_LAYOUTS else "const uint8_t *"
            call = ctx.specialize(
                "tinyc_pk_s8_fc_dense",
                [("const int8_t *", xin), (wtype, ptr["w"]), cb_ptr, *q_ptrs, ("int8_t *", ctx.ref(y)),
                 ("int8_t *", gather), ("tinyc_s8_word *", col), ("tinyc_s8_word *", table)],
                [rows, k, p.info["kp"], _wpr(enc), n, p.info["xs_r"], p.info["xs_k"], ys[0], ys[1],
                 int(p.info["direct"]), layout, vkind, bits, per_channel, kcb, int(bool(_table_bytes(enc)))] + tail)
            kernels = (Kernel("packed", "S8_FC_DENSE"), "FC")
        return Lowered8(kernels, (), tuple(weights + qweights), (call,))
    g = _conv_geometry(op)
    xs, ys = p.info["xs"], _out_strides(self, y)
    og = g["o"] // g["groups"]
    if g["oh"] > 1 and ys[2] != g["ow"] * ys[3]:
        raise BackendError(f"%{y.name}: conv output pixels are not evenly spaced (internal error)")
    wptr = ptr["w"] if enc.layout not in WORD_LAYOUTS else f"(const uint8_t *)(const void *){ptr['w']}"
    table = f"(tinyc_s8_word *)(void *)({ctx.scratch(p.info['pk_table'])})" if _table_bytes(enc) else "0"
    lits = [g["n"], g["groups"], g["cg"], og, g["h"], g["w"], g["oh"], g["ow"], g["kh"], g["kw"], g["sh"], g["sw"],
            g["dh"], g["dw"], g["pt"], g["pl"], *xs, ys[0], ys[1], ys[3], _zp(x), p.info["kp"],
            _wpr(enc) if not enc.sparse else 0, int(p.info["direct"]), layout, vkind, bits, per_channel,
            kcb, wide, gbits, int(bool(_table_bytes(enc)))] + tail
    call = ctx.specialize(
        "tinyc_pk_s8_conv",
        [("const int8_t *", xin), ("const uint8_t *", wptr), ("const int8_t *", ptr["vals"]),
         ("const void *", ptr["counts"]), cb_ptr, *q_ptrs,
         ("int8_t *", ctx.ref(y)), ("int8_t *", ctx.scratch(p.kernel_scratch_at)), ("tinyc_s8_word *", table)],
        lits)
    return Lowered8((Kernel("packed", "S8_CONV"), "CONV_GEMM"), (), tuple(weights + qweights), (call,))
