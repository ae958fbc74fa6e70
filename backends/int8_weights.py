"""Offline transforms of int8 constants for the C kernels, and the output-stage records.

Everything the kernels need besides the activations is computed here, at compile time,
with the functions of tinyc.quant (the interpreter's arithmetic):
- conv/linear weights reordered into the order the inner loops read them (im2col order
  (ky, kx, c), rows padded to a multiple of 4, fully-connected rows interleaved in blocks of
  six (then four, two), depthwise 3x3 taps packed as int16 pairs for SMLAD / SMLAxy);
- biases with the input zero point folded in: bias'[c] = bias[c] - zp_x * sum(w[c]), so
  the inner loops multiply raw codes and padding filled with zp_x adds nothing;
- per-channel requantization records (tinyc_kernels_s8.h): the SMMLA form
  {bias, M, R, S} when every channel allows it, else the 64-bit form;
- tables: add/sub operand rescales (256 x int32), requantizing copies (256 x int8).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyc import quant
from tinyc.errors import BackendError
from tinyc.ir import Op, QuantParams

FAST, GENERIC = 0, 1
RECORD = {FAST: 4, GENERIC: 6}   # TINYC_S8_Q_FAST / TINYC_S8_Q_GENERIC


@dataclass(frozen=True)
class OutStage:
    mode: int                  # FAST or GENERIC
    records: np.ndarray        # int32 [channels, RECORD[mode]]
    zp: int
    lo: int
    hi: int


def out_stage(op: Op, ratio, bias=None, channels: int | None = None) -> OutStage:
    """Output stage of `op` for per-channel (or scalar) `ratio` and accumulator start `bias`."""
    out = op.result.type.quant
    ratio = np.atleast_1d(np.asarray(ratio, np.float64))
    n_ch = channels or ratio.size
    ratio = np.broadcast_to(ratio, (n_ch,))
    bias = np.zeros(n_ch, np.int64) if bias is None else np.asarray(bias, np.int64)
    if bias.min(initial=0) < quant.I32_MIN or bias.max(initial=0) > quant.I32_MAX:
        raise BackendError(f"%{op.result.name}: the folded bias does not fit int32", where=op.loc,
                           hint=f"keep it in float: quantize-int8{{keep-float={op.result.name}}}")
    (mp, sp), (mn, sn) = quant.output_multipliers(ratio, op.attrs)
    zp = out.zero_point[0]
    lo, hi = quant.act_bounds(op.attrs, out)
    n = 31 - sp
    leaky = op.attrs.get("act") == "leaky_relu"
    fast = not leaky and bool(np.all((n >= 33) & (n <= 62)))
    if fast:
        r = (np.int64(1) << (n - 33)) + zp * (np.int64(1) << (n - 32))
        fast = bool(np.all(np.abs(r) < 2 ** 30)) and bool(np.all(mp != 0))
    if fast:
        rec = np.stack([bias, mp, r, n - 32], axis=1)
        return OutStage(FAST, rec.astype(np.int32), zp, int(lo), int(hi))
    rec = np.stack([bias, mp, n, mn, 31 - sn, np.zeros_like(bias)], axis=1)
    return OutStage(GENERIC, rec.astype(np.int32), zp, int(lo), int(hi))


def folded_bias(w2d: np.ndarray, bias: np.ndarray | None, zx: int) -> np.ndarray:
    """bias[c] - zx * sum_k w[c, k] (int64); w2d is [channels, K]."""
    acc = np.zeros(w2d.shape[0], np.int64) if bias is None else np.asarray(bias, np.int64).copy()
    return acc - zx * w2d.astype(np.int64).sum(axis=1)


def pad_k(w2d: np.ndarray) -> np.ndarray:
    """Rows padded with zeros to a multiple of 4 (the SMLAD chunk)."""
    k = w2d.shape[1]
    kp = -(-k // 4) * 4
    out = np.zeros((w2d.shape[0], kp), np.int8)
    out[:, :k] = w2d
    return out


def conv_gemm_weights(w: np.ndarray) -> np.ndarray:
    """[O, Cg, KH, KW] -> [O, KH*KW*Cg] in im2col order (ky, kx, c)."""
    o = w.shape[0]
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(o, -1))


def gemm_pairs(w2d: np.ndarray, groups: int) -> np.ndarray:
    """Padded [O, kp] rows -> per group, output channels in pairs interleaved per 4-byte chunk
    (channel 2i's chunk j, then channel 2i+1's), an odd last channel of the group after them: the
    weight order of tinyc_s8_gemm3 / tinyc_s8_gemm1."""
    o, kp = w2d.shape
    parts = []
    for grp in w2d.reshape(groups, o // groups, kp):
        npair = len(grp) // 2
        parts.append(grp[:2 * npair].reshape(npair, 2, kp // 4, 4).transpose(0, 2, 1, 3).ravel())
        parts.append(grp[2 * npair:].ravel())
    return np.concatenate(parts).astype(np.int8)


def fc_interleave(w2d: np.ndarray) -> np.ndarray:
    """Padded [N, kp] rows -> blocks of 6 rows interleaved per 4-byte chunk, then of the N % 6 rest a
    block of 4, a block of 2 and a single row, each if it fits (tinyc_s8_fc)."""
    n, kp = w2d.shape
    parts, start = [], 0
    for rb, count in ((6, n // 6), (4, n % 6 // 4), (2, n % 6 % 4 // 2)):
        block = w2d[start:start + rb * count]
        parts.append(block.reshape(count, rb, kp // 4, 4).transpose(0, 2, 1, 3).ravel())
        start += rb * count
    parts.append(w2d[start:].ravel())
    return np.concatenate(parts).astype(np.int8)


def expand_pairs(words_: np.ndarray) -> np.ndarray:
    """int8 words (bytes b0..b3) -> two words each, (b0, b2) and (b1, b3) as int16 pairs: what SXTB16 and
    SXTB16 ROR 8 make of them, done at compile time (the `wide` GEMM weights, tinyc_s8_gemm3)."""
    b = np.asarray(words_, np.int32).view(np.int8).reshape(-1, 4).astype(np.int64)
    return np.stack([pack16(b[:, 0], b[:, 2]), pack16(b[:, 1], b[:, 3])], axis=1).ravel()


def words(a: np.ndarray) -> np.ndarray:
    """int8 bytes (a multiple of 4) as little-endian int32 words: aligned word loads in C."""
    return np.ascontiguousarray(a, np.int8).ravel().view("<i4").astype(np.int32)


def pack16(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """int16 pairs (lo in bits 0..15, hi in 16..31) as int32 words."""
    u = (np.asarray(lo, np.int64) & 0xFFFF) | ((np.asarray(hi, np.int64) & 0xFFFF) << 16)
    return u.astype(np.uint32).view(np.int32)


def dw3x3_weights(w: np.ndarray) -> np.ndarray:
    """[O, 1, 3, 3] -> per channel {w00|w02, w10|w12, w20|w22, w01|w11, w21} (int32 words)."""
    k = w[:, 0].astype(np.int64)
    zero = np.zeros(w.shape[0], np.int64)
    cols = [pack16(k[:, 0, 0], k[:, 0, 2]), pack16(k[:, 1, 0], k[:, 1, 2]), pack16(k[:, 2, 0], k[:, 2, 2]),
            pack16(k[:, 0, 1], k[:, 1, 1]), pack16(k[:, 2, 1], zero)]
    return np.stack(cols, axis=1).ravel()


def dw_tap_words(w: np.ndarray) -> np.ndarray:
    """[O, 1, KH, KW] -> per channel and row of taps, per 4 taps {w0|w2, w1|w3} (int16 pairs; a last 2 or 3
    taps zero-padded to 4) and a last single tap (KW % 4 == 1) as one word: tinyc_s8_dw_taps."""
    o, _, kh, kw = w.shape
    k = w[:, 0].astype(np.int64)
    groups, single = kw // 4 + (kw % 4 > 1), kw % 4 == 1
    padded = np.zeros((o, kh, 4 * groups), np.int64)
    padded[:, :, :min(kw, 4 * groups)] = k[:, :, :4 * groups]
    g = padded.reshape(o, kh, groups, 4)
    pairs = np.stack([pack16(g[..., 0], g[..., 2]), pack16(g[..., 1], g[..., 3])], axis=-1).reshape(o, kh, -1)
    if single:
        pairs = np.concatenate([pairs, k[:, :, -1:].astype(np.int32)], axis=-1)
    return pairs.astype(np.int32).ravel()


def add_tables(a: QuantParams, b: QuantParams, out: QuantParams, sign: int) -> tuple[np.ndarray, np.ndarray, float]:
    """add/sub: ta[q + 128] = requantize((q - za) << 20) by sa / (2 max), same for b (negated
    for sub); and the output ratio."""
    ra, rb, ro = quant.add_ratios(a, b, out)
    codes = np.arange(quant.QMIN, quant.QMAX + 1, dtype=np.int64)
    ta = quant.requantize((codes - a.zero_point[0]) << quant.ADD_SHIFT, *quant.quantize_multiplier(ra))
    tb = quant.requantize((codes - b.zero_point[0]) << quant.ADD_SHIFT, *quant.quantize_multiplier(rb))
    return ta.astype(np.int32), (sign * tb).astype(np.int32), ro


def requant_table(x: QuantParams, out: QuantParams) -> np.ndarray:
    """table[q + 128] = clamp(requantize(q - zx) by sx / so + zo): a requantizing copy (cat)."""
    codes = np.arange(quant.QMIN, quant.QMAX + 1, dtype=np.int64)
    m, s = quant.quantize_multiplier(quant.rescale_ratio(x, out))
    y = quant.requantize(codes - x.zero_point[0], m, s) + out.zero_point[0]
    return quant.saturate(y).astype(np.int8)


# Winograd F(2x2, 3x3) with G' = 2 G (integer): U = G' g G'^T is 4 x the textbook transform, so
# A^T (U . V) A is 4 x the direct conv's sum, exactly (tinyc_s8_conv_wino).
WINO_G = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], np.int64)
WINO_V_MAX = 4 * 128        # |V| of raw int8 codes: each entry sums 4 of them with signs


def winograd_u(w: np.ndarray) -> np.ndarray:
    """[O, C, 3, 3] int8 -> U = G' g G'^T as int64 [16 (t = 4 i + j), O, C]."""
    u = np.einsum("ik,ockl,jl->ijoc", WINO_G, np.asarray(w, np.int64), WINO_G)
    return u.reshape(16, *w.shape[:2])


def winograd_fits(w: np.ndarray, bias: np.ndarray) -> bool:
    """Every partial sum of tinyc_s8_conv_wino fits int32: per output channel, 4 x 128 x the sum of
    |U| over positions and input channels bounds M and A^T M A; a quarter of it plus |bias| the result."""
    s = np.abs(winograd_u(w)).sum(axis=(0, 2))
    top = WINO_V_MAX * s
    return bool(np.all(top <= quant.I32_MAX) and np.all(top // 4 + np.abs(np.asarray(bias, np.int64)) <= quant.I32_MAX))


def winograd_weights(w: np.ndarray) -> np.ndarray:
    """[O, C, 3, 3] (C % 4 == 0) -> int32 words of U as int16 pairs: per pair of output channels, per t,
    per chunk of 4 input channels {a (0, 2), a (1, 3), b (0, 2), b (1, 3)}; an odd last channel's
    {(0, 2), (1, 3)} per t and chunk after them (tinyc_s8_conv_wino)."""
    u = winograd_u(w)                              # [16, O, C]
    o, c = w.shape[:2]
    q = u.reshape(16, o, c // 4, 4)
    pairs = np.stack([pack16(q[..., 0], q[..., 2]), pack16(q[..., 1], q[..., 3])], axis=-1)   # [16, O, C/4, 2]
    npair = o // 2
    even = pairs[:, :2 * npair].reshape(16, npair, 2, c // 4, 2).transpose(1, 0, 3, 2, 4).ravel()
    odd = pairs[:, 2 * npair:].transpose(1, 0, 2, 3).ravel()
    return np.concatenate([even, odd]).astype(np.int32)
