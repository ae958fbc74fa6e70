"""tinyc's int8 arithmetic: the one definition of every rounding, rescale and table.

docs/quantization.md is the prose spec. The interpreter's integer kernels compute with
these functions, and the C backend calls the same functions to get the constants it
emits, so compiled code and interpreter agree bit for bit. Everything here is a pure
function of quantization parameters (never of attributes a pass could leave stale).

Conventions: real = scale * (q - zp). Activations are i8 per tensor; weights i8
symmetric per output channel (zp 0, codes in [-127, 127]); biases i32 with scale
input_scale * weight_scale[c]. Activation and weight scales are float32 values (the C
side stores floats); bias scales are their exact float64 products.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tinyc.ir import QuantParams

QMIN, QMAX = -128, 127
WEIGHT_MAX = 127                   # symmetric weights: -128 unused, so -w is representable
# Low-bit weights (quantize-int8{weight-bits=N}): symmetric codes in [-max, max], stored as the dtype.
WEIGHT_BITS = {8: ("i8", 127), 4: ("i4", 7), 2: ("i2", 1)}
CLIP_GRID = 100                    # low-bit weight scales: clipping fractions k / CLIP_GRID tried
I32_MIN, I32_MAX = -2 ** 31, 2 ** 31 - 1
MIN_SCALE = 2.0 ** -64             # scale of a tensor whose calibrated range is empty
ADD_SHIFT = 20                     # add/sub: centered operands are scaled by 2^20 first
DIV_SHIFT = 16                     # div: the numerator is scaled by 2^16 before dividing
EXP_BITS = 20                      # softmax exp table entries are Q20 (exp(0) = 2^20)
SOFTMAX_MAX_LEN = (2 ** 31 - 1) // 2 ** EXP_BITS   # longest softmax axis: the sum fits int32
SOFTMAX_OUT = QuantParams((1.0 / 256,), (-128,))   # TFLite's fixed softmax output quantization


# ---- float <-> int8 ----------------------------------------------------------------------

def f32(x: float) -> float:
    """`x` rounded to the nearest float32 (scales live in C as floats)."""
    return float(np.float32(x))


def round_half_away(x) -> np.ndarray:
    """Round to nearest, ties away from zero (C's roundf); computed in float64 so x + 0.5 is exact."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def saturate(x, lo: int = QMIN, hi: int = QMAX) -> np.ndarray:
    return np.clip(x, lo, hi)


def _per_axis(values, q: QuantParams, ndim: int) -> np.ndarray:
    """Scales or zero points shaped to broadcast against a rank-`ndim` tensor."""
    a = np.asarray(values)
    if q.axis is None:
        return a.reshape(())
    return a.reshape([-1 if i == q.axis else 1 for i in range(ndim)])


def quantize(x, q: QuantParams, lo: int = QMIN, hi: int = QMAX) -> np.ndarray:
    """q = clamp(round_half_away(x / scale) + zp): the division in float32, as C does it."""
    x = np.asarray(x, np.float32)
    scale = _per_axis(q.scale, q, x.ndim).astype(np.float32)
    zp = _per_axis(q.zero_point, q, x.ndim).astype(np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        r = round_half_away(np.nan_to_num(x / scale, nan=0.0, posinf=2.0 ** 40, neginf=-(2.0 ** 40)))
    return saturate(r.astype(np.int64) + zp, lo, hi)


def reciprocal(scale) -> np.float32:
    """1 / scale in float32, correctly rounded (what C's `1.0f / scale` gives)."""
    return np.float32(1) / np.float32(scale)


def quantize_input(x, q: QuantParams) -> np.ndarray:
    """The float -> int8 boundary (the `quantize` op): clamp(round_half_away(x * inv) + zp) with
    inv = reciprocal(scale) and the product in float32, as PyTorch's quantize_per_tensor and the C
    kernel (a multiply, not a divide) compute it; NaN -> zp, +-inf saturate. Per-tensor only."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        v = np.nan_to_num(x * reciprocal(q.scale[0]), nan=0.0, posinf=2.0 ** 40, neginf=-(2.0 ** 40))
    return saturate(round_half_away(v).astype(np.int64) + int(q.zero_point[0]))


def dequantize(q_values, q: QuantParams) -> np.ndarray:
    """real = float32(q - zp) * scale, in float32."""
    a = np.asarray(q_values, np.int64)
    zp = _per_axis(q.zero_point, q, a.ndim)
    scale = _per_axis(q.scale, q, a.ndim).astype(np.float32)
    return (a - zp).astype(np.float32) * scale


def range_params(lo: float, hi: float) -> QuantParams:
    """Asymmetric int8 parameters covering [lo, hi], widened to include 0 (so 0 is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = f32(max((hi - lo) / (QMAX - QMIN), MIN_SCALE))
    zp = int(saturate(round_half_away(QMIN - lo / scale)))
    return QuantParams((scale,), (zp,))


def weight_params(w: np.ndarray, bits: int = 8) -> QuantParams:
    """Symmetric per-output-channel (axis 0) parameters.

    8 bits: scale[c] = max|w[c]| / 127. 4 and 2 bits (codes in [-7, 7], [-1, 1]): the scale
    minimising the channel's squared rounding-plus-clipping error over the clipping points
    max|w[c]| * k / CLIP_GRID, k = 1..CLIP_GRID (the largest k on ties), i.e.
    scale = f32(max|w[c]| * k / (CLIP_GRID * qmax)).
    An all-zero channel (pruned) gets scale 1 / qmax, as if its peak were 1: its codes are 0
    whatever the scale, and its bias (scale in_scale * w_scale) stays representable. A tiny
    scale would saturate the bias codes and lose the channel's constant output.
    """
    _, qmax = WEIGHT_BITS[bits]
    rows = np.asarray(w, np.float64).reshape(w.shape[0], -1)
    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(w.shape[0])
    if bits == 8:
        scales = tuple(f32(max(p / WEIGHT_MAX, MIN_SCALE)) if p > 0 else f32(1.0 / WEIGHT_MAX) for p in peak)
        return QuantParams(scales, (0,) * len(scales), axis=0)
    best = np.full(len(peak), np.inf)
    chosen = peak / qmax
    for k in range(1, CLIP_GRID + 1):
        s = np.maximum((peak * k / (CLIP_GRID * qmax)).astype(np.float32).astype(np.float64), MIN_SCALE)
        codes = np.clip(round_half_away(rows / s[:, None]), -qmax, qmax)
        err = ((rows - codes * s[:, None]) ** 2).sum(axis=1)
        better = err <= best
        best, chosen = np.where(better, err, best), np.where(better, s, chosen)
    scales = tuple(f32(max(float(c), MIN_SCALE)) if p > 0 else f32(1.0 / qmax) for c, p in zip(chosen, peak))
    return QuantParams(scales, (0,) * len(scales), axis=0)


def quantize_weight(w: np.ndarray, q: QuantParams, bits: int = 8) -> np.ndarray:
    """Weight codes in [-qmax, qmax] of `bits` (storage int8, also for i4 and i2)."""
    qmax = WEIGHT_BITS[bits][1]
    return quantize(w, q, -qmax, qmax).astype(np.int8)


def bias_params(x: QuantParams, w: QuantParams) -> QuantParams:
    """Bias scale[c] = input scale * weight scale[c] (exact in float64), zp 0."""
    return QuantParams(tuple(x.scale[0] * s for s in w.scale), (0,) * len(w.scale), axis=0)


def quantize_bias(b: np.ndarray, q: QuantParams) -> np.ndarray:
    """Bias codes round(b / scale) in float64 (no float32 step: compile time only), saturated to int32."""
    r = round_half_away(np.asarray(b, np.float64) / np.asarray(q.scale, np.float64))
    return saturate(r, I32_MIN + 1, I32_MAX).astype(np.int32)


# ---- fixed-point requantization ------------------------------------------------------------

def quantize_multiplier(real: float) -> tuple[int, int]:
    """(M, shift) with real ~= M * 2^(shift - 31): M a Q31 int32 (|M| in [2^30, 2^31) unless
    real is tiny), shift in [-31, 30]. Ratios >= 2^30 clamp to the largest multiplier: the
    output saturates for any non-zero accumulator either way."""
    if real == 0.0:
        return 0, 0
    sign = -1 if real < 0 else 1
    mantissa, e = math.frexp(abs(real))            # abs(real) = mantissa * 2^e, mantissa in [0.5, 1)
    m = math.floor(mantissa * 2 ** 31 + 0.5)        # exact in float64: mantissa has 53 bits
    if m == 2 ** 31:
        m, e = 2 ** 30, e + 1
    if e > 30:
        return sign * I32_MAX, 30
    if e < -31:                                     # below Q31 range: lose leading bits, not the shift
        m, e = math.floor(abs(real) * 2.0 ** 62 + 0.5), -31
    return sign * m, e


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """quantize_multiplier elementwise: (M, shift) int64 arrays shaped like `reals`."""
    reals = np.asarray(reals, np.float64)
    pairs = [quantize_multiplier(float(r)) for r in reals.ravel()]
    m = np.array([p[0] for p in pairs], np.int64).reshape(reals.shape)
    s = np.array([p[1] for p in pairs], np.int64).reshape(reals.shape)
    return m, s


def requantize(acc, m, shift) -> np.ndarray:
    """Single-rounding requantization, round half up:
    (int64(acc) * M + 2^(n-1)) >> n with n = 31 - shift in [1, 62] (arithmetic shift).

    Exactly floor(acc * M / 2^n + 1/2). |acc| <= 2^31 keeps the product in int64
    (SMULL, then an add with carry and a 64-bit shift on Cortex-M). The result is int64;
    callers add the zero point and saturate.
    """
    n = 31 - np.asarray(shift, np.int64)
    return (np.asarray(acc, np.int64) * np.asarray(m, np.int64) + (np.int64(1) << (n - 1))) >> n


def div_round(num, den) -> np.ndarray:
    """num / den rounded to nearest, ties away from zero, den != 0; in C with truncating
    division: sign * ((|num| + |den| / 2) / |den|)."""
    num, den = np.asarray(num, np.int64), np.asarray(den, np.int64)
    q = (np.abs(num) + np.abs(den) // 2) // np.abs(den)
    return np.where((num < 0) != (den < 0), -q, q)


# ---- per-op constants, derived from the operand and result types ------------------------------

def output_multipliers(ratio, attrs: dict) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((M, shift) for accumulators >= 0, (M, shift) for accumulators < 0).

    They differ only for a fused leaky_relu, whose negative side is scaled by alpha (the
    accumulator's sign is the pre-activation's sign: every scale is positive).
    """
    ratio = np.asarray(ratio, np.float64)
    alpha = attrs.get("act_alpha", 1.0) if attrs.get("act") == "leaky_relu" else 1.0
    return quantize_multipliers(ratio), quantize_multipliers(ratio * alpha)


def act_bounds(attrs: dict, out: QuantParams) -> tuple[int, int]:
    """The output code range after a fused relu/clamp: clamp in the quantized domain."""
    act = attrs.get("act")
    if act == "relu":
        return out.zero_point[0], QMAX
    if act == "clamp":
        lo, hi = (int(quantize(np.float32(attrs[k]), out)) for k in ("act_min", "act_max"))
        return lo, hi
    return QMIN, QMAX


def conv_ratios(x: QuantParams, w: QuantParams, out: QuantParams) -> np.ndarray:
    """conv2d/linear: per output channel x_scale * w_scale[c] / out_scale."""
    return x.scale[0] * np.asarray(w.scale, np.float64) / out.scale[0]


def mul_ratio(a: QuantParams, b: QuantParams, out: QuantParams) -> float:
    """mul and matmul: acc = (qa - za)(qb - zb) summed; out = acc * sa * sb / so."""
    return a.scale[0] * b.scale[0] / out.scale[0]


def add_ratios(a: QuantParams, b: QuantParams, out: QuantParams) -> tuple[float, float, float]:
    """add/sub: each centered operand, shifted left by ADD_SHIFT, is rescaled to the common
    scale 2 * max(sa, sb) (ratios <= 1/2, so 2^20 keeps 19+ fraction bits); the sum is
    rescaled to the output."""
    twice_max = 2.0 * max(a.scale[0], b.scale[0])
    return a.scale[0] / twice_max, b.scale[0] / twice_max, twice_max / (2 ** ADD_SHIFT * out.scale[0])


def div_ratio(a: QuantParams, b: QuantParams, out: QuantParams) -> float:
    """div: quotient = div_round((qa - za) << DIV_SHIFT, qb - zb); out = quotient * ratio."""
    return a.scale[0] / (b.scale[0] * out.scale[0] * 2 ** DIV_SHIFT)


def rescale_ratio(x: QuantParams, out: QuantParams, count: int = 1) -> float:
    """cat inputs (count 1) and mean (sum of `count` centered codes): x_scale / (count * out_scale)."""
    return x.scale[0] / (count * out.scale[0])


# ---- compressed layers (docs/compression_formats.md) ------------------------------------------

BIN_SHIFT = 8                      # int8-form binary layer, u1 input: the +-1 sum is scaled by 2^8
BIN_U1_SCALE = 2.0 ** -BIN_SHIFT   # ... so its "input scale" is 2^-8 (bias resolution alpha / 256)


def bin_bias_scales(in_scale: float, alpha) -> np.ndarray:
    """Scales of an int8-form bin_conv2d / bin_linear bias: in_scale * alpha[c] (float64),
    with in_scale the input's scale for an i8 input and BIN_U1_SCALE for a u1 (+-1) input,
    whose sum of +-1 products is shifted left by BIN_SHIFT before the bias is added."""
    return float(in_scale) * np.asarray(alpha, np.float32).astype(np.float64)


def bin_bias_params(in_scale: float, alpha) -> QuantParams:
    scales = bin_bias_scales(in_scale, alpha)
    return QuantParams(tuple(float(s) for s in scales), (0,) * len(scales), axis=0)


def bin_ratios(in_scale: float, alpha, out: QuantParams) -> np.ndarray:
    """Requantization ratios of an int8-form binary layer: in_scale * alpha[c] / out_scale."""
    return bin_bias_scales(in_scale, alpha) / out.scale[0]


def sign_threshold(threshold, x: QuantParams) -> np.ndarray:
    """The i32 code threshold of an int8 sign: the least code q with real(q) >= threshold, i.e.
    ceil(threshold / scale + zp) in float64, clipped to [-129, 128] (never / always 1)."""
    t = np.ceil(np.asarray(threshold, np.float64) / x.scale[0] + x.zero_point[0])
    return np.clip(np.nan_to_num(t, nan=QMAX + 1), QMIN - 1, QMAX + 1).astype(np.int32)


# ---- tables (const operands of lut and softmax) --------------------------------------------------

def lut_table(fn: Callable[[np.ndarray], np.ndarray], x: QuantParams, out: QuantParams) -> np.ndarray:
    """256 int8 entries: table[q + 128] = quantize(fn(dequantize(q))), fn on float32."""
    codes = np.arange(QMIN, QMAX + 1)
    return quantize(fn(dequantize(codes, x)), out).astype(np.int8)


def softmax_exp_table(x: QuantParams) -> np.ndarray:
    """256 int32 entries: table[d] = round(2^20 * exp(-x_scale * d)), d = row max - q in [0, 255]."""
    d = np.arange(QMAX - QMIN + 1, dtype=np.float64)
    return np.floor(np.exp(-x.scale[0] * d) * 2.0 ** EXP_BITS + 0.5).astype(np.int32)


# ---- normalization (layer_norm, group_norm; docs/quantization.md "Normalization") --------------

NORM_MAX_COUNT = 2 ** 15           # elements normalized together: sum of squared codes fits int32
NORM_EPS_MAX = 2 ** 50             # eps in integer units saturates here (V + E stays below 2^52)
NORM_Z_BITS = 16                   # the normalized value z is Q16
NORM_OUT_BITS = 8                  # gamma * z is Q8 output codes before beta is added
NORM_BIAS_MAX = 2 ** 30            # |beta| in Q8 output codes


def norm_eps_units(eps: float, x: QuantParams, count: int) -> int:
    """eps in the integer units of the scaled variance V = count^2 * var / sx^2:
    E = round(count^2 * eps / sx^2) in float64, saturated to NORM_EPS_MAX."""
    e = float(round_half_away(count * count * float(eps) / (float(x.scale[0]) ** 2)))
    return int(min(e, NORM_EPS_MAX))


def norm_rsqrt(v) -> tuple[np.ndarray, np.ndarray]:
    """1 / sqrt(v) for integers 1 <= v < 2^52 as (R, j) with 1 / sqrt(v) ~= R * 2^(j - 61):
    m = v << 2j in [2^60, 2^62), s = floor(sqrt(m)) in [2^30, 2^31) (exact integer square root),
    R = floor(2^61 / s) in (2^30, 2^31]. Relative error below 2^-29."""
    v = np.asarray(v, np.int64)
    flat = v.ravel()
    r = np.empty(flat.shape, np.int64)
    j = np.empty(flat.shape, np.int64)
    for i, x in enumerate(flat.tolist()):
        jj = (62 - int(x).bit_length()) // 2
        s = math.isqrt(int(x) << (2 * jj))
        r[i], j[i] = (1 << 61) // s, jj
    return r.reshape(v.shape), j.reshape(v.shape)


def norm_out_params(gamma, beta, out: QuantParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per normalized element p: (M, shift) of gamma[p] / (so * 2^(16 - 8)) and the Q8 bias
    B[p] = round(256 * beta[p] / so), so out = ((requantize(Z, M, shift) + B + 128) >> 8) + zo,
    Z being z in Q16. gamma and beta are float32 values (the C side reads the same constants)."""
    gamma = np.asarray(gamma, np.float32).astype(np.float64).ravel()
    beta = np.asarray(beta, np.float32).astype(np.float64).ravel()
    so = float(out.scale[0])
    m, s = quantize_multipliers(gamma / (so * 2.0 ** (NORM_Z_BITS - NORM_OUT_BITS)))
    b = round_half_away(beta / so * 2.0 ** NORM_OUT_BITS)
    return m, s, np.clip(b, -NORM_BIAS_MAX - 1, NORM_BIAS_MAX + 1).astype(np.int64)


def norm_int(d: np.ndarray, count: int, e: int, rms: bool) -> np.ndarray:
    """z = (x - mean) / sqrt(var + eps) in Q16 (int64), per row of `d` [rows, count]: the centered
    codes q - zx of each normalized set. Exact integer sums S1 = sum d, S2 = sum d^2; with
    dev = count * d - S1 and V = count * S2 - S1^2 (rms: dev = count * d, V = count * S2), z =
    dev / sqrt(V + E): the count and the input scale cancel, eps enters as E (norm_eps_units).
    V + E = 0 (a constant row, E = 0) reads as 1: every dev is 0 then.
    Z = (dev * R + 2^(k-1)) >> k with (R, j) = norm_rsqrt(V + E), k = 45 - j."""
    d = np.asarray(d, np.int64)
    s1 = d.sum(axis=1, keepdims=True)
    s2 = (d * d).sum(axis=1, keepdims=True)
    if rms:
        dev, v = count * d, count * s2
    else:
        dev, v = count * d - s1, count * s2 - s1 * s1
    r, j = norm_rsqrt(np.maximum(v + e, 1))
    k = 45 - j
    return (dev * r + (np.int64(1) << (k - 1))) >> k


def norm_out(z: np.ndarray, m, shift, b, out: QuantParams) -> np.ndarray:
    """The output stage: ((requantize(Z, M, shift) + B + 128) >> 8) + zo, saturated to int8."""
    t = requantize(z, m, shift) + np.asarray(b, np.int64) + (1 << (NORM_OUT_BITS - 1))
    return saturate((t >> NORM_OUT_BITS) + out.zero_point[0]).astype(np.int8)


# ---- resize (bilinear int8) ------------------------------------------------------------------------

RESIZE_FRAC_BITS = 10              # bilinear int8: interpolation weights in Q10 (TFLite's resize_bilinear scale)


def resize_weights(lam1) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights of one axis in Q10: w1 = round_half_away(lambda1 * 2^10) (lambda1 the float32
    PyTorch computes), w0 = 2^10 - w1, so w0 + w1 = 2^10 exactly."""
    w1 = round_half_away(np.asarray(lam1, np.float64) * 2 ** RESIZE_FRAC_BITS).astype(np.int64)
    return (1 << RESIZE_FRAC_BITS) - w1, w1


def resize_round(acc) -> np.ndarray:
    """acc = sum of wy * wx * code (Q20, |acc| < 2^28): (acc + 2^19) >> 20, round half up. The weights
    sum to 2^20, so interpolating raw codes equals interpolating centered codes plus the zero point,
    and the result needs no saturation (a convex combination of codes)."""
    return (np.asarray(acc, np.int64) + (1 << (2 * RESIZE_FRAC_BITS - 1))) >> (2 * RESIZE_FRAC_BITS)


# ---- log_softmax (docs/quantization.md "log_softmax") --------------------------------------------

LOG_SOFTMAX_OUT = QuantParams((16.0 / 256,), (127,))   # TFLite's fixed log_softmax output: [-16, 0]
# By quantize-int8 rule (an OpDef's `int8` facet): results whose int8 quantization is fixed.
FIXED_OUTPUT_QUANT: dict[str, QuantParams] = {"exp_table": SOFTMAX_OUT, "log_exp_table": LOG_SOFTMAX_OUT}
FIXED_OUTPUT_QUANT["masked_exp_table"] = SOFTMAX_OUT   # masked_softmax (attention masks)
# Masks (compare, logical: tinyc.ops.compare): the codes 0 and 1 are the reals 0.0 and 1.0 (false, true).
MASK_OUT = QuantParams((1.0,), (0,))
FIXED_OUTPUT_QUANT["mask"] = MASK_OUT
LOG_BITS = 16                      # log2 values in Q16
LOG2_TABLE_BITS = 8                # log2(1 + i / 256), i = 0..256, linearly interpolated


def log2_table() -> np.ndarray:
    """257 int32 entries: round(2^16 * log2(1 + i / 256)), i = 0..256 (the last is 2^16)."""
    i = np.arange(2 ** LOG2_TABLE_BITS + 1, dtype=np.float64)
    return np.floor(np.log2(1.0 + i / 2 ** LOG2_TABLE_BITS) * 2.0 ** LOG_BITS + 0.5).astype(np.int32)


def log2_q16(s) -> np.ndarray:
    """log2(s / 2^20) in Q16 for integers 2^20 <= s < 2^31 (an exp-table sum: the row max contributes
    2^20): e = floor(log2 s), f = (s << (30 - e)) - 2^30 (the mantissa's 30 fraction bits),
    i = f >> 22, r = f & (2^22 - 1): (e - 20) 2^16 + T[i] + (((T[i+1] - T[i]) r + 2^21) >> 22),
    T = log2_table(). Error below 2^-15."""
    s = np.asarray(s, np.int64)
    t = log2_table().astype(np.int64)
    e = EXP_BITS + sum(((s >> k) > 0).astype(np.int64) for k in range(EXP_BITS + 1, 31))
    f = (s << (30 - e)) - (1 << 30)
    i, r = f >> 22, f & ((1 << 22) - 1)
    return ((e - EXP_BITS) << LOG_BITS) + t[i] + (((t[i + 1] - t[i]) * r + (1 << 21)) >> 22)


def log_softmax_multipliers(x: QuantParams) -> tuple[tuple[int, int], tuple[int, int]]:
    """(M, shift) of the two terms of an int8 log_softmax in Q16 output units (LOG_SOFTMAX_OUT):
    d (= row max - q) by 2^16 sx / out_scale, and the Q16 log2 of the exp sum by 2^16 ln 2 / out_scale
    / 2^16 = ln 2 / out_scale."""
    so = LOG_SOFTMAX_OUT.scale[0]
    return quantize_multiplier(x.scale[0] * 2.0 ** LOG_BITS / so), quantize_multiplier(math.log(2.0) / so)


def log_softmax_codes(d, log2_sum, x: QuantParams) -> np.ndarray:
    """out = clamp(127 - ((requantize(d) + requantize(log2_sum) + 2^15) >> 16)), by the multipliers above:
    127 + round((-sx d - ln(sum)) / out_scale)."""
    (m1, s1), (m2, s2) = log_softmax_multipliers(x)
    acc = requantize(d, m1, s1) + requantize(log2_sum, m2, s2)
    return saturate(LOG_SOFTMAX_OUT.zero_point[0] - ((acc + (1 << (LOG_BITS - 1))) >> LOG_BITS))
