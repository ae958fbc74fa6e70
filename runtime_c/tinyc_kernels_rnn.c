/* tinyc recurrent-layer kernels: gru and lstm, float32 and int8 (reference C99, no allocation,
 * no global state).
 *
 * Not a library of its own: a generated model source defines TINYC_RNN_<KERNEL> for each kernel
 * it calls and then #includes this file (see tinyc_kernels_rnn.h). Built on its own the file
 * defines no symbols.
 *
 * One call computes a whole layer. Each step computes every hidden unit j from the previous
 * state only (its gates' rows of both weight matrices), so the new state goes to the other half
 * of a two-state scratch buffer and the halves swap. The int8 arithmetic is defined in
 * compiler/ops/recurrent.py (the interpreter's reference); this code computes it bit for bit.
 */
#include <math.h>
#include <stdint.h>

#include "tinyc_kernels_rnn.h"

/* ---- float ----------------------------------------------------------------------------------- */

#if defined(TINYC_RNN_GRU_F32) || defined(TINYC_RNN_LSTM_F32)
TINYC_RNN_HELPER float tinyc_rnn_dot_f32(const float *w, const float *x, int32_t k)
{
    float acc = 0.0f;
    int32_t i;
    for (i = 0; i < k; ++i) acc += w[i] * x[i];
    return acc;
}

TINYC_RNN_HELPER float tinyc_rnn_sigmoid_f32(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* Gate pre-activations of hidden unit j: ax[g] = b_ih + W_ih x, ah[g] = b_hh + W_hh h for each gate g. */
TINYC_RNN_HELPER void tinyc_rnn_gates_f32(const tinyc_rnn_f32_params *p, int32_t d, int32_t gates, int32_t j,
                                          const float *xt, const float *hp, float *ax, float *ah)
{
    const int32_t f = p->f, h = p->h;
    int32_t g;
    for (g = 0; g < gates; ++g) {
        const int32_t row = g * h + j;
        ax[g] = p->b_ih[d][row] + tinyc_rnn_dot_f32(p->w_ih[d] + row * f, xt, f);
        ah[g] = p->b_hh[d][row] + tinyc_rnn_dot_f32(p->w_hh[d] + row * h, hp, h);
    }
}
#endif

#ifdef TINYC_RNN_GRU_F32
/* state: 2H floats. */
static void tinyc_rnn_gru_f32(const float *x, const float *h0, float *y, float *state,
                              const tinyc_rnn_f32_params *p)
{
    const int32_t nb = p->n, steps = p->t, h = p->h, dirs = p->dirs;
    int32_t n, d, s, j;
    for (n = 0; n < nb; ++n) {
        for (d = 0; d < dirs; ++d) {
            float *hp = state, *hn = state + h;
            for (j = 0; j < h; ++j) hp[j] = h0 ? h0[(d * nb + n) * h + j] : 0.0f;
            for (s = 0; s < steps; ++s) {
                const int32_t t = d ? steps - 1 - s : s;
                float *out = y + (n * steps + t) * dirs * h + d * h;
                float *tmp;
                for (j = 0; j < h; ++j) {
                    float ax[3], ah[3], r, z, nv;
                    tinyc_rnn_gates_f32(p, d, 3, j, x + (n * steps + t) * p->f, hp, ax, ah);
                    r = tinyc_rnn_sigmoid_f32(ax[0] + ah[0]);
                    z = tinyc_rnn_sigmoid_f32(ax[1] + ah[1]);
                    nv = tanhf(ax[2] + r * ah[2]);
                    hn[j] = (1.0f - z) * nv + z * hp[j];
                }
                for (j = 0; j < h; ++j) out[j] = hn[j];
                tmp = hp;
                hp = hn;
                hn = tmp;
            }
        }
    }
}
#endif

#ifdef TINYC_RNN_LSTM_F32
/* state: 3H floats (two hidden states, the cell state). */
static void tinyc_rnn_lstm_f32(const float *x, const float *h0, const float *c0, float *y, float *state,
                               const tinyc_rnn_f32_params *p)
{
    const int32_t nb = p->n, steps = p->t, h = p->h, dirs = p->dirs;
    int32_t n, d, s, j;
    for (n = 0; n < nb; ++n) {
        for (d = 0; d < dirs; ++d) {
            float *hp = state, *hn = state + h, *c = state + 2 * h;
            for (j = 0; j < h; ++j) {
                hp[j] = h0 ? h0[(d * nb + n) * h + j] : 0.0f;
                c[j] = c0 ? c0[(d * nb + n) * h + j] : 0.0f;
            }
            for (s = 0; s < steps; ++s) {
                const int32_t t = d ? steps - 1 - s : s;
                float *tmp;
                for (j = 0; j < h; ++j) {
                    float ax[4], ah[4], ig, fg, gg, og;
                    tinyc_rnn_gates_f32(p, d, 4, j, x + (n * steps + t) * p->f, hp, ax, ah);
                    ig = tinyc_rnn_sigmoid_f32(ax[0] + ah[0]);
                    fg = tinyc_rnn_sigmoid_f32(ax[1] + ah[1]);
                    gg = tanhf(ax[2] + ah[2]);
                    og = tinyc_rnn_sigmoid_f32(ax[3] + ah[3]);
                    c[j] = fg * c[j] + ig * gg;
                    hn[j] = og * tanhf(c[j]);
                }
                if (!p->cell) {
                    float *out = y + (n * steps + t) * dirs * h + d * h;
                    for (j = 0; j < h; ++j) out[j] = hn[j];
                }
                tmp = hp;
                hp = hn;
                hn = tmp;
            }
            if (p->cell) {
                for (j = 0; j < h; ++j) y[(d * nb + n) * h + j] = c[j];
            }
        }
    }
}
#endif

/* ---- int8 ------------------------------------------------------------------------------------ */

/* The int8 layer, per direction and batch row, each step:
 *   1. x_t's codes widened to int16 (xw, kx entries, zero padded);
 *   2. the gate pre-activations of every weight row r (G*H, padded to `rows`, a multiple of 4):
 *      px[r] from W_ih and xw, ph[r] from W_hh and hw (the previous hidden codes as int16, kh
 *      entries), four rows at a time: each loaded input pair feeds four SMLADs. The compiler
 *      arranged the weights (tinyc/backends/c_ops_recurrent.py): per block of 4 rows, kx/4 chunks
 *      of W_ih then kh/4 chunks of W_hh, each chunk one word per row holding (w0, w2, w1, w3), so
 *      SXTB16 gives the pair (w0, w1) and SXTB16 ROR 8 the pair (w2, w3) against the input pairs
 *      (x0, x1), (x2, x3). Zero points are folded into the biases (the accumulators' start);
 *   3. the gates of each hidden unit (tables, Q formats: docs/quantization.md), the new hidden
 *      code written over the old one in hw (the matrix products of the step are done).
 * Requantization of a pre-activation (tinyc_kernels_rnn.h): (acc * M + 2^(n-1)) >> n saturated to
 * int16 is computed exactly as ssat16(smmla(acc << L, M, R) >> S) with n + L = S + 32 >= 33 and
 * R = 2^(S-1): acc * 2^L * M / 2^(n+L) = acc * M / 2^n, R * 2^32 = 2^(n+L-1) and
 * floor(floor(v / 2^32) / 2^S) = floor(v / 2^(32+S)). The compiler checked |acc| * 2^L < 2^31 for
 * every row (no overflow); where it could not, the records take the 64-bit form. */

#if defined(TINYC_RNN_GRU_S8) || defined(TINYC_RNN_LSTM_S8)

#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>

TINYC_RNN_HELPER int32_t tinyc_rnn_sxtb16(uint32_t x)
{
    return __sxtb16((int32_t)x);
}

TINYC_RNN_HELPER int32_t tinyc_rnn_sxtb16_ror8(uint32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

TINYC_RNN_HELPER int32_t tinyc_rnn_smlad(int32_t a, int32_t b, int32_t acc)
{
    return __smlad(a, b, acc);
}

/* floor((r * 2^32 + a * b) / 2^32) */
TINYC_RNN_HELPER int32_t tinyc_rnn_smmla(int32_t a, int32_t b, int32_t r)
{
    int32_t y;
    __asm__("smmla %0, %1, %2, %3" : "=r"(y) : "r"(a), "r"(b), "r"(r));
    return y;
}

TINYC_RNN_HELPER int32_t tinyc_rnn_ssat16(int32_t x)
{
    return __ssat(x, 16);
}

TINYC_RNN_HELPER int32_t tinyc_rnn_ssat8(int32_t x)
{
    return __ssat(x, 8);
}

#else /* exact C99 equivalents (host, Cortex-M0/M3) */

TINYC_RNN_HELPER int32_t tinyc_rnn_sxtb16(uint32_t x)
{
    return (int32_t)((uint32_t)(uint16_t)(int16_t)(int8_t)(uint8_t)(x & 0xFFu)
                     | ((uint32_t)(uint16_t)(int16_t)(int8_t)(uint8_t)((x >> 16) & 0xFFu) << 16));
}

TINYC_RNN_HELPER int32_t tinyc_rnn_sxtb16_ror8(uint32_t x)
{
    return tinyc_rnn_sxtb16(x >> 8);
}

/* Wrapping adds, as the instruction does (the true sums fit int32: the interpreter checks). */
TINYC_RNN_HELPER int32_t tinyc_rnn_smlad(int32_t a, int32_t b, int32_t acc)
{
    const int32_t p = (int32_t)(int16_t)(uint16_t)((uint32_t)a & 0xFFFFu) * (int16_t)(uint16_t)((uint32_t)b & 0xFFFFu);
    const int32_t q = (int32_t)(int16_t)(uint16_t)((uint32_t)a >> 16) * (int16_t)(uint16_t)((uint32_t)b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)p + (uint32_t)q);
}

/* |r| < 2^30 (the compiler checks it): no int64 overflow. */
TINYC_RNN_HELPER int32_t tinyc_rnn_smmla(int32_t a, int32_t b, int32_t r)
{
    return (int32_t)(((int64_t)r * 4294967296LL + (int64_t)a * b) >> 32);
}

TINYC_RNN_HELPER int32_t tinyc_rnn_ssat16(int32_t x)
{
    return x < -32768 ? -32768 : (x > 32767 ? 32767 : x);
}

TINYC_RNN_HELPER int32_t tinyc_rnn_ssat8(int32_t x)
{
    return x < -128 ? -128 : (x > 127 ? 127 : x);
}

#endif

/* (acc * M + 2^(n-1)) >> n, n in [1, 62] (single rounding, round half up). */
TINYC_RNN_HELPER int64_t tinyc_rnn_rq(int64_t acc, int32_t m, int32_t n)
{
    return (acc * m + ((int64_t)1 << (n - 1))) >> n;
}

TINYC_RNN_HELPER int32_t tinyc_rnn_sat16(int64_t v)
{
    return (int32_t)(v < -32768 ? -32768 : (v > 32767 ? 32767 : v));
}

/* A scalar conversion r = {M, S, R, L} (fast: smmla(v << L, M, R) >> S) or {M, n, 0, -1}
 * (64 bits), then + zp, saturated to int8. */
TINYC_RNN_HELPER int32_t tinyc_rnn_code(int32_t v, const int32_t *r, int32_t zp)
{
    int64_t y;
    if (r[3] >= 0) return tinyc_rnn_ssat8((tinyc_rnn_smmla((int32_t)((uint32_t)v << r[3]), r[0], r[2]) >> r[1]) + zp);
    y = tinyc_rnn_rq(v, r[0], r[1]) + zp;
    return (int32_t)(y < -128 ? -128 : (y > 127 ? 127 : y));
}

/* Interpolated table lookup, Q3.12 int16 in, Q0.15 out: t[i] + (((t[i+1] - t[i]) * f + 128) >> 8)
 * with i = (v + 2^15) >> 8 = (v >> 8) + 128 and f = v & 255. `tab` points at entry 128 of the
 * packed table {t[i] (low half), t[i+1] - t[i] (high half)} (256 words). */
TINYC_RNN_HELPER int32_t tinyc_rnn_act(const int32_t *tab, int32_t v)
{
    const int32_t e = tab[v >> 8];
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
    return (int16_t)e + (__smlatb(e, v & 255, 128) >> 8);
#else
    return (int32_t)(int16_t)(uint16_t)((uint32_t)e & 0xFFFFu) + (((e >> 16) * (v & 255) + 128) >> 8);
#endif
}

/* (a * b + 2^14) >> 15 where the product fits int32 (a Q0.15 gate times an int16). */
TINYC_RNN_HELPER int32_t tinyc_rnn_mul_q15(int32_t a, int32_t b)
{
    return (a * b + 16384) >> 15;
}

#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__ARM_FEATURE_SIMD32)
/* One chunk: 4 inputs (two int16 pairs) against one weight word of each of 4 rows: 3 LDRD,
 * 8 SXTB16, 8 SMLAD. */
#define TINYC_RNN_CHUNK_ASM                                                                    \
    "ldrd %[x0], %[x1], [%[xp]], #8\n\t"                                                   \
    "ldrd %[u0], %[u1], [%[wp]], #8\n\t"                                                   \
    "sxtb16 %[t], %[u0]\n\t"                                                               \
    "smlad %[a0], %[t], %[x0], %[a0]\n\t"                                                  \
    "sxtb16 %[u0], %[u0], ror #8\n\t"                                                      \
    "smlad %[a0], %[u0], %[x1], %[a0]\n\t"                                                 \
    "sxtb16 %[t], %[u1]\n\t"                                                               \
    "smlad %[a1], %[t], %[x0], %[a1]\n\t"                                                  \
    "sxtb16 %[u1], %[u1], ror #8\n\t"                                                      \
    "smlad %[a1], %[u1], %[x1], %[a1]\n\t"                                                 \
    "ldrd %[u0], %[u1], [%[wp]], #8\n\t"                                                   \
    "sxtb16 %[t], %[u0]\n\t"                                                               \
    "smlad %[a2], %[t], %[x0], %[a2]\n\t"                                                  \
    "sxtb16 %[u0], %[u0], ror #8\n\t"                                                      \
    "smlad %[a2], %[u0], %[x1], %[a2]\n\t"                                                 \
    "sxtb16 %[t], %[u1]\n\t"                                                               \
    "smlad %[a3], %[t], %[x0], %[a3]\n\t"                                                  \
    "sxtb16 %[u1], %[u1], ror #8\n\t"                                                      \
    "smlad %[a3], %[u1], %[x1], %[a3]\n\t"

/* acc[0..3] += 4 rows (w: one word per row per chunk) . x (int16 pairs), `chunks` >= 1 chunks of 4
 * inputs: an odd chunk first, then two chunks per loop trip. */
#define TINYC_RNN_DOT4(w, x, chunks, a0, a1, a2, a3)                                           \
    do {                                                                                       \
        const int32_t *w_ = (w), *wend_ = w_ + 4 * (chunks);                                   \
        const tinyc_rnn_word *x_ = (x);                                                        \
        int32_t x0_, x1_, u0_, u1_, t_;                                                        \
        if ((chunks) & 1) {                                                                    \
            __asm__ volatile(TINYC_RNN_CHUNK_ASM                                               \
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [wp] "+r"(w_),      \
              [xp] "+r"(x_), [x0] "=&r"(x0_), [x1] "=&r"(x1_), [u0] "=&r"(u0_),                \
              [u1] "=&r"(u1_), [t] "=&r"(t_)                                                   \
            : : "memory");                                                             \
        }                                                                                      \
        if (w_ != wend_) {                                                                     \
            __asm__ volatile("1:\n\t" TINYC_RNN_CHUNK_ASM TINYC_RNN_CHUNK_ASM                   \
                             "cmp %[wp], %[we]\n\t"                                             \
                             "bne 1b"                                                          \
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [wp] "+r"(w_),      \
              [xp] "+r"(x_), [x0] "=&r"(x0_), [x1] "=&r"(x1_), [u0] "=&r"(u0_),                \
              [u1] "=&r"(u1_), [t] "=&r"(t_)                                                   \
            : [we] "r"(wend_) : "cc", "memory");                                       \
        }                                                                                      \
    } while (0)
#else
#define TINYC_RNN_DOT4(w, x, chunks, a0, a1, a2, a3)                                           \
    do {                                                                                       \
        const int32_t *w_ = (w), *wend_ = w_ + 4 * (chunks);                                   \
        const tinyc_rnn_word *x_ = (x);                                                        \
        for (; w_ != wend_; w_ += 4, x_ += 2) {                                                \
            const int32_t x0_ = x_[0], x1_ = x_[1];                                            \
            a0 = tinyc_rnn_smlad(tinyc_rnn_sxtb16((uint32_t)w_[0]), x0_, a0);                  \
            a0 = tinyc_rnn_smlad(tinyc_rnn_sxtb16_ror8((uint32_t)w_[0]), x1_, a0);             \
            a1 = tinyc_rnn_smlad(tinyc_rnn_sxtb16((uint32_t)w_[1]), x0_, a1);                  \
            a1 = tinyc_rnn_smlad(tinyc_rnn_sxtb16_ror8((uint32_t)w_[1]), x1_, a1);             \
            a2 = tinyc_rnn_smlad(tinyc_rnn_sxtb16((uint32_t)w_[2]), x0_, a2);                  \
            a2 = tinyc_rnn_smlad(tinyc_rnn_sxtb16_ror8((uint32_t)w_[2]), x1_, a2);             \
            a3 = tinyc_rnn_smlad(tinyc_rnn_sxtb16((uint32_t)w_[3]), x0_, a3);                  \
            a3 = tinyc_rnn_smlad(tinyc_rnn_sxtb16_ror8((uint32_t)w_[3]), x1_, a3);             \
        }                                                                                      \
    } while (0)
#endif

/* Pre-activations of a block of 4 rows against the int16 vector x (chunks of 4 inputs): q the
 * block's records [bias x4][M x4][X x4][Y x4], rq the matrix's {mode, L, R, S} (see
 * tinyc_kernels_rnn.h), out the 4 int16 results. Returns the weights after the block's part. */
#define TINYC_RNN_RQ4(i, a)                                                                    \
    do {                                                                                       \
        int32_t v_;                                                                            \
        if (mode == 0) {                                                                       \
            v_ = tinyc_rnn_smmla((int32_t)((uint32_t)(a) << l), q[4 + (i)], r) >> s;           \
        } else if (mode == 1) {                                                                \
            v_ = tinyc_rnn_smmla((int32_t)((uint32_t)(a) << q[8 + (i)]), q[4 + (i)], r) >> s;  \
        } else if (mode == 2) {                                                                \
            v_ = tinyc_rnn_smmla((int32_t)((uint32_t)(a) << l), q[4 + (i)], q[8 + (i)]) >> q[12 + (i)]; \
        } else {                                                                               \
            out[i] = (int16_t)tinyc_rnn_sat16(tinyc_rnn_rq((a), q[4 + (i)], q[8 + (i)]));      \
            break;                                                                             \
        }                                                                                      \
        out[i] = (int16_t)tinyc_rnn_ssat16(v_);                                                \
    } while (0)

TINYC_RNN_INLINE const int32_t *tinyc_rnn_block4(const int32_t *w, const int32_t *q, const tinyc_rnn_word *x,
                                                 int32_t chunks, const int32_t *rq, tinyc_rnn_half *out)
{
    const int32_t mode = rq[0], l = rq[1], r = rq[2], s = rq[3];
    int32_t a0 = q[0], a1 = q[1], a2 = q[2], a3 = q[3];
    TINYC_RNN_DOT4(w, x, chunks, a0, a1, a2, a3);
    TINYC_RNN_RQ4(0, a0);
    TINYC_RNN_RQ4(1, a1);
    TINYC_RNN_RQ4(2, a2);
    TINYC_RNN_RQ4(3, a3);
    return w + 4 * chunks;
}

/* Step t's pre-activations: x_t widened into xw, then px, ph of every row (the scratch `s`). */
static TINYC_RNN_NOINLINE void tinyc_rnn_preacts(const tinyc_rnn_s8_params *p, int32_t d, const int8_t *xt,
                                        tinyc_rnn_s8_state *s)
{
    const int32_t f = p->f, xs = p->xs_f, cx = p->kx / 4, ch = p->kh / 4, blocks = p->rows / 4;
    const int32_t *w = p->w[d], *q = p->q[d];
    tinyc_rnn_half *xw = (tinyc_rnn_half *)(void *)s->xw;
    int32_t i, b;
    for (i = 0; i < f; ++i) xw[i] = xt[i * xs];
    for (b = 0; b < blocks; ++b, q += 32) {
        w = tinyc_rnn_block4(w, q, s->xw, cx, p->rq_x, s->px + 4 * b);
        w = tinyc_rnn_block4(w, q + 16, s->hw, ch, p->rq_h, s->ph + 4 * b);
    }
}

/* The hidden state as int16 codes (hw, zero padded to kh) from h0, and x_t's padding zeroed. */
TINYC_RNN_HELPER void tinyc_rnn_start(const tinyc_rnn_s8_params *p, const int8_t *h0, int32_t d, int32_t n,
                                      tinyc_rnn_s8_state *s)
{
    tinyc_rnn_half *hw = (tinyc_rnn_half *)(void *)s->hw, *xw = (tinyc_rnn_half *)(void *)s->xw;
    int32_t j;
    for (j = 0; j < p->kh; ++j) hw[j] = (int16_t)(j < p->h ? h0[d * p->hs_d + n * p->hs_n + j * p->hs_h] : 0);
    for (j = p->f; j < p->kx; ++j) xw[j] = 0;
}
#endif

#ifdef TINYC_RNN_GRU_S8
/* The gates of step t: every hidden unit's new state, to the result (out, stride ys) and over its
 * previous code in hw. */
static TINYC_RNN_NOINLINE void tinyc_rnn_gru_gates(const tinyc_rnn_s8_params *p, const tinyc_rnn_s8_state *s,
                                                   int8_t *out)
{
    const int32_t h = p->h, ys = p->ys_2, zy = p->zy, zh = p->zh;
    const int32_t *sig = p->act + 128, *tnh = p->act + 384, *prevs = p->prev + 128;
    const tinyc_rnn_half *px = s->px, *ph = s->ph;
    tinyc_rnn_half *hw = (tinyc_rnn_half *)(void *)s->hw;
    int32_t j;
    for (j = 0; j < h; ++j) {
        const int32_t r = tinyc_rnn_act(sig, tinyc_rnn_ssat16(px[j] + ph[j]));
        const int32_t z = tinyc_rnn_act(sig, tinyc_rnn_ssat16(px[h + j] + ph[h + j]));
        const int32_t nv = tinyc_rnn_act(tnh, tinyc_rnn_ssat16(px[2 * h + j] + tinyc_rnn_mul_q15(r, ph[2 * h + j])));
        const int32_t d = prevs[hw[j]] - nv;
        /* (1 - z) n + z hp = n + round(z (hp - n) / 2^15): in 32 bits when the compiler checked
         * |hp - n| < 2^16 (p->narrow) */
        const int32_t h15 = nv + (p->narrow ? (z * d + 16384) >> 15 : (int32_t)(((int64_t)z * d + 16384) >> 15));
        out[j * ys] = (int8_t)tinyc_rnn_code(h15, p->out_q, zy);
        hw[j] = (int16_t)tinyc_rnn_code(h15, p->hid_q, zh);
    }
}

static void tinyc_rnn_gru_s8(const int8_t *x, const int8_t *h0, int8_t *y, int8_t *scratch,
                             const tinyc_rnn_s8_params *p)
{
    const int32_t nb = p->n, steps = p->t, h = p->h, dirs = p->dirs;
    tinyc_rnn_s8_state s;
    int32_t n, d, st;
    tinyc_rnn_state_at(p, scratch, &s);
    for (n = 0; n < nb; ++n) {
        for (d = 0; d < dirs; ++d) {
            tinyc_rnn_start(p, h0, d, n, &s);
            for (st = 0; st < steps; ++st) {
                const int32_t t = d ? steps - 1 - st : st;
                tinyc_rnn_preacts(p, d, x + n * p->xs_n + t * p->xs_t, &s);
                tinyc_rnn_gru_gates(p, &s, y + n * p->ys_0 + t * p->ys_1 + d * h * p->ys_2);
            }
        }
    }
}
#endif

#ifdef TINYC_RNN_LSTM_S8
/* The gates of step t: every hidden unit's cell and hidden state; the sequence result to out
 * (stride ys_2) unless the result is the cell state. */
static TINYC_RNN_NOINLINE void tinyc_rnn_lstm_gates(const tinyc_rnn_s8_params *p, const tinyc_rnn_s8_state *s,
                                                    int8_t *out)
{
    const int32_t h = p->h, frac = p->cell_frac, zh = p->zh;
    const int32_t *sig = p->act + 128, *tnh = p->act + 384;
    const tinyc_rnn_half *px = s->px, *ph = s->ph;
    tinyc_rnn_half *hw = (tinyc_rnn_half *)(void *)s->hw, *cell = s->cell;
    int32_t j;
    for (j = 0; j < h; ++j) {
        const int32_t ig = tinyc_rnn_act(sig, tinyc_rnn_ssat16(px[j] + ph[j]));
        const int32_t fg = tinyc_rnn_act(sig, tinyc_rnn_ssat16(px[h + j] + ph[h + j]));
        const int32_t gg = tinyc_rnn_act(tnh, tinyc_rnn_ssat16(px[2 * h + j] + ph[2 * h + j]));
        const int32_t og = tinyc_rnn_act(sig, tinyc_rnn_ssat16(px[3 * h + j] + ph[3 * h + j]));
        int32_t c, tc, h15;
        /* c' = sat16(round(f c / 2^15) + round(i g / 2^(30 - frac))): both products fit int32 */
        c = tinyc_rnn_ssat16(tinyc_rnn_mul_q15(fg, cell[j]) + ((ig * gg + (1 << (29 - frac))) >> (30 - frac)));
        cell[j] = (int16_t)c;
        if (frac >= 12) {
            tc = frac == 12 ? c : (c + (1 << (frac - 13))) >> (frac - 12);
        } else {
            tc = tinyc_rnn_ssat16(c * (1 << (12 - frac)));
        }
        h15 = tinyc_rnn_mul_q15(og, tinyc_rnn_act(tnh, tc));
        if (!p->cell) out[j * p->ys_2] = (int8_t)tinyc_rnn_code(h15, p->out_q, p->zy);
        hw[j] = (int16_t)tinyc_rnn_code(h15, p->hid_q, zh);
    }
}

/* c0 may be null (a zero cell state). */
static void tinyc_rnn_lstm_s8(const int8_t *x, const int8_t *h0, const int8_t *c0, int8_t *y, int8_t *scratch,
                              const tinyc_rnn_s8_params *p)
{
    const int32_t nb = p->n, steps = p->t, h = p->h, dirs = p->dirs;
    tinyc_rnn_s8_state s;
    int32_t n, d, st, j;
    tinyc_rnn_state_at(p, scratch, &s);
    for (n = 0; n < nb; ++n) {
        for (d = 0; d < dirs; ++d) {
            tinyc_rnn_start(p, h0, d, n, &s);
            for (j = 0; j < h; ++j) {
                s.cell[j] = (int16_t)(c0 ? tinyc_rnn_sat16(tinyc_rnn_rq(
                    c0[d * p->cs_d + n * p->cs_n + j * p->cs_h] - p->zc0, p->c0_m, p->c0_n)) : 0);
            }
            for (st = 0; st < steps; ++st) {
                const int32_t t = d ? steps - 1 - st : st;
                tinyc_rnn_preacts(p, d, x + n * p->xs_n + t * p->xs_t, &s);
                tinyc_rnn_lstm_gates(p, &s, p->cell ? y : y + n * p->ys_0 + t * p->ys_1 + d * h * p->ys_2);
            }
            if (p->cell) {
                for (j = 0; j < h; ++j) {
                    y[d * p->ys_0 + n * p->ys_1 + j * p->ys_2] = (int8_t)tinyc_rnn_code(s.cell[j], p->out_q, p->zy);
                }
            }
        }
    }
}
#endif
