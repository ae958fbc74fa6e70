/* tinyc packed-weight kernels (C99, no allocation, no global state): sparse, codebook and
 * low-bit weights of conv2d / linear. See tinyc_kernels_packed.h for the formats.
 *
 * Not a library of its own: a generated model defines TINYC_PK_<KERNEL> for each kernel it
 * calls and #includes this file after tinyc_kernels_f32.c (and tinyc_kernels_s8.c for int8
 * models, whose primitives and im2col helpers the int8 kernels use). Every kernel is
 * always-inline and called from a per-layer wrapper with literal formats and shapes.
 *
 * Work is proportional to what is stored: sparse kernels visit the non-zero weights only,
 * dense packed kernels unpack each weight word in registers.
 */
#include <stdint.h>
#include <string.h>

#include "tinyc_kernels_packed.h"

#if defined(TINYC_PK_S8_CONV) && !defined(TINYC_S8_CONV_GEMM)
#error "tinyc_pk_s8_conv uses tinyc_kernels_s8.c's im2col helpers: define TINYC_S8_CONV_GEMM"
#endif
#if defined(TINYC_PK_S8_FC_DENSE) && !defined(TINYC_S8_FC) && !defined(TINYC_S8_CONV_GEMM)
#error "tinyc_pk_s8_fc_dense uses tinyc_s8_expand: define TINYC_S8_FC"
#endif

/* ---- stream readers ------------------------------------------------------------------- */

/* A stream of `bits`-bit fields (1 to 8), LSB first: `buf` holds the `left` bits not yet read. */
typedef struct {
    const uint8_t *p;
    uint32_t buf;
    int32_t left;
} tinyc_pk_bits;

TINYC_PK_INLINE void tinyc_pk_bits_init(tinyc_pk_bits *r, const uint8_t *p)
{
    r->p = p;
    r->buf = 0;
    r->left = 0;
}

TINYC_PK_INLINE uint32_t tinyc_pk_read(tinyc_pk_bits *r, int32_t bits)
{
    uint32_t v;
    if (bits == 8) return *r->p++;
    if (r->left < bits) {
        r->buf |= (uint32_t)*r->p++ << r->left;
        r->left += 8;
    }
    v = r->buf & ((1u << bits) - 1u);
    r->buf >>= bits;
    r->left -= bits;
    return v;
}

/* A little-endian 32-bit load from any address (one LDR where unaligned loads exist: M3 and up;
 * byte loads on M0). */
TINYC_PK_INLINE uint32_t tinyc_pk_ld32(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

/* Field j of a group of n-bit fields (n <= 16, LSB first) starting at byte gp, at bit 0 of the
 * result (the bits above it are the following fields'). j and n are literals after inlining:
 * a field is read through the 32-bit window of its anchor j - j % (25 / n), so one load serves
 * 25 / n fields (the anchor's window starts at most 7 bits before it: 7 + 25 <= 32). */
TINYC_PK_INLINE uint32_t tinyc_pk_win(const uint8_t *gp, int32_t j, int32_t n)
{
    const int32_t a = (j - j % (25 / n)) * n;
    return tinyc_pk_ld32(gp + (a >> 3)) >> (j * n - (a & ~7));
}

/* A `bits`-bit two's complement field as int32. */
TINYC_PK_INLINE int32_t tinyc_pk_sext(uint32_t f, int32_t bits)
{
    return (int32_t)(f ^ (1u << (bits - 1))) - (int32_t)(1u << (bits - 1));
}

/* Entries of sparse row r (counts are uint8, or uint16 when `wide`). */
TINYC_PK_INLINE int32_t tinyc_pk_count(const void *counts, int32_t wide, int32_t r)
{
    return wide ? (int32_t)((const uint16_t *)counts)[r] : (int32_t)((const uint8_t *)counts)[r];
}

/* Index of the lowest set bit of m != 0 (RBIT + CLZ on Cortex-M3 and up). */
TINYC_PK_INLINE int32_t tinyc_pk_ctz(uint32_t m)
{
#if defined(__GNUC__)
    return __builtin_ctz(m);
#else
    int32_t t = 0;
    while (!(m & 1u)) {
        m >>= 1;
        ++t;
    }
    return t;
#endif
}

/* ---- float kernels ---------------------------------------------------------------------- */

#if defined(TINYC_PK_F32_FC) || defined(TINYC_PK_F32_CONV2D)
/* One stored weight of a float row: the next (column, value) of the row's encoding. The
 * caller walks rows in order; `ep`, `vp` and `vr` run on across rows. */
typedef struct {
    const uint8_t *ep;          /* entries / the row's bitmap or index bytes */
    const float *vp;            /* f32 values (entries, bitmap) */
    tinyc_pk_bits vr;           /* b-bit value fields (bitmap) */
} tinyc_pk_f32_stream;

/* Calls BODY(col, value) for every stored weight of row j. */
#define TINYC_PK_F32_ROW(st, j, k, BODY)                                                                  \
    do {                                                                                                 \
        const float *cbr_ = per_channel ? cb + (j) * kcb : cb;                                           \
        int32_t t_;                                                                                      \
        if (layout == TINYC_PK_DENSE_LUT && bits == 8) {                                                 \
            const uint8_t *ip_ = w + (j) * row_bytes;                                                    \
            for (t_ = 0; t_ < (k); ++t_) {                                                               \
                const float v_ = cbr_[ip_[t_]];                                                          \
                BODY(t_, v_);                                                                            \
            }                                                                                            \
        } else if (layout == TINYC_PK_DENSE_LUT && bits == 4) {                                          \
            const uint8_t *ip_ = w + (j) * row_bytes;                                                    \
            for (t_ = 0; t_ + 1 < (k); t_ += 2) {                                                        \
                const uint32_t b_ = *ip_++;                                                              \
                const float v0_ = cbr_[b_ & 15u], v1_ = cbr_[b_ >> 4];                                   \
                BODY(t_, v0_);                                                                           \
                BODY(t_ + 1, v1_);                                                                       \
            }                                                                                            \
            if (t_ < (k)) {                                                                              \
                const float v_ = cbr_[*ip_ & 15u];                                                       \
                BODY(t_, v_);                                                                            \
            }                                                                                            \
        } else if (layout == TINYC_PK_DENSE_LUT) {                                                       \
            tinyc_pk_bits ir_;                                                                           \
            tinyc_pk_bits_init(&ir_, w + (j) * row_bytes);                                               \
            for (t_ = 0; t_ < (k); ++t_) {                                                               \
                const float v_ = cbr_[tinyc_pk_read(&ir_, bits)];                                        \
                BODY(t_, v_);                                                                            \
            }                                                                                            \
        } else if (layout == TINYC_PK_ENTRIES && gbits == 4 && vkind == TINYC_PK_F32) {                 \
            const int32_t n_ = tinyc_pk_count(counts, wide, (j));                                        \
            int32_t e_;                                                                                  \
            t_ = 0;                                                                                      \
            for (e_ = 0; e_ < n_; ++e_) {                                                                \
                const float v_ = *(st).vp++;                                                             \
                t_ += (int32_t)((e_ & 1) ? (uint32_t)(st).ep[-1] >> 4 : (uint32_t)*(st).ep++ & 15u);     \
                BODY(t_, v_);                                                                            \
                ++t_;                                                                                    \
            }                                                                                            \
        } else if (layout == TINYC_PK_ENTRIES) {                                                         \
            int32_t e_ = tinyc_pk_count(counts, wide, (j));                                              \
            t_ = 0;                                                                                      \
            while (e_-- > 0) {                                                                           \
                float v_;                                                                                \
                if (vkind == TINYC_PK_F32) {                                                             \
                    t_ += *(st).ep++;                                                                    \
                    v_ = *(st).vp++;                                                                     \
                } else if (bits == 8) {                                                                  \
                    t_ += (st).ep[0];                                                                    \
                    v_ = cbr_[(st).ep[1]];                                                               \
                    (st).ep += 2;                                                                        \
                } else {                                                                                 \
                    const uint32_t b_ = *(st).ep++;                                                      \
                    t_ += (int32_t)(b_ & ((1u << (8 - bits)) - 1u));                                     \
                    v_ = cbr_[b_ >> (8 - bits)];                                                         \
                }                                                                                        \
                BODY(t_, v_);                                                                            \
                ++t_;                                                                                    \
            }                                                                                            \
        } else {                                                                                         \
            const uint8_t *bm_ = w + (j) * (((k) + 7) / 8);                                              \
            int32_t byte_;                                                                               \
            for (byte_ = 0; byte_ < ((k) + 7) / 8; ++byte_) {                                            \
                uint32_t m_ = bm_[byte_];                                                                \
                while (m_) {                                                                             \
                    const float v_ = vkind == TINYC_PK_F32 ? *(st).vp++ : cbr_[tinyc_pk_read(&(st).vr, bits)]; \
                    t_ = 8 * byte_ + tinyc_pk_ctz(m_);                                                   \
                    m_ &= m_ - 1u;                                                                       \
                    BODY(t_, v_);                                                                        \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    } while (0)

TINYC_PK_INLINE void tinyc_pk_f32_stream_init(tinyc_pk_f32_stream *st, const uint8_t *w, const float *vals,
                                              int32_t layout, int32_t n, int32_t k)
{
    st->ep = w;
    st->vp = vals;
    tinyc_pk_bits_init(&st->vr, layout == TINYC_PK_BITMAP ? w + n * ((k + 7) / 8) : w);
}
#endif

#ifdef TINYC_PK_F32_FC
/* y[r, j] = bias[j] + sum_k x[r, k] W[j, k] over the stored weights, then the fused act. */
TINYC_PK_INLINE void tinyc_pk_f32_fc(const float *x, const uint8_t *w, const float *vals, const void *counts,
                                     const float *cb, const float *bias, float *y, const tinyc_act *act,
                                     int32_t rows, int32_t k, int32_t n, int32_t layout, int32_t vkind,
                                     int32_t bits, int32_t per_channel, int32_t kcb, int32_t row_bytes,
                                     int32_t wide, int32_t gbits)
{
    int32_t r, j;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * k;
        float *yr = y + r * n;
        tinyc_pk_f32_stream st;
        tinyc_pk_f32_stream_init(&st, w, vals, layout, n, k);
        for (j = 0; j < n; ++j) {
            float acc = 0.0f;
#define TINYC_PK_F32_FC_MAC(t, v) acc += xr[t] * (v)
            TINYC_PK_F32_ROW(st, j, k, TINYC_PK_F32_FC_MAC);
#undef TINYC_PK_F32_FC_MAC
            yr[j] = (bias ? bias[j] : 0.0f) + acc;
        }
        tinyc_f32_act(yr, yr, n, act);
    }
}
#endif

#ifdef TINYC_PK_F32_CONV2D
/* One weight (input channel plane xc, tap ky, kx, value wv) added into the output plane. */
TINYC_PK_INLINE void tinyc_pk_f32_tap(const float *xc, float *yo, float wv, int32_t ky, int32_t kx,
                                      const tinyc_f32_conv2d_params *p)
{
    const int32_t ix0 = kx * p->dw - p->pad_left;
    const int32_t ox0 = tinyc_tap_lo(ix0, p->sw), ox1 = tinyc_tap_hi(ix0, p->sw, p->w, p->ow);
    int32_t oy, ox;
    for (oy = 0; oy < p->oh; ++oy) {
        const int32_t iy = oy * p->sh - p->pad_top + ky * p->dh;
        if (iy >= 0 && iy < p->h) {
            const float *xr = xc + iy * p->w + ix0;
            float *yr = yo + oy * p->ow;
            for (ox = ox0; ox < ox1; ++ox) yr[ox] += wv * xr[ox * p->sw];
        }
    }
}

/* Direct convolution over the stored weights of each output channel (row oc of W, K in
 * (c, ky, kx) order): every weight updates the whole output plane, so the cost follows the
 * stored weights; any stride, padding, dilation and groups. */
TINYC_PK_INLINE void tinyc_pk_f32_conv2d(const float *x, const uint8_t *w, const float *vals, const void *counts,
                                         const float *cb, const float *bias, float *y,
                                         const tinyc_f32_conv2d_params *p, int32_t layout, int32_t vkind,
                                         int32_t bits, int32_t per_channel, int32_t kcb, int32_t row_bytes,
                                         int32_t wide, int32_t gbits)
{
    const int32_t cg = p->c / p->groups, og = p->o / p->groups, taps = p->kh * p->kw, k = cg * taps;
    const int32_t in_plane = p->h * p->w, plane = p->oh * p->ow;
    int32_t n, oc, i;
    for (n = 0; n < p->n; ++n) {
        tinyc_pk_f32_stream st;
        tinyc_pk_f32_stream_init(&st, w, vals, layout, p->o, k);
        for (oc = 0; oc < p->o; ++oc) {
            const float *xg = x + (n * p->c + (oc / og) * cg) * in_plane;
            float *yo = y + (n * p->o + oc) * plane;
            const float b = bias ? bias[oc] : 0.0f;
            for (i = 0; i < plane; ++i) yo[i] = b;
#define TINYC_PK_F32_CONV_TAP(t, v)                                                                       \
    do {                                                                                                 \
        const int32_t ic_ = (t) / taps, r_ = (t) - ic_ * taps, ky_ = r_ / p->kw;                         \
        tinyc_pk_f32_tap(xg + ic_ * in_plane, yo, (v), ky_, r_ - ky_ * p->kw, p);                        \
    } while (0)
            TINYC_PK_F32_ROW(st, oc, k, TINYC_PK_F32_CONV_TAP);
#undef TINYC_PK_F32_CONV_TAP
            tinyc_f32_act(yo, yo, plane, &p->act);
        }
    }
}
#endif

/* ---- int8 kernels ----------------------------------------------------------------------- */

#if defined(TINYC_PK_S8_FC_SPARSE) || defined(TINYC_PK_S8_FC_DENSE) || defined(TINYC_PK_S8_CONV)
/* (lo, hi) int16 halves of a word: PKHBT. */
TINYC_PK_INLINE int32_t tinyc_pk_pack16(int32_t lo, int32_t hi)
{
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
#else
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
#endif
}

/* The folded bias of channel o (records: tinyc_kernels_packed.h). */
TINYC_PK_INLINE int32_t tinyc_pk_bias(const int32_t *qb, int32_t o, int32_t qmode)
{
    return qmode == 0 ? qb[o] >> 5 : qmode == 2 ? qb[o] : qb[6 * o];
}

/* The output stage of channel o. Compact records (qmode 0, 2): the fast form with M = qm[o]
 * (or m_lit for every channel), S = the low 5 bits of qb[o] (qmode 0), qs[o] or s_lit, and
 * R = 2^(S-1) + zy 2^S = (2 zy + 1) 2^(S-1) (|R| < 2^30, checked by the compiler). qmode 1:
 * tinyc_kernels_s8.h's generic records. */
TINYC_PK_INLINE int32_t tinyc_pk_out(int32_t acc, int32_t o, const int32_t *qb, const int32_t *qm,
                                     const uint8_t *qs, int32_t qmode, int32_t m_uni, int32_t m_lit,
                                     int32_t s_uni, int32_t s_lit, int32_t zy, int32_t lo, int32_t hi)
{
    if (qmode != 1) {
        tinyc_s8_rq rq;
        const int32_t s = s_uni ? s_lit : qmode == 0 ? (qb[o] & 31) : (int32_t)qs[o];
        rq.m = m_uni ? m_lit : qm[o];
        rq.s = s;
        rq.r = (2 * zy + 1) * (int32_t)(1u << (s - 1));
        rq.mn = 0;
        rq.sn = 0;
        return tinyc_s8_outr(acc, rq, 0, zy, lo, hi);
    }
    return tinyc_s8_out(acc, qb + 6 * o, 1, zy, lo, hi);
}

#define TINYC_PK_OUT(acc, o) tinyc_pk_out((acc), (o), qb, qm, qs, qmode, m_uni, m_lit, s_uni, s_lit, zy, lo, hi)

/* The next sparse entry of an int8 row: gap (columns skipped) and weight code. 8-bit values
 * are byte pairs; b <= 4 bits share a byte with an (8 - b)-bit gap. */
TINYC_PK_INLINE const uint8_t *tinyc_pk_s8_entry(const uint8_t *ep, const int8_t *cbr, int32_t vkind,
                                                 int32_t bits, int32_t *gap, int32_t *v)
{
    if (vkind == TINYC_PK_I8) {
        *gap = ep[0];
        *v = (int8_t)ep[1];
        return ep + 2;
    } else {
        const int32_t e = (int8_t)ep[0];       /* the value field, signed, in the top bits */
        *gap = e & ((1 << (8 - bits)) - 1);
        *v = vkind == TINYC_PK_LUT ? cbr[(uint8_t)e >> (8 - bits)] : e >> (8 - bits);
        return ep + 1;
    }
}

/* Keeps GCC from hoisting the loads of the next unrolled entries above this point: with four
 * accumulators it would otherwise run out of registers and spill (conv). */
#if defined(__GNUC__)
#define TINYC_PK_BARRIER() __asm__ volatile("" ::: "memory")
#else
#define TINYC_PK_BARRIER() ((void)0)
#endif

/* p, opaque to the optimiser: kept in a register, so a table lookup is one LDRSB [base, index]
 * (GCC otherwise rebuilds a constant table's address from a section anchor for every lookup). */
TINYC_PK_INLINE const int8_t *tinyc_pk_reg(const int8_t *p)
{
#if defined(__GNUC__)
    __asm__("" : "+r"(p));
#endif
    return p;
}

/* The value of a b-bit field at bit 0 of w (the bits above ignored): a codebook entry, or a
 * two's complement code (SBFX). */
TINYC_PK_INLINE int32_t tinyc_pk_fval(uint32_t w, const int8_t *cbr, int32_t vkind, int32_t bits)
{
    if (vkind == TINYC_PK_LUT) return cbr[w & ((1u << bits) - 1u)];
    return (int32_t)(w << (32 - bits)) >> (32 - bits);
}

/* Calls BODY(step, value) for every entry of a STREAM row of `cnt_` entries at ep (g = gbits,
 * b = bits literals), then moves ep to the next row. Groups of 8 entries are unrolled with
 * literal field positions; the last cnt_ % 8 too, each behind a test (a loop measured 10 %
 * slower on short rows). */
#define TINYC_PK_STREAM_E(J, BODY)                                                                    \
    do {                                                                                             \
        const uint32_t w_ = tinyc_pk_win(gp_, (J), gbits + bits);                                    \
        const int32_t step_ = (int32_t)(w_ & ((1u << gbits) - 1u));                                  \
        const int32_t v_ = tinyc_pk_fval(w_ >> gbits, cbr, vkind, bits);                             \
        BODY(step_, v_);                                                                             \
    } while (0)
#define TINYC_PK_STREAM_ROW(ep, cnt_, BODY)                                                           \
    do {                                                                                             \
        const uint8_t *gp_ = (ep);                                                                   \
        int32_t e_ = (cnt_);                                                                         \
        for (; e_ >= 8; e_ -= 8, gp_ += gbits + bits) {                                              \
            TINYC_PK_STREAM_E(0, BODY); TINYC_PK_STREAM_E(1, BODY); TINYC_PK_STREAM_E(2, BODY);      \
            TINYC_PK_STREAM_E(3, BODY); TINYC_PK_STREAM_E(4, BODY); TINYC_PK_STREAM_E(5, BODY);      \
            TINYC_PK_STREAM_E(6, BODY); TINYC_PK_STREAM_E(7, BODY);                                  \
        }                                                                                            \
        if (e_ > 0) {                                                                                \
            TINYC_PK_STREAM_E(0, BODY);                                                              \
            if (e_ > 1) {                                                                            \
                TINYC_PK_STREAM_E(1, BODY);                                                          \
                if (e_ > 2) {                                                                        \
                    TINYC_PK_STREAM_E(2, BODY);                                                      \
                    if (e_ > 3) {                                                                    \
                        TINYC_PK_STREAM_E(3, BODY);                                                  \
                        if (e_ > 4) {                                                                \
                            TINYC_PK_STREAM_E(4, BODY);                                              \
                            if (e_ > 5) {                                                            \
                                TINYC_PK_STREAM_E(5, BODY);                                          \
                                if (e_ > 6) TINYC_PK_STREAM_E(6, BODY);                              \
                            }                                                                        \
                        }                                                                            \
                    }                                                                                \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        (ep) += ((cnt_) * (gbits + bits) + 7) >> 3;                                                  \
    } while (0)

/* The next bitmap value of an int8 row. */
TINYC_PK_INLINE int32_t tinyc_pk_s8_value(tinyc_pk_bits *vr, const int8_t *cbr, int32_t vkind, int32_t bits)
{
    const uint32_t f = tinyc_pk_read(vr, bits);
    if (vkind == TINYC_PK_LUT) return cbr[f];
    return tinyc_pk_sext(f, bits);
}
#endif

#ifdef TINYC_PK_S8_FC_SPARSE
/* Sparse fully connected: y[r, j] = out(bias'[j] + sum over the stored (c, w) of row j of
 * x[r, c] w), x read at element strides (c: the input's physical order). Accumulates in
 * uint32 (wrapping, as the instructions do; the final sum fits int32). */
TINYC_PK_INLINE void tinyc_pk_s8_fc_sparse(const int8_t *x, const uint8_t *w, const int8_t *vals,
                                           const void *counts, const int8_t *cb, const int32_t *qb,
                                           const int32_t *qm, const uint8_t *qs, int8_t *y, int32_t rows, int32_t k,
                                           int32_t nout, int32_t xs_r, int32_t xs_k, int32_t ys_r, int32_t ys_n,
                                           int32_t layout, int32_t vkind, int32_t bits, int32_t per_channel,
                                           int32_t kcb, int32_t wide, int32_t gbits, int32_t qmode, int32_t m_uni,
                                           int32_t m_lit, int32_t s_uni, int32_t s_lit, int32_t zy, int32_t lo,
                                           int32_t hi)
{
    const int32_t rb = (k + 7) / 8;
    int32_t r, j;
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * xs_r;
        int8_t *yr = y + r * ys_r;
        const uint8_t *ep = w;
        const int8_t *vp = vals;
        tinyc_pk_bits vr;
        tinyc_pk_bits_init(&vr, layout == TINYC_PK_BITMAP ? w + nout * rb : w);
        for (j = 0; j < nout; ++j, yr += ys_n) {
            const int8_t *cbr = per_channel ? cb + j * kcb : cb;
            uint32_t acc = (uint32_t)tinyc_pk_bias(qb, j, qmode);
            if (layout == TINYC_PK_STREAM) {
                const int32_t c = tinyc_pk_count(counts, wide, j);
                const int8_t *cbs = tinyc_pk_reg(cbr);
                int32_t t = -1;            /* the column of the last entry: steps count from -1 */
#define TINYC_PK_FC_MAC(step, v)                                                                      \
    do {                                                                                             \
        t += (step);                                                                                 \
        acc += (uint32_t)(xr[t * xs_k] * (v));                                                       \
    } while (0)
#define cbr cbs
                TINYC_PK_STREAM_ROW(ep, c, TINYC_PK_FC_MAC);
#undef cbr
#undef TINYC_PK_FC_MAC
            } else if (layout == TINYC_PK_ENTRIES && gbits == 4 && vkind == TINYC_PK_I8) {
                /* split entries: two gaps per byte (the row's gaps start on a byte), values apart */
                int32_t e = tinyc_pk_count(counts, wide, j);
                const int8_t *xp = xr;
                for (; e >= 2; e -= 2, vp += 2) {
                    const uint32_t gg = *ep++;
                    int32_t x0, x1;
                    if (xs_k == 1) {                        /* post-incremented loads */
                        xp += gg & 15u;
                        x0 = *xp++;
                        xp += gg >> 4;
                        x1 = *xp++;
                    } else {
                        xp += (int32_t)(gg & 15u) * xs_k;
                        x0 = *xp;
                        xp += (int32_t)(1u + (gg >> 4)) * xs_k;
                        x1 = *xp;
                        xp += xs_k;
                    }
                    acc += (uint32_t)(x0 * vp[0]) + (uint32_t)(x1 * vp[1]);
                }
                if (e) {
                    xp += (int32_t)(*ep++ & 15u) * xs_k;
                    acc += (uint32_t)(*xp * *vp++);
                }
            } else if (layout == TINYC_PK_ENTRIES) {
                int32_t e = tinyc_pk_count(counts, wide, j);
                const int8_t *xp = xr;
                while (e-- > 0) {
                    int32_t gap, v;
                    ep = tinyc_pk_s8_entry(ep, cbr, vkind, bits, &gap, &v);
                    xp += gap * xs_k;
                    acc += (uint32_t)(*xp * v);
                    xp += xs_k;
                }
            } else {
                const uint8_t *bm = w + j * rb;
                int32_t byte;
                for (byte = 0; byte < rb; ++byte) {
                    uint32_t m = bm[byte];
                    const int8_t *xb = xr + 8 * byte * xs_k;
                    while (m) {
                        const int32_t t = tinyc_pk_ctz(m);
                        const int32_t v = vkind == TINYC_PK_I8 ? (int8_t)tinyc_pk_read(&vr, 8)
                                                               : tinyc_pk_s8_value(&vr, cbr, vkind, bits);
                        m &= m - 1u;
                        acc += (uint32_t)(xb[t * xs_k] * v);
                    }
                }
            }
            *yr = (int8_t)TINYC_PK_OUT((int32_t)acc, j);
        }
    }
}
#endif

#if defined(TINYC_PK_S8_FC_DENSE) || defined(TINYC_PK_S8_CONV)
/* All 2^2b int16 pairs (cb[f & m], cb[f >> b]) of a per-layer codebook (2^b entries). */
TINYC_PK_INLINE void tinyc_pk_pairs(const int8_t *cb, tinyc_s8_word *table, int32_t bits)
{
    const int32_t m = (1 << bits) - 1;
    int32_t hi, lo;
    for (hi = 0; hi <= m; ++hi) {
        const uint32_t h = (uint32_t)(int32_t)cb[hi] << 16;
        for (lo = 0; lo <= m; ++lo) table[(hi << bits) | lo] = (int32_t)(h | (uint16_t)(int16_t)cb[lo]);
    }
}

/* Chunks of 4 weights per 32-bit word of a dense packed row (DENSE_BITS: per group of 8 fields). */
TINYC_PK_INLINE int32_t tinyc_pk_chunks_per_word(int32_t layout, int32_t bits)
{
    return layout == TINYC_PK_DENSE_I4 ? 2 : layout == TINYC_PK_DENSE_I2 ? 4 : layout == TINYC_PK_DENSE_BITS ? 2 : 8 / bits;
}

/* Chunk c (0 or 1) of the DENSE_BITS group of 8 b-bit fields at gp as the SMLAD operands
 * we = (w0, w2), wo = (w1, w3). */
TINYC_PK_INLINE void tinyc_pk_bits_chunk(const uint8_t *gp, int32_t c, int32_t bits, int32_t vkind,
                                         const int8_t *cbr, int32_t *we, int32_t *wo)
{
    const int32_t v0 = tinyc_pk_fval(tinyc_pk_win(gp, 4 * c, bits), cbr, vkind, bits);
    const int32_t v1 = tinyc_pk_fval(tinyc_pk_win(gp, 4 * c + 1, bits), cbr, vkind, bits);
    const int32_t v2 = tinyc_pk_fval(tinyc_pk_win(gp, 4 * c + 2, bits), cbr, vkind, bits);
    const int32_t v3 = tinyc_pk_fval(tinyc_pk_win(gp, 4 * c + 3, bits), cbr, vkind, bits);
    *we = tinyc_pk_pack16(v0, v2);
    *wo = tinyc_pk_pack16(v1, v3);
}

/* Products of dense_i4 / dense_i2 weights are 2^4 / 2^6 times too large (shifted back). */
TINYC_PK_INLINE int32_t tinyc_pk_scale_shift(int32_t layout)
{
    return layout == TINYC_PK_DENSE_I4 ? 4 : layout == TINYC_PK_DENSE_I2 ? 6 : 0;
}

/* Chunk c of word u as the SMLAD operands we = (w0, w2), wo = (w1, w3). */
TINYC_PK_INLINE void tinyc_pk_chunk(uint32_t u, int32_t c, int32_t layout, int32_t bits, int32_t use_table,
                                    const tinyc_s8_word *table, const int8_t *cbr, int32_t *we, int32_t *wo)
{
    if (layout == TINYC_PK_DENSE_I4) {
        const uint32_t t = (c == 0 ? u << 4 : u) & 0xF0F0F0F0u;
        *we = tinyc_s8_sxtb16(t);
        *wo = tinyc_s8_sxtb16_ror8(t);
    } else if (layout == TINYC_PK_DENSE_I2) {
        const uint32_t t = (u << (6 - 2 * c)) & 0xC0C0C0C0u;
        *we = tinyc_s8_sxtb16(t);
        *wo = tinyc_s8_sxtb16_ror8(t);
    } else if (use_table) {
        const int32_t sh = c * 4 * bits;
        const uint32_t m2 = (1u << (2 * bits)) - 1u;
        *we = table[(u >> sh) & m2];
        *wo = table[(u >> (sh + 2 * bits)) & m2];
    } else {
        const int32_t sh = c * 4 * bits;
        const uint32_t m = (1u << bits) - 1u;
        *we = tinyc_pk_pack16(cbr[(u >> sh) & m], cbr[(u >> (sh + bits)) & m]);
        *wo = tinyc_pk_pack16(cbr[(u >> (sh + 2 * bits)) & m], cbr[(u >> (sh + 3 * bits)) & m]);
    }
}
#endif

#ifdef TINYC_PK_S8_FC_DENSE
/* Fully connected with dense packed weights (codebook indices, i4, i2): each input row is
 * expanded once into int16 pairs (`col`, 2 words per 4 inputs, zero past kp), then every
 * output row's words are unpacked in registers into SMLAD operands. x rows are read in place
 * when contiguous (direct), else gathered into `gather` (zero-padded to kp). */
TINYC_PK_INLINE void tinyc_pk_s8_fc_dense(const int8_t *x, const void *w, const int8_t *cb, const int32_t *qb,
                                          const int32_t *qm, const uint8_t *qs, int8_t *y, int8_t *gather,
                                          tinyc_s8_word *col, tinyc_s8_word *table, int32_t rows, int32_t k, int32_t kp,
                                          int32_t wpr, int32_t nout, int32_t xs_r, int32_t xs_k, int32_t ys_r,
                                          int32_t ys_n, int32_t direct, int32_t layout, int32_t vkind, int32_t bits,
                                          int32_t per_channel, int32_t kcb, int32_t use_table, int32_t qmode,
                                          int32_t m_uni, int32_t m_lit, int32_t s_uni, int32_t s_lit, int32_t zy,
                                          int32_t lo, int32_t hi)
{
    const int32_t cpw = tinyc_pk_chunks_per_word(layout, bits), shift = tinyc_pk_scale_shift(layout);
    const int32_t chunks = kp / 4;
    int32_t r, j, i;
    if (use_table) tinyc_pk_pairs(cb, table, bits);
    for (i = 2 * chunks; i < 2 * wpr * cpw; ++i) col[i] = 0;
    if (!direct && kp > k) memset(gather + k, 0, (size_t)(kp - k));
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * xs_r;
        int8_t *yr = y + r * ys_r;
        if (!direct) {
            for (i = 0; i < k; ++i) gather[i] = xr[i * xs_k];
            xr = gather;
        }
        tinyc_s8_expand(xr, col, chunks, 2);
        if (layout == TINYC_PK_DENSE_BITS) {
            /* groups of 8 b-bit fields (b bytes): one output row per pass */
            for (j = 0; j < nout; ++j, yr += ys_n) {
                const uint8_t *gp = (const uint8_t *)w + j * wpr * bits;
                const int8_t *cbr = per_channel ? cb + j * kcb : cb;
                const tinyc_s8_word *cp = col;
                int32_t s = tinyc_pk_bias(qb, j, qmode);
                for (i = 0; i < wpr; ++i, gp += bits, cp += 4) {
                    int32_t we, wo, x0, x1;
                    tinyc_pk_bits_chunk(gp, 0, bits, vkind, cbr, &we, &wo);
                    TINYC_S8_LD2(cp, 0, x0, x1);
                    s = tinyc_s8_smlad(x0, we, s);
                    s = tinyc_s8_smlad(x1, wo, s);
                    tinyc_pk_bits_chunk(gp, 1, bits, vkind, cbr, &we, &wo);
                    TINYC_S8_LD2(cp, 8, x0, x1);
                    s = tinyc_s8_smlad(x0, we, s);
                    s = tinyc_s8_smlad(x1, wo, s);
                }
                *yr = (int8_t)TINYC_PK_OUT(s, j);
            }
            continue;
        }
        /* two output rows per pass share the input loads (i2: one, or GCC spills the unpacked words) */
        for (j = 0; layout != TINYC_PK_DENSE_I2 && j + 1 < nout; j += 2, yr += 2 * ys_n) {
            const uint32_t *wa = (const uint32_t *)w + j * wpr, *wb = wa + wpr;
            const int8_t *ca = per_channel ? cb + j * kcb : cb, *cbb = per_channel ? ca + kcb : cb;
            const tinyc_s8_word *cp = col;
            int32_t sa = shift ? 0 : tinyc_pk_bias(qb, j, qmode), sb = shift ? 0 : tinyc_pk_bias(qb, j + 1, qmode);
            for (i = 0; i < wpr; ++i) {
                const uint32_t ua = wa[i], ub = wb[i];
#define TINYC_PK_FC2_CHUNK(C)                                                                   \
    if ((C) < cpw) {                                                                                 \
        int32_t we, wo, x0, x1;                                                                      \
        TINYC_S8_LD2(cp, 8 * (C), x0, x1);                                                           \
        tinyc_pk_chunk(ua, (C), layout, bits, use_table, table, ca, &we, &wo);                       \
        sa = tinyc_s8_smlad(x0, we, sa);                                                             \
        sa = tinyc_s8_smlad(x1, wo, sa);                                                             \
        tinyc_pk_chunk(ub, (C), layout, bits, use_table, table, cbb, &we, &wo);                      \
        sb = tinyc_s8_smlad(x0, we, sb);                                                             \
        sb = tinyc_s8_smlad(x1, wo, sb);                                                             \
    }
                TINYC_PK_FC2_CHUNK(0) TINYC_PK_FC2_CHUNK(1) TINYC_PK_FC2_CHUNK(2) TINYC_PK_FC2_CHUNK(3)
                TINYC_PK_FC2_CHUNK(4) TINYC_PK_FC2_CHUNK(5) TINYC_PK_FC2_CHUNK(6) TINYC_PK_FC2_CHUNK(7)
#undef TINYC_PK_FC2_CHUNK
                cp += 2 * cpw;
            }
            if (shift) {
                sa = tinyc_pk_bias(qb, j, qmode) + (sa >> shift);
                sb = tinyc_pk_bias(qb, j + 1, qmode) + (sb >> shift);
            }
            yr[0] = (int8_t)TINYC_PK_OUT(sa, j);
            yr[ys_n] = (int8_t)TINYC_PK_OUT(sb, j + 1);
        }
        for (; j < nout; ++j, yr += ys_n) {
            const uint32_t *wp = (const uint32_t *)w + j * wpr;
            const int8_t *cbr = per_channel ? cb + j * kcb : cb;
            const tinyc_s8_word *cp = col;
            int32_t s = shift ? 0 : tinyc_pk_bias(qb, j, qmode);
            for (i = 0; i < wpr; ++i) {
                const uint32_t u = wp[i];
#define TINYC_PK_FC1_CHUNK(C)                                                                   \
    if ((C) < cpw) {                                                                                 \
        int32_t we, wo, x0, x1;                                                                      \
        tinyc_pk_chunk(u, (C), layout, bits, use_table, table, cbr, &we, &wo);                       \
        TINYC_S8_LD2(cp, 8 * (C), x0, x1);                                                           \
        s = tinyc_s8_smlad(x0, we, s);                                                               \
        s = tinyc_s8_smlad(x1, wo, s);                                                               \
    }
                TINYC_PK_FC1_CHUNK(0) TINYC_PK_FC1_CHUNK(1) TINYC_PK_FC1_CHUNK(2) TINYC_PK_FC1_CHUNK(3)
                TINYC_PK_FC1_CHUNK(4) TINYC_PK_FC1_CHUNK(5) TINYC_PK_FC1_CHUNK(6) TINYC_PK_FC1_CHUNK(7)
#undef TINYC_PK_FC1_CHUNK
                cp += 2 * cpw;
            }
            if (shift) s = tinyc_pk_bias(qb, j, qmode) + (s >> shift);
            *yr = (int8_t)TINYC_PK_OUT(s, j);
        }
    }
}
#endif

#ifdef TINYC_PK_S8_CONV
/* conv2d (not depthwise) with packed weights, as tinyc_s8_conv_gemm: per block of 4 output
 * pixels and group, an im2col; then every output channel of the group.
 * Dense packed (codebook indices, i4, i2): the im2col is expanded into int16 pairs (8 words
 * per 4-k chunk, as tinyc_s8_gemm4) and each weight word feeds 8 SMLADs per chunk.
 * Sparse (entries, bitmap): the im2col rows stay bytes (4 rows, kp apart) and each stored
 * weight multiplies 4 pixels. A last partial block computes garbage for its missing pixels
 * and stores only the real ones. Scratch: dense 32 * wpr * cpw bytes of col + kp of row;
 * sparse 4 * kp. */
TINYC_PK_INLINE void tinyc_pk_s8_conv(const int8_t *x, const uint8_t *w, const int8_t *vals, const void *counts,
                                      const int8_t *cb,
                                      const int32_t *qb, const int32_t *qm, const uint8_t *qs, int8_t *y,
                                      int8_t *scratch, tinyc_s8_word *table, int32_t nb, int32_t groups, int32_t cg,
                                      int32_t og, int32_t h, int32_t wd, int32_t oh, int32_t ow, int32_t kh,
                                      int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt,
                                      int32_t pl, int32_t xs_n, int32_t xs_c, int32_t xs_h, int32_t xs_w,
                                      int32_t ys_n, int32_t ys_c, int32_t ys_p, int32_t zx, int32_t kp, int32_t wpr,
                                      int32_t direct, int32_t layout, int32_t vkind, int32_t bits,
                                      int32_t per_channel, int32_t kcb, int32_t wide, int32_t gbits,
                                      int32_t use_table, int32_t qmode, int32_t m_uni, int32_t m_lit, int32_t s_uni, int32_t s_lit,
                                      int32_t zy, int32_t lo, int32_t hi)
{
    const int32_t dense = layout != TINYC_PK_ENTRIES && layout != TINYC_PK_BITMAP && layout != TINYC_PK_STREAM;
    const int32_t cpw = dense ? tinyc_pk_chunks_per_word(layout, bits) : 1;
    const int32_t shift = dense ? tinyc_pk_scale_shift(layout) : 0;
    const int32_t npix = oh * ow, chunks = kp / 4, k = kh * kw * cg, rb = (k + 7) / 8;
    const int32_t expand = !direct && xs_c == 1 && (cg & 3) == 0;
    const int32_t zz = tinyc_s8_sxtb16((uint32_t)(uint8_t)zx * 0x01010101u);
    tinyc_s8_word *col = (tinyc_s8_word *)(void *)scratch;
    int8_t *row = scratch + 32 * wpr * cpw;
    int32_t n, g, p0, p, o, i;
    if (dense) {
        if (use_table) tinyc_pk_pairs(cb, table, bits);
        for (i = 8 * chunks; i < 8 * wpr * cpw; ++i) col[i] = 0;
        if (!direct && !expand && kp > k) memset(row + k, 0, (size_t)(kp - k));
    }
    for (n = 0; n < nb; ++n) {
        for (p0 = 0; p0 < npix; p0 += 4) {
            const int32_t np = npix - p0 < 4 ? npix - p0 : 4;
            const uint8_t *ep = w;
            const int8_t *vp = vals;
            tinyc_pk_bits vr;
            tinyc_pk_bits_init(&vr, layout == TINYC_PK_BITMAP ? w + groups * og * rb : w);
            for (g = 0; g < groups; ++g) {
                const int8_t *xg = x + n * xs_n + g * cg * xs_c;
                int8_t *yg = y + n * ys_n + g * og * ys_c + p0 * ys_p;
                for (p = 0; p < np; ++p) {
                    const int32_t oy = (p0 + p) / ow, ox = (p0 + p) % ow;
                    if (!dense) {
                        tinyc_s8_im2col(xg, scratch + p * kp, oy, ox, cg, h, wd, kh, kw, sh, sw, dh, dw, pt, pl,
                                        xs_c, xs_h, xs_w, zx);
                    } else if (direct) {
                        tinyc_s8_expand(xg + oy * sh * xs_h + ox * sw * xs_w, col + 2 * p, chunks, 8);
                    } else if (expand) {
                        tinyc_s8_im2col_expand(xg, col + 2 * p, 8, oy, ox, cg, h, wd, kh, kw, sh, sw, dh, dw, pt,
                                               pl, xs_h, xs_w, zz);
                    } else {
                        tinyc_s8_im2col(xg, row, oy, ox, cg, h, wd, kh, kw, sh, sw, dh, dw, pt, pl, xs_c, xs_h,
                                        xs_w, zx);
                        tinyc_s8_expand(row, col + 2 * p, chunks, 8);
                    }
                }
                for (o = 0; o < og; ++o) {
                    const int32_t ro = g * og + o;
                    const int8_t *cbr = per_channel ? cb + ro * kcb : cb;
                    int32_t a0, a1, a2, a3;
                    if (layout == TINYC_PK_DENSE_BITS) {
                        const uint8_t *gp = w + ro * wpr * bits;
                        const tinyc_s8_word *c = col;
                        a0 = a1 = a2 = a3 = tinyc_pk_bias(qb, ro, qmode);
                        for (i = 0; i < wpr; ++i, gp += bits, c += 16) {
                            int32_t we, wo;
                            tinyc_pk_bits_chunk(gp, 0, bits, vkind, cbr, &we, &wo);
                            TINYC_S8_GEMM4_STEP(c, 0, we, wo);
                            tinyc_pk_bits_chunk(gp, 1, bits, vkind, cbr, &we, &wo);
                            TINYC_S8_GEMM4_STEP(c, 32, we, wo);
                        }
                    } else if (dense) {
                        const uint32_t *wp = (const uint32_t *)(const void *)w + ro * wpr;
                        const tinyc_s8_word *c = col;
                        a0 = a1 = a2 = a3 = shift ? 0 : tinyc_pk_bias(qb, ro, qmode);
                        for (i = 0; i < wpr; ++i) {
                            const uint32_t u = wp[i];
#define TINYC_PK_CONV_CHUNK(C)                                                                  \
    if ((C) < cpw) {                                                                                 \
        int32_t we, wo;                                                                              \
        tinyc_pk_chunk(u, (C), layout, bits, use_table, table, cbr, &we, &wo);                       \
        TINYC_S8_GEMM4_STEP(c, 32 * (C), we, wo);                                                    \
    }
                            TINYC_PK_CONV_CHUNK(0) TINYC_PK_CONV_CHUNK(1) TINYC_PK_CONV_CHUNK(2)
                            TINYC_PK_CONV_CHUNK(3) TINYC_PK_CONV_CHUNK(4) TINYC_PK_CONV_CHUNK(5)
                            TINYC_PK_CONV_CHUNK(6) TINYC_PK_CONV_CHUNK(7)
#undef TINYC_PK_CONV_CHUNK
                            c += 8 * cpw;
                        }
                        if (shift) {
                            const int32_t b = tinyc_pk_bias(qb, ro, qmode);
                            a0 = b + (a0 >> shift);
                            a1 = b + (a1 >> shift);
                            a2 = b + (a2 >> shift);
                            a3 = b + (a3 >> shift);
                        }
                    } else {
                        uint32_t u0, u1, u2, u3;
                        u0 = u1 = u2 = u3 = (uint32_t)tinyc_pk_bias(qb, ro, qmode);
                        if (layout == TINYC_PK_STREAM) {
                            const int32_t ne = tinyc_pk_count(counts, wide, ro);
                            const int8_t *cbs = tinyc_pk_reg(cbr);
                            int32_t t = -1;
#define TINYC_PK_CONV_MAC(step, v)                                                                    \
    do {                                                                                             \
        t += (step);                                                                                 \
        u0 += (uint32_t)(scratch[t] * (v));                                                          \
        u1 += (uint32_t)(scratch[t + kp] * (v));                                                     \
        u2 += (uint32_t)(scratch[t + 2 * kp] * (v));                                                 \
        u3 += (uint32_t)(scratch[t + 3 * kp] * (v));                                                 \
        TINYC_PK_BARRIER();                                                                          \
    } while (0)
#define cbr cbs
                            TINYC_PK_STREAM_ROW(ep, ne, TINYC_PK_CONV_MAC);
#undef cbr
#undef TINYC_PK_CONV_MAC
                        } else if (layout == TINYC_PK_ENTRIES) {
                            const int32_t ne = tinyc_pk_count(counts, wide, ro);
                            const int8_t *xp = scratch;
                            int32_t e;
                            for (e = 0; e < ne; ++e) {
                                int32_t gap, v;
                                if (gbits == 4 && vkind == TINYC_PK_I8) {   /* split entries */
                                    gap = (int32_t)((e & 1) ? (uint32_t)ep[-1] >> 4 : (uint32_t)*ep++ & 15u);
                                    v = *vp++;
                                } else {
                                    ep = tinyc_pk_s8_entry(ep, cbr, vkind, bits, &gap, &v);
                                }
                                xp += gap;
                                u0 += (uint32_t)(xp[0] * v);
                                u1 += (uint32_t)(xp[kp] * v);
                                u2 += (uint32_t)(xp[2 * kp] * v);
                                u3 += (uint32_t)(xp[3 * kp] * v);
                                ++xp;
                            }
                        } else {
                            const uint8_t *bm = w + ro * rb;
                            int32_t byte;
                            for (byte = 0; byte < rb; ++byte) {
                                uint32_t m = bm[byte];
                                while (m) {
                                    const int8_t *xp = scratch + 8 * byte + tinyc_pk_ctz(m);
                                    const int32_t v = vkind == TINYC_PK_I8 ? (int8_t)tinyc_pk_read(&vr, 8)
                                                                           : tinyc_pk_s8_value(&vr, cbr, vkind, bits);
                                    m &= m - 1u;
                                    u0 += (uint32_t)(xp[0] * v);
                                    u1 += (uint32_t)(xp[kp] * v);
                                    u2 += (uint32_t)(xp[2 * kp] * v);
                                    u3 += (uint32_t)(xp[3 * kp] * v);
                                }
                            }
                        }
                        a0 = (int32_t)u0;
                        a1 = (int32_t)u1;
                        a2 = (int32_t)u2;
                        a3 = (int32_t)u3;
                    }
                    {
                        int8_t *yo = yg + o * ys_c;
                        yo[0] = (int8_t)TINYC_PK_OUT(a0, ro);
                        if (np > 1) yo[ys_p] = (int8_t)TINYC_PK_OUT(a1, ro);
                        if (np > 2) yo[2 * ys_p] = (int8_t)TINYC_PK_OUT(a2, ro);
                        if (np > 3) yo[3 * ys_p] = (int8_t)TINYC_PK_OUT(a3, ro);
                    }
                }
            }
        }
    }
}
#endif
