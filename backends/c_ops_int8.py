"""Per-op lowering of int8 IR (quantize-int8's output) to calls of runtime_c/tinyc_kernels_s8.c.

Two steps per op. `plan` runs before memory planning: it picks the kernel and says how many
bytes of arena scratch the op needs (im2col rows, a padded depthwise plane, a relayout
copy) and which operands it may overwrite. `emit` runs after: it produces the calls, the
parameter structs and the derived constants (tinyc.backends.int8_weights).

The hot kernels (conv GEMM, depthwise, fully connected, residual add) are called through
per-shape wrappers the emitter generates (`Context.specialize`): every shape, stride, zero
point and requantization mode is a literal there, so GCC folds them into the loops.
Layouts (tinyc.backends.int8_layout) reach the kernels as element strides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from tinyc import quant
from tinyc.backends import int8_weights as iw
from tinyc.backends.c_ops import Call, KernelLibrary, Param, Weight, c_float, c_ints, gather_offsets
from tinyc.backends.int8_layout import (VIEW_RULES, Layouts, channels_last_perm, dim_strides, is_depthwise, is_int8,
                                        iteration, perm_offsets, row_major)
from tinyc.errors import BackendError
from tinyc.ir import Graph, Op, Value
from tinyc.ops import OPS, Trait, has

ALIGN = 8


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


LIBRARY = KernelLibrary("s8", "TINYC_S8_", "tinyc_kernels_s8.c", ("tinyc_kernels_s8.h", "tinyc_kernels_s8.c"),
                        with_int8=True)


@dataclass(frozen=True)
class Lowered8:
    kernels: tuple = ()                # TINYC_S8_<KERNEL> names, or c_ops.Kernel of another library
    params: tuple[Param, ...] = ()
    weights: tuple[Weight, ...] = ()
    calls: tuple[Call, ...] = ()


class Context(Protocol):
    def ref(self, v: Value, offset: int = 0) -> str: ...
    def const(self, v: Value) -> np.ndarray | None: ...
    def param_name(self, k: int = 0) -> str: ...
    def weight_name(self, suffix: str) -> str: ...
    def scratch(self, offset: int = 0) -> str: ...
    def specialize(self, kernel: str, pointers: Sequence[tuple[str, str]], literals: Sequence[int]) -> Call: ...


@dataclass
class OpPlan:
    """What `plan` decided for one op; `emit` reads it back."""

    scratch: int = 0                           # bytes of arena scratch
    inplace: tuple[int, ...] = ()
    relayout: dict[int, np.ndarray] = field(default_factory=dict)   # operand -> offsets of its scratch copy
    relayout_at: dict[int, int] = field(default_factory=dict)       # operand -> scratch byte offset
    kernel_scratch_at: int = 0
    info: dict = field(default_factory=dict)


# ---- helpers ------------------------------------------------------------------------

def _q(v: Value):
    return v.type.quant


def _zp(v: Value) -> int:
    return v.type.quant.zero_point[0]


def c_iter(base_dims: list[int], strides: list[list[int]]) -> str:
    """tinyc_s8_iter initializer for dims and up to three stride lists."""
    s = list(strides) + [[0] * len(base_dims)] * (3 - len(strides))
    return "{" + f"{len(base_dims)}, {c_ints(base_dims)}, {c_ints(s[0])}, {c_ints(s[1])}, {c_ints(s[2])}" + "}"


def _records(stage: iw.OutStage) -> np.ndarray:
    return stage.records.ravel().astype(np.int32)


class Int8Lowering:
    """Plans and emits every int8 op of one graph (layouts fixed beforehand)."""

    def __init__(self, layouts: Layouts):
        self.lay = layouts
        # dense convs whose weights are stored as the int16 pairs the GEMM multiplies (2x their flash, no
        # SXTB16 per use): choose_wide, after planning
        self.wide_ops: frozenset = frozenset()
        # 3x3 stride-1 convs run as Winograd F(2x2, 3x3) (int16 transformed weights): choose_wino,
        # before planning (their scratch differs)
        self.wino_ops: frozenset = frozenset()
        self.plans: dict[str, OpPlan] = {}
        # per-op emitters replacing _EMIT[kind] (same signature), e.g. packed weights (c_ops_packed)
        self.overrides: dict[str, Callable] = {}
        self.packing = None

    # -- planning
    def plan(self, op: Op) -> OpPlan:
        p = OpPlan()
        planner = _PLANS.get(OPS[op.kind].c)
        if planner is not None:
            planner(self, op, p)
        self.plans[op.result.name] = p
        return p

    def is_view(self, op: Op) -> bool:
        return op.result.name in self.lay.views

    def strides(self, op: Op, i: int, p: OpPlan) -> list[int]:
        """Per-dim strides of operand i, asking for a relayout copy in scratch if it has none."""
        v = op.operands[i]
        s = dim_strides(self.lay.of(v))
        if s is not None:
            return s
        rank = v.type.rank
        off = perm_offsets(v.type.shape, channels_last_perm(rank)) if rank >= 3 else row_major(v.type.shape)
        p.relayout[i] = off
        p.relayout_at[i] = p.scratch
        p.scratch += _align(v.type.numel)
        return dim_strides(off)

    def offsets(self, op: Op, i: int, p: OpPlan) -> np.ndarray:
        return p.relayout.get(i, self.lay.of(op.operands[i]))

    def fuse_table_epilogues(self, graph: Graph) -> None:
        """Fuse each int8 `lut` whose operand is a conv2d / linear result used by nothing else (and no
        graph output) into that layer: its kernel stores table[code] (TINYC_S8_EPI), and the lut's result
        becomes a view of the layer's bytes (no pass of its own). Layers another kernel emits (packed
        weights: self.overrides) keep a separate lut. The lut stays in the IR: the interpreter runs
        both ops, and the kernel's result is table[layer code], the same bytes."""
        producers, users = graph.producers(), graph.users()
        outputs = {id(v) for v in graph.outputs}
        for op in graph.compute_ops():
            if OPS[op.kind].c != "table_lookup":
                continue
            table = producers.get(id(op.operands[1]))
            if table is None or not table.is_const:
                continue
            x = op.operands[0]
            prod = producers.get(id(x))
            if (prod is None or OPS[prod.kind].c not in ("conv", "dense") or prod.result.name in self.overrides
                    or len(users[id(x)]) != 1 or id(x) in outputs or id(op.result) in outputs
                    or not (is_int8(x) and is_int8(op.result))
                    or not np.array_equal(self.lay.of(x), self.lay.of(op.result))):
                continue
            self.lay.epilogues[prod.result.name] = op
            self.lay.views.add(op.result.name)

    def epilogue(self, op: Op, ctx: Context, lits: list) -> tuple[list, list]:
        """The kernel's last pointer argument: the fused lut's table (its middle), or a literal 0."""
        lut = self.lay.epilogues.get(op.result.name)
        if lut is None:
            return [], [0, *lits]
        return [("const int8_t *", ctx.ref(lut.operands[1]) + " + 128")], lits

    def kernel_scratch(self, p: OpPlan, nbytes: int) -> None:
        p.kernel_scratch_at = p.scratch
        p.scratch += _align(nbytes)

    # -- emission
    def emit(self, op: Op, ctx: Context) -> Lowered8:
        if self.is_view(op):
            return Lowered8()
        p = self.plans[op.result.name]
        pre = self._relayouts(op, ctx, p)
        low = self.overrides.get(op.result.name, _EMIT[OPS[op.kind].c])(self, op, ctx, p)
        return Lowered8(pre.kernels + low.kernels, pre.params + low.params, pre.weights + low.weights,
                        pre.calls + low.calls)

    def operand(self, op: Op, i: int, ctx: Context, p: OpPlan) -> str:
        """Pointer to operand i (its relayout copy if it has one)."""
        if i in p.relayout:
            return ctx.scratch(p.relayout_at[i])
        return ctx.ref(op.operands[i])

    def _relayouts(self, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
        params, calls = [], []
        for k, (i, off) in enumerate(sorted(p.relayout.items())):
            base, dims, (s_dst, s_src) = iteration(off, self.lay.of(op.operands[i]))
            param = _iter_param(ctx, 100 + k, dims, [s_dst, s_src])
            params.append(param)
            calls.append(Call("tinyc_s8_copy", (ctx.ref(op.operands[i]), ctx.scratch(p.relayout_at[i]),
                                                "&" + param.cname)))
        return Lowered8(("COPY",) if calls else (), tuple(params), (), tuple(calls))


def _iter_param(ctx: Context, k: int, dims, strides) -> Param:
    s = list(strides) + [[0] * len(dims)] * (3 - len(strides))
    return Param("tinyc_s8_iter", ctx.param_name(k), (("rank", str(len(dims))), ("dims", c_ints(dims)),
                                                      ("s0", c_ints(s[0])), ("s1", c_ints(s[1])),
                                                      ("s2", c_ints(s[2]))))


# ---- quantize / dequantize / lut / copy -------------------------------------------------

def _plan_none(self: Int8Lowering, op: Op, p: OpPlan) -> None:
    pass


def _plan_same_layout_inplace(self: Int8Lowering, op: Op, p: OpPlan) -> None:
    x = op.operands[0]
    if x.type.shape == op.result.type.shape and np.array_equal(self.lay.of(x), self.lay.of(op.result)):
        p.inplace = (0,)


def emit_quantize(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, y = op.operands[0], op.result
    (b_y, b_x), dims, (sy, sx) = iteration(self.lay.of(y), row_major(x.type.shape))
    it = _iter_param(ctx, 0, dims, [sy, sx])
    q = _q(y)
    call = Call("tinyc_s8_quantize", (ctx.ref(x, b_x), ctx.ref(y, b_y), "&" + it.cname,
                                      c_float(quant.reciprocal(q.scale[0])), str(1 + 2 * int(q.zero_point[0]))))
    return Lowered8(("QUANTIZE",), (it,), (), (call,))


def emit_dequantize(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, y = op.operands[0], op.result
    (b_y, b_x), dims, (sy, sx) = iteration(row_major(y.type.shape), self.lay.of(x))
    it = _iter_param(ctx, 0, dims, [sy, sx])
    q = _q(x)
    call = Call("tinyc_s8_dequantize", (ctx.ref(x, b_x), ctx.ref(y, b_y), "&" + it.cname, c_float(q.scale[0]),
                                        str(q.zero_point[0])))
    return Lowered8(("DEQUANTIZE",), (it,), (), (call,))


def emit_lut(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, table, y = op.operands[0], op.operands[1], op.result
    base, dims, (sy, sx) = iteration(self.lay.of(y), self.offsets(op, 0, p))
    it = _iter_param(ctx, 0, dims, [sy, sx])
    call = Call("tinyc_s8_lut", (self.operand(op, 0, ctx, p) + (f" + {base[1]}" if base[1] else ""),
                                 ctx.ref(y, base[0]), ctx.ref(table), "&" + it.cname))
    return Lowered8(("LUT",), (it,), (), (call,))


# ---- conv2d ----------------------------------------------------------------------------------

def _conv_geometry(op: Op) -> dict:
    (n, c, h, w), (o, cg, kh, kw) = op.operands[0].type.shape, op.operands[1].type.shape
    _, _, oh, ow = op.result.type.shape
    a = op.attrs
    top, left, bottom, right = a["padding"]
    return dict(n=n, c=c, h=h, w=w, o=o, cg=cg, kh=kh, kw=kw, oh=oh, ow=ow, sh=a["stride"][0], sw=a["stride"][1],
                dh=a["dilation"][0], dw=a["dilation"][1], pt=top, pl=left, pb=bottom, pr=right, groups=a["groups"])


def gemm_pixels(kp: int) -> int:
    """Output pixels per block of tinyc_s8_conv_gemm: 3 (its 3 x 2 register block, weights in channel
    pairs) unless the reduction has only 1 or 2 chunks of 4 (k <= 8), where 4 pixels x 1 channel
    costs less (measured: 1x1 8->24 at 32 x 32, 1.79 against 2.16 instr/MAC; bench.kernel_shapes)."""
    return 4 if kp <= 8 else 3


def wide_gain(op: Op) -> float:
    """Instructions wide weights save per added flash byte, estimated: 3 of 20 per 24 MACs (no SXTB16),
    each weight byte used once per output pixel: pixels / 8."""
    g = _conv_geometry(op)
    return g["n"] * g["oh"] * g["ow"] / 8


def choose_wide(graph, low8: "Int8Lowering", budget: int, min_gain: float = 0.0) -> frozenset:
    """The dense convs (3 x 2 GEMM block) whose weights are stored as int16 pairs, within `budget` extra
    flash bytes (< 0: no limit; each costs its O x kp weight bytes again): the ones that reuse each weight
    over the most output pixels first (the instructions saved per byte), then by name; a layer that does
    not fit is skipped for smaller ones, and one saving less than `min_gain` per byte (wide_gain) is not
    taken."""
    if budget == 0:
        return frozenset()
    cand = []
    for op in graph.compute_ops():
        p = low8.plans.get(op.result.name)
        if p is None or op.result.name in low8.overrides or p.info.get("kind") != "gemm" or p.info.get("pix") != 3:
            continue
        if wide_gain(op) < min_gain:
            continue
        g = _conv_geometry(op)
        cand.append((-g["n"] * g["oh"] * g["ow"], op.result.name, g["o"] * p.info["kp"]))
    chosen, spent = set(), 0
    for _, name, extra in sorted(cand):
        if budget < 0 or spent + extra <= budget:
            chosen.add(name)
            spent += extra
    return frozenset(chosen)


def wino_shape(op: Op) -> bool:
    """A conv tinyc_s8_conv_wino can run: 3x3, stride 1, dilation 1, groups 1, input channels a multiple
    of 4, at least a 2 x 2 output; its weights within winograd_fits (constants checked when chosen)."""
    if is_depthwise(op) or conv_is_fc(op):
        return False
    g = _conv_geometry(op)
    return (g["kh"] == g["kw"] == 3 and g["sh"] == g["sw"] == 1 and g["dh"] == g["dw"] == 1 and g["groups"] == 1
            and g["c"] % 4 == 0 and g["oh"] >= 2 and g["ow"] >= 2)


def wino_extra(op: Op) -> int:
    """Flash bytes Winograd weights add over the int8 GEMM ones: 16 int16 per weight pair (c, o) against
    9 bytes (padded to 4)."""
    g = _conv_geometry(op)
    return 32 * g["o"] * g["c"] - g["o"] * (-(-9 * g["c"] // 4) * 4)


def wino_saving(op: Op) -> float:
    """Instructions Winograd saves on the Cortex-M4, estimated from the kernel table (bench.kernel_shapes):
    the direct 3x2 GEMM at ~0.90 instr/MAC against 16 / 36 of the multiplies at 17 instructions per 24,
    plus per 2 x 2 tile and input channel ~10 of input transform and per tile and output channel ~20 of
    output transform and GEMM calls."""
    g = _conv_geometry(op)
    tiles = g["n"] * (-(-g["oh"] // 2)) * (-(-g["ow"] // 2))
    macs = g["n"] * g["oh"] * g["ow"] * g["o"] * g["c"] * 9
    wino = 4 * tiles * g["o"] * g["c"] * 16 / 24 * 17 / 4 + tiles * (10 * g["c"] + 20 * g["o"])
    return 0.90 * macs - wino


def choose_wino(graph, low8: "Int8Lowering", budget: int, min_gain: float = 0.0) -> tuple[frozenset, int]:
    """The 3x3 stride-1 convs to run as Winograd within `budget` extra flash bytes (< 0: no limit), and
    the bytes they take: by instructions saved per added byte, then name (a layer that does not fit is
    skipped for smaller ones); only those it pays on, whose input is channels-last (planned strides),
    whose weights and folded bias keep every sum in int32 (int8_weights.winograd_fits), and that no
    other weight format (packed) took, and that save at least `min_gain` per byte. The rest of the budget
    goes to wide GEMM weights (choose_wide)."""
    if budget == 0:
        return frozenset(), 0
    cand = []
    for op in graph.compute_ops():
        p = low8.plans.get(op.result.name)
        if (p is None or op.result.name in low8.overrides or p.info.get("kind") != "gemm" or not wino_shape(op)
                or p.info["xs"][1] != 1 or 0 in p.relayout):
            continue
        saving = wino_saving(op)
        if saving <= 0 or saving / wino_extra(op) < min_gain:
            continue
        cand.append((-saving / wino_extra(op), op.result.name, wino_extra(op), op))
    chosen, spent = set(), 0
    for _, name, extra, op in sorted(cand, key=lambda c: c[:2]):
        if (budget < 0 or spent + extra <= budget) and _wino_fits(graph, op):
            chosen.add(name)
            spent += extra
    return frozenset(chosen), spent


def _wino_fits(graph, op: Op) -> bool:
    w = graph.const_value(op.operands[1])
    b = graph.const_value(op.operands[2]) if len(op.operands) > 2 else None
    if w is None or (len(op.operands) > 2 and b is None):
        return False
    w2d = np.asarray(w, np.int64).reshape(w.shape[0], -1)
    return iw.winograd_fits(w, iw.folded_bias(w2d, b, _zp(op.operands[0])))


def dw_variant(g: dict) -> int:
    """tinyc_s8_dw's loop for a depthwise geometry: 3 (3x3 stride 1: 2 x 2 outputs per step), 1 (3x3,
    stride 1 across, 2 down), 2 (3x3, stride 2 across), 4 (any other size at dilation 1: words of 4
    taps, tinyc_s8_dw_taps) or 0 (dilated: byte by byte)."""
    if g["dh"] != 1 or g["dw"] != 1:
        return 0
    if g["kh"] == g["kw"] == 3:
        return (3 if g["sh"] == 1 else 1) if g["sw"] == 1 else 2
    return 4


def _dw3_cost(g: dict, xs_w: int) -> int:
    """Instructions per channel of tinyc_s8_dw's 3x3 stride-1 loop (variant 3), roughly: the plane's
    gather (a memcpy per row, or strided bytes 8 per trip) and 2 x 2 output steps, then a last odd row
    2 outputs per step (measured on the Cortex-M4: 56 per 2 x 2 step, 33 per 1 x 2)."""
    h, w, oh, ow = g["h"], g["w"], g["oh"], g["ow"]
    row = w // 4 + 12 if xs_w == 1 else (w // 8) * 20 + (w % 8 // 4) * 10 + (w % 4) * 3 + 8
    pairs = (oh // 2) * ((ow // 2) * 56 + (ow % 2) * 40 + 8)
    last = (oh % 2) * ((ow // 2) * 33 + (ow % 2) * 20 + 8)
    return h * row + pairs + last


def _transposed(g: dict) -> dict:
    """The geometry with height and width swapped (the kernel reads a transposed plane)."""
    t = dict(g)
    for a, b in (("h", "w"), ("oh", "ow"), ("kh", "kw"), ("sh", "sw"), ("dh", "dw"), ("pt", "pl")):
        t[a], t[b] = g[b], g[a]
    return t


def dw_transpose(g: dict, xs: list[int]) -> bool:
    """Run a 3x3 stride-1 depthwise conv on transposed planes (width and height swapped, the weights
    transposed, the strides exchanged) when that is cheaper: a narrow map (DS-CNN's 25 x 5) then has
    its long side along the 2-output steps and its gather reads 8 bytes per trip."""
    if dw_variant(g) != 3:
        return False
    return 10 * _dw3_cost(_transposed(g), xs[2]) < 9 * _dw3_cost(g, xs[3])


def conv_is_fc(op: Op) -> bool:
    """A 1x1 conv on a 1x1 map (squeeze-excite FCs, classifier heads written as convs) is a fully
    connected layer: it runs tinyc_s8_fc (batch-1 blocks of 6 output rows) instead of the conv GEMM."""
    g = _conv_geometry(op)
    return (g["h"] == g["w"] == g["oh"] == g["ow"] == g["kh"] == g["kw"] == 1 and g["groups"] == 1
            and not any(op.attrs["padding"]))


def _plan_conv(self: Int8Lowering, op: Op, p: OpPlan) -> None:
    if conv_is_fc(op):
        _plan_linear(self, op, p)
        p.info["kind"] = "fc"
        return
    g = _conv_geometry(op)
    xs = self.strides(op, 0, p)
    p.info["xs"] = xs
    if is_depthwise(op):
        if dw_transpose(g, xs):
            g = _transposed(g)
            p.info["transpose"] = True
        ph = max((g["oh"] - 1) * g["sh"] + (g["kh"] - 1) * g["dh"] + 1, g["pt"] + g["h"])
        pw = max((g["ow"] - 1) * g["sw"] + (g["kw"] - 1) * g["dw"] + 1, g["pl"] + g["w"])
        p.info.update(kind="dw", ph=ph, pw=pw)
        self.kernel_scratch(p, ph * pw + 4)
    elif op.result.name in self.wino_ops and xs[1] == 1 and 0 not in p.relayout:
        chunks = g["c"] // 4
        p.info.update(kind="wino")
        self.kernel_scratch(p, 16 * 6 * chunks * 4 + 6 * 16 * 4)    # V of a block of 3 tiles, then M
    else:
        k = g["kh"] * g["kw"] * g["cg"]
        kp = -(-k // 4) * 4
        direct = (g["kh"] == g["kw"] == 1 and not any(op.attrs["padding"]) and xs[1] == 1 and g["cg"] % 4 == 0)
        p.info.update(kind="gemm", kp=kp, direct=direct, pix=gemm_pixels(kp))
        self.kernel_scratch(p, 2 * p.info["pix"] * kp + kp)     # expanded col words of a block, one im2col row


def _out_strides(self: Int8Lowering, v: Value) -> list[int]:
    s = dim_strides(self.lay.of(v))
    if s is None:
        raise BackendError(f"%{v.name}: result layout is not strided (internal error)")
    return s


def emit_conv2d(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    if p.info["kind"] == "fc":
        return emit_linear(self, op, ctx, p)
    g = _conv_geometry(op)
    x, wv, y = op.operands[0], op.operands[1], op.result
    w = ctx.const(wv)
    b = ctx.const(op.operands[2]) if len(op.operands) > 2 else None
    if w is None or (len(op.operands) > 2 and b is None):
        raise BackendError(f"%{y.name} = conv2d: weights and bias must be constants", where=op.loc)
    xs, ys = p.info["xs"], _out_strides(self, y)
    zx = _zp(x)
    ratio = quant.conv_ratios(_q(x), _q(wv), _q(y))
    w2d = w.reshape(g["o"], -1).astype(np.int64)
    stage = iw.out_stage(op, ratio, iw.folded_bias(w2d, b, zx), g["o"])
    qw = Weight(ctx.weight_name("q"), _records(stage), "int32_t")
    tail = [zx]
    if p.info["kind"] == "dw":
        if p.info.get("transpose"):
            g, w = _transposed(g), w.transpose(0, 1, 3, 2)
            xs, ys = [*xs[:2], xs[3], xs[2]], [*ys[:2], ys[3], ys[2]]
        variant = dw_variant(g)
        if variant in (1, 2, 3):
            ww = Weight(ctx.weight_name("w"), iw.dw3x3_weights(w), "int32_t")
        elif variant == 4:
            ww = Weight(ctx.weight_name("w"), iw.dw_tap_words(w), "int32_t")
        else:
            ww = Weight(ctx.weight_name("w"), w.reshape(g["o"], -1).astype(np.int8), "int8_t")
        lits = [g["n"], g["c"], g["o"] // g["c"], g["h"], g["w"], g["oh"], g["ow"], g["kh"], g["kw"], g["sh"],
                g["sw"], g["dh"], g["dw"], g["pt"], g["pl"], p.info["ph"], p.info["pw"], *xs, *ys, zx, variant,
                stage.mode, stage.zp, stage.lo, stage.hi]
        tab, lits = self.epilogue(op, ctx, lits)
        call = ctx.specialize("tinyc_s8_dw", [("const int8_t *", self.operand(op, 0, ctx, p)),
                                              ("const void *", ww.cname), ("const int32_t *", qw.cname),
                                              ("int8_t *", ctx.ref(y)),
                                              ("int8_t *", ctx.scratch(p.kernel_scratch_at)), *tab], lits)
        return Lowered8(("DW",), (), (ww, qw), (call,))
    if p.info["kind"] == "wino":
        return _emit_wino(self, op, ctx, p, g, w, stage, qw, xs, ys, zx)
    og = g["o"] // g["groups"]
    ys_p = ys[3] if g["ow"] > 1 else ys[2]   # one pixel per row (a (k, D) kernel over [N, 1, T, D]): rows apart
    if g["oh"] > 1 and g["ow"] > 1 and ys[2] != g["ow"] * ys[3]:
        raise BackendError(f"%{y.name}: conv output pixels are not evenly spaced (internal error)")
    w2d = iw.pad_k(iw.conv_gemm_weights(w))
    wide = op.result.name in self.wide_ops and p.info["pix"] == 3
    words = iw.words(iw.gemm_pairs(w2d, g["groups"]) if p.info["pix"] == 3 else w2d)
    ww = Weight(ctx.weight_name("w"), iw.expand_pairs(words) if wide else words, "int32_t")
    lits = [g["n"], g["groups"], g["cg"], og, g["h"], g["w"], g["oh"], g["ow"], g["kh"], g["kw"], g["sh"], g["sw"],
            g["dh"], g["dw"], g["pt"], g["pl"], *xs, ys[0], ys[1], ys_p, *tail, p.info["kp"], int(p.info["direct"]),
            p.info["pix"], int(wide), stage.mode, stage.zp, stage.lo, stage.hi]
    tab, lits = self.epilogue(op, ctx, lits)
    call = ctx.specialize("tinyc_s8_conv_gemm", [("const int8_t *", self.operand(op, 0, ctx, p)),
                                                 ("const tinyc_s8_word *", ww.cname),
                                                 ("const int32_t *", qw.cname), ("int8_t *", ctx.ref(y)),
                                                 ("int8_t *", ctx.scratch(p.kernel_scratch_at)), *tab], lits)
    return Lowered8(("CONV_GEMM",), (), (ww, qw), (call,))


def _emit_wino(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan, g: dict, w: np.ndarray, stage: iw.OutStage,
               qw: Weight, xs: list[int], ys: list[int], zx: int) -> Lowered8:
    ww = Weight(ctx.weight_name("w"), iw.winograd_weights(w), "int32_t")
    lits = [g["n"], g["c"], g["o"], g["h"], g["w"], g["oh"], g["ow"], g["pt"], g["pl"], xs[0], xs[2], xs[3], ys[0],
            ys[1], ys[2], ys[3], zx, stage.mode, stage.zp, stage.lo, stage.hi]
    tab, lits = self.epilogue(op, ctx, lits)
    call = ctx.specialize("tinyc_s8_conv_wino", [("const int8_t *", self.operand(op, 0, ctx, p)),
                                                 ("const tinyc_s8_word *", ww.cname),
                                                 ("const int32_t *", qw.cname), ("int8_t *", ctx.ref(op.result)),
                                                 ("int8_t *", ctx.scratch(p.kernel_scratch_at)), *tab], lits)
    return Lowered8(("CONV_GEMM", "CONV_WINO"), (), (ww, qw), (call,))


# ---- linear ------------------------------------------------------------------------------------

def _row_permutation(off2: np.ndarray) -> tuple[np.ndarray, int] | None:
    """If every row of off2 [rows, K] is one contiguous block read in the same permuted order
    and the blocks are evenly spaced: (the order, row stride)."""
    base = off2.min(axis=1)
    rel = off2 - base[:, None]
    if not np.array_equal(rel, np.broadcast_to(rel[:1], rel.shape)):
        return None
    if not np.array_equal(np.sort(rel[0]), np.arange(off2.shape[1])):
        return None
    rs = int(base[1] - base[0]) if len(base) > 1 else 0
    if not np.array_equal(base, base[0] + rs * np.arange(len(base))):
        return None
    return rel[0], rs


def _plan_linear(self: Int8Lowering, op: Op, p: OpPlan) -> None:
    x = op.operands[0]
    k = op.operands[1].type.shape[1]
    off2 = self.lay.of(x).reshape(-1, k)
    perm = _row_permutation(off2)
    if perm is None:
        s = dim_strides(off2)
        if s is None:
            # a row-major copy (the operand may be strided as a whole, e.g. a transposed view, yet not as rows)
            p.relayout[0], p.relayout_at[0] = row_major(x.type.shape), p.scratch
            p.scratch += _align(x.type.numel)
            off2 = p.relayout[0].reshape(-1, k)
            perm = _row_permutation(off2)
            if perm is None:                # (rank >= 3 relayouts are channels-last: strided rows)
                s = dim_strides(off2)
                p.info.update(perm=None, xs_r=s[0], xs_k=s[1])
        else:
            p.info.update(perm=None, xs_r=s[0], xs_k=s[1])
    if perm is not None:
        p.info.update(perm=perm[0], xs_r=perm[1], xs_k=1)
    kp = -(-k // 4) * 4
    p.info["direct"] = p.info["perm"] is not None and k % 4 == 0
    p.info["kp"] = kp
    # the row expanded to int16 pairs (2 kp bytes), after it the gathered, zero-padded row if not direct
    self.kernel_scratch(p, 2 * kp if p.info["direct"] else 3 * kp)


def emit_linear(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, wv, y = op.operands[0], op.operands[1], op.result
    w = ctx.const(wv)
    b = ctx.const(op.operands[2]) if len(op.operands) > 2 else None
    if w is None or (len(op.operands) > 2 and b is None):
        raise BackendError(f"%{y.name} = {op.kind}: weights and bias must be constants", where=op.loc)
    w = w.reshape(w.shape[0], -1)                   # a 1x1 conv on a 1x1 map: [O, C, 1, 1]
    n, k = w.shape
    rows = x.type.numel // k
    w_phys = w
    if p.info["perm"] is not None:
        w_phys = np.zeros_like(w)
        w_phys[:, p.info["perm"]] = w
    stage = iw.out_stage(op, quant.conv_ratios(_q(x), _q(wv), _q(y)), iw.folded_bias(w.astype(np.int64), b, _zp(x)), n)
    ww = Weight(ctx.weight_name("w"), iw.words(iw.fc_interleave(iw.pad_k(w_phys))), "int32_t")
    qw = Weight(ctx.weight_name("q"), _records(stage), "int32_t")
    ys = dim_strides(self.lay.of(y).reshape(-1, n))
    if ys is None:
        raise BackendError(f"%{y.name}: linear result layout is not strided (internal error)")
    lits = [rows, k, p.info["kp"], n, p.info["xs_r"], p.info["xs_k"], ys[0], ys[1], int(p.info["direct"]),
            stage.mode, stage.zp, stage.lo, stage.hi]
    tab, lits = self.epilogue(op, ctx, lits)
    call = ctx.specialize("tinyc_s8_fc", [("const int8_t *", self.operand(op, 0, ctx, p)),
                                          ("const tinyc_s8_word *", ww.cname), ("const int32_t *", qw.cname),
                                          ("int8_t *", ctx.ref(y)),
                                          ("int8_t *", ctx.scratch(p.kernel_scratch_at)),
                                          *tab], lits)
    return Lowered8(("FC",), (), (ww, qw), (call,))


# ---- elementwise binary -------------------------------------------------------------------------

def _broadcast_off(self: Int8Lowering, v: Value, out_shape) -> np.ndarray:
    off = self.lay.of(v)
    off = off.reshape((1,) * (len(out_shape) - off.ndim) + off.shape)
    return np.broadcast_to(off, out_shape)


def _plan_binary(self: Int8Lowering, op: Op, p: OpPlan) -> None:
    out = self.lay.of(op.result)
    p.inplace = tuple(i for i, v in enumerate(op.operands)
                      if v.type.shape == op.result.type.shape and np.array_equal(self.lay.of(v), out))


def _broadcast_innermost(dims: list[int], strides: list[list[int]], k: int) -> tuple[list[int], list[list[int]]]:
    """An elementwise walk reordered so its innermost dim is the longest one along which operand k is
    broadcast (stride 0), if any (a squeeze-excite gate over a channels-last map: the pixels, not the
    channels): the kernel then reads that operand once per row. Elementwise order is free."""
    cand = [d for d in range(len(dims)) if strides[k][d] == 0 and dims[d] >= 4]
    if not cand or strides[k][-1] == 0:
        return dims, strides
    d = max(cand, key=lambda i: (dims[i], i))
    order = [i for i in range(len(dims)) if i != d] + [d]
    return [dims[i] for i in order], [[s[i] for i in order] for s in strides]


def emit_binary(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    a, b = op.operands
    y = op.result
    shape = y.type.shape
    base, dims, (sy, sa, sb) = iteration(self.lay.of(y), _broadcast_off(self, a, shape), _broadcast_off(self, b, shape))
    qa, qb, qy = _q(a), _q(b), _q(y)
    weights: list[Weight] = []
    ta = tb = "0"
    if has(op, Trait.ADDITIVE):
        t_a, t_b, ratio = iw.add_tables(qa, qb, qy, 1 if op.kind == "add" else -1)
        wa, wb = Weight(ctx.weight_name("ta"), t_a, "int32_t"), Weight(ctx.weight_name("tb"), t_b, "int32_t")
        weights += [wa, wb]
        ta, tb = wa.cname, wb.cname
        code = "TINYC_S8_OP_ADD"
    elif op.kind == "mul":
        ratio, code = quant.mul_ratio(qa, qb, qy), "TINYC_S8_OP_MUL"
    else:
        ratio, code = quant.div_ratio(qa, qb, qy), "TINYC_S8_OP_DIV"
    stage = iw.out_stage(op, ratio, None, 1)
    qw = Weight(ctx.weight_name("q"), _records(stage), "int32_t")
    weights.append(qw)
    pa, pb, py = ctx.ref(a, base[1]), ctx.ref(b, base[2]), ctx.ref(y, base[0])
    if has(op, Trait.ADDITIVE) and len(dims) == 1 and sy == sa == sb == [1]:
        call = ctx.specialize("tinyc_s8_add", [("const int8_t *", pa), ("const int8_t *", pb), ("int8_t *", py),
                                               ("const int32_t *", ta), ("const int32_t *", tb),
                                               ("const int32_t *", qw.cname)],
                              [dims[0], stage.mode, stage.zp, stage.lo, stage.hi])
        return Lowered8(("ADD",), (), tuple(weights), (call,))
    za, zb = _zp(a), _zp(b)
    if op.kind == "mul":
        if sb[-1] != 0 and any(sa[d] == 0 and sb[d] != 0 for d in range(len(dims))):
            pa, pb, sa, sb, za, zb = pb, pa, sb, sa, zb, za        # commutative: the broadcast operand as b
        dims, (sy, sa, sb) = _broadcast_innermost(dims, [sy, sa, sb], 2)
    it = _iter_param(ctx, 0, dims, [sy, sa, sb])
    if op.kind == "mul":
        call = ctx.specialize("tinyc_s8_mul_k", [("const int8_t *", pa), ("const int8_t *", pb), ("int8_t *", py),
                                                 ("const tinyc_s8_iter *", "&" + it.cname),
                                                 ("const int32_t *", qw.cname)],
                              [za, zb, stage.mode, stage.zp, stage.lo, stage.hi])
        return Lowered8(("MUL",), (it,), tuple(weights), (call,))
    param = Param("tinyc_s8_binary_params", ctx.param_name(1),
                  (("op", code), ("za", str(_zp(a))), ("zb", str(_zp(b))), ("zy", str(stage.zp)),
                   ("lo", str(stage.lo)), ("hi", str(stage.hi)), ("ta", ta), ("tb", tb)))
    call = Call("tinyc_s8_binary", (pa, pb, py, "&" + it.cname, "&" + param.cname, qw.cname, str(stage.mode)))
    return Lowered8(("BINARY",), (it, param), tuple(weights), (call,))


# ---- pools, mean, softmax, matmul ------------------------------------------------------------

def _plan_strided(*operands: int) -> Callable:
    def plan(self: Int8Lowering, op: Op, p: OpPlan) -> None:
        p.info["xs"] = [self.strides(op, i, p) for i in operands]
    return plan


def emit_pool(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, y = op.operands[0], op.result
    n, c, h, w = x.type.shape
    _, _, oh, ow = y.type.shape
    a = op.attrs
    kh, kw = a["kernel"]
    sh, sw = a["stride"]
    dh, dw = a.get("dilation", (1, 1))
    top, left, bottom, right = a["padding"]
    xs, ys = p.info["xs"][0], _out_strides(self, y)
    fields = (("n", n), ("c", c), ("h", h), ("w", w), ("oh", oh), ("ow", ow), ("kh", kh), ("kw", kw), ("sh", sh),
              ("sw", sw), ("dh", dh), ("dw", dw), ("pad_top", top), ("pad_left", left), ("pad_bottom", bottom),
              ("pad_right", right), ("count_include_pad", int(bool(a.get("count_include_pad", False)))),
              ("zx", _zp(x)))
    param = Param("tinyc_s8_pool_params", ctx.param_name(),
                  tuple((k, str(v)) for k, v in fields) + (("xs", c_ints(xs)), ("ys", c_ints(ys))))
    call = Call(f"tinyc_s8_{op.kind}", (self.operand(op, 0, ctx, p), ctx.ref(y), "&" + param.cname))
    return Lowered8((op.kind.upper(),), (param,), (), (call,))


def emit_mean(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, y = op.operands[0], op.result
    shape, axes = x.type.shape, op.attrs["axes"]
    xs = p.info["xs"][0]
    kept = [d for d in range(len(shape)) if d not in axes]
    yoff = self.lay.of(y).reshape([shape[d] for d in kept] if kept else [1])
    ys = dim_strides(yoff)
    out_dims = [shape[d] for d in kept] or [1]
    out_x = [xs[d] for d in kept] or [0]
    count = math.prod(shape[d] for d in axes)
    m, s = quant.quantize_multiplier(quant.rescale_ratio(_q(x), _q(y), count))
    param = Param("tinyc_s8_mean_params", ctx.param_name(),
                  (("out", c_iter(out_dims, [ys, out_x])), ("red", c_iter([shape[d] for d in axes],
                                                                         [[0] * len(axes), [xs[d] for d in axes]])),
                   ("zx", str(_zp(x))), ("zy", str(_zp(y))), ("m", str(m)), ("n", str(31 - s))))
    call = Call("tinyc_s8_mean", (self.operand(op, 0, ctx, p), ctx.ref(y), "&" + param.cname))
    return Lowered8(("MEAN",), (param,), (), (call,))


def emit_softmax(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, table, y = op.operands[0], op.operands[1], op.result
    axis, shape = op.attrs["axis"], x.type.shape
    xs, ys = p.info["xs"][0], _out_strides(self, y)
    other = [d for d in range(len(shape)) if d != axis]
    param = Param("tinyc_s8_softmax_params", ctx.param_name(),
                  (("outer", c_iter([shape[d] for d in other] or [1],
                                    [[ys[d] for d in other] or [0], [xs[d] for d in other] or [0]])),
                   ("len", str(shape[axis])), ("xs", str(xs[axis])), ("ys", str(ys[axis]))))
    call = Call("tinyc_s8_softmax", (self.operand(op, 0, ctx, p), ctx.ref(y), ctx.ref(table), "&" + param.cname))
    return Lowered8(("SOFTMAX",), (param,), (), (call,))


def _plan_matmul(self: Int8Lowering, op: Op, p: OpPlan) -> None:
    for i in (0, 1):
        self.strides(op, i, p)
    k, n = op.operands[1].type.shape[-2:]
    # the kernel's int16 panel of b (column pairs) and one row pair of a, along k pairs
    self.kernel_scratch(p, 8 * (-(-k // 2)) * (-(-n // 2) + 1))


def emit_matmul(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    a, b = op.operands
    y = op.result
    shape = y.type.shape
    m, k = a.type.shape[-2:]
    n = b.type.shape[-1]
    batch = shape[:-2]

    def bstrides(i: int, v: Value) -> list[int]:
        off = self.offsets(op, i, p)
        full = batch + v.type.shape[-2:]
        off = off.reshape((1,) * (len(full) - off.ndim) + off.shape)
        return dim_strides(np.broadcast_to(off, full))

    sa, sb, sy = bstrides(0, a), bstrides(1, b), _out_strides(self, y)
    nb = len(batch)
    stage = iw.out_stage(op, quant.mul_ratio(_q(a), _q(b), _q(y)), None, 1)
    rec = [int(v) for v in stage.records[0]] + [0] * (6 - stage.records.shape[1])
    it = _iter_param(ctx, 0, list(batch) or [1], [sy[:nb] or [0], sa[:nb] or [0], sb[:nb] or [0]])
    lits = [m, k, n, sa[nb], sa[nb + 1], sb[nb], sb[nb + 1], sy[nb], sy[nb + 1], _zp(a), _zp(b), stage.zp,
            stage.lo, stage.hi, stage.mode, *rec[1:5]]
    call = ctx.specialize("tinyc_s8_matmul", [("const int8_t *", self.operand(op, 0, ctx, p)),
                                              ("const int8_t *", self.operand(op, 1, ctx, p)), ("int8_t *", ctx.ref(y)),
                                              ("int8_t *", ctx.scratch(p.kernel_scratch_at)),
                                              ("const tinyc_s8_iter *", "&" + it.cname)], lits)
    return Lowered8(("MATMUL",), (it,), (), (call,))


# ---- cat, pad ---------------------------------------------------------------------------------------

def emit_cat(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    y = op.result
    axis = op.attrs["axis"]
    yoff = self.lay.of(y)
    kernels, params, weights, calls, start = set(), [], [], [], 0
    for i, x in enumerate(op.operands):
        size = x.type.shape[axis]
        if x.type.numel:
            sl = tuple(slice(start, start + size) if d == axis else slice(None) for d in range(yoff.ndim))
            base, dims, (sy, sx) = iteration(yoff[sl], self.lay.of(x))
            it = _iter_param(ctx, i, dims, [sy, sx])
            params.append(it)
            src, dst = ctx.ref(x, base[1]), ctx.ref(y, base[0])
            if _q(x) == _q(y):
                kernels.add("COPY")
                calls.append(Call("tinyc_s8_copy", (src, dst, "&" + it.cname)))
            else:
                table = Weight(ctx.weight_name(f"t{i}"), iw.requant_table(_q(x), _q(y)), "int8_t")
                weights.append(table)
                kernels.add("LUT")
                calls.append(Call("tinyc_s8_lut", (src, dst, table.cname, "&" + it.cname)))
        start += size
    return Lowered8(tuple(sorted(kernels)), tuple(params), tuple(weights), tuple(calls))


def emit_pad(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, y = op.operands[0], op.result
    shape, pads = x.type.shape, op.attrs["pads"]
    r = len(shape)
    begin, end = pads[:r], pads[r:]
    code = int(quant.quantize(np.float32(op.attrs["value"]), _q(x)))
    kernels, params, calls = [], [], []
    if any(v > 0 for v in pads):
        kernels.append("FILL")
        calls.append(Call("tinyc_s8_fill", (ctx.ref(y), str(y.type.numel), str(code))))
    keep = [d - max(0, -b) - max(0, -e) for d, b, e in zip(shape, begin, end)]
    if all(d > 0 for d in keep):
        xsl = tuple(slice(max(0, -b), max(0, -b) + k) for b, k in zip(begin, keep))
        ysl = tuple(slice(max(0, b), max(0, b) + k) for b, k in zip(begin, keep))
        base, dims, (sy, sx) = iteration(self.lay.of(y)[ysl], self.lay.of(x)[xsl])
        it = _iter_param(ctx, 0, dims, [sy, sx])
        params.append(it)
        kernels.append("COPY")
        calls.append(Call("tinyc_s8_copy", (ctx.ref(x, base[1]), ctx.ref(y, base[0]), "&" + it.cname)))
    return Lowered8(tuple(kernels), tuple(params), (), tuple(calls))


# ---- slice, flip, expand -----------------------------------------------------------------------------

def emit_gather_copy(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    """slice / flip / expand: a copy walking the result's layout and the operand offsets its `ref`
    gathers (the operand's layout sliced, flipped or broadcast); the quantization is unchanged."""
    x, y = op.operands[0], op.result
    if not y.type.numel:
        return Lowered8()
    base, dims, (sy, sx) = iteration(self.lay.of(y), gather_offsets(op, self.lay.of(x)))
    it = _iter_param(ctx, 0, dims, [sy, sx])
    call = Call("tinyc_s8_copy", (ctx.ref(x, base[1]), ctx.ref(y, base[0]), "&" + it.cname))
    return Lowered8(("COPY",), (it,), (), (call,))


class Int8Family:
    """The int8 kernels (tinyc_kernels_s8.c) as a c_ops.KernelFamily: the ops Int8Lowering planned."""

    library = LIBRARY

    def __init__(self, low8: Int8Lowering, plans: dict[str, OpPlan]):
        self.low8, self.plans = low8, plans

    def accepts(self, op: Op) -> bool:
        return op.result.name in self.plans

    def inplace(self, op: Op):
        p = self.plans[op.result.name]
        if op.result.name in self.low8.overrides:     # another kernel (packed weights): no overlap
            return p.inplace
        if "overlap" not in p.info:
            rule = _OVERLAPS.get(OPS[op.kind].c)
            p.info["overlap"] = rule(self.low8, op, p) if rule is not None else None
        return p.inplace + ((p.info["overlap"],) if p.info["overlap"] is not None else ())

    def is_view(self, op: Op) -> bool:
        return self.low8.is_view(op)

    def scratch(self, op: Op) -> int:
        return self.plans[op.result.name].scratch

    def emit(self, op: Op, ctx: Context) -> Lowered8:
        return self.low8.emit(op, ctx)


# ---- in place: results overlapping their operand ------------------------------------------------
#
# A kernel may write its result over its operand's bytes where it has already read them for good.
# Each kernel's order of work is a sequence of steps; `_conv_steps` gives, per byte of the operand,
# the last step that reads it, and per byte of the result, the step that writes it (a step reads
# all it needs before it writes). A result starting `shift` bytes after the operand is safe iff
# no result byte lands on an operand byte read at a later step. This is checked for every byte,
# so the planner only ever gets legal overlaps (planner.Overlap); it uses one only when the arena
# shrinks.

def _conv_steps(self: Int8Lowering, op: Op, p: OpPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(last step reading each operand byte (-1: never read by the kernel), result byte offsets,
    the step writing each of them) of tinyc_s8_dw / tinyc_s8_conv_gemm."""
    g = _conv_geometry(op)
    n, c, o = g["n"], g["c"], g["o"]
    x, y = op.operands[0], op.result
    if p.info["kind"] == "dw":
        # per (image, channel): the input plane is copied into scratch, then the channel's outputs written
        mult = o // c
        tx = np.broadcast_to((np.arange(n)[:, None] * c + np.arange(c)[None, :])[:, :, None, None], x.type.shape)
        ty = np.broadcast_to((np.arange(n)[:, None] * c + np.arange(o)[None, :] // mult)[:, :, None, None],
                             y.type.shape)
    else:
        # per (image, group, block of `pix` output pixels): the block's input pixels read, then its outputs
        # written; Winograd: per block of 3 tiles of 2 x 2 outputs, each tile reading a 4 x 4 window
        groups, cg, og, oh, ow = g["groups"], g["cg"], o // g["groups"], g["oh"], g["ow"]
        oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
        if p.info["kind"] == "wino":
            tw = -(-ow // 2)
            nblk = -(-(-(-oh // 2)) * tw // 3)
            blk = (oy // 2 * tw + ox // 2) // 3
            sy, sx, taps = 2 * (oy // 2), 2 * (ox // 2), [(ky, kx) for ky in range(4) for kx in range(4)]
        else:
            pix = p.info["pix"]
            nblk = -(-oh * ow // pix)
            blk = (np.arange(oh * ow) // pix).reshape(oh, ow)
            sy, sx = oy * g["sh"], ox * g["sw"]
            taps = [(ky * g["dh"], kx * g["dw"]) for ky in range(g["kh"]) for kx in range(g["kw"])]
        last = np.full((g["h"], g["w"]), -1, np.int64)
        for dy, dx in taps:
            iy, ix = sy - g["pt"] + dy, sx - g["pl"] + dx
            ok = (iy >= 0) & (iy < g["h"]) & (ix >= 0) & (ix < g["w"])
            np.maximum.at(last, (iy[ok], ix[ok]), blk[ok])
        outer_x = (np.arange(n)[:, None] * groups + np.arange(c)[None, :] // cg) * nblk
        tx = np.where(last[None, None] >= 0, outer_x[:, :, None, None] + last[None, None], -1)
        outer_y = (np.arange(n)[:, None] * groups + np.arange(o)[None, :] // og) * nblk
        ty = outer_y[:, :, None, None] + blk[None, None]
    if 0 in p.relayout:         # the kernel reads a copy made before it starts: nothing is read afterwards
        tx = np.full(x.type.shape, -1)
    xo = self.lay.of(x).ravel()
    tx_bytes = np.full(int(xo.max()) + 1 if xo.size else 0, -1, np.int64)
    np.maximum.at(tx_bytes, xo, np.asarray(tx, np.int64).ravel())
    return tx_bytes, self.lay.of(y).ravel(), np.asarray(ty, np.int64).ravel()


def overlap_is_safe(tx_bytes: np.ndarray, yo: np.ndarray, ty: np.ndarray, shift: int) -> bool:
    """No result byte (offset yo + shift from the operand's start, written at step ty) lands on an
    operand byte read at a later step."""
    at = yo + shift
    on = (at >= 0) & (at < len(tx_bytes))
    return bool(np.all(tx_bytes[at[on]] <= ty[on]))


def best_overlap(tx_bytes: np.ndarray, yo: np.ndarray, ty: np.ndarray, nx: int, ny: int) -> int | None:
    """The safe shift (a multiple of ALIGN) with the smallest extent of operand and result
    together, or None when only disjoint placements are safe. Shifts in [-ny, max(0, nx - ny)]
    are searched largest first, by bisection (the kernels fill their results in the order they
    consume their operands, so safety is monotone there); the answer is checked byte by byte."""
    lo, hi = -_align(ny), max(0, nx - ny) // ALIGN * ALIGN
    if overlap_is_safe(tx_bytes, yo, ty, 0):
        lo = 0
    if overlap_is_safe(tx_bytes, yo, ty, hi):
        lo = hi
    while hi - lo > ALIGN:
        mid = (lo + hi) // 2 // ALIGN * ALIGN
        if mid <= lo:
            break
        if overlap_is_safe(tx_bytes, yo, ty, mid):
            lo = mid
        else:
            hi = mid
    extent = max(lo + ny, nx) - min(lo, 0)
    if extent >= nx + ny or not overlap_is_safe(tx_bytes, yo, ty, lo):
        return None
    return lo


def _overlap_conv(self: Int8Lowering, op: Op, p: OpPlan):
    """planner.Overlap for a 1x1 or depthwise int8 conv whose result can overwrite its input."""
    from tinyc.backends.planner import Overlap
    g = _conv_geometry(op)
    if p.info["kind"] == "fc" or not (p.info["kind"] == "dw" or g["groups"] == 1):
        return None
    tx_bytes, yo, ty = _conv_steps(self, op, p)
    shift = best_overlap(tx_bytes, yo, ty, op.operands[0].type.nbytes, op.result.type.nbytes)
    return None if shift is None else Overlap(0, shift)


_OVERLAPS: dict[str, Callable] = {"conv": _overlap_conv}


def without_overlaps(found: Sequence) -> tuple:
    from tinyc.backends.planner import Overlap
    return tuple(j for j in found if not isinstance(j, Overlap))


def inplace_depthwise(graph, arena: int, family: dict, inplace_operands: Callable,
                      **rules) -> tuple[frozenset, frozenset]:
    """(the depthwise convs worth a channels-last operand, ops to plan without overlaps). `family`
    (op result -> kernel family) and the planning rules are those of a plan with every depthwise
    conv so, whose arena is `arena`. Last first, each goes back to channels-first when the arena,
    planned with the overlaps the layouts then allow (or without its own partial overlap, or its
    operand producer's too, which may hinder placement more than they help), stays within `arena`:
    a channels-first plane is copied by rows, a channels-last one gathered byte by byte."""
    from tinyc.backends.int8_layout import assign, int8_depthwise
    from tinyc.backends.planner import plan_graph
    convs = int8_depthwise(graph)
    fam8 = next(f for f in family.values() if isinstance(f, Int8Family))
    keep, drop = {op.result.name for op in convs}, frozenset()
    for dw in reversed(convs):
        trial = frozenset(keep - {dw.result.name})
        low8 = Int8Lowering(assign(graph, trial))
        low8.overrides = fam8.low8.overrides           # packed-weight kernels: no overlap either way
        low8.fuse_table_epilogues(graph)
        trial_fam = Int8Family(low8, {op.result.name: low8.plan(op) for op in graph.compute_ops()
                                      if op.result.name in fam8.plans})
        for trial_drop in (drop, drop | {dw.result.name}, drop | {dw.result.name, dw.operands[0].name}):
            def rule(op: Op, fam=trial_fam, off=trial_drop):
                found = fam.inplace(op) if fam.accepts(op) else inplace_operands(op)
                return without_overlaps(found) if op.result.name in off else found
            if plan_graph(graph, rule, **rules).arena_size <= arena:
                keep, drop = set(trial), trial_drop
                break
    return frozenset(keep), drop


# By the `c` rule of an op's definition (tinyc.ops).
_PLANS: dict[str, Callable] = {
    "quantize_edge": _plan_none,
    "dequantize_edge": _plan_none,
    "table_lookup": _plan_same_layout_inplace,
    "conv": _plan_conv,
    "dense": _plan_linear,
    "elementwise": _plan_binary,
    "pool": _plan_strided(0), "reduce": _plan_strided(0), "softmax_axis": _plan_strided(0),
    "batched_matmul": _plan_matmul,
    "concat": _plan_none, "pad_const": _plan_none,
    "gather_copy": _plan_none,
}

_EMIT: dict[str, Callable] = {
    "quantize_edge": emit_quantize,
    "dequantize_edge": emit_dequantize,
    "table_lookup": emit_lut,
    "conv": emit_conv2d,
    "dense": emit_linear,
    "elementwise": emit_binary,
    "pool": emit_pool,
    "reduce": emit_mean,
    "softmax_axis": emit_softmax,
    "batched_matmul": emit_matmul,
    "concat": emit_cat,
    "pad_const": emit_pad,
    "gather_copy": emit_gather_copy,
}



# ---- token ids (tinyc.ops.gather) --------------------------------------------------------------

def emit_embedding(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    """Rows of the i8 table (its codes: the result shares its quantization) by i32 token ids, written
    in the result's layout; an id outside [0, V) makes invoke return ERR_INDEX."""
    from tinyc.ops.gather import ERR_INDEX
    table, idx = op.operands
    y = op.result
    vocab, dim = table.type.shape
    ys = _out_strides(self, y)
    base, dims, (sy, sx) = iteration(self.lay.of(y)[..., 0], row_major(idx.type.shape))
    if base[1] != 0:
        raise BackendError(f"%{y.name} = embedding: the token walk does not start at the first id (internal error)")
    it = _iter_param(ctx, 0, dims, [sy, sx])
    call = Call("tinyc_s8_embedding", (ctx.ref(idx), ctx.ref(table), ctx.ref(y, base[0]), "&" + it.cname,
                                       str(idx.type.numel), str(vocab), str(dim), str(ys[-1])), ERR_INDEX)
    return Lowered8(("EMBEDDING",), (it,), (), (call,))


_PLANS["gather_rows"] = _plan_none
_EMIT["gather_rows"] = emit_embedding

from tinyc.backends import c_ops_spatial  # noqa: E402  (conv_transpose2d, resize, masked_softmax)
_PLANS.update(c_ops_spatial.PLANS_S8)
_EMIT.update(c_ops_spatial.EMIT_S8)


# ---- layer_norm / group_norm (tinyc.ops.norms) ---------------------------------------------------

def _plan_norm(self: Int8Lowering, op: Op, p: OpPlan) -> None:
    p.info["xs"] = self.strides(op, 0, p)
    x = op.operands[0]
    if 0 not in p.relayout and np.array_equal(self.lay.of(x), self.lay.of(op.result)):
        p.inplace = (0,)


def _norm_walks(op: Op, xs: list[int], ys: list[int]) -> tuple[list, list]:
    """(dims, [y, x, parameter] strides) of the walk over the sets and of the walk in one set."""
    shape, a = op.operands[0].type.shape, op.attrs
    if "groups" in a:
        g = a["groups"]
        cpg = shape[1] // g
        outer = ([shape[0], g], [[ys[0], cpg * ys[1]], [xs[0], cpg * xs[1]], [0, cpg]])
        inner = ([cpg, *shape[2:]], [[ys[1], *ys[2:]], [xs[1], *xs[2:]], [1] + [0] * (len(shape) - 2)])
    else:
        ax = a["axis"]
        outer = (list(shape[:ax]) or [1], [ys[:ax] or [0], xs[:ax] or [0], [0] * max(ax, 1)])
        pstr = [1] * (len(shape) - ax)
        for d in range(len(shape) - 2, ax - 1, -1):
            pstr[d - ax] = pstr[d - ax + 1] * shape[d + 1]
        inner = (list(shape[ax:]), [ys[ax:], xs[ax:], pstr])
    for dims, _ in (outer, inner):
        if len(dims) > TINYC_S8_NORM_RANK:
            raise BackendError(f"%{op.result.name} = {op.kind}: {len(dims)} dims to walk; the int8 kernel "
                               f"supports {TINYC_S8_NORM_RANK}", where=op.loc, hint="reshape to fewer dims first")
    return outer, inner


TINYC_S8_NORM_RANK = 8      # TINYC_S8_MAX_RANK


def emit_norm(self: Int8Lowering, op: Op, ctx: Context, p: OpPlan) -> Lowered8:
    x, y = op.operands[0], op.result
    params = [ctx.const(v) for v in op.operands[1:]]
    if any(v is None for v in params):
        raise BackendError(f"%{y.name} = {op.kind}: weight and bias must be constants", where=op.loc)
    shape, a = x.type.shape, op.attrs
    n_params = shape[1] if "groups" in a else math.prod(shape[a["axis"]:])
    gamma = params[0] if params else np.ones(n_params, np.float32)
    beta = params[1] if len(params) > 1 else np.zeros(n_params, np.float32)
    m, s, b = quant.norm_out_params(gamma, beta, _q(y))
    records = np.stack([m, 31 - s, b], axis=1).astype(np.int32).ravel()
    qw = Weight(ctx.weight_name("q"), records, "int32_t")
    (odims, ostr), (idims, istr) = _norm_walks(op, p.info["xs"], _out_strides(self, y))
    count = math.prod(idims)
    eps = quant.norm_eps_units(a["eps"], _q(x), count)
    param = Param("tinyc_s8_norm_params", ctx.param_name(),
                  (("outer", c_iter(odims, ostr)), ("inner", c_iter(idims, istr)), ("count", str(count)),
                   ("zx", str(_zp(x))), ("zy", str(_zp(y))), ("rms", str(int(bool(a.get("rms", False))))),
                   ("eps", str(eps))))
    call = Call("tinyc_s8_norm", (self.operand(op, 0, ctx, p), ctx.ref(y), qw.cname, "&" + param.cname))
    return Lowered8(("NORM",), (param,), (qw,), (call,))


_PLANS["normalize"] = _plan_norm
_EMIT["normalize"] = emit_norm

from tinyc.backends import c_ops_math  # noqa: E402  (maximum/minimum, prelu, log_softmax, sum, amax, amin)
_PLANS.update(c_ops_math.PLANS_S8)
_EMIT.update(c_ops_math.EMIT_S8)
from tinyc.backends import c_ops_recurrent  # noqa: E402  (gru, lstm)
_PLANS.update(c_ops_recurrent.PLANS_S8)
_EMIT.update(c_ops_recurrent.EMIT_S8)

SUPPORTED = sorted(k for k, d in OPS.items() if d.c in _EMIT or d.c in VIEW_RULES)
