/* tinyc int8 kernels (C99, no allocation, no global state).
 *
 * Not a library of its own: a generated model source defines TINYC_S8_<KERNEL> for
 * each kernel it calls and then #includes this file (see tinyc_kernels_s8.h).
 * The hot kernels (conv GEMM, depthwise, fully connected, residual add) are
 * always-inline functions that the generated code calls with literal shapes,
 * strides and quantization modes, one specialised copy per distinct layer shape:
 * loop bounds and strides become immediates and dead branches disappear.
 * Helpers are TINYC_S8_INLINE: static inline, marked unused so that the ones a model
 * does not call draw no warning (gcc or clang).
 *
 * Layouts: every tensor is a dense block; kernels address it through element
 * strides the compiler derived (NHWC, NCHW, transposed views ...).
 */
#include <stdint.h>
#include <string.h>

#include "tinyc_kernels_s8.h"

/* ---- primitives ------------------------------------------------------------------ */

#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>

/* Bytes 0 and 2 of x, sign-extended into the low and high halfword. */
TINYC_S8_INLINE int32_t tinyc_s8_sxtb16(uint32_t x)
{
    return __sxtb16((int32_t)x);
}

/* Bytes 1 and 3 of x, sign-extended (SXTB16 with ROR #8: one instruction). */
TINYC_S8_INLINE int32_t tinyc_s8_sxtb16_ror8(uint32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

TINYC_S8_INLINE int32_t tinyc_s8_smlad(int32_t a, int32_t b, int32_t acc)
{
    return __smlad(a, b, acc);
}

TINYC_S8_INLINE int32_t tinyc_s8_smlabb(int32_t a, int32_t b, int32_t acc)
{
    return __smlabb(a, b, acc);
}

TINYC_S8_INLINE int32_t tinyc_s8_smlabt(int32_t a, int32_t b, int32_t acc)
{
    return __smlabt(a, b, acc);
}

TINYC_S8_INLINE int32_t tinyc_s8_smlatb(int32_t a, int32_t b, int32_t acc)
{
    return __smlatb(a, b, acc);
}

TINYC_S8_INLINE int32_t tinyc_s8_smlatt(int32_t a, int32_t b, int32_t acc)
{
    return __smlatt(a, b, acc);
}

/* floor(((int64)r << 32 + (int64)a * b) / 2^32) */
TINYC_S8_INLINE int32_t tinyc_s8_smmla(int32_t a, int32_t b, int32_t r)
{
    int32_t y;
    __asm__("smmla %0, %1, %2, %3" : "=r"(y) : "r"(a), "r"(b), "r"(r));
    return y;
}

TINYC_S8_INLINE int32_t tinyc_s8_ssat8(int32_t x)
{
    return __ssat(x, 8);
}

/* Halfword-wise a + b, a - b (wrapping; no saturation). */
TINYC_S8_INLINE int32_t tinyc_s8_sadd16(int32_t a, int32_t b)
{
    return __sadd16(a, b);
}

TINYC_S8_INLINE int32_t tinyc_s8_ssub16(int32_t a, int32_t b)
{
    return __ssub16(a, b);
}

/* a, b = the two words at byte offset `off` (a constant) of the word pointer p: one LDRD
 * (GCC splits 64-bit loads whose halves are used apart). The memory clobber keeps it after
 * the stores that filled the buffer. */
#define TINYC_S8_LD2(p, off, a, b)                                                             \
    __asm__("ldrd %0, %1, [%2, %3]" : "=r"(a), "=r"(b) : "r"(p), "n"(off) : "memory")

#else /* exact C99 equivalents (host, Cortex-M0/M3) */

TINYC_S8_INLINE int32_t tinyc_s8_lo16(int32_t x)
{
    return (int16_t)(uint16_t)((uint32_t)x & 0xFFFFu);
}

TINYC_S8_INLINE int32_t tinyc_s8_hi16(int32_t x)
{
    return (int16_t)(uint16_t)((uint32_t)x >> 16);
}

TINYC_S8_INLINE int32_t tinyc_s8_pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)lo) | ((uint32_t)(uint16_t)hi << 16));
}

TINYC_S8_INLINE int32_t tinyc_s8_sxtb16(uint32_t x)
{
    return tinyc_s8_pack16((int8_t)(uint8_t)(x & 0xFFu), (int8_t)(uint8_t)((x >> 16) & 0xFFu));
}

TINYC_S8_INLINE int32_t tinyc_s8_sxtb16_ror8(uint32_t x)
{
    return tinyc_s8_pack16((int8_t)(uint8_t)((x >> 8) & 0xFFu), (int8_t)(uint8_t)(x >> 24));
}

TINYC_S8_INLINE int32_t tinyc_s8_sadd16(int32_t a, int32_t b)
{
    return tinyc_s8_pack16(tinyc_s8_lo16(a) + tinyc_s8_lo16(b), tinyc_s8_hi16(a) + tinyc_s8_hi16(b));
}

TINYC_S8_INLINE int32_t tinyc_s8_ssub16(int32_t a, int32_t b)
{
    return tinyc_s8_pack16(tinyc_s8_lo16(a) - tinyc_s8_lo16(b), tinyc_s8_hi16(a) - tinyc_s8_hi16(b));
}

/* Wrapping adds, as the instructions do (the compiler checks final sums fit int32). */
TINYC_S8_INLINE int32_t tinyc_s8_wadd(int32_t acc, int32_t p)
{
    return (int32_t)((uint32_t)acc + (uint32_t)p);
}

TINYC_S8_INLINE int32_t tinyc_s8_smlad(int32_t a, int32_t b, int32_t acc)
{
    acc = tinyc_s8_wadd(acc, tinyc_s8_lo16(a) * tinyc_s8_lo16(b));
    return tinyc_s8_wadd(acc, tinyc_s8_hi16(a) * tinyc_s8_hi16(b));
}

TINYC_S8_INLINE int32_t tinyc_s8_smlabb(int32_t a, int32_t b, int32_t acc)
{
    return tinyc_s8_wadd(acc, tinyc_s8_lo16(a) * tinyc_s8_lo16(b));
}

TINYC_S8_INLINE int32_t tinyc_s8_smlabt(int32_t a, int32_t b, int32_t acc)
{
    return tinyc_s8_wadd(acc, tinyc_s8_lo16(a) * tinyc_s8_hi16(b));
}

TINYC_S8_INLINE int32_t tinyc_s8_smlatb(int32_t a, int32_t b, int32_t acc)
{
    return tinyc_s8_wadd(acc, tinyc_s8_hi16(a) * tinyc_s8_lo16(b));
}

TINYC_S8_INLINE int32_t tinyc_s8_smlatt(int32_t a, int32_t b, int32_t acc)
{
    return tinyc_s8_wadd(acc, tinyc_s8_hi16(a) * tinyc_s8_hi16(b));
}

/* |r| < 2^30 (the compiler checks it), so the sum cannot overflow int64. */
TINYC_S8_INLINE int32_t tinyc_s8_smmla(int32_t a, int32_t b, int32_t r)
{
    return (int32_t)(((int64_t)r * 4294967296LL + (int64_t)a * b) >> 32);
}

TINYC_S8_INLINE int32_t tinyc_s8_ssat8(int32_t x)
{
    return x < -128 ? -128 : x > 127 ? 127 : x;
}

#define TINYC_S8_LD2(p, off, a, b) ((a) = (p)[(off) / 4], (b) = (p)[(off) / 4 + 1])

#endif

/* p, opaque to the optimiser (no loads through it hoisted out of a loop); p itself elsewhere. */
#if defined(__GNUC__)
#define TINYC_S8_OPAQUE(p) __extension__({ const tinyc_s8_word *o_ = (p); __asm__("" : "+r"(o_)); o_; })
#else
#define TINYC_S8_OPAQUE(p) (p)
#endif

/* A little-endian 32-bit load from any address (one LDR where unaligned loads exist). */
TINYC_S8_INLINE uint32_t tinyc_s8_ld32(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- requantization (docs/quantization.md) ------------------------------------- */

/* clamp(((int64)acc * m + 2^(n-1)) >> n + zp, -128, 127), n in [1, 62]. */
TINYC_S8_INLINE int32_t tinyc_s8_rq64(int32_t acc, int32_t m, int32_t n, int32_t zp)
{
    int64_t r = ((int64_t)acc * m + ((int64_t)1 << (n - 1))) >> n;
    r += zp;
    return r < -128 ? -128 : r > 127 ? 127 : (int32_t)r;
}

/* A channel's record (tinyc_kernels_s8.h) in registers: read it before storing outputs,
 * which as bytes could alias it. */
typedef struct {
    int32_t m, r, s, mn, sn;
} tinyc_s8_rq;

TINYC_S8_INLINE tinyc_s8_rq tinyc_s8_rec(const int32_t *q, int32_t mode)
{
    tinyc_s8_rq rq;
    rq.m = q[1];
    rq.r = q[2];
    rq.s = mode == 0 ? q[3] : 0;
    rq.mn = mode == 0 ? 0 : q[3];
    rq.sn = mode == 0 ? 0 : q[4];
    return rq;
}

/* A table epilogue fused into the layer (a lut after it, c_ops_int8.fuse_table_epilogues): tab points
 * at the table's middle (index by the int8 code), or is a literal 0 and the test folds away. */
#define TINYC_S8_EPI(tab, v) ((tab) ? (int32_t)(tab)[(v)] : (v))

/* The output stage of one accumulator. */
TINYC_S8_INLINE int32_t tinyc_s8_outr(int32_t acc, tinyc_s8_rq rq, int32_t mode, int32_t zp, int32_t lo, int32_t hi)
{
    int32_t v;
    if (mode == 0) {
        v = tinyc_s8_ssat8(tinyc_s8_smmla(acc, rq.m, rq.r) >> rq.s);
    } else if (acc < 0) {
        v = tinyc_s8_rq64(acc, rq.mn, rq.sn, zp);
    } else {
        v = tinyc_s8_rq64(acc, rq.m, rq.r, zp);
    }
    if (lo > -128 && v < lo) v = lo;
    if (hi < 127 && v > hi) v = hi;
    return v;
}

TINYC_S8_INLINE int32_t tinyc_s8_out(int32_t acc, const int32_t *q, int32_t mode, int32_t zp,
                                     int32_t lo, int32_t hi)
{
    return tinyc_s8_outr(acc, tinyc_s8_rec(q, mode), mode, zp, lo, hi);
}

/* round(num / den), ties away from zero; den != 0. */
TINYC_S8_INLINE int32_t tinyc_s8_div_round(int32_t num, int32_t den)
{
    const uint32_t an = num < 0 ? 0u - (uint32_t)num : (uint32_t)num;
    const uint32_t ad = den < 0 ? 0u - (uint32_t)den : (uint32_t)den;
    const int32_t q = (int32_t)((an + ad / 2u) / ad);
    return (num < 0) != (den < 0) ? -q : q;
}

/* ---- strided iteration --------------------------------------------------------- */

TINYC_S8_INLINE int32_t tinyc_s8_rows(const tinyc_s8_iter *it)
{
    int32_t d, rows = 1;
    for (d = 0; d + 1 < it->rank; ++d) rows *= it->dims[d];
    return rows;
}

/* Offsets of the first element of the row at multi-index idx (outer dims). */
TINYC_S8_INLINE void tinyc_s8_base(const tinyc_s8_iter *it, const int32_t *idx, int32_t *o0, int32_t *o1,
                                   int32_t *o2)
{
    int32_t d;
    *o0 = *o1 = *o2 = 0;
    for (d = 0; d + 1 < it->rank; ++d) {
        *o0 += idx[d] * it->s0[d];
        *o1 += idx[d] * it->s1[d];
        *o2 += idx[d] * it->s2[d];
    }
}

/* Next multi-index over dims[0..n) (odometer, last fastest). */
TINYC_S8_INLINE void tinyc_s8_next(int32_t n, const int32_t *dims, int32_t *idx)
{
    int32_t d;
    for (d = n - 1; d >= 0; --d) {
        if (++idx[d] < dims[d]) return;
        idx[d] = 0;
    }
}

/* ---- boundary: float <-> int8 ----------------------------------------------------- */

#ifdef TINYC_S8_QUANTIZE
/* clamp(roundf(x * inv) + zp), inv = 1 / scale in float32 (PyTorch's quantize_per_tensor multiplies
 * by the reciprocal too): the product in float32, ties away from zero, NaN -> zp. With
 * t = trunc(2 (x * inv)) saturated to int16 (one VCVT to fixed point with one fraction bit; the
 * doubling is exact), round_half_away(x * inv) = (t + 1 + (t >> 31)) >> 1, so with c = 1 + 2 zp
 * the code is ssat8((t + c + (t >> 31)) >> 1): no divide, no branch. */
TINYC_S8_INLINE int32_t tinyc_s8_quantize1(float x, float inv, int32_t c)
{
    int32_t t;
#if defined(__GNUC__) && defined(__ARM_FP) && (__ARM_FP & 4)
    float f = x * inv;
    __asm__("vcvt.s16.f32 %0, %0, #1" : "+t"(f));   /* trunc(2 f), saturated to int16; NaN -> 0 */
    memcpy(&t, &f, 4);
#else
    float v = x * inv;
    v = v == v ? v : 0.0f;
    v = v > 16383.0f ? 16383.0f : v < -16384.0f ? -16384.0f : v;
    t = (int32_t)(v * 2.0f);
#endif
#if defined(__GNUC__) && defined(__ARM_FEATURE_SAT)
    {
        int32_t q, u = t + c + (t >> 31);
        __asm__("ssat %0, #8, %1, asr #1" : "=r"(q) : "r"(u));
        return q;
    }
#else
    return tinyc_s8_ssat8((t + c + (t >> 31)) >> 1);
#endif
}

/* One row: n floats at stride 1 (sx == 1) or sx, n codes at stride sy. */
static void tinyc_s8_quantize_row(const float *x, int8_t *y, int32_t n, int32_t sx, int32_t sy, float inv,
                                  int32_t c)
{
    if (sx == 1) {
        for (; n >= 4; n -= 4, x += 4, y += 4 * sy) {
            const float a = x[0], b = x[1], d = x[2], e = x[3];
            y[0] = (int8_t)tinyc_s8_quantize1(a, inv, c);
            y[sy] = (int8_t)tinyc_s8_quantize1(b, inv, c);
            y[2 * sy] = (int8_t)tinyc_s8_quantize1(d, inv, c);
            y[3 * sy] = (int8_t)tinyc_s8_quantize1(e, inv, c);
        }
    }
    for (; n > 0; --n, x += sx, y += sy) *y = (int8_t)tinyc_s8_quantize1(*x, inv, c);
}

/* s0: y (int8), s1: x (float); inv = 1 / scale (float32), c = 1 + 2 zp. */
static void tinyc_s8_quantize(const float *x, int8_t *y, const tinyc_s8_iter *it, float inv, int32_t c)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    int32_t r, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        tinyc_s8_quantize_row(x + o1, y + o0, len, it->s1[last], it->s0[last], inv, c);
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

#ifdef TINYC_S8_DEQUANTIZE
/* y = float(x - zp) * scale; s0: y (float), s1: x (int8). */
static void tinyc_s8_dequantize_row(const int8_t *x, float *y, int32_t n, int32_t sx, int32_t sy, float scale,
                                    int32_t zp)
{
    if (sy == 1) {
        for (; n >= 4; n -= 4, x += 4 * sx, y += 4) {
            const int32_t a = x[0], b = x[sx], c = x[2 * sx], d = x[3 * sx];
            y[0] = (float)(a - zp) * scale;
            y[1] = (float)(b - zp) * scale;
            y[2] = (float)(c - zp) * scale;
            y[3] = (float)(d - zp) * scale;
        }
    }
    for (; n > 0; --n, x += sx, y += sy) *y = (float)(*x - zp) * scale;
}

static void tinyc_s8_dequantize(const int8_t *x, float *y, const tinyc_s8_iter *it, float scale, int32_t zp)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    int32_t r, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        tinyc_s8_dequantize_row(x + o1, y + o0, len, it->s1[last], it->s0[last], scale, zp);
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

/* ---- data movement and tables ------------------------------------------------------ */

#ifdef TINYC_S8_COPY
/* y[s0] = x[s1] (transposes, cat, pad, relayouts); contiguous rows go by memcpy. */
static void tinyc_s8_copy(const int8_t *x, int8_t *y, const tinyc_s8_iter *it)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s0[last], t1 = it->s1[last];
    int32_t r, i, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        if (t0 == 1 && t1 == 1) {
            memcpy(y + o0, x + o1, (size_t)len);
        } else {
            for (i = 0; i < len; ++i, o0 += t0, o1 += t1) y[o0] = x[o1];
        }
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

#ifdef TINYC_S8_LUT
/* y[s0] = table[x[s1] + 128] (lut; cat inputs requantized by a table). In place if s0 == s1. */
static void tinyc_s8_lut(const int8_t *x, int8_t *y, const int8_t *table, const tinyc_s8_iter *it)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s0[last], t1 = it->s1[last];
    const int8_t *tab = table + 128;
    int32_t r, i, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        if (t0 == 1 && t1 == 1) {
            int8_t *yy = y + o0;
            const int8_t *xx = x + o1;
            for (i = 0; i < len; ++i) yy[i] = tab[xx[i]];
        } else {
            for (i = 0; i < len; ++i, o0 += t0, o1 += t1) y[o0] = tab[x[o1]];
        }
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

#ifdef TINYC_S8_FILL
static void tinyc_s8_fill(int8_t *y, int32_t n, int32_t value)
{
    memset(y, value, (size_t)n);
}
#endif

/* ---- elementwise binary ------------------------------------------------------------- */

#ifdef TINYC_S8_ADD
/* Contiguous residual add/sub: acc = ta[a] + tb[b] (the rescaled, centered operands,
 * tb negated for sub), then the output stage. About ten instructions an element. */
TINYC_S8_INLINE void tinyc_s8_add(const int8_t *a, const int8_t *b, int8_t *y, const int32_t *ta,
                                  const int32_t *tb, const int32_t *q, int32_t n, int32_t mode, int32_t zy,
                                  int32_t lo, int32_t hi)
{
    const tinyc_s8_rq rq = tinyc_s8_rec(q, mode);
    const int8_t *aend = a + (n & ~1);
    ta += 128;
    tb += 128;
    while (a != aend) {
        const int32_t s0 = ta[a[0]] + tb[b[0]], s1 = ta[a[1]] + tb[b[1]];
        y[0] = (int8_t)tinyc_s8_outr(s0, rq, mode, zy, lo, hi);
        y[1] = (int8_t)tinyc_s8_outr(s1, rq, mode, zy, lo, hi);
        a += 2;
        b += 2;
        y += 2;
    }
    if (n & 1) y[0] = (int8_t)tinyc_s8_outr(ta[a[0]] + tb[b[0]], rq, mode, zy, lo, hi);
}
#endif

#ifdef TINYC_S8_MUL
/* mul with its constants as literals (a specialised wrapper, so no per-element dispatch); any
 * broadcast and layouts (s0 = y, s1 = a, s2 = b): a squeeze-excite gate is b broadcast over rows. */
TINYC_S8_INLINE void tinyc_s8_mul_k(const int8_t *a, const int8_t *b, int8_t *y, const tinyc_s8_iter *it,
                                    const int32_t *q, int32_t za, int32_t zb, int32_t mode, int32_t zy, int32_t lo,
                                    int32_t hi)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s0[last], t1 = it->s1[last], t2 = it->s2[last];
    const tinyc_s8_rq rq = tinyc_s8_rec(q, mode);
    int32_t r, i, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        const int8_t *pa, *pb;
        int8_t *py;
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        pa = a + o1;
        pb = b + o2;
        py = y + o0;
        if (t2 == 0) {
            /* (qa - za) gb = qa gb + cb: one MLA per element, 4 per trip */
            const int32_t gb = *pb - zb, cb = -za * gb;
            for (i = 0; i + 3 < len; i += 4, pa += 4 * t1, py += 4 * t0) {
                const int32_t v0 = pa[0], v1 = pa[t1], v2 = pa[2 * t1], v3 = pa[3 * t1];
                py[0] = (int8_t)tinyc_s8_outr(v0 * gb + cb, rq, mode, zy, lo, hi);
                py[t0] = (int8_t)tinyc_s8_outr(v1 * gb + cb, rq, mode, zy, lo, hi);
                py[2 * t0] = (int8_t)tinyc_s8_outr(v2 * gb + cb, rq, mode, zy, lo, hi);
                py[3 * t0] = (int8_t)tinyc_s8_outr(v3 * gb + cb, rq, mode, zy, lo, hi);
            }
            for (; i < len; ++i, pa += t1, py += t0) *py = (int8_t)tinyc_s8_outr(*pa * gb + cb, rq, mode, zy, lo, hi);
        } else {
            for (i = 0; i < len; ++i, pa += t1, pb += t2, py += t0)
                *py = (int8_t)tinyc_s8_outr((*pa - za) * (*pb - zb), rq, mode, zy, lo, hi);
        }
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

#ifdef TINYC_S8_BINARY
/* Any broadcast and layouts: s0 = y, s1 = a, s2 = b. */
static void tinyc_s8_binary(const int8_t *a, const int8_t *b, int8_t *y, const tinyc_s8_iter *it,
                            const tinyc_s8_binary_params *p, const int32_t *q, int32_t mode)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s0[last], t1 = it->s1[last], t2 = it->s2[last];
    int32_t r, i, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        for (i = 0; i < len; ++i, o0 += t0, o1 += t1, o2 += t2) {
            const int32_t qa = a[o1], qb = b[o2];
            int32_t v;
            if (p->op == TINYC_S8_OP_ADD) {
                v = tinyc_s8_out(p->ta[qa + 128] + p->tb[qb + 128], q, mode, p->zy, p->lo, p->hi);
            } else if (p->op == TINYC_S8_OP_MUL) {
                v = tinyc_s8_out((qa - p->za) * (qb - p->zb), q, mode, p->zy, p->lo, p->hi);
            } else {
                const int32_t num = (qa - p->za) * 65536, den = qb - p->zb;
                if (den == 0) v = num > 0 ? 127 : num < 0 ? -128 : p->zy;
                else v = tinyc_s8_out(tinyc_s8_div_round(num, den), q, mode, p->zy, p->lo, p->hi);
            }
            y[o0] = (int8_t)v;
        }
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

/* ---- convolution -------------------------------------------------------------------- */

#if defined(TINYC_S8_CONV_GEMM) || defined(TINYC_S8_FC)
/* 4 channels x 1 word of int8 (bytes b0..b3) -> the even pair (b0, b2) and odd pair (b1, b3):
 * the same split on both operands of SMLAD makes the dot product right without reordering. */
TINYC_S8_INLINE void tinyc_s8_expand(const int8_t *row, tinyc_s8_word *col, int32_t chunks, int32_t step)
{
    int32_t j;
    for (j = 0; j + 1 < chunks; j += 2, row += 8, col += 2 * step) {     /* 2 words per trip */
        const uint32_t v = tinyc_s8_ld32(row), u = tinyc_s8_ld32(row + 4);
        col[0] = tinyc_s8_sxtb16(v);
        col[1] = tinyc_s8_sxtb16_ror8(v);
        col[step] = tinyc_s8_sxtb16(u);
        col[step + 1] = tinyc_s8_sxtb16_ror8(u);
    }
    if (j < chunks) {
        const uint32_t v = tinyc_s8_ld32(row);
        col[0] = tinyc_s8_sxtb16(v);
        col[1] = tinyc_s8_sxtb16_ror8(v);
    }
}
#endif

#ifdef TINYC_S8_CONV_GEMM
/* n bytes from s to d / n copies of v at d: a word at a time (unaligned LDR / STR) for the few bytes
 * of an im2col row (a libc call costs more than the copy), libc beyond 16 bytes. */
TINYC_S8_INLINE void tinyc_s8_copyn(int8_t *d, const int8_t *s, int32_t n)
{
    if (n > 16) {
        memcpy(d, s, (size_t)n);
        return;
    }
    for (; n >= 4; n -= 4, d += 4, s += 4) {
        const uint32_t v = tinyc_s8_ld32(s);
        memcpy(d, &v, 4);
    }
    for (; n > 0; --n) *d++ = *s++;
}

TINYC_S8_INLINE void tinyc_s8_filln(int8_t *d, int32_t v, int32_t n)
{
    const uint32_t word = (uint32_t)(uint8_t)v * 0x01010101u;
    if (n > 16) {
        memset(d, v, (size_t)n);
        return;
    }
    for (; n >= 4; n -= 4, d += 4) memcpy(d, &word, 4);
    for (; n > 0; --n) *d++ = (int8_t)v;
}

/* im2col of output pixel (oy, ox) into row[0..kh*kw*cg): order (ky, kx, ci), the input
 * zero point zx in the padding (the bias absorbed -zx * sum(w), so padding adds 0). */
TINYC_S8_INLINE void tinyc_s8_im2col(const int8_t *x, int8_t *row, int32_t oy, int32_t ox, int32_t cg,
                                     int32_t h, int32_t w, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                                     int32_t dh, int32_t dw, int32_t pt, int32_t pl, int32_t xs_c, int32_t xs_h,
                                     int32_t xs_w, int32_t zx)
{
    const int32_t iy0 = oy * sh - pt, ix0 = ox * sw - pl;
    const int32_t inside = ix0 >= 0 && ix0 + (kw - 1) * dw < w;
    int32_t ky, kx, ci, lo = 0, hi = kw;
    if (cg == 1) {      /* one channel: the taps in range across are lo..hi, the same on every row */
        while (lo < kw && ix0 + lo * dw < 0) ++lo;
        while (hi > lo && ix0 + (hi - 1) * dw >= w) --hi;
    }
    for (ky = 0; ky < kh; ++ky) {
        const int32_t iy = iy0 + ky * dh;
        if (iy < 0 || iy >= h) {
            tinyc_s8_filln(row, zx, kw * cg);
            row += kw * cg;
            continue;
        }
        if ((xs_c == 1 || cg == 1) && dw == 1 && xs_w == cg && inside) {
            tinyc_s8_copyn(row, x + iy * xs_h + ix0 * xs_w, kw * cg);
            row += kw * cg;
            continue;
        }
        if (cg == 1) {
            /* one channel (a spectrogram, a grey image) */
            const int8_t *p = x + iy * xs_h + ix0 * xs_w;
            for (kx = 0; kx < lo; ++kx) row[kx] = (int8_t)zx;
            for (; kx < hi; ++kx) row[kx] = p[kx * dw * xs_w];
            for (; kx < kw; ++kx) row[kx] = (int8_t)zx;
            row += kw;
            continue;
        }
        for (kx = 0; kx < kw; ++kx, row += cg) {
            const int32_t ix = ix0 + kx * dw;
            const int8_t *p = x + iy * xs_h + ix * xs_w;
            if (ix < 0 || ix >= w) memset(row, zx, (size_t)cg);
            else if (xs_c == 1) memcpy(row, p, (size_t)cg);
            else for (ci = 0; ci < cg; ++ci) row[ci] = p[ci * xs_c];
        }
    }
}

/* One 4-k chunk of four pixels (col words at byte offset OFF) against the expanded weight
 * word (we, wo): 4 LDRD + 8 SMLAD. */
#define TINYC_S8_GEMM4_STEP(c, OFF, we, wo)                                                    \
    do {                                                                                       \
        int32_t x0_, x1_;                                                                      \
        TINYC_S8_LD2(c, (OFF), x0_, x1_);                                                      \
        a0 = tinyc_s8_smlad(x0_, we, a0);                                                      \
        a0 = tinyc_s8_smlad(x1_, wo, a0);                                                      \
        TINYC_S8_LD2(c, (OFF) + 8, x0_, x1_);                                                  \
        a1 = tinyc_s8_smlad(x0_, we, a1);                                                      \
        a1 = tinyc_s8_smlad(x1_, wo, a1);                                                      \
        TINYC_S8_LD2(c, (OFF) + 16, x0_, x1_);                                                 \
        a2 = tinyc_s8_smlad(x0_, we, a2);                                                      \
        a2 = tinyc_s8_smlad(x1_, wo, a2);                                                      \
        TINYC_S8_LD2(c, (OFF) + 24, x0_, x1_);                                                 \
        a3 = tinyc_s8_smlad(x0_, we, a3);                                                      \
        a3 = tinyc_s8_smlad(x1_, wo, a3);                                                      \
    } while (0)

/* The dense GEMM's register block: 3 output pixels x 2 output channels (pix = 3 pixels per
 * block, c_ops_int8.gemm_pixels chooses it and models the same order: keep the two in step).
 * col: per 4-k chunk, 2 expanded words per pixel (6 words); weights: output channels in pairs,
 * per chunk one raw word of each (int8_weights.gemm_pairs), an odd last channel alone. Per chunk:
 * 1 LDRD of weights, 4 SXTB16, 3 LDRD of col and 12 SMLAD for 24 MACs: each loaded weight
 * feeds 3 pixels, each loaded col pair 2 channels. With `wide` weights (--wide-weights) each raw
 * word is stored as its two expanded words (int8_weights.expand_pairs): 2 LDRD, no SXTB16. */
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32) &&  \
    defined(__OPTIMIZE__)
/* 14 registers: 6 accumulators, 4 expanded weights, a col pair, the two pointers. Builds that
 * keep a frame pointer (-fno-omit-frame-pointer: define TINYC_S8_FRAME_POINTER) have 13: the col
 * pair is then read a word at a time. Unoptimised builds (-O0) take the C form below. */
/* A chunk's weights of the channel pair: raw int8 words expanded here (LDRD, 4 SXTB16), or words
 * expanded at compile time (`wide`: int8_weights.expand_pairs; two LDRD, 2x the flash). */
#define TINYC_S8_MK_WRAW                                                                            \
    "ldrd %[ao], %[bo], [%[w]], #8\n\t"                                                             \
    "sxtb16 %[ae], %[ao]\n\t"                                                                       \
    "sxtb16 %[ao], %[ao], ror #8\n\t"                                                               \
    "sxtb16 %[be], %[bo]\n\t"                                                                       \
    "sxtb16 %[bo], %[bo], ror #8\n\t"
#define TINYC_S8_MK_WWIDE                                                                           \
    "ldrd %[ae], %[ao], [%[w]], #8\n\t"                                                             \
    "ldrd %[be], %[bo], [%[w]], #8\n\t"
#if !defined(TINYC_S8_FRAME_POINTER)
#define TINYC_S8_MK_PIXEL(P)                                                                        \
    "ldrd %[x0], %[x1], [%[c]], #8\n\t"                                                             \
    "smlad %[a" #P "], %[x0], %[ae], %[a" #P "]\n\t"                                                \
    "smlad %[b" #P "], %[x0], %[be], %[b" #P "]\n\t"                                                \
    "smlad %[a" #P "], %[x1], %[ao], %[a" #P "]\n\t"                                                \
    "smlad %[b" #P "], %[x1], %[bo], %[b" #P "]\n\t"
#define TINYC_S8_MK_X1 , [x1] "=&r"(x1)
/* The first chunk, pixels 2 and 1 before 0: their accumulators start from the bias in a0 / b0
 * (no copies of it). */
#define TINYC_S8_MK_FROM(P, OFF)                                                                    \
    "ldrd %[x0], %[x1], [%[c], #" #OFF "]\n\t"                                                      \
    "smlad %[a" #P "], %[x0], %[ae], %[a0]\n\t"                                                     \
    "smlad %[b" #P "], %[x0], %[be], %[b0]\n\t"                                                     \
    "smlad %[a" #P "], %[x1], %[ao], %[a" #P "]\n\t"                                                \
    "smlad %[b" #P "], %[x1], %[bo], %[b" #P "]\n\t"
#define TINYC_S8_MK_FIRST(WL)                                                                       \
    do {                                                                                            \
        __asm__ volatile(WL TINYC_S8_MK_FROM(2, 16)                                                 \
                         TINYC_S8_MK_FROM(1, 8)                                                     \
                         "ldrd %[x0], %[x1], [%[c]], #24\n\t"                                       \
                         "smlad %[a0], %[x0], %[ae], %[a0]\n\t"                                     \
                         "smlad %[b0], %[x0], %[be], %[b0]\n\t"                                     \
                         "smlad %[a0], %[x1], %[ao], %[a0]\n\t"                                     \
                         "smlad %[b0], %[x1], %[bo], %[b0]\n\t"                                     \
                         : [a0] "+r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [b0] "+r"(b0), [b1] "=&r"(b1), \
                           [b2] "=&r"(b2), [c] "+r"(c_), [w] "+r"(w), [ae] "=&r"(ae), [ao] "=&r"(ao),   \
                           [be] "=&r"(be), [bo] "=&r"(bo), [x0] "=&r"(x0), [x1] "=&r"(x1)              \
                         :                                                                          \
                         : "memory");                                                               \
    } while (0)
#else
#define TINYC_S8_MK_PIXEL(P)                                                                        \
    "ldr %[x0], [%[c]], #4\n\t"                                                                     \
    "smlad %[a" #P "], %[x0], %[ae], %[a" #P "]\n\t"                                                \
    "smlad %[b" #P "], %[x0], %[be], %[b" #P "]\n\t"                                                \
    "ldr %[x0], [%[c]], #4\n\t"                                                                     \
    "smlad %[a" #P "], %[x0], %[ao], %[a" #P "]\n\t"                                                \
    "smlad %[b" #P "], %[x0], %[bo], %[b" #P "]\n\t"
#define TINYC_S8_MK_X1
#define TINYC_S8_MK_FIRST(WL)                                                                       \
    do {                                                                                            \
        a1 = a2 = a0;                                                                               \
        b1 = b2 = b0;                                                                               \
        __asm__ volatile(TINYC_S8_MK_CHUNK(WL) : TINYC_S8_MK_OPERANDS : : "memory");                \
    } while (0)
#endif
#define TINYC_S8_MK_CHUNK(WL) WL TINYC_S8_MK_PIXEL(0) TINYC_S8_MK_PIXEL(1) TINYC_S8_MK_PIXEL(2)
#define TINYC_S8_MK_OPERANDS                                                                        \
    [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [b0] "+r"(b0), [b1] "+r"(b1), [b2] "+r"(b2),       \
        [c] "+r"(c_), [w] "+r"(w), [ae] "=&r"(ae), [ao] "=&r"(ao), [be] "=&r"(be), [bo] "=&r"(bo), \
        [x0] "=&r"(x0) TINYC_S8_MK_X1

/* The 3 x 2 block over `chunks` (>= 1) chunks from the biases in a0 / b0 (a1, a2, b1, b2 are set
 * here), advancing the weight pointer w past them: the first chunk, then eight per loop trip (the
 * loop's end, cend = col + 6 + 6 ((chunks - 1) & ~7), is read from the stack into a free col
 * register: 6 cycles of load, compare and taken branch per 192 MACs), then four, two and one
 * straight-line chunks for the rest. */
#define TINYC_S8_MK3X2(col, cend, w, chunks, WL)                                                    \
    do {                                                                                            \
        const tinyc_s8_word *c_ = (col);                                                            \
        const int32_t n_ = (chunks) - 1;                                                            \
        int32_t ae, ao, be, bo, x0, x1 = 0;                                                         \
        (void)x1;                                                                                   \
        TINYC_S8_MK_FIRST(WL);                                                                          \
        if (n_ >= 8) {                                                                              \
            __asm__ volatile("1:\n\t" TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL)         \
                             TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL)  \
                             TINYC_S8_MK_CHUNK(WL)                                                      \
                             "ldr %[x0], %[end]\n\t"                                                \
                             "cmp %[c], %[x0]\n\t"                                                  \
                             "bne 1b\n\t"                                                           \
                             : TINYC_S8_MK_OPERANDS                                                 \
                             : [end] "m"(cend)                                                      \
                             : "cc", "memory");                                                     \
        }                                                                                           \
        if (n_ & 4) {                                                                             \
            __asm__ volatile(TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL)  \
                             : TINYC_S8_MK_OPERANDS : : "memory");                                  \
        }                                                                                           \
        if (n_ & 2) {                                                                             \
            __asm__ volatile(TINYC_S8_MK_CHUNK(WL) TINYC_S8_MK_CHUNK(WL) : TINYC_S8_MK_OPERANDS : : "memory"); \
        }                                                                                           \
        if (n_ & 1) {                                                                             \
            __asm__ volatile(TINYC_S8_MK_CHUNK(WL) : TINYC_S8_MK_OPERANDS : : "memory");                \
        }                                                                                           \
    } while (0)
#else
#define TINYC_S8_MK_WRAW 0
#define TINYC_S8_MK_WWIDE 1
#define TINYC_S8_MK3X2(col, cend, w, chunks, WL)                                               \
    do {                                                                                       \
        const tinyc_s8_word *c_ = (col);                                                       \
        int32_t j_;                                                                            \
        (void)(cend);                                                                          \
        a1 = a2 = a0;                                                                          \
        b1 = b2 = b0;                                                                          \
        for (j_ = 0; j_ < (chunks); ++j_, c_ += 6) {                                           \
            int32_t ae, ao, be, bo;                                                            \
            if (WL) {                                                                          \
                ae = w[0], ao = w[1], be = w[2], bo = w[3];                                    \
                w += 4;                                                                        \
            } else {                                                                           \
                const uint32_t u_ = (uint32_t)w[0], v_ = (uint32_t)w[1];                       \
                ae = tinyc_s8_sxtb16(u_), ao = tinyc_s8_sxtb16_ror8(u_);                       \
                be = tinyc_s8_sxtb16(v_), bo = tinyc_s8_sxtb16_ror8(v_);                       \
                w += 2;                                                                        \
            }                                                                                  \
            a0 = tinyc_s8_smlad(c_[1], ao, tinyc_s8_smlad(c_[0], ae, a0));                     \
            b0 = tinyc_s8_smlad(c_[1], bo, tinyc_s8_smlad(c_[0], be, b0));                     \
            a1 = tinyc_s8_smlad(c_[3], ao, tinyc_s8_smlad(c_[2], ae, a1));                     \
            b1 = tinyc_s8_smlad(c_[3], bo, tinyc_s8_smlad(c_[2], be, b1));                     \
            a2 = tinyc_s8_smlad(c_[5], ao, tinyc_s8_smlad(c_[4], ae, a2));                     \
            b2 = tinyc_s8_smlad(c_[5], bo, tinyc_s8_smlad(c_[4], be, b2));                     \
        }                                                                                      \
    } while (0)
#endif

/* The outputs of one channel for the block's first np pixels. */
TINYC_S8_INLINE void tinyc_s8_store3(int8_t *y, const int32_t *q, int32_t a0, int32_t a1, int32_t a2,
                                     int32_t ys_p, int32_t np, int32_t mode, int32_t zy, int32_t lo, int32_t hi, const int8_t *tab)
{
    const tinyc_s8_rq rq = tinyc_s8_rec(q, mode);
    y[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
    if (np > 1) y[ys_p] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, rq, mode, zy, lo, hi));
    if (np > 2) y[2 * ys_p] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a2, rq, mode, zy, lo, hi));
}

/* A block of up to 3 pixels (col words as above) x every output channel of the group: channel
 * pairs through the 3 x 2 block, an odd last channel 3 x 1. Only the first np pixels are stored
 * (a last, partial block computes garbage for the rest). */
TINYC_S8_INLINE void tinyc_s8_gemm3(const tinyc_s8_word *col, const tinyc_s8_word *w, const int32_t *q,
                                    int8_t *y, int32_t og, int32_t chunks, int32_t qs, int32_t ys_c,
                                    int32_t ys_p, int32_t np, int32_t wide, int32_t mode, int32_t zy, int32_t lo,
                                    int32_t hi, const int8_t *tab)
{
    const tinyc_s8_word *volatile cend = col + 6 + 6 * ((chunks - 1) & ~7);
    int32_t o, j;
    for (o = 0; o + 1 < og; o += 2, q += 2 * qs, y += 2 * ys_c) {
        int32_t a0 = q[0], b0 = q[qs], a1, a2, b1, b2;
        if (wide) TINYC_S8_MK3X2(col, cend, w, chunks, TINYC_S8_MK_WWIDE);
        else TINYC_S8_MK3X2(col, cend, w, chunks, TINYC_S8_MK_WRAW);
        tinyc_s8_store3(y, q, a0, a1, a2, ys_p, np, mode, zy, lo, hi, tab);
        tinyc_s8_store3(y + ys_c, q + qs, b0, b1, b2, ys_p, np, mode, zy, lo, hi, tab);
    }
    if (o < og) {
        int32_t a0 = q[0], a1 = a0, a2 = a0;
        const tinyc_s8_word *c = col;
        for (j = 0; j < chunks; ++j, c += 6) {
            int32_t we, wo, x0, x1;
            if (wide) {
                we = w[0];
                wo = w[1];
                w += 2;
            } else {
                const uint32_t v = (uint32_t)*w++;
                we = tinyc_s8_sxtb16(v);
                wo = tinyc_s8_sxtb16_ror8(v);
            }
            TINYC_S8_LD2(c, 0, x0, x1);
            a0 = tinyc_s8_smlad(x1, wo, tinyc_s8_smlad(x0, we, a0));
            TINYC_S8_LD2(c, 8, x0, x1);
            a1 = tinyc_s8_smlad(x1, wo, tinyc_s8_smlad(x0, we, a1));
            TINYC_S8_LD2(c, 16, x0, x1);
            a2 = tinyc_s8_smlad(x1, wo, tinyc_s8_smlad(x0, we, a2));
        }
        tinyc_s8_store3(y, q, a0, a1, a2, ys_p, np, mode, zy, lo, hi, tab);
    }
}

/* One pixel (col: 2 words per chunk) x every output channel (weights as tinyc_s8_gemm3). */
TINYC_S8_INLINE void tinyc_s8_gemm1x2(const tinyc_s8_word *col, const tinyc_s8_word *w, const int32_t *q,
                                    int8_t *y, int32_t og, int32_t chunks, int32_t qs, int32_t ys_c, int32_t wide,
                                    int32_t mode, int32_t zy, int32_t lo, int32_t hi, const int8_t *tab)
{
    int32_t o, j;
    for (o = 0; o + 1 < og; o += 2, q += 2 * qs, y += 2 * ys_c) {
        int32_t a0 = q[0], b0 = q[qs];
        const tinyc_s8_word *c = col;
        for (j = 0; j < chunks; ++j, c += 2) {
            int32_t x0, x1;
            TINYC_S8_LD2(c, 0, x0, x1);
            if (wide) {
                a0 = tinyc_s8_smlad(x1, w[1], tinyc_s8_smlad(x0, w[0], a0));
                b0 = tinyc_s8_smlad(x1, w[3], tinyc_s8_smlad(x0, w[2], b0));
                w += 4;
            } else {
                const uint32_t u = (uint32_t)w[0], v = (uint32_t)w[1];
                a0 = tinyc_s8_smlad(x1, tinyc_s8_sxtb16_ror8(u), tinyc_s8_smlad(x0, tinyc_s8_sxtb16(u), a0));
                b0 = tinyc_s8_smlad(x1, tinyc_s8_sxtb16_ror8(v), tinyc_s8_smlad(x0, tinyc_s8_sxtb16(v), b0));
                w += 2;
            }
        }
        y[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_out(a0, q, mode, zy, lo, hi));
        y[ys_c] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_out(b0, q + qs, mode, zy, lo, hi));
    }
    if (o < og) {
        int32_t a0 = q[0];
        const tinyc_s8_word *c = col;
        for (j = 0; j < chunks; ++j, c += 2) {
            int32_t x0, x1;
            TINYC_S8_LD2(c, 0, x0, x1);
            if (wide) {
                a0 = tinyc_s8_smlad(x1, w[1], tinyc_s8_smlad(x0, w[0], a0));
                w += 2;
            } else {
                const uint32_t v = (uint32_t)*w++;
                a0 = tinyc_s8_smlad(x1, tinyc_s8_sxtb16_ror8(v), tinyc_s8_smlad(x0, tinyc_s8_sxtb16(v), a0));
            }
        }
        y[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_out(a0, q, mode, zy, lo, hi));
    }
}

/* pix = 4, for reductions of 1 or 2 chunks (k <= 8), where the 3 x 2 block's fixed costs outweigh
 * its saving. Weights [O][chunks] words (no pairs).
 * Four pixels (interleaved col: per 4-k chunk, 2 words per pixel) x every output channel:
 * each weight word is expanded once and feeds 8 SMLADs; two chunks per loop trip. Only
 * the first np pixels are stored (a last, partial block computes garbage for the rest). */
TINYC_S8_INLINE void tinyc_s8_gemm4(const tinyc_s8_word *col, const tinyc_s8_word *w, const int32_t *q,
                                    int8_t *y, int32_t og, int32_t chunks, int32_t qs, int32_t ys_c,
                                    int32_t ys_p, int32_t np, int32_t mode, int32_t zy, int32_t lo, int32_t hi, const int8_t *tab)
{
    int32_t o;
    for (o = 0; o < og; ++o, q += qs, y += ys_c) {
        int32_t a0 = q[0], a1 = a0, a2 = a0, a3 = a0;
        const tinyc_s8_word *c = col;
        const tinyc_s8_word *wend = w + (chunks & ~1);
        while (w != wend) {
            const uint32_t v = (uint32_t)w[0], u = (uint32_t)w[1];
            int32_t we = tinyc_s8_sxtb16(v), wo = tinyc_s8_sxtb16_ror8(v);
            TINYC_S8_GEMM4_STEP(c, 0, we, wo);
            we = tinyc_s8_sxtb16(u);
            wo = tinyc_s8_sxtb16_ror8(u);
            TINYC_S8_GEMM4_STEP(c, 32, we, wo);
            w += 2;
            c += 16;
        }
        if (chunks & 1) {
            const uint32_t v = (uint32_t)*w++;
            const int32_t we = tinyc_s8_sxtb16(v), wo = tinyc_s8_sxtb16_ror8(v);
            TINYC_S8_GEMM4_STEP(c, 0, we, wo);
        }
        {
            const tinyc_s8_rq rq = tinyc_s8_rec(q, mode);
            y[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
            if (np > 1) y[ys_p] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, rq, mode, zy, lo, hi));
            if (np > 2) y[2 * ys_p] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a2, rq, mode, zy, lo, hi));
            if (np > 3) y[3 * ys_p] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a3, rq, mode, zy, lo, hi));
        }
    }
}

/* One pixel (col: 2 words per chunk) x every output channel (weights as tinyc_s8_gemm4). */
TINYC_S8_INLINE void tinyc_s8_gemm1(const tinyc_s8_word *col, const tinyc_s8_word *w, const int32_t *q,
                                    int8_t *y, int32_t og, int32_t chunks, int32_t qs, int32_t ys_c,
                                    int32_t mode, int32_t zy, int32_t lo, int32_t hi, const int8_t *tab)
{
    int32_t o, j;
    for (o = 0; o < og; ++o, q += qs, y += ys_c) {
        int32_t a0 = q[0];
        const tinyc_s8_word *c = col;
        for (j = 0; j < chunks; ++j, c += 2) {
            const uint32_t v = (uint32_t)*w++;
            int32_t x0, x1;
            TINYC_S8_LD2(c, 0, x0, x1);
            a0 = tinyc_s8_smlad(x0, tinyc_s8_sxtb16(v), a0);
            a0 = tinyc_s8_smlad(x1, tinyc_s8_sxtb16_ror8(v), a0);
        }
        y[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_out(a0, q, mode, zy, lo, hi));
    }
}

/* im2col of output pixel (oy, ox) straight into expanded col words (every `step` words),
 * when each tap's cg channels are contiguous and cg % 4 == 0: no byte row in between. */
TINYC_S8_INLINE void tinyc_s8_im2col_expand(const int8_t *x, tinyc_s8_word *col, int32_t step, int32_t oy,
                                            int32_t ox, int32_t cg, int32_t h, int32_t w, int32_t kh, int32_t kw,
                                            int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                                            int32_t xs_h, int32_t xs_w, int32_t zz)
{
    const int32_t iy0 = oy * sh - pt, ix0 = ox * sw - pl;
    int32_t ky, kx, j;
    for (ky = 0; ky < kh; ++ky) {
        const int32_t iy = iy0 + ky * dh;
        if (iy < 0 || iy >= h) {
            for (j = 0; j < kw * cg / 4; ++j, col += step) col[0] = col[1] = zz;
            continue;
        }
        if (dw == 1 && xs_w == cg && ix0 >= 0 && ix0 + kw <= w) {
            tinyc_s8_expand(x + iy * xs_h + ix0 * xs_w, col, kw * cg / 4, step);
            col += step * (kw * cg / 4);
            continue;
        }
        for (kx = 0; kx < kw; ++kx) {
            const int32_t ix = ix0 + kx * dw;
            if (ix < 0 || ix >= w) {
                for (j = 0; j < cg / 4; ++j, col += step) col[0] = col[1] = zz;
            } else {
                tinyc_s8_expand(x + iy * xs_h + ix * xs_w, col, cg / 4, step);
                col += step * (cg / 4);
            }
        }
    }
}

/* tinyc_s8_conv_gemm's pix = 4 form (k <= 8): blocks of 4 pixels, weights [O][kp / 4] words,
 * tinyc_s8_gemm4 / tinyc_s8_gemm1; the same order of reads and writes per block. A function of
 * its own on purpose: folded into tinyc_s8_conv_gemm behind `pix`, GCC 12 -O2 compiles these
 * shapes 13 % slower (1x1 8->24 at 32x32: 2.03 against 1.79 instr/MAC, bench.kernel_shapes). */
TINYC_S8_INLINE void tinyc_s8_conv_gemm4(const int8_t *x, const tinyc_s8_word *wt, const int32_t *qp, int8_t *y,
                                         int8_t *scratch, const int8_t *tab, int32_t nb, int32_t groups, int32_t cg, int32_t og,
                                         int32_t h, int32_t w, int32_t oh, int32_t ow, int32_t kh, int32_t kw,
                                         int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                                         int32_t xs_n, int32_t xs_c, int32_t xs_h, int32_t xs_w, int32_t ys_n,
                                         int32_t ys_c, int32_t ys_p, int32_t zx, int32_t kp, int32_t direct,
                                         int32_t mode, int32_t zy, int32_t lo, int32_t hi)
{
    tinyc_s8_word *col = (tinyc_s8_word *)(void *)scratch;
    int8_t *row = scratch + 8 * kp;
    const int32_t npix = oh * ow, chunks = kp / 4, k = kh * kw * cg, full = npix & ~3;
    const int32_t qs = mode == 0 ? TINYC_S8_Q_FAST : TINYC_S8_Q_GENERIC;
    const int32_t expand = !direct && xs_c == 1 && (cg & 3) == 0;
    /* one channel, rows of kw % 4 == 0 contiguous taps: pixels whose window is inside across expand
     * straight from the input too (a 10 x 4 spectrogram filter) */
    const int32_t expand1 = !direct && cg == 1 && (kw & 3) == 0 && dw == 1 && xs_w == 1;
    const int32_t zz = tinyc_s8_sxtb16((uint32_t)(uint8_t)zx * 0x01010101u);
    int32_t n, g, p0, p;
    if (!direct && !expand && kp > k) memset(row + k, 0, (size_t)(kp - k));
    for (n = 0; n < nb; ++n) {
        for (g = 0; g < groups; ++g) {
            const int8_t *xg = x + n * xs_n + g * cg * xs_c;
            int8_t *yg = y + n * ys_n + g * og * ys_c;
            const tinyc_s8_word *wg = wt + g * og * (kp / 4);
            const int32_t *qg = qp + g * og * qs;
            for (p0 = 0; p0 < npix; p0 += 4) {
                const int32_t np = npix - p0 < 4 ? npix - p0 : 4;
                const int32_t step = np == 1 ? 2 : 8;
                for (p = 0; p < np; ++p) {
                    const int32_t oy = (p0 + p) / ow, ox = (p0 + p) % ow;
                    if (direct) {
                        tinyc_s8_expand(xg + oy * sh * xs_h + ox * sw * xs_w, col + 2 * p, chunks, step);
                    } else if (expand || (expand1 && ox * sw - pl >= 0 && ox * sw - pl + kw <= w)) {
                        tinyc_s8_im2col_expand(xg, col + 2 * p, step, oy, ox, cg, h, w, kh, kw, sh, sw, dh, dw, pt,
                                               pl, xs_h, xs_w, zz);
                    } else {
                        tinyc_s8_im2col(xg, row, oy, ox, cg, h, w, kh, kw, sh, sw, dh, dw, pt, pl, xs_c, xs_h,
                                        xs_w, zx);
                        tinyc_s8_expand(row, col + 2 * p, chunks, step);
                    }
                }
                if (p0 < full) {
                    tinyc_s8_gemm4(col, wg, qg, yg + p0 * ys_p, og, chunks, qs, ys_c, ys_p, 4, mode, zy, lo, hi, tab);
                } else if (np == 1) {
                    tinyc_s8_gemm1(col, wg, qg, yg + p0 * ys_p, og, chunks, qs, ys_c, mode, zy, lo, hi, tab);
                } else {
                    tinyc_s8_gemm4(col, wg, qg, yg + p0 * ys_p, og, chunks, qs, ys_c, ys_p, np, mode, zy, lo, hi, tab);
                }
            }
        }
    }
}

/* conv2d with groups (not depthwise) as GEMM: per group and block of `pix` (3 or 4) output
 * pixels, im2col into `scratch` (expanded to int16 pairs once, reused by every output channel),
 * then tinyc_s8_gemm3 (pix 3) or tinyc_s8_gemm4 (pix 4). Weights [O][KH][KW][Cg] padded with
 * zeros to kp (a multiple of 4) per channel, in channel pairs when pix is 3 (tinyc_s8_gemm3).
 * Output pixels are ys_p apart (dense NHWC or NCHW), channels ys_c.
 * direct: 1x1 kernel reading whole channel rows (cg % 4 == 0, no padding): no im2col.
 * The result may overlap x (in place, docs/memory.md): a block of pixels reads all of its
 * input before it writes; c_ops_int8._conv_steps models this order, keep the two in step. */
TINYC_S8_INLINE void tinyc_s8_conv_gemm(const int8_t *x, const tinyc_s8_word *wt, const int32_t *qp, int8_t *y,
                                        int8_t *scratch, const int8_t *tab, int32_t nb, int32_t groups, int32_t cg, int32_t og,
                                        int32_t h, int32_t w, int32_t oh, int32_t ow, int32_t kh, int32_t kw,
                                        int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                                        int32_t xs_n, int32_t xs_c, int32_t xs_h, int32_t xs_w, int32_t ys_n,
                                        int32_t ys_c, int32_t ys_p, int32_t zx, int32_t kp, int32_t direct,
                                        int32_t pix, int32_t wide, int32_t mode, int32_t zy, int32_t lo, int32_t hi)
{
    tinyc_s8_word *col = (tinyc_s8_word *)(void *)scratch;
    int8_t *row = scratch + 2 * pix * kp;
    const int32_t npix = oh * ow, chunks = kp / 4, k = kh * kw * cg, full = npix - npix % pix;
    const int32_t qs = mode == 0 ? TINYC_S8_Q_FAST : TINYC_S8_Q_GENERIC;
    const int32_t expand = !direct && xs_c == 1 && (cg & 3) == 0;
    /* one channel, rows of kw % 4 == 0 contiguous taps: pixels whose window is inside across expand
     * straight from the input too (a 10 x 4 spectrogram filter) */
    const int32_t expand1 = !direct && cg == 1 && (kw & 3) == 0 && dw == 1 && xs_w == 1;
    const int32_t zz = tinyc_s8_sxtb16((uint32_t)(uint8_t)zx * 0x01010101u);
    int32_t n, g, p0, p;
    if (pix == 4) {
        tinyc_s8_conv_gemm4(x, wt, qp, y, scratch, tab, nb, groups, cg, og, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl,
                            xs_n, xs_c, xs_h, xs_w, ys_n, ys_c, ys_p, zx, kp, direct, mode, zy, lo, hi);
        return;
    }
    if (!direct && !expand && kp > k) memset(row + k, 0, (size_t)(kp - k));
    for (n = 0; n < nb; ++n) {
        for (g = 0; g < groups; ++g) {
            const int8_t *xg = x + n * xs_n + g * cg * xs_c;
            int8_t *yg = y + n * ys_n + g * og * ys_c;
            const tinyc_s8_word *wg = wt + g * og * (kp / 4) * (wide ? 2 : 1);
            const int32_t *qg = qp + g * og * qs;
            for (p0 = 0; p0 < npix; p0 += pix) {
                const int32_t np = p0 < full ? pix : npix - p0;
                const int32_t step = np == 1 ? 2 : 2 * pix;
                for (p = 0; p < np; ++p) {
                    const int32_t oy = (p0 + p) / ow, ox = (p0 + p) % ow;
                    if (direct) {
                        tinyc_s8_expand(xg + oy * sh * xs_h + ox * sw * xs_w, col + 2 * p, chunks, step);
                    } else if (expand || (expand1 && ox * sw - pl >= 0 && ox * sw - pl + kw <= w)) {
                        tinyc_s8_im2col_expand(xg, col + 2 * p, step, oy, ox, cg, h, w, kh, kw, sh, sw, dh, dw, pt,
                                               pl, xs_h, xs_w, zz);
                    } else {
                        tinyc_s8_im2col(xg, row, oy, ox, cg, h, w, kh, kw, sh, sw, dh, dw, pt, pl, xs_c, xs_h,
                                        xs_w, zx);
                        tinyc_s8_expand(row, col + 2 * p, chunks, step);
                    }
                }
                if (p0 < full) {     /* a literal np: the stores need no tests */
                    tinyc_s8_gemm3(col, wg, qg, yg + p0 * ys_p, og, chunks, qs, ys_c, ys_p, 3, wide, mode, zy, lo, hi, tab);
                } else if (np == 1) {
                    tinyc_s8_gemm1x2(col, wg, qg, yg + p0 * ys_p, og, chunks, qs, ys_c, wide, mode, zy, lo, hi, tab);
                } else {
                    tinyc_s8_gemm3(col, wg, qg, yg + p0 * ys_p, og, chunks, qs, ys_c, ys_p, np, wide, mode, zy, lo, hi, tab);
                }
            }
        }
    }
}
#endif

#ifdef TINYC_S8_CONV_WINO
/* Winograd F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 stride-1 dense convs, with tinyc_s8_conv_gemm's
 * 3 x 2 block (TINYC_S8_CONV_GEMM is defined beside it). Per 4 x 4 input tile d (raw codes, zx in the
 * padding: the folded bias absorbs it) V = B^T d B; per output channel and tile position t,
 * M[t] = sum over input channels of U[t] V[t], where U = G' g G'^T with G' = 2 G (integer: the
 * compiler transforms the weights, int8_weights.winograd_weights); Y = A^T M A / 4 is the direct
 * conv's sum exactly (the compiler checks every partial sum fits int32), then the bias and the
 * output stage. 16 multiplies per 2 x 2 outputs and input channel instead of 36, for int16 weights
 * 16 / 9 x 2 the int8 ones' flash (--wide-weights spends that, c_ops_int8.choose_forms).
 * V per block of 3 tiles: per t (vs = 6 chunks words apart), per chunk of 4 channels, 2 words per
 * tile: channels (0, 2) and (1, 3) as int16 pairs, the col order of the 3 x 2 block. U: per pair of
 * output channels, per t, per chunk {a (0, 2), a (1, 3), b (0, 2), b (1, 3)} (the wide GEMM weights);
 * an odd last channel alone after them. Scratch: 16 vs words of V, then M (6 x 16 int32). */

/* (a - c, b + c, c - b, b - d): a row or column of B^T d B, on int16 pairs. */
#define TINYC_S8_WINO_BT(a, b, c, d, o0, o1, o2, o3)                                               \
    do {                                                                                           \
        (o0) = tinyc_s8_ssub16((a), (c));                                                          \
        (o1) = tinyc_s8_sadd16((b), (c));                                                          \
        (o2) = tinyc_s8_ssub16((c), (b));                                                          \
        (o3) = tinyc_s8_ssub16((b), (d));                                                          \
    } while (0)

/* One input row of the tile, row-transformed: the 4 words at p (cs bytes apart), their even
 * (ROR 0) or odd (ROR 8) channels, (d0 - d2, d1 + d2, d2 - d1, d1 - d3). */
#define TINYC_S8_WINO_ROW(p, cs, ROR, h0, h1, h2, h3)                                              \
    do {                                                                                           \
        const int32_t e0_ = ROR(tinyc_s8_ld32((p))), e1_ = ROR(tinyc_s8_ld32((p) + (cs)));        \
        const int32_t e2_ = ROR(tinyc_s8_ld32((p) + 2 * (cs))), e3_ = ROR(tinyc_s8_ld32((p) + 3 * (cs))); \
        TINYC_S8_WINO_BT(e0_, e1_, e2_, e3_, h0, h1, h2, h3);                                      \
    } while (0)

/* V = B^T d B of the even or odd channels (ROR) of a tile of 4 x 4 words of 4 channels (rows rs
 * bytes apart, words cs), to v[t * vs]: rows 1 and 2 kept, rows 0 and 3 combined with them. */
#define TINYC_S8_WINO_HALF(p, rs, cs, v, vs, ROR)                                                  \
    do {                                                                                           \
        int32_t a0_, a1_, a2_, a3_, b0_, b1_, b2_, b3_, c0_, c1_, c2_, c3_;                         \
        TINYC_S8_WINO_ROW((p) + (rs), cs, ROR, a0_, a1_, a2_, a3_);                                \
        TINYC_S8_WINO_ROW((p) + 2 * (rs), cs, ROR, b0_, b1_, b2_, b3_);                            \
        TINYC_S8_WINO_ROW((p), cs, ROR, c0_, c1_, c2_, c3_);                                       \
        (v)[0] = tinyc_s8_ssub16(c0_, b0_);                                                        \
        (v)[(vs)] = tinyc_s8_ssub16(c1_, b1_);                                                     \
        (v)[2 * (vs)] = tinyc_s8_ssub16(c2_, b2_);                                                 \
        (v)[3 * (vs)] = tinyc_s8_ssub16(c3_, b3_);                                                 \
        (v)[4 * (vs)] = tinyc_s8_sadd16(a0_, b0_);                                                 \
        (v)[5 * (vs)] = tinyc_s8_sadd16(a1_, b1_);                                                 \
        (v)[6 * (vs)] = tinyc_s8_sadd16(a2_, b2_);                                                 \
        (v)[7 * (vs)] = tinyc_s8_sadd16(a3_, b3_);                                                 \
        (v)[8 * (vs)] = tinyc_s8_ssub16(b0_, a0_);                                                 \
        (v)[9 * (vs)] = tinyc_s8_ssub16(b1_, a1_);                                                 \
        (v)[10 * (vs)] = tinyc_s8_ssub16(b2_, a2_);                                                \
        (v)[11 * (vs)] = tinyc_s8_ssub16(b3_, a3_);                                                \
        TINYC_S8_WINO_ROW((p) + 3 * (rs), cs, ROR, c0_, c1_, c2_, c3_);                            \
        (v)[12 * (vs)] = tinyc_s8_ssub16(a0_, c0_);                                                \
        (v)[13 * (vs)] = tinyc_s8_ssub16(a1_, c1_);                                                \
        (v)[14 * (vs)] = tinyc_s8_ssub16(a2_, c2_);                                                \
        (v)[15 * (vs)] = tinyc_s8_ssub16(a3_, c3_);                                                \
    } while (0)

#define TINYC_S8_WINO_EVEN(u) tinyc_s8_sxtb16(u)
#define TINYC_S8_WINO_ODD(u) tinyc_s8_sxtb16_ror8(u)

/* The input tile at (iy0, ix0) (channels contiguous, c = 4 chunks) into V (its 2 words per chunk
 * at v). Tiles inside the map read the input; the others a copy with zx words in the padding. */
TINYC_S8_INLINE void tinyc_s8_wino_tile(const int8_t *x, tinyc_s8_word *v, int32_t iy0, int32_t ix0, int32_t h,
                                        int32_t wd, int32_t xs_h, int32_t xs_w, int32_t chunks, int32_t vs,
                                        uint32_t zw)
{
    const int8_t *p = x + iy0 * xs_h + ix0 * xs_w;
    int32_t j, k;
    if (iy0 >= 0 && ix0 >= 0 && iy0 + 4 <= h && ix0 + 4 <= wd) {
        for (j = 0; j < chunks; ++j, v += 6, p += 4) {
            TINYC_S8_WINO_HALF(p, xs_h, xs_w, v, vs, TINYC_S8_WINO_EVEN);
            TINYC_S8_WINO_HALF(p, xs_h, xs_w, v + 1, vs, TINYC_S8_WINO_ODD);
        }
        return;
    }
    for (j = 0; j < chunks; ++j, v += 6, p += 4) {
        uint32_t d[16];
        const int8_t *dp = (const int8_t *)(const void *)d;
        for (k = 0; k < 16; ++k) {
            const int32_t iy = iy0 + (k >> 2), ix = ix0 + (k & 3);
            d[k] = iy >= 0 && iy < h && ix >= 0 && ix < wd ? tinyc_s8_ld32(p + (k >> 2) * xs_h + (k & 3) * xs_w) : zw;
        }
        TINYC_S8_WINO_HALF(dp, 16, 4, v, vs, TINYC_S8_WINO_EVEN);
        TINYC_S8_WINO_HALF(dp, 16, 4, v + 1, vs, TINYC_S8_WINO_ODD);
    }
}

/* Y = A^T M A / 4 + bias of one tile and channel (M: 16 int32), its first rows x cols outputs
 * stored (2 x 2 but at a last odd row or column). */
TINYC_S8_INLINE void tinyc_s8_wino_out(const int32_t *m, const int32_t *q, int8_t *y, int32_t ys_h, int32_t ys_w,
                                       int32_t rows, int32_t cols, int32_t mode, int32_t zy, int32_t lo, int32_t hi,
                                       const int8_t *tab)
{
    const tinyc_s8_rq rq = tinyc_s8_rec(q, mode);
    const int32_t b = q[0];
    const int32_t s0 = m[0] + m[4] + m[8], s1 = m[1] + m[5] + m[9], s2 = m[2] + m[6] + m[10], s3 = m[3] + m[7] + m[11];
    /* exact multiples of 4: the shift divides */
    y[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(((s0 + s1 + s2) >> 2) + b, rq, mode, zy, lo, hi));
    if (cols > 1) y[ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(((s1 - s2 - s3) >> 2) + b, rq, mode, zy, lo, hi));
    if (rows > 1) {
        const int32_t d0 = m[4] - m[8] - m[12], d1 = m[5] - m[9] - m[13], d2 = m[6] - m[10] - m[14];
        const int32_t d3 = m[7] - m[11] - m[15];
        y[ys_h] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(((d0 + d1 + d2) >> 2) + b, rq, mode, zy, lo, hi));
        if (cols > 1)
            y[ys_h + ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(((d1 - d2 - d3) >> 2) + b, rq, mode, zy, lo, hi));
    }
}

/* The block's outputs of one channel: tiles t0 .. t0 + np - 1 (M of tile p at m + 16 p). */
TINYC_S8_INLINE void tinyc_s8_wino_store(const int32_t *m, const int32_t *q, int8_t *y, int32_t t0, int32_t np,
                                         int32_t tw, int32_t oh, int32_t ow, int32_t ys_h, int32_t ys_w, int32_t mode,
                                         int32_t zy, int32_t lo, int32_t hi, const int8_t *tab)
{
    int32_t p;
    for (p = 0; p < np; ++p, m += 16) {
        const int32_t oy = 2 * ((t0 + p) / tw), ox = 2 * ((t0 + p) % tw);
        tinyc_s8_wino_out(m, q, y + oy * ys_h + ox * ys_w, ys_h, ys_w, oh - oy, ow - ox, mode, zy, lo, hi, tab);
    }
}

/* 3x3, stride 1, dilation 1, groups 1, c % 4 == 0 input channels contiguous (xs_c == 1): blocks of
 * 3 tiles of 2 x 2 outputs (tiles row by row, tw per row; a last block of 1 or 2 computes garbage
 * for the rest), V of the block, then per channel pair the 16 GEMMs (M in scratch) and the output
 * transform. Not in place (c_ops_int8._overlap_conv). */
TINYC_S8_INLINE void tinyc_s8_conv_wino(const int8_t *x, const tinyc_s8_word *wt, const int32_t *qp, int8_t *y,
                                        int8_t *scratch, const int8_t *tab, int32_t nb, int32_t c, int32_t o,
                                        int32_t h, int32_t wd, int32_t oh, int32_t ow, int32_t pt, int32_t pl,
                                        int32_t xs_n, int32_t xs_h, int32_t xs_w, int32_t ys_n, int32_t ys_c,
                                        int32_t ys_h, int32_t ys_w, int32_t zx, int32_t mode, int32_t zy, int32_t lo,
                                        int32_t hi)
{
    const int32_t chunks = c / 4, vs = 6 * chunks, tw = (ow + 1) / 2, ntile = ((oh + 1) / 2) * tw;
    const int32_t qs = mode == 0 ? TINYC_S8_Q_FAST : TINYC_S8_Q_GENERIC;
    const uint32_t zw = (uint32_t)(uint8_t)zx * 0x01010101u;
    tinyc_s8_word *v = (tinyc_s8_word *)(void *)scratch;
    int32_t *m = (int32_t *)(void *)(scratch + 4 * 16 * vs);
    int32_t n, t0, p, o2, t;
    for (n = 0; n < nb; ++n) {
        const int8_t *xn = x + n * xs_n;
        int8_t *yn = y + n * ys_n;
        for (t0 = 0; t0 < ntile; t0 += 3) {
            const int32_t np = ntile - t0 < 3 ? ntile - t0 : 3;
            const tinyc_s8_word *w = wt;
            const int32_t *q = qp;
            for (p = 0; p < np; ++p) {
                const int32_t ty = (t0 + p) / tw, tx = (t0 + p) % tw;
                tinyc_s8_wino_tile(xn, v + 2 * p, 2 * ty - pt, 2 * tx - pl, h, wd, xs_h, xs_w, chunks, vs, zw);
            }
            for (o2 = 0; o2 + 1 < o; o2 += 2, q += 2 * qs) {
                for (t = 0; t < 16; ++t) {
                    const tinyc_s8_word *col = v + t * vs;
                    const tinyc_s8_word *volatile cend = col + 6 + 6 * ((chunks - 1) & ~7);
                    int32_t a0 = 0, b0 = 0, a1, a2, b1, b2;
                    TINYC_S8_MK3X2(col, cend, w, chunks, TINYC_S8_MK_WWIDE);
                    m[t] = a0;
                    m[16 + t] = a1;
                    m[32 + t] = a2;
                    m[48 + t] = b0;
                    m[64 + t] = b1;
                    m[80 + t] = b2;
                }
                tinyc_s8_wino_store(m, q, yn + o2 * ys_c, t0, np, tw, oh, ow, ys_h, ys_w, mode, zy, lo, hi, tab);
                tinyc_s8_wino_store(m + 48, q + qs, yn + (o2 + 1) * ys_c, t0, np, tw, oh, ow, ys_h, ys_w, mode, zy,
                                    lo, hi, tab);
            }
            if (o2 < o) {       /* an odd last channel: 3 x 1 */
                for (t = 0; t < 16; ++t) {
                    const tinyc_s8_word *col = v + t * vs;
                    int32_t a0 = 0, a1 = 0, a2 = 0, j, x0, x1;
                    for (j = 0; j < chunks; ++j, col += 6, w += 2) {
                        const int32_t we = w[0], wo = w[1];
                        TINYC_S8_LD2(col, 0, x0, x1);
                        a0 = tinyc_s8_smlad(x1, wo, tinyc_s8_smlad(x0, we, a0));
                        TINYC_S8_LD2(col, 8, x0, x1);
                        a1 = tinyc_s8_smlad(x1, wo, tinyc_s8_smlad(x0, we, a1));
                        TINYC_S8_LD2(col, 16, x0, x1);
                        a2 = tinyc_s8_smlad(x1, wo, tinyc_s8_smlad(x0, we, a2));
                    }
                    m[t] = a0;
                    m[16 + t] = a1;
                    m[32 + t] = a2;
                }
                tinyc_s8_wino_store(m, q, yn + o2 * ys_c, t0, np, tw, oh, ow, ys_h, ys_w, mode, zy, lo, hi, tab);
            }
        }
    }
}
#endif

#ifdef TINYC_S8_DW
/* Depthwise conv (groups == C, `mult` outputs per input channel), channel by channel:
 * the input plane is copied into `plane` (ph x pw, borders = the input zero point zx,
 * filled once), so the loops below never test for padding.
 * variant 1: 3x3, stride 1: two outputs per step, each row of taps = 1 word load,
 *   2 SXTB16, 2 SMLAD + 2 SMLAxy; weights per channel packed {w00|w02, w10|w12,
 *   w20|w22, w01|w11, w21} (int16 pairs).
 * variant 2: 3x3, stride 2: one output per step, same weights.
 * variant 3: 3x3, stride 1 in both directions: 2 x 2 outputs per step (a row of taps
 *   loaded and expanded once serves both output rows).
 * variant 4: any other kh x kw at dilation 1 (tinyc_s8_dw_taps).
 * variant 0: anything else, weights int8 [O][KH*KW].
 * The result may overlap x (in place, docs/memory.md): a channel's plane is copied before any
 * of its outputs is written; c_ops_int8._conv_steps models this order, keep the two in step. */
/* Variant 4's weights per row of taps: a word pair {w0|w2, w1|w3} per 4 taps (a last 2 or 3 taps
 * zero-padded to 4), and one word for a last single tap (kw % 4 == 1); int8_weights.dw_tap_words. */
#define TINYC_S8_DW_ROW_WORDS(kw) (2 * ((kw) / 4 + ((kw) % 4 > 1)) + ((kw) % 4 == 1))

/* One row of taps for output pixels at r (+ 1 step) against the row's weight words. */
#define TINYC_S8_DW_ROW(r, acc)                                                                     \
    do {                                                                                            \
        int32_t j_;                                                                                 \
        for (j_ = 0; j_ < groups; ++j_) {                                                           \
            const uint32_t v_ = tinyc_s8_ld32((r) + 4 * j_);                                        \
            acc = tinyc_s8_smlad(tinyc_s8_sxtb16(v_), wr[2 * j_], acc);                             \
            acc = tinyc_s8_smlad(tinyc_s8_sxtb16_ror8(v_), wr[2 * j_ + 1], acc);                    \
        }                                                                                           \
        if (single) acc = tinyc_s8_smlabb((r)[4 * groups], wr[2 * groups], acc);                   \
    } while (0)

/* Variant 4 of tinyc_s8_dw, any kh x kw at any stride (dilation 1): per output and row of taps, a word
 * of 4 taps is 1 LDR (any alignment), 2 SXTB16 and 2 SMLAD; 4 outputs of a row per step share every
 * weight load. The plane has 3 readable bytes past its end (the zero-padded taps read them). */
TINYC_S8_INLINE void tinyc_s8_dw_taps(const int8_t *plane, const tinyc_s8_word *wc, int32_t bias, tinyc_s8_rq rq,
                                      int8_t *yo, int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh,
                                      int32_t sw, int32_t pw, int32_t ys_h, int32_t ys_w, int32_t mode, int32_t zy,
                                      int32_t lo, int32_t hi, const int8_t *tab)
{
    const int32_t groups = kw / 4 + (kw % 4 > 1), single = kw % 4 == 1, rw = TINYC_S8_DW_ROW_WORDS(kw);
    int32_t oy, ox, ky;
    for (oy = 0; oy < oh; ++oy) {
        const int8_t *r0 = plane + oy * sh * pw;
        int8_t *yr = yo + oy * ys_h;
        for (ox = 0; ox + 3 < ow; ox += 4, r0 += 4 * sw, yr += 4 * ys_w) {
            int32_t a0 = bias, a1 = bias, a2 = bias, a3 = bias;
            if (kw == 5 && sw == 1) {
                /* 5 taps, stride 1: the 4 outputs' 8 input bytes are 2 words (e, d = even, odd
                 * bytes); each output takes its taps from them by SMLAD / SMLAxy halves: 22
                 * instructions per row of taps for 20 MACs, no unaligned reloads */
                for (ky = 0; ky < kh; ++ky) {
                    const tinyc_s8_word *wr = wc + ky * rw;
                    const int32_t w02 = wr[0], w13 = wr[1], w4 = wr[2];
                    const uint32_t v0 = tinyc_s8_ld32(r0 + ky * pw), v1 = tinyc_s8_ld32(r0 + ky * pw + 4);
                    const int32_t e0 = tinyc_s8_sxtb16(v0), d0 = tinyc_s8_sxtb16_ror8(v0);
                    const int32_t e1 = tinyc_s8_sxtb16(v1), d1 = tinyc_s8_sxtb16_ror8(v1);
                    a0 = tinyc_s8_smlad(e0, w02, a0);           /* x0..x4 */
                    a0 = tinyc_s8_smlad(d0, w13, a0);
                    a0 = tinyc_s8_smlabb(e1, w4, a0);
                    a1 = tinyc_s8_smlad(d0, w02, a1);           /* x1..x5 */
                    a1 = tinyc_s8_smlatb(e0, w13, a1);
                    a1 = tinyc_s8_smlabt(e1, w13, a1);
                    a1 = tinyc_s8_smlabb(d1, w4, a1);
                    a2 = tinyc_s8_smlatb(e0, w02, a2);          /* x2..x6 */
                    a2 = tinyc_s8_smlabt(e1, w02, a2);
                    a2 = tinyc_s8_smlatb(d0, w13, a2);
                    a2 = tinyc_s8_smlabt(d1, w13, a2);
                    a2 = tinyc_s8_smlatb(e1, w4, a2);
                    a3 = tinyc_s8_smlatb(d0, w02, a3);          /* x3..x7 */
                    a3 = tinyc_s8_smlabt(d1, w02, a3);
                    a3 = tinyc_s8_smlad(e1, w13, a3);
                    a3 = tinyc_s8_smlatb(d1, w4, a3);
                }
            } else for (ky = 0; ky < kh; ++ky) {
                const tinyc_s8_word *wr = wc + ky * rw;
                const int8_t *r = r0 + ky * pw;
                TINYC_S8_DW_ROW(r, a0);
                TINYC_S8_DW_ROW(r + sw, a1);
                TINYC_S8_DW_ROW(r + 2 * sw, a2);
                TINYC_S8_DW_ROW(r + 3 * sw, a3);
            }
            yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
            yr[ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, rq, mode, zy, lo, hi));
            yr[2 * ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a2, rq, mode, zy, lo, hi));
            yr[3 * ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a3, rq, mode, zy, lo, hi));
        }
        if (kw == 5 && sw == 1 && ox + 1 < ow) {      /* a pair left: the 5-tap halves as above */
            int32_t a0 = bias, a1 = bias;
            for (ky = 0; ky < kh; ++ky) {
                const tinyc_s8_word *wr = wc + ky * rw;
                const uint32_t v0 = tinyc_s8_ld32(r0 + ky * pw), v1 = tinyc_s8_ld32(r0 + ky * pw + 4);
                const int32_t e0 = tinyc_s8_sxtb16(v0), d0 = tinyc_s8_sxtb16_ror8(v0), e1 = tinyc_s8_sxtb16(v1);
                a0 = tinyc_s8_smlad(e0, wr[0], a0);
                a0 = tinyc_s8_smlad(d0, wr[1], a0);
                a0 = tinyc_s8_smlabb(e1, wr[2], a0);
                a1 = tinyc_s8_smlad(d0, wr[0], a1);
                a1 = tinyc_s8_smlatb(e0, wr[1], a1);
                a1 = tinyc_s8_smlabt(e1, wr[1], a1);
                a1 = tinyc_s8_smlabb(tinyc_s8_sxtb16_ror8(v1), wr[2], a1);
            }
            yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
            yr[ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, rq, mode, zy, lo, hi));
            ox += 2;
            r0 += 2;
            yr += 2 * ys_w;
        }
        for (; ox < ow; ++ox, r0 += sw, yr += ys_w) {
            int32_t a0 = bias;
            for (ky = 0; ky < kh; ++ky) {
                const tinyc_s8_word *wr = wc + ky * rw;
                TINYC_S8_DW_ROW(r0 + ky * pw, a0);
            }
            yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
        }
    }
}

TINYC_S8_INLINE void tinyc_s8_dw(const int8_t *x, const void *wt, const int32_t *qp, int8_t *y, int8_t *plane, const int8_t *tab,
                                 int32_t nb, int32_t c, int32_t mult, int32_t h, int32_t w, int32_t oh,
                                 int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh,
                                 int32_t dw, int32_t pt, int32_t pl, int32_t ph, int32_t pw, int32_t xs_n,
                                 int32_t xs_c, int32_t xs_h, int32_t xs_w, int32_t ys_n, int32_t ys_c,
                                 int32_t ys_h, int32_t ys_w, int32_t zx, int32_t variant, int32_t mode,
                                 int32_t zy, int32_t lo, int32_t hi)
{
    const int32_t qs = mode == 0 ? TINYC_S8_Q_FAST : TINYC_S8_Q_GENERIC;
    int32_t n, ci, k, iy, ix, oy, ox;
    memset(plane, zx, (size_t)(ph * pw + 4));
    for (n = 0; n < nb; ++n) {
        for (ci = 0; ci < c; ++ci) {
            const int8_t *xc = x + n * xs_n + ci * xs_c;
            for (iy = 0; iy < h; ++iy) {
                int8_t *dst = plane + (pt + iy) * pw + pl;
                const int8_t *src = xc + iy * xs_h;
                if (xs_w == 1) {
                    memcpy(dst, src, (size_t)w);
                } else {
                    /* a channels-last operand (depthwise in place): 4 strided bytes, one word store */
                    for (ix = 0; ix + 7 < w; ix += 8, src += 8 * xs_w) {
                        const uint32_t v = (uint32_t)(uint8_t)src[0] | (uint32_t)(uint8_t)src[xs_w] << 8 |
                                           (uint32_t)(uint8_t)src[2 * xs_w] << 16 |
                                           (uint32_t)(uint8_t)src[3 * xs_w] << 24;
                        const uint32_t u = (uint32_t)(uint8_t)src[4 * xs_w] | (uint32_t)(uint8_t)src[5 * xs_w] << 8 |
                                           (uint32_t)(uint8_t)src[6 * xs_w] << 16 |
                                           (uint32_t)(uint8_t)src[7 * xs_w] << 24;
                        memcpy(dst + ix, &v, 4);
                        memcpy(dst + ix + 4, &u, 4);
                    }
                    for (; ix + 3 < w; ix += 4, src += 4 * xs_w) {
                        const uint32_t v = (uint32_t)(uint8_t)src[0] | (uint32_t)(uint8_t)src[xs_w] << 8 |
                                           (uint32_t)(uint8_t)src[2 * xs_w] << 16 |
                                           (uint32_t)(uint8_t)src[3 * xs_w] << 24;
                        memcpy(dst + ix, &v, 4);
                    }
                    for (; ix < w; ++ix, src += xs_w) dst[ix] = src[0];
                }
            }
            for (k = 0; k < mult; ++k) {
                const int32_t o = ci * mult + k;
                const int32_t *q = qp + o * qs;
                const tinyc_s8_rq rq = tinyc_s8_rec(q, mode);
                int8_t *yo = y + n * ys_n + o * ys_c;
                if (variant >= 1 && variant <= 3) {
                    const tinyc_s8_word *wp = (const tinyc_s8_word *)wt + o * 5;
                    const int32_t w0 = wp[0], w1 = wp[1], w2 = wp[2], wm = wp[3], wb = wp[4], bias = q[0];
                    oy = 0;
                    if (variant == 3) {
                        for (; oy + 1 < oh; oy += 2) {
                            const int8_t *r0 = plane + oy * pw;
                            int8_t *yr = yo + oy * ys_h;
                            for (ox = 0; ox + 1 < ow; ox += 2, r0 += 2, yr += 2 * ys_w) {
                                /* the weights read again each step (one LDM): kept in registers across
                                 * the loop they leave too few for the 4 accumulators and the output stage */
                                const tinyc_s8_word *wq = TINYC_S8_OPAQUE(wp);
                                const int32_t w0 = wq[0], w1 = wq[1], w2 = wq[2], wm = wq[3], wb = wq[4];
                                uint32_t v = tinyc_s8_ld32(r0);
                                int32_t e = tinyc_s8_sxtb16(v), d = tinyc_s8_sxtb16_ror8(v);
                                int32_t a00 = tinyc_s8_smlad(e, w0, bias), a01 = tinyc_s8_smlad(d, w0, bias);
                                int32_t a10, a11;
                                a00 = tinyc_s8_smlabb(d, wm, a00);
                                a01 = tinyc_s8_smlatb(e, wm, a01);
                                v = tinyc_s8_ld32(r0 + pw);
                                e = tinyc_s8_sxtb16(v);
                                d = tinyc_s8_sxtb16_ror8(v);
                                a00 = tinyc_s8_smlad(e, w1, a00);
                                a01 = tinyc_s8_smlad(d, w1, a01);
                                a10 = tinyc_s8_smlad(e, w0, bias);
                                a11 = tinyc_s8_smlad(d, w0, bias);
                                a00 = tinyc_s8_smlabt(d, wm, a00);
                                a01 = tinyc_s8_smlatt(e, wm, a01);
                                a10 = tinyc_s8_smlabb(d, wm, a10);
                                a11 = tinyc_s8_smlatb(e, wm, a11);
                                v = tinyc_s8_ld32(r0 + 2 * pw);
                                e = tinyc_s8_sxtb16(v);
                                d = tinyc_s8_sxtb16_ror8(v);
                                a00 = tinyc_s8_smlad(e, w2, a00);
                                a01 = tinyc_s8_smlad(d, w2, a01);
                                a10 = tinyc_s8_smlad(e, w1, a10);
                                a11 = tinyc_s8_smlad(d, w1, a11);
                                a00 = tinyc_s8_smlabb(d, wb, a00);
                                a01 = tinyc_s8_smlatb(e, wb, a01);
                                a10 = tinyc_s8_smlabt(d, wm, a10);
                                a11 = tinyc_s8_smlatt(e, wm, a11);
                                v = tinyc_s8_ld32(r0 + 3 * pw);
                                e = tinyc_s8_sxtb16(v);
                                d = tinyc_s8_sxtb16_ror8(v);
                                a10 = tinyc_s8_smlad(e, w2, a10);
                                a11 = tinyc_s8_smlad(d, w2, a11);
                                a10 = tinyc_s8_smlabb(d, wb, a10);
                                a11 = tinyc_s8_smlatb(e, wb, a11);
                                yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a00, rq, mode, zy, lo, hi));
                                yr[ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a01, rq, mode, zy, lo, hi));
                                yr[ys_h] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a10, rq, mode, zy, lo, hi));
                                yr[ys_h + ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a11, rq, mode, zy, lo, hi));
                            }
                            if (ox < ow) {
                                const int8_t *c0 = plane + oy * pw + ox;
                                int32_t a0 = bias, a1 = bias, r;
                                for (r = 0; r < 4; ++r) {
                                    const uint32_t v = tinyc_s8_ld32(c0 + r * pw);
                                    const int32_t e = tinyc_s8_sxtb16(v), d = tinyc_s8_sxtb16_ror8(v);
                                    if (r < 3) {
                                        a0 = tinyc_s8_smlad(e, r == 0 ? w0 : r == 1 ? w1 : w2, a0);
                                        a0 = r == 0 ? tinyc_s8_smlabb(d, wm, a0) : r == 1 ? tinyc_s8_smlabt(d, wm, a0)
                                                                                       : tinyc_s8_smlabb(d, wb, a0);
                                    }
                                    if (r > 0) {
                                        a1 = tinyc_s8_smlad(e, r == 1 ? w0 : r == 2 ? w1 : w2, a1);
                                        a1 = r == 1 ? tinyc_s8_smlabb(d, wm, a1) : r == 2 ? tinyc_s8_smlabt(d, wm, a1)
                                                                                       : tinyc_s8_smlabb(d, wb, a1);
                                    }
                                }
                                yo[oy * ys_h + ox * ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
                                yo[(oy + 1) * ys_h + ox * ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, rq, mode, zy, lo, hi));
                            }
                        }
                    }
                    for (; oy < oh; ++oy) {
                        const int8_t *r0 = plane + oy * sh * pw, *r1 = r0 + pw, *r2 = r1 + pw;
                        int8_t *yr = yo + oy * ys_h;
                        ox = 0;
                        if (variant == 2) {
                            /* stride 2 across: outputs ox, ox + 1 read x0..x4 of each row: words A = x0..3,
                             * B = x4..7; out0 = (x0,x2).(w0,w2) + x1 w1, out1 = x2 w0 + x3 w1 + x4 w2 */
                            for (; ox + 1 < ow; ox += 2, r0 += 4, r1 += 4, r2 += 4, yr += 2 * ys_w) {
                                uint32_t va = tinyc_s8_ld32(r0), vb = tinyc_s8_ld32(r0 + 4);
                                int32_t e = tinyc_s8_sxtb16(va), d = tinyc_s8_sxtb16_ror8(va);
                                int32_t a0 = tinyc_s8_smlad(e, w0, bias), a1 = tinyc_s8_smlatb(e, w0, bias);
                                a0 = tinyc_s8_smlabb(d, wm, a0);
                                a1 = tinyc_s8_smlatb(d, wm, a1);
                                a1 = tinyc_s8_smlabt(tinyc_s8_sxtb16(vb), w0, a1);
                                va = tinyc_s8_ld32(r1);
                                vb = tinyc_s8_ld32(r1 + 4);
                                e = tinyc_s8_sxtb16(va);
                                d = tinyc_s8_sxtb16_ror8(va);
                                a0 = tinyc_s8_smlad(e, w1, a0);
                                a1 = tinyc_s8_smlatb(e, w1, a1);
                                a0 = tinyc_s8_smlabt(d, wm, a0);
                                a1 = tinyc_s8_smlatt(d, wm, a1);
                                a1 = tinyc_s8_smlabt(tinyc_s8_sxtb16(vb), w1, a1);
                                va = tinyc_s8_ld32(r2);
                                vb = tinyc_s8_ld32(r2 + 4);
                                e = tinyc_s8_sxtb16(va);
                                d = tinyc_s8_sxtb16_ror8(va);
                                a0 = tinyc_s8_smlad(e, w2, a0);
                                a1 = tinyc_s8_smlatb(e, w2, a1);
                                a0 = tinyc_s8_smlabb(d, wb, a0);
                                a1 = tinyc_s8_smlatb(d, wb, a1);
                                a1 = tinyc_s8_smlabt(tinyc_s8_sxtb16(vb), w2, a1);
                                yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
                                yr[ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, rq, mode, zy, lo, hi));
                            }
                        } else {
                            for (ox = 0; ox + 1 < ow; ox += 2, r0 += 2, r1 += 2, r2 += 2, yr += 2 * ys_w) {
                                uint32_t v = tinyc_s8_ld32(r0);
                                int32_t e = tinyc_s8_sxtb16(v), d = tinyc_s8_sxtb16_ror8(v);
                                int32_t a0 = tinyc_s8_smlad(e, w0, bias), a1 = tinyc_s8_smlad(d, w0, bias);
                                a0 = tinyc_s8_smlabb(d, wm, a0);
                                a1 = tinyc_s8_smlatb(e, wm, a1);
                                v = tinyc_s8_ld32(r1);
                                e = tinyc_s8_sxtb16(v);
                                d = tinyc_s8_sxtb16_ror8(v);
                                a0 = tinyc_s8_smlad(e, w1, a0);
                                a1 = tinyc_s8_smlad(d, w1, a1);
                                a0 = tinyc_s8_smlabt(d, wm, a0);
                                a1 = tinyc_s8_smlatt(e, wm, a1);
                                v = tinyc_s8_ld32(r2);
                                e = tinyc_s8_sxtb16(v);
                                d = tinyc_s8_sxtb16_ror8(v);
                                a0 = tinyc_s8_smlad(e, w2, a0);
                                a1 = tinyc_s8_smlad(d, w2, a1);
                                a0 = tinyc_s8_smlabb(d, wb, a0);
                                a1 = tinyc_s8_smlatb(e, wb, a1);
                                yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
                                yr[ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, rq, mode, zy, lo, hi));
                            }
                        }
                        for (; ox < ow; ++ox, r0 += sw, r1 += sw, r2 += sw, yr += ys_w) {
                            uint32_t v = tinyc_s8_ld32(r0);
                            int32_t a0 = tinyc_s8_smlad(tinyc_s8_sxtb16(v), w0, bias);
                            a0 = tinyc_s8_smlabb(tinyc_s8_sxtb16_ror8(v), wm, a0);
                            v = tinyc_s8_ld32(r1);
                            a0 = tinyc_s8_smlad(tinyc_s8_sxtb16(v), w1, a0);
                            a0 = tinyc_s8_smlabt(tinyc_s8_sxtb16_ror8(v), wm, a0);
                            v = tinyc_s8_ld32(r2);
                            a0 = tinyc_s8_smlad(tinyc_s8_sxtb16(v), w2, a0);
                            a0 = tinyc_s8_smlabb(tinyc_s8_sxtb16_ror8(v), wb, a0);
                            yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, rq, mode, zy, lo, hi));
                        }
                    }
                } else if (variant == 4) {
                    tinyc_s8_dw_taps(plane, (const tinyc_s8_word *)wt + o * kh * TINYC_S8_DW_ROW_WORDS(kw), q[0],
                                     rq, yo, oh, ow, kh, kw, sh, sw, pw, ys_h, ys_w, mode, zy, lo, hi, tab);
                } else {
                    const int8_t *wo = (const int8_t *)wt + o * kh * kw;
                    int32_t ky, kx;
                    for (oy = 0; oy < oh; ++oy) {
                        for (ox = 0; ox < ow; ++ox) {
                            const int8_t *base = plane + oy * sh * pw + ox * sw;
                            int32_t acc = q[0];
                            for (ky = 0; ky < kh; ++ky)
                                for (kx = 0; kx < kw; ++kx)
                                    acc += base[ky * dh * pw + kx * dw] * wo[ky * kw + kx];
                            yo[oy * ys_h + ox * ys_w] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(acc, rq, mode, zy, lo, hi));
                        }
                    }
                }
            }
        }
    }
}
#endif

#ifdef TINYC_S8_FC
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32) &&  \
    defined(__OPTIMIZE__)
/* One 4-k chunk of two output rows: their weight words (one LDRD), 4 SXTB16 and 4 SMLAD. */
#define TINYC_S8_FC_ROWS(A, B)                                                                      \
    "ldrd %[u0], %[u1], [%[w]], #8\n\t"                                                              \
    "sxtb16 %[t], %[u0]\n\t"                                                                        \
    "smlad %[" #A "], %[xe], %[t], %[" #A "]\n\t"                                                  \
    "sxtb16 %[u0], %[u0], ror #8\n\t"                                                               \
    "smlad %[" #A "], %[xo], %[u0], %[" #A "]\n\t"                                                 \
    "sxtb16 %[t], %[u1]\n\t"                                                                        \
    "smlad %[" #B "], %[xe], %[t], %[" #B "]\n\t"                                                  \
    "sxtb16 %[u1], %[u1], ror #8\n\t"                                                               \
    "smlad %[" #B "], %[xo], %[u1], %[" #B "]\n\t"
/* The chunk's x pair, expanded once per row (tinyc_s8_expand): one LDRD. */
#define TINYC_S8_FC_X "ldrd %[xe], %[xo], [%[x]], #8\n\t"
#define TINYC_S8_FC_CHUNK TINYC_S8_FC_X TINYC_S8_FC_ROWS(a0, a1) TINYC_S8_FC_ROWS(a2, a3)
/* Six rows (13 registers): 28 instructions for 24 MACs. */
#define TINYC_S8_FC_CHUNK6 TINYC_S8_FC_CHUNK TINYC_S8_FC_ROWS(a4, a5)
#define TINYC_S8_FC_CHUNK2 TINYC_S8_FC_X TINYC_S8_FC_ROWS(a0, a1)
#define TINYC_S8_FC_OPS2                                                                            \
    [a0] "+r"(a0), [a1] "+r"(a1), [x] "+r"(xp), [w] "+r"(wp), [xe] "=&r"(xe), [xo] "=&r"(xo), [u0] "=&r"(u0), \
        [u1] "=&r"(u1), [t] "=&r"(t)
#define TINYC_S8_FC_OPS4 TINYC_S8_FC_OPS2, [a2] "+r"(a2), [a3] "+r"(a3)
#define TINYC_S8_FC_OPS6 TINYC_S8_FC_OPS4, [a4] "+r"(a4), [a5] "+r"(a5)
/* A block over all chunks: four per loop trip (the end read from the stack), then two and one
 * straight-line chunks. */
#define TINYC_S8_FC_BLOCK(CHUNK, OPS)                                                               \
    do {                                                                                            \
        const tinyc_s8_word *xp = xw, *volatile xend = xw + 2 * (chunks & ~3);                      \
        int32_t xe, xo, u0, u1, t;                                                                  \
        if (chunks >= 4)                                                                            \
            __asm__ volatile("1:\n\t" CHUNK CHUNK CHUNK CHUNK                                        \
                             "ldr %[t], %[end]\n\t"                                                 \
                             "cmp %[x], %[t]\n\t"                                                   \
                             "bne 1b\n\t"                                                           \
                             : OPS                                                                  \
                             : [end] "m"(xend)                                                      \
                             : "cc", "memory");                                                     \
        if (chunks & 2) __asm__ volatile(CHUNK CHUNK : OPS : : "memory");                           \
        if (chunks & 1) __asm__ volatile(CHUNK : OPS : : "memory");                                 \
    } while (0)
#define TINYC_S8_FC_ASM 1
#else
#define TINYC_S8_FC_ASM 0
#endif

/* acc += the expanded x pairs (xw) . one row's weight words (wp, every `step` words), n chunks. */
TINYC_S8_INLINE int32_t tinyc_s8_fc_dot(const tinyc_s8_word *xw, const tinyc_s8_word *wp, int32_t step, int32_t n,
                                        int32_t acc)
{
    int32_t j;
    for (j = 0; j < n; ++j, xw += 2, wp += step) {
        const uint32_t u = (uint32_t)*wp;
        acc = tinyc_s8_smlad(xw[0], tinyc_s8_sxtb16(u), acc);
        acc = tinyc_s8_smlad(xw[1], tinyc_s8_sxtb16_ror8(u), acc);
    }
    return acc;
}

/* Fully connected: y[r, j] = out(b[j] + sum_k x[r, k] w[j, k]). Weights in blocks of six
 * output rows interleaved per 4-k chunk (one pointer walks them), then of the N % 6 rest a block
 * of four, a block of two and a single row, each if it fits (int8_weights.fc_interleave); rows padded
 * to kp. Each x row is first expanded into `scratch` (kp / 4 chunks of 2 words: the even and odd
 * int16 pairs, tinyc_s8_expand), read in place when contiguous (direct; the compiler permuted the
 * weight columns to the physical order), else gathered after the expansion's words and zero
 * padded. The expansion costs 2 kp bytes and ~kp / 2 instructions per row and saves 2 SXTB16 per
 * chunk of every block. */
TINYC_S8_INLINE void tinyc_s8_fc(const int8_t *x, const tinyc_s8_word *wt, const int32_t *qp, int8_t *y,
                                 int8_t *scratch, const int8_t *tab, int32_t rows, int32_t k, int32_t kp, int32_t nout,
                                 int32_t xs_r, int32_t xs_k, int32_t ys_r, int32_t ys_n, int32_t direct,
                                 int32_t mode, int32_t zy, int32_t lo, int32_t hi)
{
    const int32_t qs = mode == 0 ? TINYC_S8_Q_FAST : TINYC_S8_Q_GENERIC, chunks = kp / 4, nb6 = nout / 6;
    const int32_t nb4 = (nout % 6) / 4, nb2 = (nout % 6) % 4 / 2;
    tinyc_s8_word *const xw = (tinyc_s8_word *)(void *)scratch;
    int8_t *const gather = scratch + 2 * kp;
    int32_t r, b, i;
    if (!direct && kp > k) memset(gather + k, 0, (size_t)(kp - k));
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * xs_r;
        const tinyc_s8_word *wp = wt;
        const int32_t *q = qp;
        int8_t *yr = y + r * ys_r;
        if (!direct) {
            for (i = 0; i < k; ++i) gather[i] = xr[i * xs_k];
            xr = gather;
        }
        tinyc_s8_expand(xr, xw, chunks, 2);
        for (b = 0; b < nb6; ++b, q += 6 * qs, yr += 6 * ys_n) {
            int32_t a0 = q[0], a1 = q[qs], a2 = q[2 * qs], a3 = q[3 * qs], a4 = q[4 * qs], a5 = q[5 * qs];
#if TINYC_S8_FC_ASM
            TINYC_S8_FC_BLOCK(TINYC_S8_FC_CHUNK6, TINYC_S8_FC_OPS6);
#else
            a0 = tinyc_s8_fc_dot(xw, wp, 6, chunks, a0);
            a1 = tinyc_s8_fc_dot(xw, wp + 1, 6, chunks, a1);
            a2 = tinyc_s8_fc_dot(xw, wp + 2, 6, chunks, a2);
            a3 = tinyc_s8_fc_dot(xw, wp + 3, 6, chunks, a3);
            a4 = tinyc_s8_fc_dot(xw, wp + 4, 6, chunks, a4);
            a5 = tinyc_s8_fc_dot(xw, wp + 5, 6, chunks, a5);
            wp += 6 * chunks;
#endif
            {
                const tinyc_s8_rq r0 = tinyc_s8_rec(q, mode), r1 = tinyc_s8_rec(q + qs, mode);
                const tinyc_s8_rq r2 = tinyc_s8_rec(q + 2 * qs, mode), r3 = tinyc_s8_rec(q + 3 * qs, mode);
                const tinyc_s8_rq r4 = tinyc_s8_rec(q + 4 * qs, mode), r5 = tinyc_s8_rec(q + 5 * qs, mode);
                yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, r0, mode, zy, lo, hi));
                yr[ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, r1, mode, zy, lo, hi));
                yr[2 * ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a2, r2, mode, zy, lo, hi));
                yr[3 * ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a3, r3, mode, zy, lo, hi));
                yr[4 * ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a4, r4, mode, zy, lo, hi));
                yr[5 * ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a5, r5, mode, zy, lo, hi));
            }
        }
        for (b = 0; b < nb4; ++b, q += 4 * qs, yr += 4 * ys_n) {
            int32_t a0 = q[0], a1 = q[qs], a2 = q[2 * qs], a3 = q[3 * qs];
#if TINYC_S8_FC_ASM
            TINYC_S8_FC_BLOCK(TINYC_S8_FC_CHUNK, TINYC_S8_FC_OPS4);
#else
            a0 = tinyc_s8_fc_dot(xw, wp, 4, chunks, a0);
            a1 = tinyc_s8_fc_dot(xw, wp + 1, 4, chunks, a1);
            a2 = tinyc_s8_fc_dot(xw, wp + 2, 4, chunks, a2);
            a3 = tinyc_s8_fc_dot(xw, wp + 3, 4, chunks, a3);
            wp += 4 * chunks;
#endif
            {
                const tinyc_s8_rq r0 = tinyc_s8_rec(q, mode), r1 = tinyc_s8_rec(q + qs, mode);
                const tinyc_s8_rq r2 = tinyc_s8_rec(q + 2 * qs, mode), r3 = tinyc_s8_rec(q + 3 * qs, mode);
                yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, r0, mode, zy, lo, hi));
                yr[ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, r1, mode, zy, lo, hi));
                yr[2 * ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a2, r2, mode, zy, lo, hi));
                yr[3 * ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a3, r3, mode, zy, lo, hi));
            }
        }
        for (b = 0; b < nb2; ++b, q += 2 * qs, yr += 2 * ys_n) {
            int32_t a0 = q[0], a1 = q[qs];
#if TINYC_S8_FC_ASM
            TINYC_S8_FC_BLOCK(TINYC_S8_FC_CHUNK2, TINYC_S8_FC_OPS2);
#else
            a0 = tinyc_s8_fc_dot(xw, wp, 2, chunks, a0);
            a1 = tinyc_s8_fc_dot(xw, wp + 1, 2, chunks, a1);
            wp += 2 * chunks;
#endif
            {
                const tinyc_s8_rq r0 = tinyc_s8_rec(q, mode), r1 = tinyc_s8_rec(q + qs, mode);
                yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a0, r0, mode, zy, lo, hi));
                yr[ys_n] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_outr(a1, r1, mode, zy, lo, hi));
            }
        }
        for (b = nb6 * 6 + nb4 * 4 + nb2 * 2; b < nout; ++b, q += qs, yr += ys_n, wp += chunks) {
            const int32_t a0 = tinyc_s8_fc_dot(xw, wp, 1, chunks, q[0]);
            yr[0] = (int8_t)TINYC_S8_EPI(tab, tinyc_s8_out(a0, q, mode, zy, lo, hi));
        }
    }
}
#endif

/* ---- pooling and reductions ------------------------------------------------------ */

#if defined(TINYC_S8_MAX_POOL2D) || defined(TINYC_S8_AVG_POOL2D)
/* First tap k with start + k * dil >= 0, and one past the last with start + k * dil < size. */
TINYC_S8_INLINE int32_t tinyc_s8_tap_lo(int32_t start, int32_t dil)
{
    return start >= 0 ? 0 : (-start + dil - 1) / dil;
}

TINYC_S8_INLINE int32_t tinyc_s8_tap_hi(int32_t start, int32_t dil, int32_t size, int32_t taps)
{
    int32_t hi;
    if (start >= size) return 0;
    hi = (size - start + dil - 1) / dil;
    return hi < taps ? hi : taps;
}
#endif

#ifdef TINYC_S8_MAX_POOL2D
/* Bytewise signed max of two words of 4 int8 (SSUB8 sets a GE flag per byte where a >= b, SEL picks). */
TINYC_S8_INLINE uint32_t tinyc_s8_max4(uint32_t a, uint32_t b)
{
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
    uint32_t d, m;
    __asm__("ssub8 %0, %2, %3\n\tsel %1, %2, %3" : "=&r"(d), "=r"(m) : "r"(a), "r"(b) : "cc");
    (void)d;
    return m;
#else
    uint32_t m = 0;
    int32_t k;
    for (k = 0; k < 32; k += 8) {
        const int32_t va = (int8_t)(uint8_t)(a >> k), vb = (int8_t)(uint8_t)(b >> k);
        m |= (uint32_t)(uint8_t)(va > vb ? va : vb) << k;
    }
    return m;
#endif
}

static void tinyc_s8_max_pool2d(const int8_t *x, int8_t *y, const tinyc_s8_pool_params *p)
{
    int32_t n, c, oy, ox, ky, kx;
    if (p->xs[1] == 1 && p->ys[1] == 1 && (p->c & 3) == 0) {
        /* channels-last operand and result: 4 channels per word, one SSUB8 + SEL per tap */
        for (n = 0; n < p->n; ++n) {
            for (oy = 0; oy < p->oh; ++oy) {
                const int32_t iy0 = oy * p->sh - p->pad_top;
                const int32_t ky0 = tinyc_s8_tap_lo(iy0, p->dh), ky1 = tinyc_s8_tap_hi(iy0, p->dh, p->h, p->kh);
                for (ox = 0; ox < p->ow; ++ox) {
                    const int32_t ix0 = ox * p->sw - p->pad_left;
                    const int32_t kx0 = tinyc_s8_tap_lo(ix0, p->dw), kx1 = tinyc_s8_tap_hi(ix0, p->dw, p->w, p->kw);
                    const int8_t *xp = x + n * p->xs[0] + (iy0 + ky0 * p->dh) * p->xs[2] + (ix0 + kx0 * p->dw) * p->xs[3];
                    int8_t *yp = y + n * p->ys[0] + oy * p->ys[2] + ox * p->ys[3];
                    for (c = 0; c < p->c; c += 4) {
                        uint32_t m = 0x80808080u;
                        for (ky = ky0; ky < ky1; ++ky) {
                            const int8_t *xr = xp + c + (ky - ky0) * p->dh * p->xs[2];
                            for (kx = kx0; kx < kx1; ++kx, xr += p->dw * p->xs[3]) m = tinyc_s8_max4(tinyc_s8_ld32(xr), m);
                        }
                        memcpy(yp + c, &m, 4);
                    }
                }
            }
        }
        return;
    }
    for (n = 0; n < p->n; ++n) {
        for (c = 0; c < p->c; ++c) {
            const int8_t *xc = x + n * p->xs[0] + c * p->xs[1];
            int8_t *yc = y + n * p->ys[0] + c * p->ys[1];
            for (oy = 0; oy < p->oh; ++oy) {
                const int32_t iy0 = oy * p->sh - p->pad_top;
                const int32_t ky0 = tinyc_s8_tap_lo(iy0, p->dh), ky1 = tinyc_s8_tap_hi(iy0, p->dh, p->h, p->kh);
                for (ox = 0; ox < p->ow; ++ox) {
                    const int32_t ix0 = ox * p->sw - p->pad_left;
                    const int32_t kx0 = tinyc_s8_tap_lo(ix0, p->dw), kx1 = tinyc_s8_tap_hi(ix0, p->dw, p->w, p->kw);
                    int32_t m = -128;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int8_t *xr = xc + (iy0 + ky * p->dh) * p->xs[2];
                        for (kx = kx0; kx < kx1; ++kx) {
                            const int32_t v = xr[(ix0 + kx * p->dw) * p->xs[3]];
                            if (v > m) m = v;
                        }
                    }
                    yc[oy * p->ys[2] + ox * p->ys[3]] = (int8_t)m;
                }
            }
        }
    }
}
#endif

#if defined(TINYC_S8_AVG_POOL2D) || defined(TINYC_S8_MEAN)
/* s[0..3] += the sums of 4 consecutive channels over `len` pixels `stride` bytes apart (a
 * channels-last global pool): 1 word load and 2 SXTAB16 per 4 elements, the sums in 16-bit lanes
 * flushed every 256 pixels (|sum| <= 128 * 256 fits a lane). */
TINYC_S8_INLINE void tinyc_s8_sum4(const int8_t *x, int32_t len, int32_t stride, int32_t *s)
{
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
    while (len > 0) {
        const int32_t run = len < 256 ? len : 256;
        int32_t i, l02 = 0, l13 = 0;
        for (i = 0; i < run; ++i, x += stride) {
            const uint32_t v = tinyc_s8_ld32(x);
            __asm__("sxtab16 %0, %0, %1" : "+r"(l02) : "r"(v));
            __asm__("sxtab16 %0, %0, %1, ror #8" : "+r"(l13) : "r"(v));
        }
        s[0] += (int16_t)(l02 & 0xFFFF);
        s[1] += (int16_t)(l13 & 0xFFFF);
        s[2] += l02 >> 16;
        s[3] += l13 >> 16;
        len -= run;
    }
#else
    int32_t i;
    for (i = 0; i < len; ++i, x += stride) {
        s[0] += x[0];
        s[1] += x[1];
        s[2] += x[2];
        s[3] += x[3];
    }
#endif
}
#endif

#ifdef TINYC_S8_AVG_POOL2D
/* PyTorch's divisor along one axis (the window clipped to the padded input, or to the input). */
TINYC_S8_INLINE int32_t tinyc_s8_avg_count(int32_t o, int32_t s, int32_t pad0, int32_t pad1, int32_t k,
                                           int32_t size, int32_t include_pad)
{
    const int32_t start = o * s - pad0;
    int32_t end = start + k;
    if (end > size + pad1) end = size + pad1;
    if (include_pad) return end - start;
    return (end < size ? end : size) - (start > 0 ? start : 0);
}

static void tinyc_s8_avg_pool2d(const int8_t *x, int8_t *y, const tinyc_s8_pool_params *p)
{
    int32_t n, c, oy, ox, ky, kx;
    if (p->oh == 1 && p->ow == 1 && p->kh >= p->pad_top + p->h && p->kw >= p->pad_left + p->w && p->xs[1] == 1 &&
        p->xs[2] == p->w * p->xs[3] && (p->c & 3) == 0) {
        /* a global pool over a channels-last input: 4 channels at a time */
        const int32_t d = tinyc_s8_avg_count(0, p->sh, p->pad_top, p->pad_bottom, p->kh, p->h, p->count_include_pad) *
                          tinyc_s8_avg_count(0, p->sw, p->pad_left, p->pad_right, p->kw, p->w, p->count_include_pad);
        const int32_t len = p->h * p->w, off = p->h * p->w * p->zx;
        for (n = 0; n < p->n; ++n) {
            for (c = 0; c < p->c; c += 4) {
                int32_t s[4] = {0, 0, 0, 0}, j;
                tinyc_s8_sum4(x + n * p->xs[0] + c, len, p->xs[3], s);
                for (j = 0; j < 4; ++j)
                    y[n * p->ys[0] + (c + j) * p->ys[1]] =
                        (int8_t)tinyc_s8_ssat8(p->zx + tinyc_s8_div_round(s[j] - off, d));
            }
        }
        return;
    }
    for (n = 0; n < p->n; ++n) {
        for (c = 0; c < p->c; ++c) {
            const int8_t *xc = x + n * p->xs[0] + c * p->xs[1];
            int8_t *yc = y + n * p->ys[0] + c * p->ys[1];
            for (oy = 0; oy < p->oh; ++oy) {
                const int32_t iy0 = oy * p->sh - p->pad_top;
                const int32_t ky0 = tinyc_s8_tap_lo(iy0, 1), ky1 = tinyc_s8_tap_hi(iy0, 1, p->h, p->kh);
                const int32_t dy = tinyc_s8_avg_count(oy, p->sh, p->pad_top, p->pad_bottom, p->kh, p->h,
                                                      p->count_include_pad);
                for (ox = 0; ox < p->ow; ++ox) {
                    const int32_t ix0 = ox * p->sw - p->pad_left;
                    const int32_t kx0 = tinyc_s8_tap_lo(ix0, 1), kx1 = tinyc_s8_tap_hi(ix0, 1, p->w, p->kw);
                    const int32_t dx = tinyc_s8_avg_count(ox, p->sw, p->pad_left, p->pad_right, p->kw, p->w,
                                                          p->count_include_pad);
                    int32_t sum = 0, cnt = 0;
                    if (ix0 + kx0 == 0 && ix0 + kx1 == p->w && p->xs[2] == p->w * p->xs[3]) {
                        /* whole rows, evenly spaced (a global pool): one strided run */
                        const int8_t *xr = xc + (iy0 + ky0) * p->xs[2];
                        const int32_t s3 = p->xs[3], len = (ky1 - ky0) * p->w;
                        int32_t i;
                        for (i = 0; i < len; ++i, xr += s3) sum += *xr;
                        cnt = len;
                    } else {
                        for (ky = ky0; ky < ky1; ++ky) {
                            const int8_t *xr = xc + (iy0 + ky) * p->xs[2];
                            for (kx = kx0; kx < kx1; ++kx) sum += xr[(ix0 + kx) * p->xs[3]];
                            cnt += kx1 - kx0;
                        }
                    }
                    sum -= cnt * p->zx;
                    yc[oy * p->ys[2] + ox * p->ys[3]] =
                        (int8_t)tinyc_s8_ssat8(p->zx + tinyc_s8_div_round(sum, dy * dx));
                }
            }
        }
    }
}
#endif

#ifdef TINYC_S8_MEAN
static void tinyc_s8_mean(const int8_t *x, int8_t *y, const tinyc_s8_mean_params *p)
{
    int32_t oidx[TINYC_S8_MAX_RANK] = {0};
    const int32_t orows = tinyc_s8_rows(&p->out) * p->out.dims[p->out.rank - 1];
    const int32_t rrows = tinyc_s8_rows(&p->red), rl = p->red.rank - 1, rlen = p->red.dims[rl];
    int32_t r, i, j, d, o0, o1;
    if (p->out.s1[p->out.rank - 1] == 1 && (p->out.dims[p->out.rank - 1] & 3) == 0) {
        /* the kept last dim is contiguous in x (channels-last pooling): 4 outputs at a time */
        const int32_t ol = p->out.rank - 1, count = rrows * rlen;
        for (r = 0; r < orows; r += 4) {
            int32_t ridx[TINYC_S8_MAX_RANK] = {0}, s[4] = {0, 0, 0, 0};
            o0 = o1 = 0;
            for (d = 0; d < p->out.rank; ++d) {
                o0 += oidx[d] * p->out.s0[d];
                o1 += oidx[d] * p->out.s1[d];
            }
            for (i = 0; i < rrows; ++i) {
                int32_t off = o1;
                for (d = 0; d < rl; ++d) off += ridx[d] * p->red.s1[d];
                tinyc_s8_sum4(x + off, rlen, p->red.s1[rl], s);
                tinyc_s8_next(rl, p->red.dims, ridx);
            }
            for (j = 0; j < 4; ++j)
                y[o0 + j * p->out.s0[ol]] = (int8_t)tinyc_s8_rq64(s[j] - count * p->zx, p->m, p->n, p->zy);
            oidx[ol] += 3;
            tinyc_s8_next(p->out.rank, p->out.dims, oidx);
        }
        return;
    }
    for (r = 0; r < orows; ++r) {
        int32_t ridx[TINYC_S8_MAX_RANK] = {0};
        int32_t acc = 0, count = 0;
        o0 = o1 = 0;
        for (d = 0; d < p->out.rank; ++d) {
            o0 += oidx[d] * p->out.s0[d];
            o1 += oidx[d] * p->out.s1[d];
        }
        for (i = 0; i < rrows; ++i) {
            int32_t off = o1;
            for (d = 0; d < rl; ++d) off += ridx[d] * p->red.s1[d];
            j = 0;
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
            if (p->red.s1[rl] == 1) {
                /* a contiguous run: 4 bytes per word into two 16-bit lanes, flushed every 128 words */
                while (j + 4 <= rlen) {
                    int32_t lanes = 0, k;
                    for (k = 0; k < 128 && j + 4 <= rlen; ++k, j += 4, off += 4) {
                        const uint32_t v = tinyc_s8_ld32(x + off);
                        __asm__("sxtab16 %0, %0, %1" : "+r"(lanes) : "r"(v));
                        __asm__("sxtab16 %0, %0, %1, ror #8" : "+r"(lanes) : "r"(v));
                    }
                    acc += (int16_t)(lanes & 0xFFFF) + (lanes >> 16);
                }
            }
#endif
            for (; j < rlen; ++j, off += p->red.s1[rl]) acc += x[off];
            count += rlen;
            tinyc_s8_next(rl, p->red.dims, ridx);
        }
        y[o0] = (int8_t)tinyc_s8_rq64(acc - count * p->zx, p->m, p->n, p->zy);
        tinyc_s8_next(p->out.rank, p->out.dims, oidx);
    }
}
#endif

#ifdef TINYC_S8_SOFTMAX
/* e_i = table[max - q_i]; y_i = clamp(div_round(256 e_i, sum e) - 128). */
static void tinyc_s8_softmax(const int8_t *x, int8_t *y, const int32_t *table, const tinyc_s8_softmax_params *p)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(&p->outer) * p->outer.dims[p->outer.rank - 1];
    int32_t r, i, d, o0, o1;
    for (r = 0; r < rows; ++r) {
        int32_t mx = -128, sum = 0;
        o0 = o1 = 0;
        for (d = 0; d < p->outer.rank; ++d) {
            o0 += idx[d] * p->outer.s0[d];
            o1 += idx[d] * p->outer.s1[d];
        }
        for (i = 0; i < p->len; ++i) if (x[o1 + i * p->xs] > mx) mx = x[o1 + i * p->xs];
        for (i = 0; i < p->len; ++i) sum += table[mx - x[o1 + i * p->xs]];
        for (i = 0; i < p->len; ++i) {
            const int32_t e = table[mx - x[o1 + i * p->xs]];
            y[o0 + i * p->ys] = (int8_t)tinyc_s8_ssat8(tinyc_s8_div_round(e * 256, sum) - 128);
        }
        tinyc_s8_next(p->outer.rank, p->outer.dims, idx);
    }
}
#endif

#ifdef TINYC_S8_MATMUL
/* Two int16 values in one word: lo in the low half. */
TINYC_S8_INLINE int32_t tinyc_s8_pair16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}

/* y[i, j] = out(sum_l (a[i, l] - za) (b[l, j] - zb)) for every batch of `batch` (s0: y, s1: a,
 * s2: b offsets; docs/quantization.md). The zero points are subtracted once per element while
 * packing, not per MAC: the operands go to scratch as int16 pairs along k (k padded to an even kp
 * with zeros): b as a panel of column pairs (per k pair, the words of columns j and j+1), a one row
 * pair at a time (per k pair, the words of rows i and i+1), so one LDRD of each feeds four SMLADs
 * (a 2x2 output block). A batch whose b is the previous batch's (broadcast) reuses the panel. Odd
 * m or n: the last pair's second row or column is zeros and is not stored. The output stage is
 * the record {0, q1, q2, q3, q4} in `mode`. Scratch: 8 * ceil(k/2) * (ceil(n/2) + 1) bytes. Called
 * through per-shape wrappers: every int argument is a literal. */
TINYC_S8_INLINE void tinyc_s8_matmul(const int8_t *a, const int8_t *b, int8_t *y, int8_t *scratch,
                                     const tinyc_s8_iter *batch, int32_t m, int32_t k, int32_t n, int32_t as_m,
                                     int32_t as_k, int32_t bs_k, int32_t bs_n, int32_t ys_m, int32_t ys_n, int32_t za,
                                     int32_t zb, int32_t zy, int32_t lo, int32_t hi, int32_t mode, int32_t q1,
                                     int32_t q2, int32_t q3, int32_t q4)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t nbatch = tinyc_s8_rows(batch) * batch->dims[batch->rank - 1];
    const int32_t kc = (k + 1) / 2, k2 = k / 2;
    const int32_t rec[6] = {0, q1, q2, q3, q4, 0};
    const tinyc_s8_rq rq = tinyc_s8_rec(rec, mode);
    tinyc_s8_word *panel = (tinyc_s8_word *)(void *)scratch;
    tinyc_s8_word *rows = panel + 2 * kc * ((n + 1) / 2);
    int32_t t, i, j, c, last = -1;
    for (t = 0; t < nbatch; ++t) {
        int32_t oy = 0, oa = 0, ob = 0;
        for (c = 0; c < batch->rank; ++c) {
            oy += idx[c] * batch->s0[c];
            oa += idx[c] * batch->s1[c];
            ob += idx[c] * batch->s2[c];
        }
        if (ob != last) {
            tinyc_s8_word *w = panel;
            for (j = 0; j < n; j += 2) {
                const int8_t *b0 = b + ob + j * bs_n, *b1 = b0 + bs_n;
                const int32_t two = j + 1 < n;
                for (c = 0; c < k2; ++c, w += 2, b0 += 2 * bs_k, b1 += 2 * bs_k) {
                    w[0] = tinyc_s8_pair16(b0[0] - zb, b0[bs_k] - zb);
                    w[1] = two ? tinyc_s8_pair16(b1[0] - zb, b1[bs_k] - zb) : 0;
                }
                if (k & 1) {
                    w[0] = tinyc_s8_pair16(b0[0] - zb, 0);
                    w[1] = two ? tinyc_s8_pair16(b1[0] - zb, 0) : 0;
                    w += 2;
                }
            }
            last = ob;
        }
        for (i = 0; i < m; i += 2) {
            const int8_t *a0 = a + oa + i * as_m, *a1 = a0 + as_m;
            const int32_t two = i + 1 < m;
            const tinyc_s8_word *pw = panel;
            tinyc_s8_word *w = rows;
            int8_t *y0 = y + oy + i * ys_m;
            for (c = 0; c < k2; ++c, w += 2, a0 += 2 * as_k, a1 += 2 * as_k) {
                w[0] = tinyc_s8_pair16(a0[0] - za, a0[as_k] - za);
                w[1] = two ? tinyc_s8_pair16(a1[0] - za, a1[as_k] - za) : 0;
            }
            if (k & 1) {
                w[0] = tinyc_s8_pair16(a0[0] - za, 0);
                w[1] = two ? tinyc_s8_pair16(a1[0] - za, 0) : 0;
            }
            for (j = 0; j < n; j += 2, y0 += 2 * ys_n) {
                const tinyc_s8_word *rw = rows;
                int32_t c00 = 0, c01 = 0, c10 = 0, c11 = 0;
                for (c = 0; c < kc; ++c, rw += 2, pw += 2) {
                    int32_t r0, r1, s0, s1;
                    TINYC_S8_LD2(rw, 0, r0, r1);
                    TINYC_S8_LD2(pw, 0, s0, s1);
                    c00 = tinyc_s8_smlad(r0, s0, c00);
                    c01 = tinyc_s8_smlad(r0, s1, c01);
                    c10 = tinyc_s8_smlad(r1, s0, c10);
                    c11 = tinyc_s8_smlad(r1, s1, c11);
                }
                y0[0] = (int8_t)tinyc_s8_outr(c00, rq, mode, zy, lo, hi);
                if (j + 1 < n) y0[ys_n] = (int8_t)tinyc_s8_outr(c01, rq, mode, zy, lo, hi);
                if (two) {
                    y0[ys_m] = (int8_t)tinyc_s8_outr(c10, rq, mode, zy, lo, hi);
                    if (j + 1 < n) y0[ys_m + ys_n] = (int8_t)tinyc_s8_outr(c11, rq, mode, zy, lo, hi);
                }
            }
        }
        tinyc_s8_next(batch->rank, batch->dims, idx);
    }
}
#endif

/* ---- token ids -------------------------------------------------------------------------- */

#ifdef TINYC_S8_EMBEDDING
/* Row idx[t] of the int8 table (vocab rows of dim codes, row-major) to token t of y: codes are
 * copied, the result keeps the table's quantization. `it` walks the tokens (s0: y, s1: idx element
 * strides); ys_d is y's stride along a row. The n ids (contiguous) are all checked first: returns
 * 0, or -1 (nothing written, nothing read out of bounds) if an id lies outside [0, vocab). */
static int tinyc_s8_embedding(const int32_t *idx, const int8_t *table, int8_t *y, const tinyc_s8_iter *it,
                              int32_t n, int32_t vocab, int32_t dim, int32_t ys_d)
{
    int32_t ids[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s0[last], t1 = it->s1[last];
    int32_t r, i, j, o0, o1, o2;
    for (i = 0; i < n; ++i) {
        if (idx[i] < 0 || idx[i] >= vocab) return -1;
    }
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, ids, &o0, &o1, &o2);
        for (i = 0; i < len; ++i, o0 += t0, o1 += t1) {
            const int8_t *row = table + (long)idx[o1] * dim;
            if (ys_d == 1) {
                memcpy(y + o0, row, (size_t)dim);
            } else {
                for (j = 0; j < dim; ++j) y[o0 + j * ys_d] = row[j];
            }
        }
        tinyc_s8_next(last, it->dims, ids);
    }
    return 0;
}
#endif

/* ---- spatial: transposed convolution, resize, masked softmax --------------------------- */

#ifdef TINYC_S8_CONV_TRANSPOSE2D
/* Per output pixel: the taps (ky, iy) with iy * sh + ky * dh = oy + pad_top and (kx, ix) likewise
 * (listed once per row / pixel in `scratch`: 2 * (kh + kw) words), then per output channel
 * acc = bias + sum (x - zx) * w over them and the input channels of its group. */
static void tinyc_s8_conv_transpose2d(const int8_t *x, const int8_t *w, const int32_t *q, int8_t *y,
                                      int8_t *scratch, const tinyc_s8_conv_t_params *p)
{
    tinyc_s8_word *ty = (tinyc_s8_word *)(void *)scratch;    /* ky, iy pairs */
    tinyc_s8_word *tx = ty + 2 * p->kh;                       /* kx, ix pairs */
    const int32_t cg = p->c / p->groups, og = p->o / p->groups, taps = p->kh * p->kw;
    const int32_t rec = p->mode == 0 ? TINYC_S8_Q_FAST : TINYC_S8_Q_GENERIC;
    int32_t n, oy, ox, oc, k, a, b, ic, ny, nx;
    for (n = 0; n < p->n; ++n) {
        for (oy = 0; oy < p->oh; ++oy) {
            ny = 0;
            for (k = 0; k < p->kh; ++k) {
                const int32_t t = oy + p->pad_top - k * p->dh;
                if (t < 0 || t % p->sh != 0 || t / p->sh >= p->h) continue;
                ty[2 * ny] = k;
                ty[2 * ny + 1] = t / p->sh;
                ++ny;
            }
            for (ox = 0; ox < p->ow; ++ox) {
                nx = 0;
                for (k = 0; k < p->kw; ++k) {
                    const int32_t t = ox + p->pad_left - k * p->dw;
                    if (t < 0 || t % p->sw != 0 || t / p->sw >= p->w) continue;
                    tx[2 * nx] = k;
                    tx[2 * nx + 1] = t / p->sw;
                    ++nx;
                }
                for (oc = 0; oc < p->o; ++oc) {
                    const int8_t *xg = x + n * p->xs[0] + (oc / og) * cg * p->xs[1];
                    const int8_t *wo = w + oc * taps * cg;
                    const int32_t *qo = q + oc * rec;
                    int32_t acc = qo[0];
                    for (a = 0; a < ny; ++a) {
                        for (b = 0; b < nx; ++b) {
                            const int8_t *xp = xg + ty[2 * a + 1] * p->xs[2] + tx[2 * b + 1] * p->xs[3];
                            const int8_t *wp = wo + (ty[2 * a] * p->kw + tx[2 * b]) * cg;
                            for (ic = 0; ic < cg; ++ic) acc += (xp[ic * p->xs[1]] - p->zx) * wp[ic];
                        }
                    }
                    y[n * p->ys[0] + oc * p->ys[1] + oy * p->ys[2] + ox * p->ys[3]] =
                        (int8_t)tinyc_s8_out(acc, qo, p->mode, p->zy, p->lo, p->hi);
                }
            }
        }
    }
}
#endif

#ifdef TINYC_S8_RESIZE
/* iy = {iy0[0..oh), iy1[0..oh)}, wy = {wy0[0..oh), wy1[0..oh)} (Q10), ix / wx likewise. */
static void tinyc_s8_resize(const int8_t *x, int8_t *y, const int32_t *iy, const int32_t *ix, const int32_t *wy,
                            const int32_t *wx, const tinyc_s8_resize_params *p)
{
    int32_t n, oy, ox, c;
    for (n = 0; n < p->n; ++n) {
        for (oy = 0; oy < p->oh; ++oy) {
            const int8_t *r0 = x + n * p->xs[0] + iy[oy] * p->xs[2];
            const int8_t *r1 = x + n * p->xs[0] + iy[p->oh + oy] * p->xs[2];
            for (ox = 0; ox < p->ow; ++ox) {
                const int32_t a = ix[ox] * p->xs[3], b = ix[p->ow + ox] * p->xs[3];
                int8_t *yp = y + n * p->ys[0] + oy * p->ys[2] + ox * p->ys[3];
                if (!p->bilinear) {
                    for (c = 0; c < p->c; ++c) yp[c * p->ys[1]] = r0[a + c * p->xs[1]];
                } else {
                    const int32_t h0 = wy[oy], h1 = wy[p->oh + oy], w0 = wx[ox], w1 = wx[p->ow + ox];
                    for (c = 0; c < p->c; ++c) {
                        const int32_t o = c * p->xs[1];
                        const int32_t top = w0 * r0[a + o] + w1 * r0[b + o];
                        const int32_t bot = w0 * r1[a + o] + w1 * r1[b + o];
                        yp[c * p->ys[1]] = (int8_t)((h0 * top + h1 * bot + (1 << 19)) >> 20);
                    }
                }
            }
        }
    }
}
#endif

#ifdef TINYC_S8_MASKED_SOFTMAX
/* As tinyc_s8_softmax over the positions whose mask byte is 1 (masked ones give -128, i.e. 0). */
static void tinyc_s8_masked_softmax(const int8_t *x, const uint8_t *mask, int8_t *y, const int32_t *table,
                                    const tinyc_s8_masked_softmax_params *p)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(&p->rows) * p->rows.dims[p->rows.rank - 1];
    int32_t r, i, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        int32_t mx = -128, sum = 0, d;
        o0 = o1 = o2 = 0;
        for (d = 0; d < p->rows.rank; ++d) {
            o0 += idx[d] * p->rows.s0[d];
            o1 += idx[d] * p->rows.s1[d];
            o2 += idx[d] * p->rows.s2[d];
        }
        for (i = 0; i < p->len; ++i)
            if (mask[o2 + i * p->ms] && x[o1 + i * p->xs] > mx) mx = x[o1 + i * p->xs];
        for (i = 0; i < p->len; ++i)
            if (mask[o2 + i * p->ms]) sum += table[mx - x[o1 + i * p->xs]];
        if (sum == 0) sum = 1;                          /* a row without kept positions */
        for (i = 0; i < p->len; ++i) {
            const int32_t e = mask[o2 + i * p->ms] ? table[mx - x[o1 + i * p->xs]] : 0;
            y[o0 + i * p->ys] = (int8_t)tinyc_s8_ssat8(tinyc_s8_div_round(e * 256, sum) - 128);
        }
        tinyc_s8_next(p->rows.rank, p->rows.dims, idx);
    }
}
#endif

#ifdef TINYC_S8_NORM
/* floor(sqrt(m)), bit by bit (exact for any uint64). */
TINYC_S8_INLINE uint32_t tinyc_s8_isqrt64(uint64_t m)
{
    uint64_t rem = m, res = 0, bit = (uint64_t)1 << 62;
    while (bit > rem) bit >>= 2;
    while (bit) {
        if (rem >= res + bit) {
            rem -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return (uint32_t)res;
}

/* layer_norm / group_norm, in place. Per set: S1 = sum d, S2 = sum d^2 (d = q - zx);
 * V = n S2 - S1^2 (rms: n S2) plus eps; 1 / sqrt(V) = R 2^(j - 61) with m = V << 2j in
 * [2^60, 2^62), R = 2^61 / isqrt(m); per element Z = (dev R + 2^(k-1)) >> k (k = 45 - j,
 * dev = n d - S1, rms: n d) is z in Q16; out = ((Z M + 2^(n-1)) >> n + B + 128) >> 8, + zy. */
static void tinyc_s8_norm(const int8_t *x, int8_t *y, const int32_t *q, const tinyc_s8_norm_params *p)
{
    int32_t oidx[TINYC_S8_MAX_RANK] = {0};
    const int32_t orows = tinyc_s8_rows(&p->outer) * p->outer.dims[p->outer.rank - 1];
    const int32_t irows = tinyc_s8_rows(&p->inner), il = p->inner.rank - 1, ilen = p->inner.dims[il];
    const int32_t xl = p->inner.s1[il], yl = p->inner.s0[il], ql = p->inner.s2[il];
    int32_t r, i, j, d;
    for (r = 0; r < orows; ++r) {
        int32_t iidx[TINYC_S8_MAX_RANK] = {0};
        int32_t o0 = 0, o1 = 0, o2 = 0, s1 = 0, s2 = 0, bits = 0, half, k;
        int64_t v;
        uint64_t m;
        int64_t rs;
        for (d = 0; d < p->outer.rank; ++d) {
            o0 += oidx[d] * p->outer.s0[d];
            o1 += oidx[d] * p->outer.s1[d];
            o2 += oidx[d] * p->outer.s2[d];
        }
        for (i = 0; i < irows; ++i) {
            int32_t b0, b1, b2;
            tinyc_s8_base(&p->inner, iidx, &b0, &b1, &b2);
            for (j = 0; j < ilen; ++j) {
                const int32_t dx = x[o1 + b1 + j * xl] - p->zx;
                s1 += dx;
                s2 += dx * dx;
            }
            tinyc_s8_next(il, p->inner.dims, iidx);
        }
        v = (int64_t)p->count * s2 - (p->rms ? 0 : (int64_t)s1 * s1) + p->eps;
        if (v < 1) v = 1;
        for (m = (uint64_t)v; m; m >>= 1) ++bits;
        half = (62 - bits) / 2;
        rs = (int64_t)((((uint64_t)1) << 61) / tinyc_s8_isqrt64((uint64_t)v << (2 * half)));
        k = 45 - half;
        if (p->rms) s1 = 0;
        for (i = 0; i < irows; ++i) {
            int32_t b0, b1, b2;
            tinyc_s8_base(&p->inner, iidx, &b0, &b1, &b2);
            for (j = 0; j < ilen; ++j) {
                const int32_t dev = p->count * (x[o1 + b1 + j * xl] - p->zx) - s1;
                const int64_t z = ((int64_t)dev * rs + ((int64_t)1 << (k - 1))) >> k;
                const int32_t *rec = q + 3 * (o2 + b2 + j * ql);
                int64_t t = (z * rec[0] + ((int64_t)1 << (rec[1] - 1))) >> rec[1];
                t = ((t + rec[2] + 128) >> 8) + p->zy;
                y[o0 + b0 + j * yl] = (int8_t)(t < -128 ? -128 : t > 127 ? 127 : t);
            }
            tinyc_s8_next(il, p->inner.dims, iidx);
        }
        tinyc_s8_next(p->outer.rank, p->outer.dims, oidx);
    }
}
#endif

/* ---- math: maximum / minimum, prelu, log_softmax, amax / amin ----------------------- */

#ifdef TINYC_S8_MINMAX
/* y = max(ta[a], tb[b]) (min if is_min): each operand requantized to y's quantization by its table
 * (256 entries, indexed by code + 128; monotonic), then compared. s0 = y, s1 = a, s2 = b. */
static void tinyc_s8_minmax(const int8_t *a, const int8_t *b, int8_t *y, const int8_t *ta, const int8_t *tb,
                            const tinyc_s8_iter *it, int32_t is_min)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s0[last], t1 = it->s1[last], t2 = it->s2[last];
    int32_t r, i, o0, o1, o2;
    ta += 128;
    tb += 128;
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        for (i = 0; i < len; ++i, o0 += t0, o1 += t1, o2 += t2) {
            const int32_t u = ta[a[o1]], v = tb[b[o2]];
            y[o0] = (int8_t)(is_min ? (u < v ? u : v) : (u > v ? u : v));
        }
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

#ifdef TINYC_S8_PRELU
static void tinyc_s8_prelu(const int8_t *x, const int8_t *slope, int8_t *y, const tinyc_s8_prelu_params *p)
{
    const tinyc_s8_iter *it = &p->it;
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s0[last], t1 = it->s1[last], t2 = it->s2[last];
    int32_t r, i, o0, o1, o2;
    for (r = 0; r < rows; ++r) {
        tinyc_s8_base(it, idx, &o0, &o1, &o2);
        for (i = 0; i < len; ++i, o0 += t0, o1 += t1, o2 += t2) {
            const int32_t d = x[o1] - p->zx;
            y[o0] = (int8_t)(d > 0 ? tinyc_s8_rq64(d, p->m_pos, p->n_pos, p->zy)
                                   : tinyc_s8_rq64(d * (slope[o2] - p->zs), p->m_neg, p->n_neg, p->zy));
        }
        tinyc_s8_next(last, it->dims, idx);
    }
}
#endif

#ifdef TINYC_S8_LOG_SOFTMAX
/* (acc * m + 2^(n-1)) >> n, n in [1, 62]: requantization without zero point or saturation. */
TINYC_S8_INLINE int64_t tinyc_s8_rq_raw(int64_t acc, int32_t m, int32_t n)
{
    return (acc * m + ((int64_t)1 << (n - 1))) >> n;
}

/* Per row: d_i = max - q_i, s = sum table[d_i] (>= 2^20, < 2^31), l = log2(s / 2^20) in Q16 from
 * the 257-entry log2 table with linear interpolation (tinyc.quant.log2_q16), then
 * y_i = clamp(zy - ((rq(d_i; m_d) + rq(l; m_l) + 2^15) >> 16)). */
static void tinyc_s8_log_softmax(const int8_t *x, int8_t *y, const int32_t *table, const int32_t *log2_table,
                                 const tinyc_s8_log_softmax_params *p)
{
    int32_t idx[TINYC_S8_MAX_RANK] = {0};
    const int32_t rows = tinyc_s8_rows(&p->outer) * p->outer.dims[p->outer.rank - 1];
    int32_t r, i, d, o0, o1;
    for (r = 0; r < rows; ++r) {
        int32_t mx = -128, sum = 0, e = 20, f, k, l2;
        int64_t lterm;
        o0 = o1 = 0;
        for (d = 0; d < p->outer.rank; ++d) {
            o0 += idx[d] * p->outer.s0[d];
            o1 += idx[d] * p->outer.s1[d];
        }
        for (i = 0; i < p->len; ++i) if (x[o1 + i * p->xs] > mx) mx = x[o1 + i * p->xs];
        for (i = 0; i < p->len; ++i) sum += table[mx - x[o1 + i * p->xs]];
        while (e < 30 && (sum >> (e + 1)) != 0) ++e;
        f = (int32_t)(((uint32_t)sum << (30 - e)) - (1u << 30));
        k = f >> 22;
        l2 = ((e - 20) << 16) + log2_table[k] +
             (int32_t)(((int64_t)(log2_table[k + 1] - log2_table[k]) * (f & ((1 << 22) - 1)) + (1 << 21)) >> 22);
        lterm = tinyc_s8_rq_raw(l2, p->m_l, p->n_l);
        for (i = 0; i < p->len; ++i) {
            const int64_t acc = tinyc_s8_rq_raw(mx - x[o1 + i * p->xs], p->m_d, p->n_d) + lterm;
            const int64_t v = p->zy - ((acc + 32768) >> 16);
            y[o0 + i * p->ys] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
        tinyc_s8_next(p->outer.rank, p->outer.dims, idx);
    }
}
#endif

#ifdef TINYC_S8_REDUCE_EXTREME
static void tinyc_s8_reduce_extreme(const int8_t *x, int8_t *y, const tinyc_s8_extreme_params *p)
{
    int32_t oidx[TINYC_S8_MAX_RANK] = {0};
    const int32_t orows = tinyc_s8_rows(&p->out) * p->out.dims[p->out.rank - 1];
    const int32_t rrows = tinyc_s8_rows(&p->red), rl = p->red.rank - 1, rlen = p->red.dims[rl];
    int32_t r, i, j, d, o0, o1;
    for (r = 0; r < orows; ++r) {
        int32_t ridx[TINYC_S8_MAX_RANK] = {0};
        int32_t m = p->is_min ? 127 : -128;
        o0 = o1 = 0;
        for (d = 0; d < p->out.rank; ++d) {
            o0 += oidx[d] * p->out.s0[d];
            o1 += oidx[d] * p->out.s1[d];
        }
        for (i = 0; i < rrows; ++i) {
            int32_t off = o1;
            for (d = 0; d < rl; ++d) off += ridx[d] * p->red.s1[d];
            for (j = 0; j < rlen; ++j, off += p->red.s1[rl]) {
                const int32_t v = x[off];
                if (p->is_min ? v < m : v > m) m = v;
            }
            tinyc_s8_next(rl, p->red.dims, ridx);
        }
        y[o0] = (int8_t)m;
        tinyc_s8_next(p->out.rank, p->out.dims, oidx);
    }
}
#endif
