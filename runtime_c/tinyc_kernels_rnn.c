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

#if defined(TINYC_RNN_GRU_S8) || defined(TINYC_RNN_LSTM_S8)
/* (acc * M + 2^(n-1)) >> n, n in [1, 62] (single rounding, round half up). */
TINYC_RNN_HELPER int64_t tinyc_rnn_rq(int64_t acc, int32_t m, int32_t n)
{
    return (acc * m + ((int64_t)1 << (n - 1))) >> n;
}

TINYC_RNN_HELPER int32_t tinyc_rnn_sat16(int64_t v)
{
    return (int32_t)(v < -32768 ? -32768 : (v > 32767 ? 32767 : v));
}

TINYC_RNN_HELPER int8_t tinyc_rnn_sat8(int64_t v)
{
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

/* (a * b + 2^14) >> 15 */
TINYC_RNN_HELPER int64_t tinyc_rnn_mul_q15(int64_t a, int64_t b)
{
    return (a * b + 16384) >> 15;
}

/* Interpolated table lookup: Q3.12 int16 in, Q0.15 out. */
TINYC_RNN_HELPER int32_t tinyc_rnn_act(const int16_t *table, int32_t v)
{
    const int32_t u = v + 32768, i = u >> 8, f = u & 255;
    return table[i] + (((table[i + 1] - table[i]) * f + 128) >> 8);
}

/* acc + sum_k w[k] * x[k * xs] (contiguous x unrolled by four). */
TINYC_RNN_HELPER int32_t tinyc_rnn_dot_s8(int32_t acc, const int8_t *w, const int8_t *x, int32_t xs, int32_t k)
{
    int32_t i = 0;
    if (xs == 1) {
        for (; i + 4 <= k; i += 4) {
            acc += (int32_t)w[i] * x[i] + (int32_t)w[i + 1] * x[i + 1] + (int32_t)w[i + 2] * x[i + 2]
                   + (int32_t)w[i + 3] * x[i + 3];
        }
    }
    for (; i < k; ++i) acc += (int32_t)w[i] * x[i * xs];
    return acc;
}

/* Gate pre-activations (Q3.12, each saturated to int16) of hidden unit j. */
TINYC_RNN_HELPER void tinyc_rnn_gates_s8(const tinyc_rnn_s8_params *p, int32_t d, int32_t gates, int32_t j,
                                         const int8_t *xt, const int8_t *hp, int32_t *px, int32_t *ph)
{
    const int32_t f = p->f, h = p->h, xs = p->xs_f;
    int32_t g;
    for (g = 0; g < gates; ++g) {
        const int32_t row = g * h + j;
        const int32_t *qi = p->q_ih[d] + 3 * row, *qh = p->q_hh[d] + 3 * row;
        const int32_t ax = tinyc_rnn_dot_s8(qi[0], p->w_ih[d] + row * f, xt, xs, f);
        const int32_t ah = tinyc_rnn_dot_s8(qh[0], p->w_hh[d] + row * h, hp, 1, h);
        px[g] = tinyc_rnn_sat16(tinyc_rnn_rq(ax, qi[1], qi[2]));
        ph[g] = tinyc_rnn_sat16(tinyc_rnn_rq(ah, qh[1], qh[2]));
    }
}

TINYC_RNN_HELPER void tinyc_rnn_load_h0(const tinyc_rnn_s8_params *p, const int8_t *h0, int32_t d, int32_t n,
                                        int8_t *hp)
{
    int32_t j;
    for (j = 0; j < p->h; ++j) hp[j] = h0[d * p->hs_d + n * p->hs_n + j * p->hs_h];
}
#endif

#ifdef TINYC_RNN_GRU_S8
/* hidden: 2H bytes of scratch. */
static void tinyc_rnn_gru_s8(const int8_t *x, const int8_t *h0, int8_t *y, int8_t *hidden,
                             const tinyc_rnn_s8_params *p)
{
    const int32_t nb = p->n, steps = p->t, h = p->h, dirs = p->dirs;
    int32_t n, d, s, j;
    for (n = 0; n < nb; ++n) {
        for (d = 0; d < dirs; ++d) {
            int8_t *hp = hidden, *hn = hidden + h;
            tinyc_rnn_load_h0(p, h0, d, n, hp);
            for (s = 0; s < steps; ++s) {
                const int32_t t = d ? steps - 1 - s : s;
                const int8_t *xt = x + n * p->xs_n + t * p->xs_t;
                int8_t *out = y + n * p->ys_0 + t * p->ys_1 + d * h * p->ys_2;
                int8_t *tmp;
                for (j = 0; j < h; ++j) {
                    int32_t px[3], ph[3], r, z, nv;
                    int64_t prev, h15;
                    tinyc_rnn_gates_s8(p, d, 3, j, xt, hp, px, ph);
                    r = tinyc_rnn_act(p->sig_table, tinyc_rnn_sat16((int64_t)px[0] + ph[0]));
                    z = tinyc_rnn_act(p->sig_table, tinyc_rnn_sat16((int64_t)px[1] + ph[1]));
                    nv = tinyc_rnn_act(p->tanh_table, tinyc_rnn_sat16(px[2] + tinyc_rnn_mul_q15(r, ph[2])));
                    prev = tinyc_rnn_rq(hp[j] - p->zh, p->h15_m, p->h15_n);
                    prev = prev < -16777216 ? -16777216 : (prev > 16777216 ? 16777216 : prev);
                    h15 = nv + tinyc_rnn_mul_q15(z, prev - nv);
                    out[j * p->ys_2] = tinyc_rnn_sat8(tinyc_rnn_rq(h15, p->out_m, p->out_n) + p->zy);
                    hn[j] = tinyc_rnn_sat8(tinyc_rnn_rq(h15, p->hid_m, p->hid_n) + p->zh);
                }
                tmp = hp;
                hp = hn;
                hn = tmp;
            }
        }
    }
}
#endif

#ifdef TINYC_RNN_LSTM_S8
/* hidden: 2H bytes of scratch; cell: H int16 of scratch. c0 may be null (a zero cell state). */
static void tinyc_rnn_lstm_s8(const int8_t *x, const int8_t *h0, const int8_t *c0, int8_t *y, int8_t *hidden,
                              int16_t *cell, const tinyc_rnn_s8_params *p)
{
    const int32_t nb = p->n, steps = p->t, h = p->h, dirs = p->dirs, frac = p->cell_frac;
    int32_t n, d, s, j;
    for (n = 0; n < nb; ++n) {
        for (d = 0; d < dirs; ++d) {
            int8_t *hp = hidden, *hn = hidden + h;
            tinyc_rnn_load_h0(p, h0, d, n, hp);
            for (j = 0; j < h; ++j) {
                cell[j] = (int16_t)(c0 ? tinyc_rnn_sat16(tinyc_rnn_rq(
                    c0[d * p->cs_d + n * p->cs_n + j * p->cs_h] - p->zc0, p->c0_m, p->c0_n)) : 0);
            }
            for (s = 0; s < steps; ++s) {
                const int32_t t = d ? steps - 1 - s : s;
                const int8_t *xt = x + n * p->xs_n + t * p->xs_t;
                int8_t *out = p->cell ? y : y + n * p->ys_0 + t * p->ys_1 + d * h * p->ys_2;
                int8_t *tmp;
                for (j = 0; j < h; ++j) {
                    int32_t px[4], ph[4], ig, fg, gg, og, c, tc;
                    int64_t h15;
                    tinyc_rnn_gates_s8(p, d, 4, j, xt, hp, px, ph);
                    ig = tinyc_rnn_act(p->sig_table, tinyc_rnn_sat16((int64_t)px[0] + ph[0]));
                    fg = tinyc_rnn_act(p->sig_table, tinyc_rnn_sat16((int64_t)px[1] + ph[1]));
                    gg = tinyc_rnn_act(p->tanh_table, tinyc_rnn_sat16((int64_t)px[2] + ph[2]));
                    og = tinyc_rnn_act(p->sig_table, tinyc_rnn_sat16((int64_t)px[3] + ph[3]));
                    /* c' = sat16(round(f c / 2^15) + round(i g / 2^(30 - frac))) */
                    c = tinyc_rnn_sat16(tinyc_rnn_mul_q15(fg, cell[j])
                                        + (((int64_t)ig * gg + ((int64_t)1 << (29 - frac))) >> (30 - frac)));
                    cell[j] = (int16_t)c;
                    if (frac >= 12) {
                        tc = frac == 12 ? c : (int32_t)(((int64_t)c + ((int64_t)1 << (frac - 13))) >> (frac - 12));
                    } else {
                        tc = tinyc_rnn_sat16((int64_t)c * ((int64_t)1 << (12 - frac)));
                    }
                    h15 = tinyc_rnn_mul_q15(og, tinyc_rnn_act(p->tanh_table, tc));
                    if (!p->cell) out[j * p->ys_2] = tinyc_rnn_sat8(tinyc_rnn_rq(h15, p->out_m, p->out_n) + p->zy);
                    hn[j] = tinyc_rnn_sat8(tinyc_rnn_rq(h15, p->hid_m, p->hid_n) + p->zh);
                }
                tmp = hp;
                hp = hn;
                hn = tmp;
            }
            if (p->cell) {
                for (j = 0; j < h; ++j) {
                    y[d * p->ys_0 + n * p->ys_1 + j * p->ys_2] =
                        tinyc_rnn_sat8(tinyc_rnn_rq(cell[j], p->out_m, p->out_n) + p->zy);
                }
            }
        }
    }
}
#endif
