/* tinyc binary-layer kernels (C99, no allocation, no global state).
 *
 * Not a library of its own: a generated model source defines TINYC_BIN_<KERNEL> for
 * each kernel it calls and then #includes this file (see tinyc_kernels_bin.h). In an
 * int8 bundle it comes after tinyc_kernels_s8.c, whose output stage (tinyc_s8_out) the
 * int8 forms reuse. The layer kernels are always-inline functions that the generated
 * code calls with literal shapes through per-shape wrappers, so the popcount loops
 * unroll to the layer's row length.
 *
 * Popcount: the Cortex-M4 has none. Measured on QEMU (instructions per 32-bit word of a
 * row XOR-counted against 32 weight rows, loads and loop included; n = words per row):
 *                                          n=4    n=5    n=9    n=16   n=64
 *   __builtin_popcount (libgcc)            18.4   18.3   18.2   18.1   18.4
 *   SWAR per word, multiply to sum         13.4   13.9   14.0   13.7   13.6
 *   256-entry byte table                   14.9   14.7   15.9   15.6   15.7
 *   65536-entry table (64 KiB of flash)     8.9    8.7    9.2    9.5    9.6
 *   SWAR nibble sums of 3 words            11.6   11.3   12.2   12.2   12.8
 *   Harley-Seal, blocks of 8 words         13.6   13.1   11.6   10.6   10.5
 *   this file: CSA-7 / CSA-3 blocks        11.4   11.3   10.2   10.7   10.4
 * The last (tinyc_bin_popx): carry-save adders reduce blocks of 7 words to ones, twos
 * and fours (3 blocks to ones and twos), SWAR reduces those to byte counts, and one
 * USADA8 (DSP) or multiply adds the bytes of the block to the count.
 */
#include <stdint.h>
#include <string.h>

#include "tinyc_kernels_bin.h"

/* ---- primitives ---------------------------------------------------------------------- */

#if defined(__GNUC__)
#define TINYC_BIN_PRAGMA(x) _Pragma(#x)
#define TINYC_BIN_UNROLL(n) TINYC_BIN_PRAGMA(GCC unroll n)
/* Keep a constant in a register (the SWAR masks), so the shifted-operand forms
 * (AND r, mask, v, LSR #1) replace a shift plus an AND with an immediate. */
#define TINYC_BIN_IN_REG(c) __asm__("" : "+r"(c))
#else
#define TINYC_BIN_UNROLL(n)
#define TINYC_BIN_IN_REG(c) ((void)0)
#endif

/* y = (float)S * alpha; y = y + bias must not become one fused multiply-add (the spec
 * rounds the product first). GCC ignores #pragma STDC FP_CONTRACT and contracts across
 * statements with -ffp-contract=fast (the GNU modes' default), so an empty asm pins
 * the product in its register: no instruction, no volatile. */
#if defined(TINYC_BIN_ROUNDED)
/* defined by the build (tests) */
#elif defined(__GNUC__) && defined(__arm__) && defined(__ARM_FP)
#define TINYC_BIN_ROUNDED(v) __asm__("" : "+t"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define TINYC_BIN_ROUNDED(v) __asm__("" : "+w"(v))
#elif defined(__GNUC__) && defined(__x86_64__)
#define TINYC_BIN_ROUNDED(v) __asm__("" : "+x"(v))
#elif defined(__GNUC__) && defined(__arm__)
#define TINYC_BIN_ROUNDED(v) __asm__("" : "+r"(v))   /* soft float: in a core register */
#elif defined(__GNUC__)
#define TINYC_BIN_ROUNDED(v) __asm__("" : "+m"(v))
#else
#pragma STDC FP_CONTRACT OFF
#define TINYC_BIN_ROUNDED(v) ((void)0)
#endif

#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>

/* a, b = the two words at byte offset `off` (a constant) of the word pointer p: one LDRD
 * (GCC splits 64-bit loads). The memory clobber keeps it after the stores filling p. */
#define TINYC_BIN_LD2(p, off, a, b)                                                            \
    __asm__("ldrd %0, %1, [%2, %3]" : "=r"(a), "=r"(b) : "r"(p), "n"(off) : "memory")

/* acc + the four bytes of v (USADA8 against 0). */
TINYC_BIN_INLINE uint32_t tinyc_bin_usada8(uint32_t v, uint32_t acc)
{
    return __usada8(v, 0u, acc);
}

/* acc + the four bytes of v, whose sum is below 256 (popcount bytes). */
TINYC_BIN_INLINE uint32_t tinyc_bin_hsum(uint32_t v, uint32_t acc)
{
    return __usada8(v, 0u, acc);
}

#else /* exact C99 equivalents (host, Cortex-M0/M3) */

#define TINYC_BIN_LD2(p, off, a, b) ((a) = (p)[(off) / 4], (b) = (p)[(off) / 4 + 1])

TINYC_BIN_INLINE uint32_t tinyc_bin_usada8(uint32_t v, uint32_t acc)
{
    const uint32_t t = (v & 0x00FF00FFu) + ((v >> 8) & 0x00FF00FFu);
    return acc + (t & 0xFFFFu) + (t >> 16);
}

TINYC_BIN_INLINE uint32_t tinyc_bin_hsum(uint32_t v, uint32_t acc)
{
    return acc + ((v * 0x01010101u) >> 24);
}

#endif

/* The SWAR masks, in registers. */
typedef struct {
    uint32_t m1, m2, m4;
} tinyc_bin_masks;

TINYC_BIN_INLINE tinyc_bin_masks tinyc_bin_masks_get(void)
{
    tinyc_bin_masks k;
    k.m1 = 0x55555555u;
    k.m2 = 0x33333333u;
    k.m4 = 0x0F0F0F0Fu;
    TINYC_BIN_IN_REG(k.m1);
    TINYC_BIN_IN_REG(k.m2);
    TINYC_BIN_IN_REG(k.m4);
    return k;
}

/* Bit counts of each nibble (<= 4) and of each byte (<= 8) of v. */
TINYC_BIN_INLINE uint32_t tinyc_bin_nib(uint32_t v, tinyc_bin_masks k)
{
    v = v - ((v >> 1) & k.m1);
    return (v & k.m2) + ((v >> 2) & k.m2);
}

TINYC_BIN_INLINE uint32_t tinyc_bin_byt(uint32_t v, tinyc_bin_masks k)
{
    v = tinyc_bin_nib(v, k);
    return (v + (v >> 4)) & k.m4;
}

/* Carry-save adder: per bit, hi:lo = a + b + c. */
#define TINYC_BIN_CSA(hi, lo, a, b, c)                                                         \
    do {                                                                                       \
        const uint32_t a_ = (a), b_ = (b), c_ = (c), u_ = a_ ^ b_;                             \
        hi = (a_ & b_) | (u_ & c_);                                                            \
        lo = u_ ^ c_;                                                                          \
    } while (0)

/* popcount((a ^ b) & m) over n words (m unused unless `masked`). */
TINYC_BIN_INLINE int32_t tinyc_bin_popx(const tinyc_bin_word *a, const tinyc_bin_word *b, const tinyc_bin_word *m,
                                        int32_t n, int32_t masked, tinyc_bin_masks k)
{
#define TINYC_BIN_D(i) (masked ? ((a[i] ^ b[i]) & m[i]) : (a[i] ^ b[i]))
    uint32_t s = 0;
    int32_t i = 0;
    TINYC_BIN_UNROLL(2)
    for (; i + 7 <= n; i += 7) {
        uint32_t t1, o1, t2, o2, t3, o3, f, t;
        TINYC_BIN_CSA(t1, o1, TINYC_BIN_D(i), TINYC_BIN_D(i + 1), TINYC_BIN_D(i + 2));
        TINYC_BIN_CSA(t2, o2, o1, TINYC_BIN_D(i + 3), TINYC_BIN_D(i + 4));
        TINYC_BIN_CSA(t3, o3, o2, TINYC_BIN_D(i + 5), TINYC_BIN_D(i + 6));
        TINYC_BIN_CSA(f, t, t1, t2, t3);
        s = tinyc_bin_hsum(tinyc_bin_byt(o3, k) + (tinyc_bin_byt(t, k) << 1) + (tinyc_bin_byt(f, k) << 2), s);
    }
    TINYC_BIN_UNROLL(2)
    for (; i + 3 <= n; i += 3) {
        uint32_t hi, lo;
        TINYC_BIN_CSA(hi, lo, TINYC_BIN_D(i), TINYC_BIN_D(i + 1), TINYC_BIN_D(i + 2));
        {
            const uint32_t t = tinyc_bin_nib(lo, k) + (tinyc_bin_nib(hi, k) << 1);   /* nibbles <= 12 */
            s = tinyc_bin_hsum((t & k.m4) + ((t >> 4) & k.m4), s);
        }
    }
    if (n - i == 2) {
        const uint32_t t = tinyc_bin_nib(TINYC_BIN_D(i), k) + tinyc_bin_nib(TINYC_BIN_D(i + 1), k);
        s = tinyc_bin_hsum((t & k.m4) + ((t >> 4) & k.m4), s);
    } else if (n - i == 1) {
        s = tinyc_bin_hsum(tinyc_bin_byt(TINYC_BIN_D(i), k), s);
    }
    return (int32_t)s;
#undef TINYC_BIN_D
}

/* ---- bit streams ------------------------------------------------------------------------ */

/* n (1..32) bits of the stream src from bit sb; never reads past the word of the last one. */
TINYC_BIN_INLINE uint32_t tinyc_bin_get(const tinyc_bin_word *src, int32_t sb, int32_t n)
{
    const int32_t o = sb & 31;
    const tinyc_bin_word *p = src + (sb >> 5);
    uint32_t v = p[0] >> o;
    if (o + n > 32) v |= p[1] << (32 - o);
    return n == 32 ? v : v & ((1u << n) - 1u);
}

/* OR the n (1..32) low bits of v (its other bits 0) into dst at bit db. */
TINYC_BIN_INLINE void tinyc_bin_put(tinyc_bin_word *dst, int32_t db, uint32_t v, int32_t n)
{
    const int32_t o = db & 31;
    tinyc_bin_word *d = dst + (db >> 5);
    d[0] |= v << o;
    if (o + n > 32) d[1] |= v >> (32 - o);
}

/* OR n bits of src from bit sb into the (zeroed) dst at bit db. */
TINYC_BIN_INLINE void tinyc_bin_or_run(tinyc_bin_word *dst, int32_t db, const tinyc_bin_word *src, int32_t sb,
                                       int32_t n)
{
    while (n > 0) {
        const int32_t t = n < 32 ? n : 32;
        tinyc_bin_put(dst, db, tinyc_bin_get(src, sb, t), t);
        sb += t;
        db += t;
        n -= t;
    }
}

/* ---- sign ---------------------------------------------------------------------------------- */

#if defined(TINYC_BIN_SIGN_F32) || defined(TINYC_BIN_SIGN_S8)
/* The body of both sign kernels: a walk over four dims d0..d3 (d3 fastest; xs*: the
 * input's element strides, ts*: the threshold's, 0 where it broadcasts) in packing order,
 * bit = x >= t. The bits of each run of up to 32 elements along d3 are gathered in a
 * register (the last element first, so each bit lands by one shift) and appended to the
 * stream y; the generated wrapper makes every dim and stride a literal. */
#define TINYC_BIN_SIGN_BODY                                                                     \
    uint32_t cur = 0;                                                                           \
    int32_t fill = 0, i0, i1, i2, j, b;                                                         \
    for (i0 = 0; i0 < d0; ++i0) {                                                               \
        for (i1 = 0; i1 < d1; ++i1) {                                                           \
            for (i2 = 0; i2 < d2; ++i2) {                                                       \
                const int32_t ox = i0 * xs0 + i1 * xs1 + i2 * xs2, ot = i0 * ts0 + i1 * ts1 + i2 * ts2; \
                for (j = 0; j < d3; j += 32) {                                                  \
                    const int32_t n = d3 - j < 32 ? d3 - j : 32;                                \
                    uint32_t v = 0;                                                             \
                    TINYC_BIN_UNROLL(32)                                                        \
                    for (b = n - 1; b >= 0; --b)                                                \
                        v = (v << 1) | TINYC_BIN_GE(x[ox + (j + b) * xs3], t[ot + (j + b) * ts3]);   \
                    cur |= v << fill;                                                           \
                    fill += n;                                                                  \
                    if (fill >= 32) {                                                           \
                        *y++ = cur;                                                             \
                        fill -= 32;                                                             \
                        cur = fill ? v >> (n - fill) : 0u;                                      \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    if (fill) *y = cur;
#endif

#ifdef TINYC_BIN_SIGN_F32
/* sign of a float tensor: bit = x >= t (NaN gives 0). */
#define TINYC_BIN_GE(a, b) (uint32_t)((a) >= (b))
TINYC_BIN_INLINE void tinyc_bin_sign_f32(const float *x, const float *t, tinyc_bin_word *y, int32_t d0, int32_t d1,
                                         int32_t d2, int32_t d3, int32_t xs0, int32_t xs1, int32_t xs2, int32_t xs3,
                                         int32_t ts0, int32_t ts1, int32_t ts2, int32_t ts3)
{
    TINYC_BIN_SIGN_BODY
}
#undef TINYC_BIN_GE
#endif

#ifdef TINYC_BIN_SIGN_S8
/* sign of an int8 tensor: bit = code >= t (int32 code thresholds in [-129, 128]), the
 * sign bit of t - 1 - code (no compare-and-select). */
#define TINYC_BIN_GE(a, b) ((uint32_t)((int32_t)(b) - 1 - (int32_t)(a)) >> 31)
TINYC_BIN_INLINE void tinyc_bin_sign_s8(const int8_t *x, const int32_t *t, tinyc_bin_word *y, int32_t d0, int32_t d1,
                                        int32_t d2, int32_t d3, int32_t xs0, int32_t xs1, int32_t xs2, int32_t xs3,
                                        int32_t ts0, int32_t ts1, int32_t ts2, int32_t ts3)
{
    TINYC_BIN_SIGN_BODY
}
#undef TINYC_BIN_GE
#endif

/* ---- layers ---------------------------------------------------------------------------------- */

#if defined(TINYC_BIN_CONV_U1) || defined(TINYC_BIN_CONV_S8) || defined(TINYC_BIN_CONV_F32)
/* First tap k with start + k * dil >= 0, and one past the last with start + k * dil < size. */
TINYC_BIN_INLINE int32_t tinyc_bin_tap_lo(int32_t start, int32_t dil)
{
    return start >= 0 ? 0 : (-start + dil - 1) / dil;
}

TINYC_BIN_INLINE int32_t tinyc_bin_tap_hi(int32_t start, int32_t dil, int32_t size, int32_t taps)
{
    int32_t hi;
    if (start >= size) return 0;
    hi = (size - start + dil - 1) / dil;
    return hi < taps ? hi : taps;
}

/* The fused activation of a float output, as the interpreter applies it in float32:
 * relu y > 0 ? y : 0; clamp min(max(y, lo), hi) with numpy's operand order; leaky
 * y >= 0 ? y : y * a. p = {lo, hi, a}. */
TINYC_BIN_INLINE float tinyc_bin_act(float y, int32_t act, const float *p)
{
    if (act == TINYC_BIN_ACT_RELU) return y > 0.0f ? y : 0.0f;
    if (act == TINYC_BIN_ACT_CLAMP) {
        y = y > p[0] ? y : p[0];
        return y < p[1] ? y : p[1];
    }
    if (act == TINYC_BIN_ACT_LEAKY) return y >= 0.0f ? y : y * p[2];
    return y;
}
#endif

#ifdef TINYC_BIN_CONV_U1
/* The output channels of one pixel and group: S = K - 2 popcount(row ^ w) (+ corr[o] at
 * the border), then the float or int8 output stage. */
TINYC_BIN_INLINE void tinyc_bin_u1_channels(const tinyc_bin_word *row, const tinyc_bin_word *wo, const int32_t *qp,
                                            const float *fp, void *y, const int16_t *cr, int32_t border, int32_t k,
                                            int32_t c0, int32_t og, int32_t no, int32_t yoff, int32_t ys_c,
                                            int32_t kwords, int32_t out_i8, int32_t has_bias, int32_t act,
                                            int32_t mode, int32_t zy, int32_t lo, int32_t hi, tinyc_bin_masks km)
{
    const int32_t qs = mode == 0 ? 4 : 6;     /* TINYC_S8_Q_FAST / TINYC_S8_Q_GENERIC record words */
    int32_t o;
    (void)qp;
    (void)qs;
    (void)out_i8;
    (void)zy;
    (void)lo;
    (void)hi;
    for (o = 0; o < og; ++o, wo += kwords) {
        const int32_t co = c0 + o;
        int32_t s = k - 2 * tinyc_bin_popx(row, wo, row, kwords, 0, km);
        if (border) s += cr[co];
#ifdef TINYC_KERNELS_S8_H
        if (out_i8) {
            const int32_t *q = qp + co * qs;
            ((int8_t *)y)[yoff + co * ys_c] = (int8_t)tinyc_s8_out(q[0] + s * 256, q, mode, zy, lo, hi);
            continue;
        }
#endif
        {
            float v = (float)s * fp[co];
            TINYC_BIN_ROUNDED(v);
            if (has_bias) v = v + fp[no + co];
            ((float *)y)[yoff + co * ys_c] = tinyc_bin_act(v, act, fp + 2 * no);
        }
    }
}

/* bin_conv2d / bin_linear with binary (u1) input. x: the packed channels-last stream
 * (bit ((n * h + iy) * w + ix) * c + ch); a linear layer is a 1x1 conv over its rows
 * (h = rows, w = 1, c = K). Per output pixel and group, the in-bounds taps' bits are
 * copied into the zeroed `row` (kwords words, kh*kw*cg bits in (ky, kx, c) order), so a
 * padded tap reads as -1 everywhere; then per output channel
 *   S = K - 2 * popcount(row ^ w) + corr,
 * where corr = sum of the weight signs of the pixel's padded taps (0 inside; at the
 * border from the table `corr`, [type][O] with type = ty[oy] * ntx + tx[ox]): the padded
 * taps contribute 0.
 * out_i8 = 0: y = (float)S * alpha; y = y + bias; act (f = {alpha[O], bias[O], lo, hi, a}).
 * out_i8 = 1: acc = bias + S * 2^8, the int8 output stage of record q (tinyc_kernels_s8.h).
 * Output element (n, o, oy, ox) at n * ys_n + o * ys_c + oy * ys_h + ox * ys_w. */
TINYC_BIN_INLINE void tinyc_bin_conv_u1(const tinyc_bin_word *x, const tinyc_bin_word *wt, const int32_t *qp,
                                        const float *fp, void *y, tinyc_bin_word *row, const uint16_t *ty,
                                        const uint16_t *tx, const int16_t *corr, int32_t nb, int32_t groups,
                                        int32_t c, int32_t cg, int32_t og, int32_t h, int32_t w, int32_t oh,
                                        int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh,
                                        int32_t dw, int32_t pt, int32_t pl, int32_t ys_n, int32_t ys_c, int32_t ys_h,
                                        int32_t ys_w, int32_t kwords, int32_t ntx, int32_t out_i8, int32_t has_bias,
                                        int32_t act, int32_t mode, int32_t zy, int32_t lo, int32_t hi)
{
    const tinyc_bin_masks km = tinyc_bin_masks_get();
    const int32_t no = groups * og, k = kh * kw * cg;
    int32_t n, oy, ox, g, ky, kx, j;
    for (n = 0; n < nb; ++n) {
        for (oy = 0; oy < oh; ++oy) {
            const int32_t iy0 = oy * sh - pt;
            const int32_t ky0 = tinyc_bin_tap_lo(iy0, dh), ky1 = tinyc_bin_tap_hi(iy0, dh, h, kh);
            for (ox = 0; ox < ow; ++ox) {
                const int32_t ix0 = ox * sw - pl;
                const int32_t kx0 = tinyc_bin_tap_lo(ix0, dw), kx1 = tinyc_bin_tap_hi(ix0, dw, w, kw);
                const int32_t border = ky0 != 0 || ky1 != kh || kx0 != 0 || kx1 != kw;
                const int16_t *cr = border ? corr + (ty[oy] * ntx + tx[ox]) * no : corr;
                const int32_t yoff = n * ys_n + oy * ys_h + ox * ys_w;
                for (g = 0; g < groups; ++g) {
                    for (j = 0; j < kwords; ++j) row[j] = 0;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int32_t pix = (n * h + iy0 + ky * dh) * w + ix0;   /* the pixel of tap (ky, 0) */
                        const int32_t db = ky * kw * cg;
                        if (kx1 <= kx0) break;
                        if (groups == 1 && dw == 1) {   /* the in-bounds taps of the row are contiguous */
                            tinyc_bin_or_run(row, db + kx0 * c, x, (pix + kx0) * c, (kx1 - kx0) * c);
                        } else {
                            for (kx = kx0; kx < kx1; ++kx)
                                tinyc_bin_or_run(row, db + kx * cg, x, (pix + kx * dw) * c + g * cg, cg);
                        }
                    }
                    if (border) {
                        tinyc_bin_u1_channels(row, wt + g * og * kwords, qp, fp, y, cr, 1, k, g * og, og, no, yoff,
                                              ys_c, kwords, out_i8, has_bias, act, mode, zy, lo, hi, km);
                    } else {
                        tinyc_bin_u1_channels(row, wt + g * og * kwords, qp, fp, y, cr, 0, k, g * og, og, no, yoff,
                                              ys_c, kwords, out_i8, has_bias, act, mode, zy, lo, hi, km);
                    }
                }
            }
        }
    }
}
#endif

#ifdef TINYC_BIN_CONV_S8
/* Byte masks of a nibble of weight bits: bit b -> byte b = 0xFF. */
static const uint32_t tinyc_bin_nibble_mask[16] = {
    0x00000000u, 0x000000FFu, 0x0000FF00u, 0x0000FFFFu, 0x00FF0000u, 0x00FF00FFu, 0x00FFFF00u, 0x00FFFFFFu,
    0xFF000000u, 0xFF0000FFu, 0xFF00FF00u, 0xFF00FFFFu, 0xFFFF0000u, 0xFFFF00FFu, 0xFFFFFF00u, 0xFFFFFFFFu};

/* im2col of output pixel (oy, ox): the kh*kw*cg codes in (ky, kx, c) order, zx for
 * padded taps (so they add 0). */
TINYC_BIN_INLINE void tinyc_bin_im2col_s8(const int8_t *xg, int8_t *row, int32_t oy, int32_t ox, int32_t cg, int32_t h,
                                          int32_t w, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh,
                                          int32_t dw, int32_t pt, int32_t pl, int32_t xs_c, int32_t xs_h, int32_t xs_w,
                                          int32_t zx)
{
    const int32_t iy0 = oy * sh - pt, ix0 = ox * sw - pl;
    int32_t ky, kx, ci;
    for (ky = 0; ky < kh; ++ky) {
        const int32_t iy = iy0 + ky * dh;
        if (iy < 0 || iy >= h) {
            memset(row, zx, (size_t)(kw * cg));
            row += kw * cg;
            continue;
        }
        if (xs_c == 1 && dw == 1 && xs_w == cg && ix0 >= 0 && ix0 + kw <= w) {
            memcpy(row, xg + iy * xs_h + ix0 * xs_w, (size_t)(kw * cg));
            row += kw * cg;
            continue;
        }
        for (kx = 0; kx < kw; ++kx, row += cg) {
            const int32_t ix = ix0 + kx * dw;
            if (ix < 0 || ix >= w) {
                memset(row, zx, (size_t)cg);
            } else {
                const int8_t *p = xg + iy * xs_h + ix * xs_w;
                if (xs_c == 1) memcpy(row, p, (size_t)cg);
                else for (ci = 0; ci < cg; ++ci) row[ci] = p[ci * xs_c];
            }
        }
    }
}

/* bin_conv2d / bin_linear with int8 input (codes q, zero point zx), int8 output. Each
 * output pixel's taps are gathered (tinyc_bin_im2col_s8) as unsigned u = q + 128, padded
 * to kwords * 32 bytes with u = 0. With U = sum u and P = sum of u where the weight bit is
 * 1 (AND with the byte mask of 4 weight bits, USADA8: no multiplies),
 *   sum (q - zx) w_hat = 2P - U - (zx + 128) sum w_hat,
 * whose last term the compiler folded into the bias of record q: acc = bias + 2P - U.
 * Pixels go in blocks of four, their words interleaved in `col`, so each weight nibble's
 * mask serves four pixels; a single pixel (a linear layer's one row) runs alone.
 * scratch: the byte row (32 * kwords), then col (4 * 32 * kwords). */
TINYC_BIN_INLINE void tinyc_bin_conv_s8(const int8_t *x, const tinyc_bin_word *wt, const int32_t *qp, int8_t *y,
                                        uint8_t *scratch, int32_t nb, int32_t groups, int32_t cg, int32_t og,
                                        int32_t h, int32_t w, int32_t oh, int32_t ow, int32_t kh, int32_t kw,
                                        int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                                        int32_t xs_n, int32_t xs_c, int32_t xs_h, int32_t xs_w, int32_t ys_n,
                                        int32_t ys_c, int32_t ys_h, int32_t ys_w, int32_t zx, int32_t kwords,
                                        int32_t mode, int32_t zy, int32_t lo, int32_t hi)
{
    const tinyc_bin_word *rw = (const tinyc_bin_word *)(const void *)scratch;
    tinyc_bin_word *col = (tinyc_bin_word *)(void *)(scratch + 32 * kwords);
    const int32_t qs = mode == 0 ? 4 : 6, k = kh * kw * cg, nw = kwords * 8, npix = oh * ow;
    const uint32_t *tab = tinyc_bin_nibble_mask;
    int32_t n, g, o, j, p, p0;
    if (nw * 4 > k) memset(scratch + k, 0x80, (size_t)(nw * 4 - k));      /* u = 0 past the taps */
    for (n = 0; n < nb; ++n) {
        for (g = 0; g < groups; ++g) {
            const int8_t *xg = x + n * xs_n + g * cg * xs_c;
            const tinyc_bin_word *wg = wt + g * og * kwords;
            const int32_t *qg = qp + g * og * qs;
            int8_t *yg = y + n * ys_n + g * og * ys_c;
            for (p0 = 0; p0 < npix; p0 += 4) {
                const int32_t np = npix - p0 < 4 ? npix - p0 : 4;
                const int32_t step = np == 1 ? 1 : 4;
                uint32_t usum[4] = {0, 0, 0, 0};
                int32_t yo[4] = {0, 0, 0, 0};
                for (p = 0; p < np; ++p) {
                    const int32_t oy = (p0 + p) / ow, ox = (p0 + p) % ow;
                    tinyc_bin_im2col_s8(xg, (int8_t *)scratch, oy, ox, cg, h, w, kh, kw, sh, sw, dh, dw, pt, pl, xs_c,
                                        xs_h, xs_w, zx);
                    {
                        tinyc_bin_word *cp = col + p;
                        uint32_t us = 0;
                        for (j = 0; j < nw; ++j, cp += step) {
                            const uint32_t u = rw[j] ^ 0x80808080u;
                            *cp = u;
                            us = tinyc_bin_usada8(u, us);
                        }
                        usum[p] = us;
                    }
                    yo[p] = oy * ys_h + ox * ys_w;
                }
                for (o = 0; o < og; ++o) {
                    const tinyc_bin_word *wo = wg + o * kwords;
                    const int32_t *q = qg + o * qs;
                    uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    if (np == 1) {
                        for (j = 0; j < kwords; ++j) {
                            const uint32_t b = wo[j];
                            const tinyc_bin_word *u = col + 8 * j;
                            a0 = tinyc_bin_usada8(u[0] & tab[b & 15u], a0);
                            a0 = tinyc_bin_usada8(u[1] & tab[(b >> 4) & 15u], a0);
                            a0 = tinyc_bin_usada8(u[2] & tab[(b >> 8) & 15u], a0);
                            a0 = tinyc_bin_usada8(u[3] & tab[(b >> 12) & 15u], a0);
                            a0 = tinyc_bin_usada8(u[4] & tab[(b >> 16) & 15u], a0);
                            a0 = tinyc_bin_usada8(u[5] & tab[(b >> 20) & 15u], a0);
                            a0 = tinyc_bin_usada8(u[6] & tab[(b >> 24) & 15u], a0);
                            a0 = tinyc_bin_usada8(u[7] & tab[b >> 28], a0);
                        }
                    } else {
                        for (j = 0; j < kwords; ++j) {
                            const uint32_t b = wo[j];
                            const tinyc_bin_word *u = col + 32 * j;
                            int32_t i;
                            TINYC_BIN_UNROLL(8)
                            for (i = 0; i < 8; ++i) {
                                const uint32_t m = tab[(b >> (4 * i)) & 15u];
                                uint32_t u0, u1, u2, u3;
                                TINYC_BIN_LD2(u, 16 * i, u0, u1);
                                TINYC_BIN_LD2(u, 16 * i + 8, u2, u3);
                                a0 = tinyc_bin_usada8(u0 & m, a0);
                                a1 = tinyc_bin_usada8(u1 & m, a1);
                                a2 = tinyc_bin_usada8(u2 & m, a2);
                                a3 = tinyc_bin_usada8(u3 & m, a3);
                            }
                        }
                    }
                    {
                        const tinyc_s8_rq rq = tinyc_s8_rec(q, mode);
                        int8_t *yc = yg + o * ys_c;
                        yc[yo[0]] = (int8_t)tinyc_s8_outr(q[0] + 2 * (int32_t)a0 - (int32_t)usum[0], rq, mode, zy, lo,
                                                          hi);
                        if (np > 1)
                            yc[yo[1]] = (int8_t)tinyc_s8_outr(q[0] + 2 * (int32_t)a1 - (int32_t)usum[1], rq, mode, zy,
                                                              lo, hi);
                        if (np > 2)
                            yc[yo[2]] = (int8_t)tinyc_s8_outr(q[0] + 2 * (int32_t)a2 - (int32_t)usum[2], rq, mode, zy,
                                                              lo, hi);
                        if (np > 3)
                            yc[yo[3]] = (int8_t)tinyc_s8_outr(q[0] + 2 * (int32_t)a3 - (int32_t)usum[3], rq, mode, zy,
                                                              lo, hi);
                    }
                }
            }
        }
    }
}
#endif

#ifdef TINYC_BIN_CONV_F32
/* bin_conv2d / bin_linear with float input and output: per output pixel and group the
 * taps are gathered into `scratch` (0 for padded taps), then per output channel
 * S = sum of +x (weight bit 1) and -x (bit 0), no multiplies; y = S * alpha + bias, act.
 * f = {alpha[O], bias[O], lo, hi, a}. Matches the interpreter to rounding (it sums in
 * float64), like the float conv. */
TINYC_BIN_INLINE void tinyc_bin_conv_f32(const float *x, const tinyc_bin_word *wt, const float *fp, float *y,
                                         float *scratch, int32_t nb, int32_t groups, int32_t cg, int32_t og,
                                         int32_t h, int32_t w, int32_t oh, int32_t ow, int32_t kh, int32_t kw,
                                         int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                                         int32_t xs_n, int32_t xs_c, int32_t xs_h, int32_t xs_w, int32_t ys_n,
                                         int32_t ys_c, int32_t ys_h, int32_t ys_w, int32_t kwords, int32_t has_bias,
                                         int32_t act)
{
    const int32_t no = groups * og, k = kh * kw * cg;
    const float *alpha = fp, *bias = fp + no, *actp = fp + 2 * no;
    int32_t n, oy, ox, g, o, ky, kx, ci, j, b;
    for (n = 0; n < nb; ++n) {
        for (oy = 0; oy < oh; ++oy) {
            for (ox = 0; ox < ow; ++ox) {
                const int32_t iy0 = oy * sh - pt, ix0 = ox * sw - pl;
                for (g = 0; g < groups; ++g) {
                    const float *xg = x + n * xs_n + g * cg * xs_c;
                    const tinyc_bin_word *wg = wt + g * og * kwords;
                    float *row = scratch;
                    for (ky = 0; ky < kh; ++ky) {
                        const int32_t iy = iy0 + ky * dh;
                        for (kx = 0; kx < kw; ++kx, row += cg) {
                            const int32_t ix = ix0 + kx * dw;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
                                for (ci = 0; ci < cg; ++ci) row[ci] = 0.0f;
                            } else {
                                const float *p = xg + iy * xs_h + ix * xs_w;
                                for (ci = 0; ci < cg; ++ci) row[ci] = p[ci * xs_c];
                            }
                        }
                    }
                    for (o = 0; o < og; ++o) {
                        const int32_t co = g * og + o;
                        const tinyc_bin_word *wo = wg + o * kwords;
                        float s = 0.0f;
                        for (j = 0; j < kwords; ++j) {
                            const uint32_t bits = wo[j];
                            const float *r = scratch + 32 * j;
                            const int32_t nbit = k - 32 * j < 32 ? k - 32 * j : 32;
                            for (b = 0; b < nbit; ++b) s = (bits >> b) & 1u ? s + r[b] : s - r[b];
                        }
                        {
                            float v = s * alpha[co];
                            if (has_bias) v = v + bias[co];
                            y[n * ys_n + co * ys_c + oy * ys_h + ox * ys_w] = tinyc_bin_act(v, act, actp);
                        }
                    }
                }
            }
        }
    }
}
#endif
