/* tinyc kernels for comparisons, masks, selection, running sums and cubic resampling (types and
 * conventions: tinyc_kernels_compare.h). #included by a generated model after it defines
 * TINYC_CMP_<KERNEL> for each kernel it calls. */
#include <stdint.h>

#include "tinyc_kernels_compare.h"

/* The rows of a walk: the product of every dim but the last. */
TINYC_CMP_HELPER int32_t tinyc_cmp_rows(const tinyc_cmp_iter *it)
{
    int32_t r = 1, d;
    for (d = 0; d + 1 < it->rank; ++d) r *= it->dims[d];
    return r;
}

/* The offsets o[0..k) of the row at multi-index idx (its dims but the last). */
TINYC_CMP_HELPER void tinyc_cmp_base(const tinyc_cmp_iter *it, const int32_t *idx, int32_t k, int32_t *o)
{
    int32_t t, d;
    for (t = 0; t < k; ++t) {
        o[t] = 0;
        for (d = 0; d + 1 < it->rank; ++d) o[t] += idx[d] * it->s[t][d];
    }
}

/* Next row (odometer over the dims but the last). */
TINYC_CMP_HELPER void tinyc_cmp_next(const tinyc_cmp_iter *it, int32_t *idx)
{
    int32_t d;
    for (d = it->rank - 2; d >= 0; --d) {
        if (++idx[d] < it->dims[d]) return;
        idx[d] = 0;
    }
}

/* Walks over every dim (cumsum's lines): their count, the offsets s[0], s[1] at idx, the next idx. */
TINYC_CMP_HELPER int32_t tinyc_cmp_lines(const tinyc_cmp_iter *it)
{
    int32_t r = 1, d;
    for (d = 0; d < it->rank; ++d) r *= it->dims[d];
    return r;
}

TINYC_CMP_HELPER void tinyc_cmp_offsets(const tinyc_cmp_iter *it, const int32_t *idx, int32_t *o)
{
    int32_t d;
    o[0] = o[1] = 0;
    for (d = 0; d < it->rank; ++d) {
        o[0] += idx[d] * it->s[0][d];
        o[1] += idx[d] * it->s[1][d];
    }
}

TINYC_CMP_HELPER void tinyc_cmp_next_all(const tinyc_cmp_iter *it, int32_t *idx)
{
    int32_t d;
    for (d = it->rank - 1; d >= 0; --d) {
        if (++idx[d] < it->dims[d]) return;
        idx[d] = 0;
    }
}

TINYC_CMP_HELPER int32_t tinyc_cmp_test(int32_t pred, int64_t a, int64_t b)
{
    switch (pred) {
    case TINYC_CMP_GT: return a > b;
    case TINYC_CMP_GE: return a >= b;
    case TINYC_CMP_LT: return a < b;
    case TINYC_CMP_LE: return a <= b;
    case TINYC_CMP_EQ: return a == b;
    default: return a != b;
    }
}

/* ((int64)acc * m + 2^(n-1)) >> n: quant.requantize (n in [1, 62]). */
TINYC_CMP_HELPER int64_t tinyc_cmp_rq(int64_t acc, int32_t m, int32_t n)
{
    return (acc * (int64_t)m + ((int64_t)1 << (n - 1))) >> n;
}

TINYC_CMP_HELPER int8_t tinyc_cmp_sat8(int64_t v)
{
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

#ifdef TINYC_CMP_COMPARE_F32
/* y = a PRED b ? 1 : 0 (NaN compares false, and unequal). */
static void tinyc_cmp_compare_f32(const float *a, const float *b, float *y, const tinyc_cmp_iter *it, int32_t pred)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[3];
    const int32_t rows = tinyc_cmp_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s[0][last], t1 = it->s[1][last], t2 = it->s[2][last];
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        tinyc_cmp_base(it, idx, 3, o);
        for (i = 0; i < len; ++i) {
            const float u = a[o[1] + i * t1], v = b[o[2] + i * t2];
            int32_t t;
            switch (pred) {
            case TINYC_CMP_GT: t = u > v; break;
            case TINYC_CMP_GE: t = u >= v; break;
            case TINYC_CMP_LT: t = u < v; break;
            case TINYC_CMP_LE: t = u <= v; break;
            case TINYC_CMP_EQ: t = u == v; break;
            default: t = u != v; break;
            }
            y[o[0] + i * t0] = t ? 1.0f : 0.0f;
        }
        tinyc_cmp_next(it, idx);
    }
}
#endif

#ifdef TINYC_CMP_COMPARE_S8
static void tinyc_cmp_compare_s8(const int8_t *a, const int8_t *b, int8_t *y, const tinyc_cmp_iter *it,
                                 const tinyc_cmp_s8_params *p)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[3];
    const int32_t rows = tinyc_cmp_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s[0][last], t1 = it->s[1][last], t2 = it->s[2][last];
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        tinyc_cmp_base(it, idx, 3, o);
        for (i = 0; i < len; ++i) {
            int64_t u = a[o[1] + i * t1] - p->za, v = b[o[2] + i * t2] - p->zb;
            if (!p->same) {
                u = tinyc_cmp_rq(u * (1 << 20), p->ma, p->na);
                v = tinyc_cmp_rq(v * (1 << 20), p->mb, p->nb);
            }
            y[o[0] + i * t0] = (int8_t)tinyc_cmp_test(p->pred, u, v);
        }
        tinyc_cmp_next(it, idx);
    }
}
#endif

#ifdef TINYC_CMP_LOGICAL_F32
/* and / or / xor of (a != 0) and (b != 0); not: a == 0 (b unused). */
static void tinyc_cmp_logical_f32(const float *a, const float *b, float *y, const tinyc_cmp_iter *it, int32_t fn)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[3];
    const int32_t rows = tinyc_cmp_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s[0][last], t1 = it->s[1][last], t2 = it->s[2][last];
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        tinyc_cmp_base(it, idx, 3, o);
        for (i = 0; i < len; ++i) {
            const int32_t u = a[o[1] + i * t1] != 0.0f;
            const int32_t v = fn == TINYC_LOGIC_NOT ? 0 : b[o[2] + i * t2] != 0.0f;
            const int32_t t = fn == TINYC_LOGIC_AND ? (u && v) : fn == TINYC_LOGIC_OR ? (u || v)
                            : fn == TINYC_LOGIC_XOR ? (u != v) : !u;
            y[o[0] + i * t0] = t ? 1.0f : 0.0f;
        }
        tinyc_cmp_next(it, idx);
    }
}
#endif

#ifdef TINYC_CMP_LOGICAL_S8
/* As the float form on truth values: a code is true where it is not its zero point. */
static void tinyc_cmp_logical_s8(const int8_t *a, const int8_t *b, int8_t *y, const tinyc_cmp_iter *it, int32_t fn,
                                 int32_t za, int32_t zb)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[3];
    const int32_t rows = tinyc_cmp_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s[0][last], t1 = it->s[1][last], t2 = it->s[2][last];
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        tinyc_cmp_base(it, idx, 3, o);
        for (i = 0; i < len; ++i) {
            const int32_t u = a[o[1] + i * t1] != za;
            const int32_t v = fn == TINYC_LOGIC_NOT ? 0 : b[o[2] + i * t2] != zb;
            const int32_t t = fn == TINYC_LOGIC_AND ? (u && v) : fn == TINYC_LOGIC_OR ? (u || v)
                            : fn == TINYC_LOGIC_XOR ? (u != v) : !u;
            y[o[0] + i * t0] = (int8_t)t;
        }
        tinyc_cmp_next(it, idx);
    }
}
#endif

#ifdef TINYC_CMP_WHERE_F32
/* y = c != 0 ? a : b (s[1] = c, s[2] = a, s[3] = b). */
static void tinyc_cmp_where_f32(const float *c, const float *a, const float *b, float *y, const tinyc_cmp_iter *it)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[4];
    const int32_t rows = tinyc_cmp_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s[0][last], t1 = it->s[1][last], t2 = it->s[2][last], t3 = it->s[3][last];
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        tinyc_cmp_base(it, idx, 4, o);
        for (i = 0; i < len; ++i) {
            y[o[0] + i * t0] = c[o[1] + i * t1] != 0.0f ? a[o[2] + i * t2] : b[o[3] + i * t3];
        }
        tinyc_cmp_next(it, idx);
    }
}
#endif

#ifdef TINYC_CMP_WHERE_S8
/* y = c != zc ? ta[a] : tb[b]: ta, tb requantize each branch to the result (256 entries, code + 128). */
static void tinyc_cmp_where_s8(const int8_t *c, const int8_t *a, const int8_t *b, int8_t *y, const tinyc_cmp_iter *it,
                               int32_t zc, const int8_t *ta, const int8_t *tb)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[4];
    const int32_t rows = tinyc_cmp_rows(it), last = it->rank - 1, len = it->dims[last];
    const int32_t t0 = it->s[0][last], t1 = it->s[1][last], t2 = it->s[2][last], t3 = it->s[3][last];
    int32_t r, i;
    ta += 128;
    tb += 128;
    for (r = 0; r < rows; ++r) {
        tinyc_cmp_base(it, idx, 4, o);
        for (i = 0; i < len; ++i) {
            y[o[0] + i * t0] = c[o[1] + i * t1] != zc ? ta[a[o[2] + i * t2]] : tb[b[o[3] + i * t3]];
        }
        tinyc_cmp_next(it, idx);
    }
}
#endif

#ifdef TINYC_CMP_CUMSUM_F32
/* Running sums in float, line by line (PyTorch sums in double: within rounding of it). */
static void tinyc_cmp_cumsum_f32(const float *x, float *y, const tinyc_cmp_cumsum_params *p)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[2];
    const int32_t lines = tinyc_cmp_lines(&p->outer);
    int32_t r, i;
    for (r = 0; r < lines; ++r) {
        float acc = 0.0f;
        tinyc_cmp_offsets(&p->outer, idx, o);
        for (i = 0; i < p->len; ++i) {
            acc += x[o[1] + i * p->xs];
            y[o[0] + i * p->ys] = acc;
        }
        tinyc_cmp_next_all(&p->outer, idx);
    }
}
#endif

#ifdef TINYC_CMP_CUMSUM_S8
/* Running sums of centered codes in int32 (|sum| <= 255 len), each requantized once. */
static void tinyc_cmp_cumsum_s8(const int8_t *x, int8_t *y, const tinyc_cmp_cumsum_params *p)
{
    int32_t idx[TINYC_CMP_MAX_RANK] = {0}, o[2];
    const int32_t lines = tinyc_cmp_lines(&p->outer);
    int32_t r, i;
    for (r = 0; r < lines; ++r) {
        int32_t acc = 0;
        tinyc_cmp_offsets(&p->outer, idx, o);
        for (i = 0; i < p->len; ++i) {
            acc += x[o[1] + i * p->xs] - p->zx;
            y[o[0] + i * p->ys] = tinyc_cmp_sat8(tinyc_cmp_rq(acc, p->m, p->n) + p->zy);
        }
        tinyc_cmp_next_all(&p->outer, idx);
    }
}
#endif

#ifdef TINYC_CMP_CUBIC_F32
/* y = sum_j wy_j sum_k wx_k x[iy_j, ix_k], per plane (the order of PyTorch's CPU kernel). */
static void tinyc_cmp_cubic_f32(const float *x, float *y, const int32_t *iy, const int32_t *ix, const float *wy,
                                const float *wx, const tinyc_cmp_cubic_params *p)
{
    int32_t n, c, oy, ox, j, k;
    for (n = 0; n < p->n; ++n) {
        for (c = 0; c < p->c; ++c) {
            const float *xp = x + n * p->xs[0] + c * p->xs[1];
            float *yp = y + n * p->ys[0] + c * p->ys[1];
            for (oy = 0; oy < p->oh; ++oy) {
                for (ox = 0; ox < p->ow; ++ox) {
                    float out = 0.0f;
                    for (j = 0; j < 4; ++j) {
                        const float *row = xp + iy[j * p->oh + oy] * p->xs[2];
                        float t = 0.0f;
                        for (k = 0; k < 4; ++k) t += wx[k * p->ow + ox] * row[ix[k * p->ow + ox] * p->xs[3]];
                        out += wy[j * p->oh + oy] * t;
                    }
                    yp[oy * p->ys[2] + ox * p->ys[3]] = out;
                }
            }
        }
    }
}
#endif

#ifdef TINYC_CMP_CUBIC_S8
/* Codes interpolated with Q10 weights (each axis sums to 1024, so raw codes interpolate as centered
 * codes plus the zero point): (sum + 2^19) >> 20, saturated (cubic weights overshoot). */
static void tinyc_cmp_cubic_s8(const int8_t *x, int8_t *y, const int32_t *iy, const int32_t *ix, const int32_t *wy,
                               const int32_t *wx, const tinyc_cmp_cubic_params *p)
{
    int32_t n, c, oy, ox, j, k;
    for (n = 0; n < p->n; ++n) {
        for (oy = 0; oy < p->oh; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int8_t *yp = y + n * p->ys[0] + oy * p->ys[2] + ox * p->ys[3];
                for (c = 0; c < p->c; ++c) {
                    const int8_t *xp = x + n * p->xs[0] + c * p->xs[1];
                    int32_t acc = 0;
                    for (j = 0; j < 4; ++j) {
                        const int8_t *row = xp + iy[j * p->oh + oy] * p->xs[2];
                        int32_t t = 0;
                        for (k = 0; k < 4; ++k) t += wx[k * p->ow + ox] * row[ix[k * p->ow + ox] * p->xs[3]];
                        acc += wy[j * p->oh + oy] * t;
                    }
                    yp[c * p->ys[1]] = tinyc_cmp_sat8(((int64_t)acc + (1 << 19)) >> 20);
                }
            }
        }
    }
}
#endif
