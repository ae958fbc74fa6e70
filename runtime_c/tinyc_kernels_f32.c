/* tinyc float32 kernels (reference C99, no allocation, no global state).
 *
 * Not a library of its own: a generated model source defines TINYC_F32_<KERNEL>
 * for each kernel it calls and then #includes this file, so each kernel becomes
 * a static function of that model (see tinyc_kernels_f32.h). Built on its own
 * the file defines no symbols. Helpers are TINYC_F32_HELPER: static inline, marked
 * unused so that the ones a model does not call draw no warning (gcc or clang).
 *
 * Kernels marked "in place" may be called with y == x (or y == a/b for binary
 * ops whose operand has the output's shape): each output element is written
 * only after every input element it depends on has been read.
 */
#include <math.h>
#include <stdint.h>

#include "tinyc_kernels_f32.h"

/* ---- helpers --------------------------------------------------------- */

/* In place: y = act(x) over n elements. Also the kernel for relu, clamp, leaky_relu, and for gelu,
 * silu, hardsigmoid and the math activations (abs, sqrt, rsqrt, exp, log, reciprocal, elu, selu, celu,
 * mish, softplus, pow, signum, erf, log_sigmoid, atan), whose cases a model compiles in with TINYC_F32_ACT_<KIND>. */
TINYC_F32_HELPER void tinyc_f32_act(const float *x, float *y, int32_t n, const tinyc_act *act)
{
    int32_t i;
    switch (act->kind) {
    case TINYC_ACT_RELU:
        for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case TINYC_ACT_CLAMP:
        for (i = 0; i < n; ++i) {
            const float v = x[i] < act->lo ? act->lo : x[i];
            y[i] = v > act->hi ? act->hi : v;
        }
        break;
    case TINYC_ACT_LEAKY_RELU:
        for (i = 0; i < n; ++i) y[i] = x[i] >= 0.0f ? x[i] : x[i] * act->lo;
        break;
#ifdef TINYC_F32_ACT_GELU
    case TINYC_ACT_GELU:
        if (act->lo != 0.0f) {
            for (i = 0; i < n; ++i) {
                const float v = x[i];
                y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
            }
        } else {
            for (i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067812f));
        }
        break;
#endif
#ifdef TINYC_F32_ACT_SILU
    case TINYC_ACT_SILU:
        for (i = 0; i < n; ++i) y[i] = x[i] / (1.0f + expf(-x[i]));
        break;
#endif
#ifdef TINYC_F32_ACT_HARDSIGMOID
    case TINYC_ACT_HARDSIGMOID:
        for (i = 0; i < n; ++i) {
            const float g = x[i] + 3.0f;
            y[i] = (g < 0.0f ? 0.0f : (g > 6.0f ? 6.0f : g)) / 6.0f;
        }
        break;
#endif
#ifdef TINYC_F32_ACT_ABS
    case TINYC_ACT_ABS:
        for (i = 0; i < n; ++i) y[i] = fabsf(x[i]);
        break;
#endif
#ifdef TINYC_F32_ACT_SQRT
    case TINYC_ACT_SQRT:
        for (i = 0; i < n; ++i) y[i] = sqrtf(x[i]);
        break;
#endif
#ifdef TINYC_F32_ACT_RSQRT
    case TINYC_ACT_RSQRT:
        for (i = 0; i < n; ++i) y[i] = 1.0f / sqrtf(x[i]);
        break;
#endif
#ifdef TINYC_F32_ACT_EXP
    case TINYC_ACT_EXP:
        for (i = 0; i < n; ++i) y[i] = expf(x[i]);
        break;
#endif
#ifdef TINYC_F32_ACT_LOG
    case TINYC_ACT_LOG:
        for (i = 0; i < n; ++i) y[i] = logf(x[i]);
        break;
#endif
#ifdef TINYC_F32_ACT_RECIPROCAL
    case TINYC_ACT_RECIPROCAL:
        for (i = 0; i < n; ++i) y[i] = 1.0f / x[i];
        break;
#endif
#ifdef TINYC_F32_ACT_ELU
    case TINYC_ACT_ELU:
        for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : act->lo * expm1f(x[i]);
        break;
#endif
#ifdef TINYC_F32_ACT_SELU
    case TINYC_ACT_SELU:
        for (i = 0; i < n; ++i) {
            const float v = x[i];
            y[i] = 1.05070098735548f * (v > 0.0f ? v : 1.67326324235438f * expm1f(v));
        }
        break;
#endif
#ifdef TINYC_F32_ACT_CELU
    case TINYC_ACT_CELU:
        for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : act->lo * expm1f(x[i] / act->lo);
        break;
#endif
#ifdef TINYC_F32_ACT_MISH
    case TINYC_ACT_MISH:
        for (i = 0; i < n; ++i) y[i] = x[i] * tanhf(log1pf(expf(x[i])));
        break;
#endif
#ifdef TINYC_F32_ACT_SOFTPLUS
    case TINYC_ACT_SOFTPLUS: /* lo = beta, hi = threshold: linear above the threshold, as PyTorch */
        for (i = 0; i < n; ++i) {
            const float b = x[i] * act->lo;
            y[i] = b > act->hi ? x[i] : log1pf(expf(b)) / act->lo;
        }
        break;
#endif
#ifdef TINYC_F32_ACT_POW
    case TINYC_ACT_POW: /* lo = exponent; squares and square roots without powf */
        if (act->lo == 2.0f) {
            for (i = 0; i < n; ++i) y[i] = x[i] * x[i];
        } else if (act->lo == 0.5f) {
            for (i = 0; i < n; ++i) y[i] = sqrtf(x[i]);
        } else {
            for (i = 0; i < n; ++i) y[i] = powf(x[i], act->lo);
        }
        break;
#endif
#ifdef TINYC_F32_ACT_SIGNUM
    case TINYC_ACT_SIGNUM:
        for (i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? 1.0f : (x[i] < 0.0f ? -1.0f : 0.0f);
        break;
#endif
#ifdef TINYC_F32_ACT_ERF
    case TINYC_ACT_ERF:
        for (i = 0; i < n; ++i) y[i] = erff(x[i]);
        break;
#endif
#ifdef TINYC_F32_ACT_LOG_SIGMOID
    case TINYC_ACT_LOG_SIGMOID: /* min(x, 0) - log1p(exp(-|x|)): no overflow */
        for (i = 0; i < n; ++i) y[i] = (x[i] < 0.0f ? x[i] : 0.0f) - log1pf(expf(-fabsf(x[i])));
        break;
#endif
#ifdef TINYC_F32_ACT_ATAN
    case TINYC_ACT_ATAN:
        for (i = 0; i < n; ++i) y[i] = atanf(x[i]);
        break;
#endif
    default:
        break;
    }
}

/* Next multi-index (odometer, last dim fastest) over dims[0..rank). */
TINYC_F32_HELPER void tinyc_next(int32_t rank, const int32_t *dims, int32_t *idx)
{
    int32_t d;
    for (d = rank - 1; d >= 0; --d) {
        if (++idx[d] < dims[d]) return;
        idx[d] = 0;
    }
}

TINYC_F32_HELPER int32_t tinyc_dot(int32_t rank, const int32_t *idx, const int32_t *strides)
{
    int32_t d, off = 0;
    for (d = 0; d < rank; ++d) off += idx[d] * strides[d];
    return off;
}

/* First tap k with start + k * dil >= 0. */
TINYC_F32_HELPER int32_t tinyc_tap_lo(int32_t start, int32_t dil)
{
    if (start >= 0) return 0;
    return dil == 1 ? -start : (-start + dil - 1) / dil;  /* M0 has no divide instruction */
}

/* One past the last tap k < taps with start + k * dil < size. */
TINYC_F32_HELPER int32_t tinyc_tap_hi(int32_t start, int32_t dil, int32_t size, int32_t taps)
{
    int32_t hi;
    if (start >= size) return 0;
    hi = dil == 1 ? size - start : (size - start + dil - 1) / dil;
    return hi < taps ? hi : taps;
}

/* ---- convolution and dense ------------------------------------------- */

#ifdef TINYC_F32_CONV2D
/* Any stride, padding, dilation and groups (depthwise included); bias may be 0.
 * Each weight is applied to a whole output row at a time: the valid-tap
 * arithmetic runs once per row, not per pixel, and with stride 1 the inner
 * loop is contiguous. Input channels go four per pass where there are four
 * (one load/store of y per four MACs), then one by one. */
static void tinyc_f32_conv2d(const float *x, const float *w, const float *bias, float *y,
                             const tinyc_f32_conv2d_params *p)
{
    const int32_t cg = p->c / p->groups, og = p->o / p->groups, c4 = cg - cg % 4;
    const int32_t taps = p->kh * p->kw, in_plane = p->h * p->w, plane = p->oh * p->ow;
    int32_t n, oc, ic, oy, ox, ky, kx, i;
    for (n = 0; n < p->n; ++n) {
        for (oc = 0; oc < p->o; ++oc) {
            const float *xg = x + (n * p->c + (oc / og) * cg) * in_plane;
            float *yo = y + (n * p->o + oc) * plane;
            const float b = bias ? bias[oc] : 0.0f;
            for (i = 0; i < plane; ++i) yo[i] = b;
            for (ic = 0; ic < cg; ic += ic < c4 ? 4 : 1) {
                const float *xc = xg + ic * in_plane;
                const float *wc = w + (oc * cg + ic) * taps;
                for (oy = 0; oy < p->oh; ++oy) {
                    const int32_t iy0 = oy * p->sh - p->pad_top;
                    const int32_t ky0 = tinyc_tap_lo(iy0, p->dh);
                    const int32_t ky1 = tinyc_tap_hi(iy0, p->dh, p->h, p->kh);
                    float *yr = yo + oy * p->ow;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const float *x0 = xc + (iy0 + ky * p->dh) * p->w;
                        for (kx = 0; kx < p->kw; ++kx) {
                            /* the output columns whose tap kx lands inside the row */
                            const int32_t ix0 = kx * p->dw - p->pad_left;
                            const int32_t ox0 = tinyc_tap_lo(ix0, p->sw);
                            const int32_t ox1 = tinyc_tap_hi(ix0, p->sw, p->w, p->ow);
                            const int32_t t = ky * p->kw + kx;
                            if (ic < c4) {
                                const float *x1 = x0 + in_plane, *x2 = x1 + in_plane, *x3 = x2 + in_plane;
                                const float w0 = wc[t], w1 = wc[taps + t];
                                const float w2 = wc[2 * taps + t], w3 = wc[3 * taps + t];
                                for (ox = ox0; ox < ox1; ++ox) {
                                    const int32_t ix = ix0 + ox * p->sw;
                                    yr[ox] += w0 * x0[ix] + w1 * x1[ix] + w2 * x2[ix] + w3 * x3[ix];
                                }
                            } else {
                                const float w0 = wc[t];
                                for (ox = ox0; ox < ox1; ++ox) yr[ox] += w0 * x0[ix0 + ox * p->sw];
                            }
                        }
                    }
                }
            }
            tinyc_f32_act(yo, yo, plane, &p->act);
        }
    }
}
#endif

#ifdef TINYC_F32_CONV2D_1X1
/* 1x1 kernel, stride 1, no padding, one group: a matrix product per image,
 * accumulated a whole output plane at a time so the inner loop is contiguous.
 * Four input channels per pass: one load/store of y per four MACs. */
static void tinyc_f32_conv2d_1x1(const float *x, const float *w, const float *bias, float *y,
                                 const tinyc_f32_conv2d_params *p)
{
    const int32_t plane = p->h * p->w, c4 = p->c - p->c % 4;
    int32_t n, oc, ic, i;
    for (n = 0; n < p->n; ++n) {
        const float *xn = x + n * p->c * plane;
        for (oc = 0; oc < p->o; ++oc) {
            const float *wo = w + oc * p->c;
            float *yo = y + (n * p->o + oc) * plane;
            const float b = bias ? bias[oc] : 0.0f;
            for (i = 0; i < plane; ++i) yo[i] = b;
            for (ic = 0; ic < c4; ic += 4) {
                const float w0 = wo[ic], w1 = wo[ic + 1], w2 = wo[ic + 2], w3 = wo[ic + 3];
                const float *x0 = xn + ic * plane, *x1 = x0 + plane, *x2 = x1 + plane, *x3 = x2 + plane;
                for (i = 0; i < plane; ++i) yo[i] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i];
            }
            for (ic = c4; ic < p->c; ++ic) {
                const float wv = wo[ic];
                const float *xc = xn + ic * plane;
                for (i = 0; i < plane; ++i) yo[i] += wv * xc[i];
            }
            tinyc_f32_act(yo, yo, plane, &p->act);
        }
    }
}
#endif

#ifdef TINYC_F32_LINEAR
/* y[r, j] = bias[j] + x[r, :] . w[j, :]; bias may be 0. */
static void tinyc_f32_linear(const float *x, const float *w, const float *bias, float *y,
                             const tinyc_f32_linear_params *p)
{
    const int32_t k4 = p->k - p->k % 4;
    int32_t r, j, t;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * p->k;
        float *yr = y + r * p->n;
        for (j = 0; j < p->n; ++j) {
            /* four partial sums: less loop overhead, independent FMA chains */
            const float *wj = w + j * p->k;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (t = 0; t < k4; t += 4) {
                a0 += xr[t] * wj[t];
                a1 += xr[t + 1] * wj[t + 1];
                a2 += xr[t + 2] * wj[t + 2];
                a3 += xr[t + 3] * wj[t + 3];
            }
            for (t = k4; t < p->k; ++t) a0 += xr[t] * wj[t];
            yr[j] = (bias ? bias[j] : 0.0f) + ((a0 + a1) + (a2 + a3));
        }
        tinyc_f32_act(yr, yr, p->n, &p->act);
    }
}
#endif

#ifdef TINYC_F32_MATMUL
/* y[i] = a[i] @ b[i] for each output matrix i; a, b located through batch strides. */
static void tinyc_f32_matmul(const float *a, const float *b, float *y, const tinyc_f32_matmul_params *p)
{
    int32_t idx[TINYC_MAX_RANK] = {0};
    int32_t bt, i, j, t;
    for (bt = 0; bt < p->batch; ++bt) {
        const float *am = a + tinyc_dot(p->rank, idx, p->a_strides);
        const float *bm = b + tinyc_dot(p->rank, idx, p->b_strides);
        float *ym = y + bt * p->m * p->n;
        for (i = 0; i < p->m; ++i) {
            float *yr = ym + i * p->n;
            for (j = 0; j < p->n; ++j) yr[j] = 0.0f;
            for (t = 0; t < p->k; ++t) {
                const float av = am[i * p->k + t];
                const float *br = bm + t * p->n;
                for (j = 0; j < p->n; ++j) yr[j] += av * br[j];
            }
        }
        tinyc_f32_act(ym, ym, p->m * p->n, &p->act);
        tinyc_next(p->rank, p->dims, idx);
    }
}
#endif

/* ---- elementwise ----------------------------------------------------- */

#ifdef TINYC_F32_CHANNEL_AFFINE
/* In place. Inference batch norm: y[o, c, i] = x[o, c, i] * scale[c] + shift[c]. */
static void tinyc_f32_channel_affine(const float *x, const float *scale, const float *shift, float *y,
                                     int32_t outer, int32_t channels, int32_t inner)
{
    int32_t o, c, i;
    for (o = 0; o < outer; ++o) {
        for (c = 0; c < channels; ++c) {
            const int32_t base = (o * channels + c) * inner;
            for (i = 0; i < inner; ++i) y[base + i] = x[base + i] * scale[c] + shift[c];
        }
    }
}
#endif

#ifdef TINYC_F32_SIGMOID
/* In place. */
static void tinyc_f32_sigmoid(const float *x, float *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + expf(-x[i]));
}
#endif

#ifdef TINYC_F32_TANH
/* In place. */
static void tinyc_f32_tanh(const float *x, float *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = tanhf(x[i]);
}
#endif

#ifdef TINYC_F32_HARDSWISH
/* In place. x * relu6(x + 3) / 6 */
static void tinyc_f32_hardswish(const float *x, float *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const float v = x[i], g = v + 3.0f;
        y[i] = v * (g < 0.0f ? 0.0f : (g > 6.0f ? 6.0f : g)) / 6.0f;
    }
}
#endif

#ifdef TINYC_F32_BINARY
/* In place (onto an operand of the output's shape). Row by row over the last
 * dim; the compiler merged dims so that rows are as long as possible. */
static void tinyc_f32_binary(const float *a, const float *b, float *y, const tinyc_f32_binary_params *p)
{
    const int32_t outer = p->rank - 1, inner = p->dims[outer];
    const int32_t sa = p->a_strides[outer], sb = p->b_strides[outer];
    int32_t idx[TINYC_MAX_RANK] = {0};
    int32_t r, i;
    for (r = 0; r < p->rows; ++r) {
        const float *ar = a + tinyc_dot(outer, idx, p->a_strides);
        const float *br = b + tinyc_dot(outer, idx, p->b_strides);
        float *yr = y + r * inner;
        switch (p->op) {
        case TINYC_ADD:
            for (i = 0; i < inner; ++i) yr[i] = ar[i * sa] + br[i * sb];
            break;
        case TINYC_SUB:
            for (i = 0; i < inner; ++i) yr[i] = ar[i * sa] - br[i * sb];
            break;
        case TINYC_MUL:
            for (i = 0; i < inner; ++i) yr[i] = ar[i * sa] * br[i * sb];
            break;
        case TINYC_MAXIMUM: /* NaN wins, as torch.maximum */
            for (i = 0; i < inner; ++i) {
                const float u = ar[i * sa], v = br[i * sb];
                yr[i] = (u > v || u != u) ? u : v;
            }
            break;
        case TINYC_MINIMUM:
            for (i = 0; i < inner; ++i) {
                const float u = ar[i * sa], v = br[i * sb];
                yr[i] = (u < v || u != u) ? u : v;
            }
            break;
        default:
            for (i = 0; i < inner; ++i) yr[i] = ar[i * sa] / br[i * sb];
            break;
        }
        tinyc_f32_act(yr, yr, inner, &p->act);
        tinyc_next(outer, p->dims, idx);
    }
}
#endif

/* ---- pooling and reductions ------------------------------------------ */

#ifdef TINYC_F32_MAX_POOL2D
/* Padding never wins: only taps inside the image are compared. */
static void tinyc_f32_max_pool2d(const float *x, float *y, const tinyc_f32_pool2d_params *p)
{
    int32_t pl, oy, ox, ky, kx;
    for (pl = 0; pl < p->planes; ++pl) {
        const float *xp = x + pl * p->h * p->w;
        float *yp = y + pl * p->oh * p->ow;
        for (oy = 0; oy < p->oh; ++oy) {
            const int32_t iy0 = oy * p->sh - p->pad_top;
            const int32_t ky0 = tinyc_tap_lo(iy0, p->dh);
            const int32_t ky1 = tinyc_tap_hi(iy0, p->dh, p->h, p->kh);
            for (ox = 0; ox < p->ow; ++ox) {
                const int32_t ix0 = ox * p->sw - p->pad_left;
                const int32_t kx0 = tinyc_tap_lo(ix0, p->dw);
                const int32_t kx1 = tinyc_tap_hi(ix0, p->dw, p->w, p->kw);
                float m = -INFINITY;
                for (ky = ky0; ky < ky1; ++ky) {
                    const float *xr = xp + (iy0 + ky * p->dh) * p->w;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const float v = xr[ix0 + kx * p->dw];
                        if (v > m) m = v;
                    }
                }
                yp[oy * p->ow + ox] = m;
            }
        }
    }
}
#endif

#ifdef TINYC_F32_AVG_POOL2D
/* PyTorch's divisor: the window clipped to the padded image (count_include_pad)
 * or to the image itself; a window entirely in the padding gives 0. */
static void tinyc_f32_avg_pool2d(const float *x, float *y, const tinyc_f32_pool2d_params *p)
{
    int32_t pl, oy, ox, iy, ix;
    for (pl = 0; pl < p->planes; ++pl) {
        const float *xp = x + pl * p->h * p->w;
        float *yp = y + pl * p->oh * p->ow;
        for (oy = 0; oy < p->oh; ++oy) {
            const int32_t ya = oy * p->sh - p->pad_top;
            const int32_t yb = ya + p->kh < p->h + p->pad_bottom ? ya + p->kh : p->h + p->pad_bottom;
            const int32_t y0 = ya > 0 ? ya : 0, y1 = yb < p->h ? yb : p->h;
            for (ox = 0; ox < p->ow; ++ox) {
                const int32_t xa = ox * p->sw - p->pad_left;
                const int32_t xb = xa + p->kw < p->w + p->pad_right ? xa + p->kw : p->w + p->pad_right;
                const int32_t x0 = xa > 0 ? xa : 0, x1 = xb < p->w ? xb : p->w;
                float acc = 0.0f;
                int32_t count;
                if (y0 >= y1 || x0 >= x1) {
                    yp[oy * p->ow + ox] = 0.0f;
                    continue;
                }
                for (iy = y0; iy < y1; ++iy)
                    for (ix = x0; ix < x1; ++ix) acc += xp[iy * p->w + ix];
                count = p->count_include_pad ? (yb - ya) * (xb - xa) : (y1 - y0) * (x1 - x0);
                yp[oy * p->ow + ox] = acc / (float)count;
            }
        }
    }
}
#endif

#ifdef TINYC_F32_MEAN
static void tinyc_f32_mean(const float *x, float *y, const tinyc_f32_mean_params *p)
{
    const int32_t outer = p->rank - 1, inner = p->dims[outer], sy = p->y_strides[outer];
    int32_t idx[TINYC_MAX_RANK] = {0};
    int32_t r, i;
    for (i = 0; i < p->y_size; ++i) y[i] = 0.0f;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * inner;
        float *yr = y + tinyc_dot(outer, idx, p->y_strides);
        if (sy == 0) {
            float acc = 0.0f;
            for (i = 0; i < inner; ++i) acc += xr[i];
            yr[0] += acc;
        } else {
            for (i = 0; i < inner; ++i) yr[i * sy] += xr[i];
        }
        tinyc_next(outer, p->dims, idx);
    }
    for (i = 0; i < p->y_size; ++i) y[i] /= p->count;
}
#endif

#ifdef TINYC_F32_SOFTMAX
/* In place. x viewed as [outer, n, inner]; softmax over n, shifted by the max. */
static void tinyc_f32_softmax(const float *x, float *y, int32_t outer, int32_t n, int32_t inner)
{
    int32_t o, i, j;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const int32_t base = o * n * inner + i;
            float mx = x[base], sum = 0.0f;
            for (j = 1; j < n; ++j)
                if (x[base + j * inner] > mx) mx = x[base + j * inner];
            for (j = 0; j < n; ++j) {
                const float e = expf(x[base + j * inner] - mx);
                y[base + j * inner] = e;
                sum += e;
            }
            for (j = 0; j < n; ++j) y[base + j * inner] /= sum;
        }
    }
}
#endif

/* ---- data movement --------------------------------------------------- */

#ifdef TINYC_F32_COPY
/* Strided copy: transpose, one input of cat, the interior of pad. */
static void tinyc_f32_copy(const float *x, float *y, const tinyc_f32_copy_params *p)
{
    const int32_t outer = p->rank - 1, inner = p->dims[outer];
    const int32_t sx = p->x_strides[outer], sy = p->y_strides[outer];
    int32_t idx[TINYC_MAX_RANK] = {0};
    int32_t r, i;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + tinyc_dot(outer, idx, p->x_strides);
        float *yr = y + tinyc_dot(outer, idx, p->y_strides);
        for (i = 0; i < inner; ++i) yr[i * sy] = xr[i * sx];
        tinyc_next(outer, p->dims, idx);
    }
}
#endif

#ifdef TINYC_F32_FILL
static void tinyc_f32_fill(float *y, int32_t n, float value)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = value;
}
#endif

/* ---- normalization ---------------------------------------------------- */

#ifdef TINYC_F32_NORM
/* In place. Two passes per set: the mean, then the mean squared deviation (biased variance);
 * y = (x - mean) / sqrtf(var + eps) * gamma + beta. rms: mean 0, var = mean(x^2). */
static void tinyc_f32_norm(const float *x, const float *gamma, const float *beta, float *y,
                           const tinyc_f32_norm_params *p)
{
    const int32_t n = p->cpr * p->inner;
    int32_t r, c, i;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        const int32_t pbase = (r % p->groups) * p->cpr;
        float mean = 0.0f, var = 0.0f, rstd;
        if (!p->rms) {
            for (i = 0; i < n; ++i) mean += xr[i];
            mean /= (float)n;
        }
        for (i = 0; i < n; ++i) {
            const float d = xr[i] - mean;
            var += d * d;
        }
        rstd = 1.0f / sqrtf(var / (float)n + p->eps);
        for (c = 0; c < p->cpr; ++c) {
            const float g = gamma ? gamma[pbase + c] * rstd : rstd;
            const float b = beta ? beta[pbase + c] : 0.0f;
            for (i = c * p->inner; i < (c + 1) * p->inner; ++i) yr[i] = (xr[i] - mean) * g + b;
        }
    }
}
#endif

/* ---- spatial: transposed convolution, resize, masked softmax ------------ */

#ifdef TINYC_F32_CONV_TRANSPOSE2D
/* Transposed conv, weight [O, C/groups, KH, KW] (output channels first), conv2d's parameters
 * (pad_top/pad_left crop the full output; rows/columns past it get the bias only). Output row oy
 * gathers the input rows iy with iy * sh + ky * dh = oy + pad_top; each adds w * x[iy, ix] at
 * ox = ix * sw + kx * dw - pad_left, for the ix that land inside the row. */
static void tinyc_f32_conv_transpose2d(const float *x, const float *w, const float *bias, float *y,
                                       const tinyc_f32_conv2d_params *p)
{
    const int32_t cg = p->c / p->groups, og = p->o / p->groups;
    const int32_t in_plane = p->h * p->w, plane = p->oh * p->ow;
    int32_t n, oc, ic, oy, ox, ix, ky, kx;
    for (n = 0; n < p->n; ++n) {
        for (oc = 0; oc < p->o; ++oc) {
            const float *xg = x + (n * p->c + (oc / og) * cg) * in_plane;
            float *yo = y + (n * p->o + oc) * plane;
            const float b = bias ? bias[oc] : 0.0f;
            for (oy = 0; oy < p->oh; ++oy) {
                float *yr = yo + oy * p->ow;
                for (ox = 0; ox < p->ow; ++ox) yr[ox] = b;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t t = oy + p->pad_top - ky * p->dh;
                    int32_t iy;
                    if (t < 0 || (p->sh > 1 && t % p->sh != 0)) continue;
                    iy = p->sh > 1 ? t / p->sh : t;
                    if (iy >= p->h) continue;
                    for (ic = 0; ic < cg; ++ic) {
                        const float *xr = xg + ic * in_plane + iy * p->w;
                        const float *wr = w + ((oc * cg + ic) * p->kh + ky) * p->kw;
                        for (kx = 0; kx < p->kw; ++kx) {
                            const int32_t ox0 = kx * p->dw - p->pad_left;   /* ox of ix = 0 */
                            const int32_t ix0 = tinyc_tap_lo(ox0, p->sw);
                            const int32_t ix1 = tinyc_tap_hi(ox0, p->sw, p->ow, p->w);
                            const float wv = wr[kx];
                            for (ix = ix0; ix < ix1; ++ix) yr[ox0 + ix * p->sw] += wv * xr[ix];
                        }
                    }
                }
                tinyc_f32_act(yr, yr, p->ow, &p->act);
            }
        }
    }
}
#endif

#ifdef TINYC_F32_RESIZE
/* iy = {iy0[0..oh), iy1[0..oh)}, ix likewise; ly, lx: the weights of iy1 / ix1 (bilinear only, else 0). */
static void tinyc_f32_resize(const float *x, float *y, const int32_t *iy, const int32_t *ix, const float *ly,
                             const float *lx, const tinyc_f32_resize_params *p)
{
    const int32_t in_plane = p->h * p->w;
    int32_t c, oy, ox;
    for (c = 0; c < p->planes; ++c) {
        const float *xp = x + c * in_plane;
        for (oy = 0; oy < p->oh; ++oy) {
            const float *r0 = xp + iy[oy] * p->w;
            float *yr = y + (c * p->oh + oy) * p->ow;
            if (!p->bilinear) {
                for (ox = 0; ox < p->ow; ++ox) yr[ox] = r0[ix[ox]];
            } else {
                const float *r1 = xp + iy[p->oh + oy] * p->w;
                const float h1 = ly[oy], h0 = 1.0f - h1;
                for (ox = 0; ox < p->ow; ++ox) {
                    const int32_t a = ix[ox], b = ix[p->ow + ox];
                    const float w1 = lx[ox], w0 = 1.0f - w1;
                    yr[ox] = h0 * (w0 * r0[a] + w1 * r0[b]) + h1 * (w0 * r1[a] + w1 * r1[b]);
                }
            }
        }
    }
}
#endif

#ifdef TINYC_F32_MASKED_SOFTMAX
/* In place. Rows with no kept position give NaN, as PyTorch's softmax over all -inf. */
static void tinyc_f32_masked_softmax(const float *x, const uint8_t *mask, float *y,
                                     const tinyc_f32_masked_softmax_params *p)
{
    int32_t idx[TINYC_MAX_RANK] = {0};
    int32_t rows = 1, r, i, d;
    for (d = 0; d < p->rank; ++d) rows *= p->dims[d];
    for (r = 0; r < rows; ++r) {
        const float *xr = x + tinyc_dot(p->rank, idx, p->x_strides);
        const uint8_t *mr = mask + tinyc_dot(p->rank, idx, p->m_strides);
        float *yr = y + tinyc_dot(p->rank, idx, p->x_strides);
        float mx = -INFINITY, sum = 0.0f;
        for (i = 0; i < p->len; ++i) {
            if (mr[i * p->ms] && xr[i * p->xs] > mx) mx = xr[i * p->xs];
        }
        for (i = 0; i < p->len; ++i) {
            const float e = mr[i * p->ms] ? expf(xr[i * p->xs] - mx) : 0.0f;
            yr[i * p->xs] = e;
            sum += e;
        }
        for (i = 0; i < p->len; ++i) yr[i * p->xs] /= sum;
        tinyc_next(p->rank, p->dims, idx);
    }
}
#endif

#ifdef TINYC_F32_FAKE_QUANT
/* In place. An imported model's quantize-then-dequantize (PyTorch's quantized_decomposed ops, in
   float32): q = clamp(rint(x * inv_scale[c]) + zp[c], qmin, qmax), y = (q - zp[c]) * scale[c],
   with c the channel of [outer, channels, inner] (channels = 1 per tensor). rintf rounds ties to
   even in the default rounding mode, as torch.round. */
static void tinyc_f32_fake_quant(const float *x, float *y, const float *scale, const float *inv_scale,
                                 const float *zp, float qmin, float qmax, int32_t outer, int32_t channels,
                                 int32_t inner)
{
    int32_t o, c, i;
    for (o = 0; o < outer; ++o) {
        for (c = 0; c < channels; ++c) {
            const int32_t base = (o * channels + c) * inner;
            for (i = 0; i < inner; ++i) {
                float q = rintf(x[base + i] * inv_scale[c]) + zp[c];
                if (q < qmin) q = qmin;
                if (q > qmax) q = qmax;
                y[base + i] = (q - zp[c]) * scale[c];
            }
        }
    }
}
#endif

/* ---- token ids (embedding, cast) ------------------------------------------------------ */

#ifdef TINYC_F32_EMBEDDING
/* y[i, :] = table[idx[i], :] for n token ids, rows of dim floats. Every id is checked before
 * anything is written: returns 0, or -1 (nothing written, nothing read out of bounds) if an
 * id lies outside [0, vocab). */
static int tinyc_f32_embedding(const int32_t *idx, const float *table, float *y, int32_t n, int32_t vocab,
                               int32_t dim)
{
    int32_t i, j;
    for (i = 0; i < n; ++i) {
        if (idx[i] < 0 || idx[i] >= vocab) return -1;
    }
    for (i = 0; i < n; ++i) {
        const float *row = table + (long)idx[i] * dim;
        float *out = y + (long)i * dim;
        for (j = 0; j < dim; ++j) out[j] = row[j];
    }
    return 0;
}
#endif

#ifdef TINYC_F32_FROM_I32
/* y = (float)x: token ids to float (round to nearest, as PyTorch's x.float()). */
static void tinyc_f32_from_i32(const int32_t *x, float *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = (float)x[i];
}
#endif

/* ---- math: prelu, log_softmax, amax / amin --------------------------------------- */

#ifdef TINYC_F32_PRELU
/* In place. x viewed as [outer, channels, inner]: y = x > 0 ? x : slope[c] x. */
static void tinyc_f32_prelu(const float *x, const float *slope, float *y, int32_t outer, int32_t channels,
                            int32_t inner)
{
    int32_t o, c, i;
    for (o = 0; o < outer; ++o) {
        for (c = 0; c < channels; ++c) {
            const int32_t base = (o * channels + c) * inner;
            const float a = slope[c];
            for (i = 0; i < inner; ++i) {
                const float v = x[base + i];
                y[base + i] = v > 0.0f ? v : a * v;
            }
        }
    }
}
#endif

#ifdef TINYC_F32_LOG_SOFTMAX
/* In place. x viewed as [outer, n, inner]: y = x - max - log(sum exp(x - max)) over n. */
static void tinyc_f32_log_softmax(const float *x, float *y, int32_t outer, int32_t n, int32_t inner)
{
    int32_t o, i, j;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const int32_t base = o * n * inner + i;
            float mx = x[base], sum = 0.0f, lse;
            for (j = 1; j < n; ++j)
                if (x[base + j * inner] > mx) mx = x[base + j * inner];
            for (j = 0; j < n; ++j) sum += expf(x[base + j * inner] - mx);
            lse = logf(sum);
            for (j = 0; j < n; ++j) y[base + j * inner] = (x[base + j * inner] - mx) - lse;
        }
    }
}
#endif

#ifdef TINYC_F32_REDUCE_EXTREME
/* amax (is_min 0) / amin (1: the max of -x, negated back; exact). NaN wins, as torch.amax. */
static void tinyc_f32_reduce_extreme(const float *x, float *y, const tinyc_f32_extreme_params *p)
{
    const int32_t outer = p->rank - 1, inner = p->dims[outer], sy = p->y_strides[outer];
    const float sign = p->is_min ? -1.0f : 1.0f;
    int32_t idx[TINYC_MAX_RANK] = {0};
    int32_t r, i;
    for (i = 0; i < p->y_size; ++i) y[i] = -INFINITY;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * inner;
        float *yr = y + tinyc_dot(outer, idx, p->y_strides);
        for (i = 0; i < inner; ++i) {
            const float v = sign * xr[i];
            float *t = yr + i * sy;
            if (v > *t || v != v) *t = v;
        }
        tinyc_next(outer, p->dims, idx);
    }
    if (p->is_min)
        for (i = 0; i < p->y_size; ++i) y[i] = -y[i];
}
#endif
