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
#else
#define TINYC_RNN_HELPER static inline
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
 * element strides (the tensors' int8 layouts). Per weight row, q_ih / q_hh hold {bias with the
 * input / hidden zero point folded in, M, n}: the accumulator's Q3.12 value is
 * (acc * M + 2^(n-1)) >> n, saturated to int16. Multipliers below are {M, n} pairs likewise.
 * Scratch: 2H bytes of hidden codes, then (lstm) H int16 cell states at `cell_state`. */
typedef struct {
    int32_t n, t, f, h, dirs, cell;
    int32_t xs_n, xs_t, xs_f;     /* strides of x [N, T, F] */
    int32_t hs_d, hs_n, hs_h;     /* of h0 [D, N, H] */
    int32_t cs_d, cs_n, cs_h;     /* of c0 [D, N, H] (lstm with c0) */
    int32_t ys_0, ys_1, ys_2;     /* of y: [N, T, D*H], or [D, N, H] for the cell state */
    int32_t zh, zy;               /* hidden state and result zero points */
    int32_t h15_m, h15_n;         /* gru: hidden code - zh -> Q0.15 */
    int32_t hid_m, hid_n;         /* Q0.15 -> hidden code */
    int32_t out_m, out_n;         /* Q0.15 (the sequence) or cell state (the cell result) -> result code */
    int32_t cell_frac;            /* lstm: cell state scale 2^-cell_frac */
    int32_t zc0, c0_m, c0_n;      /* lstm with c0: c0 code - zc0 -> cell state */
    const int8_t *w_ih[2];
    const int8_t *w_hh[2];
    const int32_t *q_ih[2];
    const int32_t *q_hh[2];
    const int16_t *sig_table;     /* 257 entries: Q3.12 -> Q0.15, interpolated */
    const int16_t *tanh_table;
} tinyc_rnn_s8_params;

#endif /* TINYC_KERNELS_RNN_H */
