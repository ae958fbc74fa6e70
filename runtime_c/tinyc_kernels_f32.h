/* tinyc float32 kernels: parameter types.
 *
 * The kernels themselves live in tinyc_kernels_f32.c, which a generated model
 * source #includes after defining TINYC_F32_<KERNEL> for each kernel it calls.
 * Every kernel is therefore a static function private to that model: two models
 * link into one program without symbol clashes, and unused kernels cost nothing.
 * This header holds only types, so including it twice (two models in one
 * translation unit of the user's) is harmless.
 *
 * All tensors are contiguous, row-major (C order), in PyTorch's layout. Shapes,
 * strides and loop bounds are computed by the compiler and stored in
 * `static const` parameter structs, which land in flash next to the weights.
 */
#ifndef TINYC_KERNELS_F32_H
#define TINYC_KERNELS_F32_H

#include <stdint.h>

/* Rank limit of the strided kernels, after the compiler merged contiguous dims. */
#define TINYC_MAX_RANK 8

/* Helpers are marked unused: a kernel file compiled on its own (a bundle's every .c file is
 * compiled) or into a model that calls only some of its kernels leaves helpers unused, and
 * clang's -Wunused-function reports unused static inline functions of a .c file (gcc does
 * not). The attribute changes no code. */
#if defined(__GNUC__)
#define TINYC_F32_HELPER static inline __attribute__((unused))
#else
#define TINYC_F32_HELPER static inline
#endif

enum {
    TINYC_ACT_NONE = 0,
    TINYC_ACT_RELU = 1,
    TINYC_ACT_CLAMP = 2,      /* lo = min, hi = max (relu6: 0, 6) */
    TINYC_ACT_LEAKY_RELU = 3, /* lo = negative slope */
    TINYC_ACT_GELU = 4,       /* lo = 0: x Phi(x) with erf; lo = 1: the tanh approximation */
    TINYC_ACT_SILU = 5,       /* x / (1 + exp(-x)) */
    TINYC_ACT_HARDSIGMOID = 6, /* relu6(x + 3) / 6 */
    TINYC_ACT_ABS = 7,
    TINYC_ACT_SQRT = 8,
    TINYC_ACT_RSQRT = 9,
    TINYC_ACT_EXP = 10,
    TINYC_ACT_LOG = 11,
    TINYC_ACT_RECIPROCAL = 12,
    TINYC_ACT_ELU = 13,       /* lo = alpha */
    TINYC_ACT_SELU = 14,
    TINYC_ACT_CELU = 15,      /* lo = alpha */
    TINYC_ACT_MISH = 16,
    TINYC_ACT_SOFTPLUS = 17,  /* lo = beta, hi = threshold */
    TINYC_ACT_POW = 18,       /* lo = exponent */
    TINYC_ACT_SIGNUM = 19,    /* -1, 0, 1 (0 at NaN, as torch.sign) */
    TINYC_ACT_ERF = 20,
    TINYC_ACT_LOG_SIGMOID = 21,
    TINYC_ACT_ATAN = 22
};

/* A fused activation applied to each output element of conv2d/linear/matmul/binary. */
typedef struct {
    int32_t kind;
    float lo;
    float hi;
} tinyc_act;

enum { TINYC_ADD = 0, TINYC_SUB = 1, TINYC_MUL = 2, TINYC_DIV = 3, TINYC_MAXIMUM = 4, TINYC_MINIMUM = 5 };

typedef struct {
    int32_t n, c, h, w;           /* input */
    int32_t o, oh, ow;            /* output channels and spatial size */
    int32_t kh, kw;
    int32_t sh, sw;
    int32_t dh, dw;
    int32_t pad_top, pad_left;    /* bottom/right padding is implied by oh, ow */
    int32_t groups;
    tinyc_act act;
} tinyc_f32_conv2d_params;

typedef struct {
    int32_t rows;                 /* product of the leading dims of x */
    int32_t k, n;                 /* y[r, j] = b[j] + sum_k x[r, k] * w[j, k] */
    tinyc_act act;
} tinyc_f32_linear_params;

typedef struct {
    int32_t m, k, n;
    int32_t batch;                /* number of output matrices */
    int32_t rank;                 /* batch dims (at least 1) */
    int32_t dims[TINYC_MAX_RANK];
    int32_t a_strides[TINYC_MAX_RANK];  /* in elements; 0 on broadcast dims */
    int32_t b_strides[TINYC_MAX_RANK];
    tinyc_act act;
} tinyc_f32_matmul_params;

/* y = a OP b over the output's dims; a, b read through strides (0 = broadcast). */
typedef struct {
    int32_t op;
    int32_t rows;                 /* product of all dims but the last */
    int32_t rank;
    int32_t dims[TINYC_MAX_RANK];
    int32_t a_strides[TINYC_MAX_RANK];
    int32_t b_strides[TINYC_MAX_RANK];
    tinyc_act act;
} tinyc_f32_binary_params;

typedef struct {
    int32_t planes;               /* N * C */
    int32_t h, w, oh, ow;
    int32_t kh, kw;
    int32_t sh, sw;
    int32_t dh, dw;               /* max pool only */
    int32_t pad_top, pad_left, pad_bottom, pad_right;
    int32_t count_include_pad;    /* avg pool only */
} tinyc_f32_pool2d_params;

/* Sum of x over its dims into y read through y_strides (0 on reduced dims), then / count. */
typedef struct {
    int32_t rows;                 /* product of all dims of x but the last */
    int32_t rank;
    int32_t dims[TINYC_MAX_RANK];
    int32_t y_strides[TINYC_MAX_RANK];
    int32_t y_size;
    float count;
} tinyc_f32_mean_params;

/* y[idx . y_strides] = x[idx . x_strides] for idx over dims (transpose, cat, pad). */
typedef struct {
    int32_t rows;
    int32_t rank;
    int32_t dims[TINYC_MAX_RANK];
    int32_t x_strides[TINYC_MAX_RANK];
    int32_t y_strides[TINYC_MAX_RANK];
} tinyc_f32_copy_params;

/* layer_norm / group_norm: `rows` sets of elements, each `cpr` parameter positions of `inner`
 * consecutive elements; the set r uses parameters (r % groups) * cpr + c (layer_norm: groups 1,
 * inner 1; group_norm: groups G, cpr C / G, inner the spatial size). gamma, beta may be 0. */
typedef struct {
    int32_t rows, groups, cpr, inner;
    float eps;
    int32_t rms;                  /* 1: x / sqrt(mean(x^2) + eps), no mean subtracted */
} tinyc_f32_norm_params;

/* resize: y[plane, oy, ox] from x[plane, iy0[oy], ix0[ox]] (nearest) or, bilinear, from the four
 * neighbours iy0/iy1 x ix0/ix1 weighted by 1 - l and l (tables computed by the compiler). */
typedef struct {
    int32_t planes;               /* N * C */
    int32_t h, w, oh, ow;
    int32_t bilinear;
} tinyc_f32_resize_params;

/* masked_softmax: softmax along an axis of length len (stride xs in x and y, ms in the mask)
 * over the positions whose mask byte is 1; the other dims (rank, dims) walk x/y by x_strides and
 * the mask by m_strides (0 where the mask broadcasts). */
typedef struct {
    int32_t rank;
    int32_t dims[TINYC_MAX_RANK];
    int32_t x_strides[TINYC_MAX_RANK];
    int32_t m_strides[TINYC_MAX_RANK];
    int32_t len, xs, ms;
} tinyc_f32_masked_softmax_params;

/* amax / amin: x over its dims into y read through y_strides (0 on reduced dims). */
typedef struct {
    int32_t rows;                 /* product of all dims of x but the last */
    int32_t rank;
    int32_t dims[TINYC_MAX_RANK];
    int32_t y_strides[TINYC_MAX_RANK];
    int32_t y_size;
    int32_t is_min;
} tinyc_f32_extreme_params;

#endif /* TINYC_KERNELS_F32_H */
