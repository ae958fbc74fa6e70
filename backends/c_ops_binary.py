"""Lowering of the binary layers (docs/compression_formats.md) to runtime_c/tinyc_kernels_bin.c.

`sign` writes its u1 result bit-packed, 32 per word, as one bit stream in *packing
order*: channels-last (N, H, W, C) when bin_conv2d reads it, row-major when bin_linear
does, so a pixel's (a row's) channel bits are consecutive and the layers XOR whole words.
The stream is dense (ceil(numel / 8) bytes, the IR's packed size, so the memory planner
needs nothing special); bits past the last element are 0.

bin_conv2d / bin_linear keep their u1 weights bit-packed in flash: per output channel the
bits of its (ky, kx, c) taps (a linear layer: its K inputs) padded with 0 to `kwords`
words. A linear layer runs as a 1x1 convolution over its rows. Inputs:

- u1: XNOR/popcount. Per output pixel the kernel gathers the taps' bits into a word row
  (padded taps 0, plus a mask of the in-bounds taps at the border), then per output channel
  S = K_valid - 2 popcount((row ^ w) & mask). Float output `(float)S * alpha` then `+ bias`
  (no FMA); int8 output acc = S * 2^8 + bias through the int8 conv's output stage.
- i8: sign weights select codes (byte masks, USADA8): acc = bias' + 2P - U with
  P = sum of u = q + 128 where the weight is +1, U = sum of u; bias' = bias -
  (zp + 128) * sum(w_hat) is folded here (padding holds zp, so padded taps add 0).
- f32: +x / -x accumulation, y = alpha * S + bias (+ act), to rounding like a float conv.

The output-stage records and multipliers come from tinyc.quant through int8_weights.out_stage,
as for the int8 conv. Every shape is a literal of a per-shape wrapper (Context.specialize).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinyc import quant
from tinyc.backends import int8_weights as iw
from tinyc.backends import planner
from tinyc.backends.c_ops import KernelLibrary, Lowered, Weight
from tinyc.backends.int8_layout import _decompose, channels_last_perm, dim_strides, perm_offsets, row_major
from tinyc.errors import BackendError
from tinyc.ir import Graph, Op, Value
from tinyc.ops import ACTIVATIONS, OPS, Trait, has

SIGN_RANK = 4                     # dims of the sign kernel's walk
LIBRARY = KernelLibrary("bin", "TINYC_BIN_", "tinyc_kernels_bin.c", ("tinyc_kernels_bin.h", "tinyc_kernels_bin.c"))

CONV, ROWS = "channels-last", "row-major"   # packing orders of u1 activations
# Kernels load and store whole words of a u1 tensor of ceil(numel / 8) bytes: its slot must
# be padded to a word boundary, which the planner's alignment guarantees.
assert planner.ALIGN % 4 == 0


def handles(op: Op) -> bool:
    """sign (its int8 rule: threshold codes) and the binary layers."""
    return has(op, Trait.BINARY_LAYER) or OPS[op.kind].int8 == "threshold_codes"


def act_code(attrs: dict) -> int:
    """The tinyc_act kind code of a fused activation (0: none)."""
    act = attrs.get("act")
    return 0 if act is None else ACTIVATIONS[act].c_code


def accepts(op: Op) -> bool:
    """Ops and values this module takes care of (c_emitter._check_graph skips them): the
    binary ops and their u1 weights."""
    return handles(op) or (op.is_const and op.result.type.dtype == "u1")


def words(n_bits: int) -> int:
    return -(-n_bits // 32)


def pack_bits(bits2d: np.ndarray, kwords: int) -> np.ndarray:
    """[rows, K] of 0/1 -> [rows * kwords] uint32, bit k of a row in word k // 32, bit k % 32."""
    rows, k = bits2d.shape
    padded = np.zeros((rows, kwords * 32), np.uint64)
    padded[:, :k] = bits2d
    w = (padded.reshape(rows, kwords, 32) << np.arange(32, dtype=np.uint64)).sum(axis=2)
    return w.astype(np.uint32).ravel()


def unpack_stream(raw: bytes | np.ndarray, shape, order: str) -> np.ndarray:
    """A packed u1 tensor's bytes (as TINYC_LAYER_OUTPUT reports them) -> its 0/1 values in
    the logical (IR) shape."""
    n = math.prod(shape)
    bits = np.unpackbits(np.frombuffer(bytes(raw), np.uint8), bitorder="little")[:n]
    return bits[bit_offsets(shape, order)]


def bit_offsets(shape, order: str) -> np.ndarray:
    """Bit index in the stream of each logical element."""
    if order == CONV:
        return perm_offsets(shape, channels_last_perm(len(shape)))
    return row_major(shape)


@dataclass(frozen=True)
class _Geometry:
    """A layer as a (grouped) conv: a linear layer is 1x1 over its rows (h = rows, w = 1)."""
    n: int
    c: int
    h: int
    w: int
    o: int
    cg: int
    kh: int
    kw: int
    oh: int
    ow: int
    sh: int = 1
    sw: int = 1
    dh: int = 1
    dw: int = 1
    pt: int = 0
    pl: int = 0
    groups: int = 1

    @property
    def og(self) -> int:
        return self.o // self.groups

    @property
    def k(self) -> int:
        return self.kh * self.kw * self.cg

    @property
    def kwords(self) -> int:
        return words(self.k)


def _geometry(op: Op) -> _Geometry:
    x, w, y = op.operands[0].type, op.operands[1].type, op.result.type
    if op.kind == "bin_linear":
        k = x.shape[-1]
        rows = x.numel // k
        return _Geometry(1, k, rows, 1, w.shape[0], k, 1, 1, rows, 1)
    a = op.attrs
    return _Geometry(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], w.shape[1], w.shape[2], w.shape[3],
                     y.shape[2], y.shape[3], a["stride"][0], a["stride"][1], a["dilation"][0], a["dilation"][1],
                     a["padding"][0], a["padding"][1], a["groups"])


def _tap_range(start: int, dil: int, size: int, taps: int) -> tuple[int, int]:
    """[first, last + 1) of the taps k with 0 <= start + k * dil < size (tinyc_bin_tap_lo/hi)."""
    lo = 0 if start >= 0 else (-start + dil - 1) // dil
    hi = 0 if start >= size else min((size - start + dil - 1) // dil, taps)
    return lo, hi


def _const(op: Op, ctx, i: int, what: str) -> np.ndarray:
    v = ctx.const(op.operands[i])
    if v is None:
        raise BackendError(f"%{op.result.name} = {op.kind}: the {what} must be a constant", where=op.loc)
    return np.asarray(v)


class BinaryLowering:
    """Plans and emits the binary ops of one graph: the packing order of every u1
    activation is fixed here, from its readers."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.orders: dict[str, str] = {}
        producers = {op.result.name: op for op in graph.ops}
        readers: dict[str, set[str]] = {}
        for op in graph.compute_ops():
            if op.kind == "decode":
                continue  # its u1 operand holds 1-bit codebook indices: a packed weight format's business
            if op.result.type.dtype == "u1" and op.kind != "sign":
                raise BackendError(f"the C backend makes binary (u1) activations only with sign; "
                                   f"%{op.result.name} = {op.kind} is u1", where=op.loc,
                                   hint="apply sign right before the binary layer")
            for i, v in enumerate(op.operands):
                if v.type.dtype != "u1":
                    continue
                if has(op, Trait.BINARY_LAYER) and i == 1:
                    if not producers[v.name].is_const:
                        raise BackendError(f"%{op.result.name} = {op.kind}: the sign weights must be a constant",
                                           where=op.loc)
                    continue
                if has(op, Trait.BINARY_LAYER) and i == 0 and not producers.get(v.name, op).is_const:
                    readers.setdefault(v.name, set()).add(CONV if op.kind == "bin_conv2d" else ROWS)
                    continue
                raise BackendError(f"the C backend reads binary (u1) activations only as the input of "
                                   f"bin_conv2d / bin_linear; %{op.result.name} = {op.kind} reads %{v.name}",
                                   where=op.loc, hint="apply sign right before the binary layer")
        for name, wants in readers.items():
            if len(wants) > 1:
                raise BackendError(f"%{name} is read by both bin_conv2d and bin_linear: its bits cannot be "
                                   "packed for both", hint="give each binary layer its own sign")
            self.orders[name] = wants.pop()
        for op in graph.compute_ops():
            if op.kind == "sign" and op.result.name not in self.orders:
                self.orders[op.result.name] = ROWS     # unread (dead): any order

    library = LIBRARY

    @staticmethod
    def handles(op: Op) -> bool:
        return handles(op)

    accepts = handles    # the KernelFamily protocol (c_ops.KernelFamily)

    def is_view(self, op: Op) -> bool:
        return False

    # -- planning
    def inplace(self, op: Op) -> tuple[int, ...]:
        return ()

    def scratch(self, op: Op) -> int:
        """Arena bytes the op's kernel needs while it runs (0 for ops of other kinds)."""
        if not has(op, Trait.BINARY_LAYER):
            return 0
        g = _geometry(op)
        kw = g.kwords
        x = op.operands[0].type.dtype
        if x == "u1":
            return 4 * kw                # the bit row
        if x == "i8":                    # the byte row, then four pixels' words interleaved (or one pixel's)
            return (2 if g.oh * g.ow == 1 else 5) * 32 * kw
        return 4 * 32 * kw               # the float row

    # -- emission
    def emit(self, op: Op, ctx) -> Lowered:
        if op.kind == "sign":
            return self._sign(op, ctx)
        dtype = op.operands[0].type.dtype
        if dtype == "u1":
            return self._layer_u1(op, ctx)
        if dtype == "i8":
            return self._layer_s8(op, ctx)
        return self._layer_f32(op, ctx)

    def order(self, v: Value) -> str:
        return self.orders[v.name]

    def _offsets(self, ctx, v: Value) -> np.ndarray:
        """Element offsets of an activation in its buffer (the int8 layout, else row-major)."""
        if v.type.dtype == "i8" and ctx.layouts is not None and v.name in ctx.layouts.offsets:
            return ctx.layouts.of(v)
        return row_major(v.type.shape)

    # -- sign
    def _sign(self, op: Op, ctx) -> Lowered:
        x, y = op.operands[0], op.result
        shape = x.type.shape
        s8 = x.type.dtype == "i8"
        perm = channels_last_perm(len(shape)) if self.order(y) == CONV else tuple(range(len(shape)))
        xoff = self._offsets(ctx, x).transpose(perm).ravel()
        weights: list[Weight] = []
        if len(op.operands) == 2:
            t = op.operands[1]
            _const(op, ctx, 1, "threshold")
            tshape = (1,) * (len(shape) - t.type.rank) + t.type.shape
            toff = np.broadcast_to(row_major(t.type.shape).reshape(tshape), shape).transpose(perm).ravel()
            tref = lambda base: ctx.ref(t, base)      # noqa: E731
        else:
            default = np.array([x.type.quant.zero_point[0]], np.int32) if s8 else np.zeros(1, np.float32)
            tw = Weight(ctx.weight_name("t"), default, "int32_t" if s8 else "float")
            weights.append(tw)
            toff = np.zeros(xoff.size, np.int64)
            tref = lambda base: tw.cname              # noqa: E731
        base, dims, (xs, ts) = _decompose((xoff, toff))
        if len(dims) > SIGN_RANK:
            raise BackendError(f"%{y.name} = sign: the input walk needs {len(dims)} strided dims; the kernel "
                               f"supports {SIGN_RANK}", where=op.loc, hint="store the input in a simpler layout")
        pad = SIGN_RANK - len(dims)
        dims, xs, ts = [1] * pad + list(dims), [0] * pad + list(xs), [0] * pad + list(ts)
        kernel = "SIGN_S8" if s8 else "SIGN_F32"
        call = ctx.specialize(f"tinyc_bin_{kernel.lower()}", [
            ("const int8_t *" if s8 else "const float *", ctx.ref(x, base[0])),
            ("const int32_t *" if s8 else "const float *", tref(base[1])),
            ("tinyc_bin_word *", f"(void *)({ctx.ref(y)})")], [*dims, *xs, *ts])
        return Lowered((kernel,), (), tuple(weights), (call,))

    # -- layers
    def _weights(self, op: Op, ctx, g: _Geometry, perm: np.ndarray | None = None) -> tuple[np.ndarray, Weight]:
        """The logical sign bits [O, K] ((ky, kx, c) order) and their packed flash words
        (columns permuted to the input's physical order when `perm` is given)."""
        w = _const(op, ctx, 1, "weight").astype(np.uint8)
        w2d = w.reshape(g.o, -1) if op.kind == "bin_linear" else w.transpose(0, 2, 3, 1).reshape(g.o, -1)
        phys = w2d
        if perm is not None:
            phys = np.zeros_like(w2d)
            phys[:, perm] = w2d
        return w2d, Weight(ctx.weight_name("w"), pack_bits(phys, g.kwords), "uint32_t")

    def _float_params(self, op: Op, ctx, g: _Geometry) -> tuple[Weight, list[int]]:
        """{alpha[O], bias[O], lo, hi, a} and the literals has_bias, act."""
        alpha = _const(op, ctx, 2, "alpha").astype(np.float32)
        has_bias = len(op.operands) > 3
        bias = _const(op, ctx, 3, "bias").astype(np.float32) if has_bias else np.zeros(g.o, np.float32)
        a = op.attrs
        extra = np.array([a.get("act_min", 0.0), a.get("act_max", 0.0), a.get("act_alpha", 0.0)], np.float32)
        f = Weight(ctx.weight_name("f"), np.concatenate([alpha, bias, extra]), "float")
        return f, [int(has_bias), act_code(a)]

    def _out_strides(self, ctx, op: Op, g: _Geometry) -> list[int]:
        """Element strides (n, o, oy, ox) of the result."""
        y = op.result
        off = self._offsets(ctx, y)
        if op.kind == "bin_linear":
            s = dim_strides(off.reshape(-1, g.o))
            return None if s is None else [0, s[1], s[0], 0]
        return dim_strides(off)

    def _in_strides(self, ctx, op: Op, g: _Geometry) -> tuple[list[int], np.ndarray | None]:
        """Element strides (n, c, y, x) of a byte or float input, and the weight column
        permutation when a linear layer reads its rows in a permuted physical order."""
        x = op.operands[0]
        off = self._offsets(ctx, x)
        if op.kind == "bin_linear":
            from tinyc.backends.c_ops_int8 import _row_permutation
            off2 = off.reshape(g.h, g.c)
            perm = _row_permutation(off2)
            if perm is not None:
                return [0, 1, perm[1], 0], perm[0]
            s = dim_strides(off2)
            if s is None:
                raise BackendError(f"%{op.result.name} = bin_linear: its input rows are not strided in memory",
                                   where=op.loc, hint="apply the binary layer before the reshape")
            return [0, s[1], s[0], 0], None
        s = dim_strides(off)
        if s is None:
            raise BackendError(f"%{op.result.name} = bin_conv2d: its input is not strided in memory", where=op.loc)
        return s, None

    def _window(self, g: _Geometry) -> list[int]:
        return [g.h, g.w, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl]

    def _border(self, op: Op, ctx, g: _Geometry, w2d: np.ndarray) -> tuple[list[Weight], list[str], int]:
        """Border corrections of a u1 layer: per type of output pixel (its in-bounds tap
        rows and columns) and output channel, the sum of the weight signs of its padded taps
        (int16), and the per-row / per-column type indices. No tables without padding."""
        ranges_y = [_tap_range(oy * g.sh - g.pt, g.dh, g.h, g.kh) for oy in range(g.oh)]
        ranges_x = [_tap_range(ox * g.sw - g.pl, g.dw, g.w, g.kw) for ox in range(g.ow)]
        full_y, full_x = (0, g.kh), (0, g.kw)
        if all(r == full_y for r in ranges_y) and all(r == full_x for r in ranges_x):
            return [], ["0", "0", "0"], 1
        ys, xs = sorted(set(ranges_y)), sorted(set(ranges_x))
        wsum = (2 * w2d.astype(np.int64).reshape(g.o, g.kh, g.kw, g.cg) - 1).sum(axis=3)     # [O, KH, KW]
        total = wsum.sum(axis=(1, 2))
        corr = np.zeros((len(ys), len(xs), g.o), np.int64)
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                corr[i, j] = total - wsum[:, y0:max(y0, y1), x0:max(x0, x1)].sum(axis=(1, 2))
        if np.abs(corr).max() >= 2 ** 15:
            raise BackendError(f"%{op.result.name}: {g.k} inputs per output are too many for the binary kernel",
                               where=op.loc)
        tables = [Weight(ctx.weight_name("ty"), np.array([ys.index(r) for r in ranges_y], np.int64), "uint16_t"),
                  Weight(ctx.weight_name("tx"), np.array([xs.index(r) for r in ranges_x], np.int64), "uint16_t"),
                  Weight(ctx.weight_name("corr"), corr.ravel(), "int16_t")]
        return tables, [t.cname for t in tables], len(xs)

    def _layer_u1(self, op: Op, ctx) -> Lowered:
        g = _geometry(op)
        y = op.result
        want = CONV if op.kind == "bin_conv2d" else ROWS
        if self.order(op.operands[0]) != want:       # pragma: no cover (the constructor decided it)
            raise BackendError(f"%{y.name}: binary input packed {self.order(op.operands[0])} (internal error)")
        w2d, ww = self._weights(op, ctx, g)
        ys = self._out_strides(ctx, op, g)
        if ys is None:
            raise BackendError(f"%{y.name}: result layout is not strided (internal error)")
        tables, table_ptrs, ntx = self._border(op, ctx, g, w2d)
        weights = [ww, *tables]
        i8 = y.type.dtype == "i8"
        if i8:
            alpha = _const(op, ctx, 2, "alpha")
            bias = _const(op, ctx, 3, "bias").astype(np.int64)
            ratio = quant.bin_ratios(quant.BIN_U1_SCALE, alpha, y.type.quant)
            stage = iw.out_stage(op, ratio, bias, g.o)
            qw = Weight(ctx.weight_name("q"), stage.records.ravel().astype(np.int32), "int32_t")
            weights.append(qw)
            q_ptr, f_ptr = qw.cname, "0"
            tail = [1, 0, 0, stage.mode, stage.zp, stage.lo, stage.hi]
        else:
            fw, flags = self._float_params(op, ctx, g)
            weights.append(fw)
            q_ptr, f_ptr = "0", fw.cname
            tail = [0, *flags, 0, 0, 0, 0]
        lits = [g.n, g.groups, g.c, g.cg, g.og, *self._window(g), *ys, g.kwords, ntx, *tail]
        call = ctx.specialize("tinyc_bin_conv_u1", [
            ("const tinyc_bin_word *", f"(const void *)({ctx.ref(op.operands[0])})"),
            ("const tinyc_bin_word *", ww.cname), ("const int32_t *", q_ptr), ("const float *", f_ptr),
            ("void *", f"(void *)({ctx.ref(y)})"), ("tinyc_bin_word *", f"(void *)({ctx.scratch()})"),
            ("const uint16_t *", table_ptrs[0]), ("const uint16_t *", table_ptrs[1]),
            ("const int16_t *", table_ptrs[2])], lits)
        return Lowered(("CONV_U1",), (), tuple(weights), (call,))

    def _layer_s8(self, op: Op, ctx) -> Lowered:
        g = _geometry(op)
        x, y = op.operands[0], op.result
        xs, perm = self._in_strides(ctx, op, g)
        w2d, ww = self._weights(op, ctx, g, perm)
        ys = self._out_strides(ctx, op, g)
        if ys is None:
            raise BackendError(f"%{y.name}: result layout is not strided (internal error)")
        zx = x.type.quant.zero_point[0]
        alpha = _const(op, ctx, 2, "alpha")
        bias = _const(op, ctx, 3, "bias").astype(np.int64)
        w_sum = 2 * w2d.astype(np.int64).sum(axis=1) - g.k          # sum of w_hat per channel
        folded = bias - (zx - quant.QMIN) * w_sum
        ratio = quant.bin_ratios(x.type.quant.scale[0], alpha, y.type.quant)
        stage = iw.out_stage(op, ratio, folded, g.o)
        qw = Weight(ctx.weight_name("q"), stage.records.ravel().astype(np.int32), "int32_t")
        lits = [g.n, g.groups, g.cg, g.og, *self._window(g), *xs, *ys, zx, g.kwords, stage.mode, stage.zp,
                stage.lo, stage.hi]
        call = ctx.specialize("tinyc_bin_conv_s8", [
            ("const int8_t *", ctx.ref(x)), ("const tinyc_bin_word *", ww.cname), ("const int32_t *", qw.cname),
            ("int8_t *", ctx.ref(y)), ("uint8_t *", f"(void *)({ctx.scratch()})")], lits)
        return Lowered(("CONV_S8",), (), (ww, qw), (call,))

    def _layer_f32(self, op: Op, ctx) -> Lowered:
        g = _geometry(op)
        x, y = op.operands[0], op.result
        xs, _ = self._in_strides(ctx, op, g)
        _, ww = self._weights(op, ctx, g)
        fw, flags = self._float_params(op, ctx, g)
        ys = self._out_strides(ctx, op, g)
        lits = [g.n, g.groups, g.cg, g.og, *self._window(g), *xs, *ys, g.kwords, *flags]
        call = ctx.specialize("tinyc_bin_conv_f32", [
            ("const float *", ctx.ref(x)), ("const tinyc_bin_word *", ww.cname), ("const float *", fw.cname),
            ("float *", ctx.ref(y)), ("float *", f"(void *)({ctx.scratch()})")], lits)
        return Lowered(("CONV_F32",), (), (ww, fw), (call,))
