/* tinyc recurrent-layer kernels (gru, lstm): parameter types.
 *
 * The kernels live in tinyc_kernels_rnn.c, which a generated model source #includes after
 * defining TINYC_RNN_<KERNEL> for each kernel it calls (see tinyc_kernels_f32.h). One call runs
 * a whole layer: every batch row, both directions, every time step. The weights are const
 * arrays the parameter struct points to; the recurrent state lives in arena scratch the
 * compiler sizes (no allocation).
 *
 * Gate order is PyTorch's: gru r, z, n; lstm i, f, g, o. Weight row g*H + j belongs to gate g,
 * hidden unit j.
 */
#ifndef TINYC_KERNELS_RNN_H
#define TINYC_KERNELS_RNN_H

#include <stdint.h>

#if defined(__GNUC__)
#define TINYC_RNN_HELPER static inline __attribute__((unused))
#define TINYC_RNN_INLINE static inline __attribute__((always_inline, unused))
#define TINYC_RNN_NOINLINE __attribute__((noinline))
/* int16 and 32-bit words of the scratch alias each other and the byte arena. */
typedef int32_t __attribute__((__may_alias__)) tinyc_rnn_word;
typedef int16_t __attribute__((__may_alias__)) tinyc_rnn_half;
#else
#define TINYC_RNN_HELPER static inline
#define TINYC_RNN_INLINE static inline
#define TINYC_RNN_NOINLINE
typedef int32_t tinyc_rnn_word;
typedef int16_t tinyc_rnn_half;
#endif

/* Float layer. x [N, T, F], h0 / c0 [D, N, H] or null (zero), y the sequence [N, T, D*H] or, with
 * `cell`, the final cell state [D, N, H]; all row-major. Scratch: 2H floats (gru), 3H (lstm). */
typedef struct {
    int32_t n, t, f, h;           /* batch, steps, input features, hidden size */
    int32_t dirs;                 /* 1 or 2 (the second runs backwards in time) */
    int32_t cell;                 /* lstm: y is the final cell state */
    const float *w_ih[2];         /* [G*H, F] per direction */
    const float *w_hh[2];         /* [G*H, H] */
    const float *b_ih[2];         /* [G*H] */
    const float *b_hh[2];
} tinyc_rnn_f32_params;

/* int8 layer (docs/quantization.md, "Recurrent layers"). Codes are read and written through
 * element strides (the tensors' int8 layouts). The weights are arranged by the compiler for the
 * SMLAD kernel (tinyc_kernels_rnn.c): w[d] holds, per block of 4 weight rows (rows = G*H padded to
 * a multiple of 4 with zero rows), kx/4 chunks of W_ih then kh/4 chunks of W_hh (kx, kh: F and H
 * padded to multiples of 4 with zero columns), a chunk being one word per row with the bytes
 * (w0, w2, w1, w3). q[d] holds, per block, 16 words for W_ih's 4 rows then 16 for W_hh's:
 * [bias x4][M x4][X x4][Y x4], the biases with the zero points folded in. A row's Q3.12
 * pre-activation sat16((acc * M + 2^(n-1)) >> n) is computed, by the matrix's rq_x / rq_h =
 * {mode, L, R, S}, as
 *   mode 0: ssat16(smmla(acc << L, M, R) >> S)      (every row: n + L = S + 32, R = 2^(S-1))
 *   mode 1: ssat16(smmla(acc << X, M, R) >> S)      (X: the row's shift, n + X = S + 32)
 *   mode 2: ssat16(smmla(acc << L, M, X) >> Y)      (X = 2^(n+L-33), Y = n+L-32 per row)
 *   mode 3: sat16((acc * M + 2^(X-1)) >> X) in 64 bits (X = n)
 * out_q, hid_q: {M, S, R, L} (L >= 0: smmla(v << L, M, R) >> S) or {M, n, 0, -1} (64 bits): the
 * Q0.15 value (the cell state for the cell result) to the result / hidden code, before the zero
 * point. Scratch: see tinyc_rnn_state_at. */
typedef struct {
    int32_t n, t, f, h, dirs, cell;
    int32_t xs_n, xs_t, xs_f;     /* strides of x [N, T, F] */
    int32_t hs_d, hs_n, hs_h;     /* of h0 [D, N, H] */
    int32_t cs_d, cs_n, cs_h;     /* of c0 [D, N, H] (lstm with c0) */
    int32_t ys_0, ys_1, ys_2;     /* of y: [N, T, D*H], or [D, N, H] for the cell state */
    int32_t zh, zy;               /* hidden state and result zero points */
    int32_t kx, kh, rows;         /* padded F, H (multiples of 4) and G*H (a multiple of 4) */
    int32_t rq_x[4], rq_h[4];     /* {mode, L, R, S} of W_ih's and W_hh's records */
    int32_t out_q[4], hid_q[4];
    int32_t cell_frac;            /* lstm: cell state scale 2^-cell_frac */
    int32_t zc0, c0_m, c0_n;      /* lstm with c0: c0 code - zc0 -> cell state */
    const int32_t *w[2];
    const int32_t *q[2];
    const int32_t *prev;          /* gru: 256 entries, hidden code + 128 -> the previous state in Q0.15 */
    int32_t narrow;               /* gru: every |previous state - n| < 2^16 (32-bit update) */
    const int32_t *act;           /* sigmoid then tanh, 256 words each: {t[i], t[i+1] - t[i]} of the
                                   * 257-entry tables (Q3.12 -> Q0.15, interpolated) */
} tinyc_rnn_s8_params;

/* The int8 kernels' scratch (8-byte aligned): the hidden codes as int16 (kh), x_t's codes as
 * int16 (kx), the pre-activations px and ph (rows each), then (lstm) the cell state (h). */
typedef struct {
    tinyc_rnn_word *hw, *xw;
    tinyc_rnn_half *px, *ph, *cell;
} tinyc_rnn_s8_state;

TINYC_RNN_HELPER void tinyc_rnn_state_at(const tinyc_rnn_s8_params *p, int8_t *scratch, tinyc_rnn_s8_state *s)
{
    tinyc_rnn_half *at = (tinyc_rnn_half *)(void *)scratch;
    s->hw = (tinyc_rnn_word *)(void *)at;
    at += p->kh;
    s->xw = (tinyc_rnn_word *)(void *)at;
    at += p->kx;
    s->px = at;
    s->ph = at + p->rows;
    s->cell = at + 2 * p->rows;
}

#endif /* TINYC_KERNELS_RNN_H */
