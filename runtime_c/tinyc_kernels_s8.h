/* tinyc int8 kernels: parameter types, the debug hook and the SIMD primitives.
 *
 * The kernels live in tinyc_kernels_s8.c, which a generated model source #includes
 * after defining TINYC_S8_<KERNEL> for each kernel it calls (as for the float
 * kernels): every kernel is a static function private to that model.
 *
 * Arithmetic is docs/quantization.md bit for bit. Every constant (multipliers,
 * shifts, folded biases, tables) is computed by the compiler with tinyc.quant and
 * stored in flash; the kernels only loop, multiply and round.
 *
 * SIMD: the hot kernels are written once with the Armv7E-M DSP primitives below
 * (SXTB16, SMLAD, SMLAxy, SMMLA, SSAT). On a core with the DSP extension
 * (__ARM_FEATURE_DSP: Cortex-M4/M7/M33) they are the instructions; elsewhere
 * (host, Cortex-M0/M3) exact C99 equivalents, so every target runs the same
 * algorithm on the same data layout and gets the same bits.
 */
#ifndef TINYC_KERNELS_S8_H
#define TINYC_KERNELS_S8_H

#include <stdint.h>
#include <string.h>

/* Debug hook: TINYC_LAYER_OUTPUT(i, ptr, bytes) runs after layer i with the bytes of
 * its result (int8 tensors in the bundle's physical layout, see the layer comments).
 * Empty by default; build with -DTINYC_LAYER_OUTPUT_HOOK=my_function to record them
 * (void my_function(int layer, const void *data, unsigned long bytes)), or define
 * TINYC_LAYER_OUTPUT yourself. */
#ifdef TINYC_LAYER_OUTPUT_HOOK
void TINYC_LAYER_OUTPUT_HOOK(int layer, const void *data, unsigned long bytes);
#define TINYC_LAYER_OUTPUT(i, ptr, bytes) TINYC_LAYER_OUTPUT_HOOK((i), (ptr), (unsigned long)(bytes))
#endif
#ifndef TINYC_LAYER_OUTPUT
#define TINYC_LAYER_OUTPUT(i, ptr, bytes) ((void)0)
#endif

/* Rank limit of the strided iterations, after the compiler merged contiguous dims. */
#define TINYC_S8_MAX_RANK 8

/* The generated per-shape wrappers stay functions of their own: inlined into the model's
 * invoke (one long function) their loops get worse register allocation. */
#if defined(__GNUC__)
#define TINYC_S8_WRAPPER static __attribute__((noinline))
#else
#define TINYC_S8_WRAPPER static
#endif

/* Helpers are marked unused: a kernel file compiled on its own (a bundle's every .c file is
 * compiled) or into a model that calls only some of its kernels leaves helpers unused, and
 * clang's -Wunused-function reports unused static inline functions of a .c file (gcc does
 * not). The attribute changes no code. */
#if defined(__GNUC__)
#define TINYC_S8_INLINE static inline __attribute__((always_inline, unused))
/* 32-bit words of scratch and packed weights may alias the byte arena. */
typedef int32_t __attribute__((__may_alias__)) tinyc_s8_word;
#else
#define TINYC_S8_INLINE static inline
typedef int32_t tinyc_s8_word;
#endif

/* Output stage of an accumulator, per output channel (docs/quantization.md):
 *   mode 0 (fast):    q = {bias, M, R, S}: ssat8(smmla(acc, M, R) >> S), where
 *                     R = 2^(n-33) + zp * 2^(n-32), S = n - 32 (n = 31 - shift in [33, 62]):
 *                     exactly floor((acc * M + 2^(n-1)) / 2^n) + zp.
 *   mode 1 (generic): q = {bias, M, n, M', n', 0}: ((int64)acc * M + 2^(n-1)) >> n, + zp,
 *                     saturated; M', n' replace M, n for acc < 0 (fused leaky_relu).
 * Then the fused activation's clamp [lo, hi]. The bias (with the input zero point
 * folded in: bias - zp_x * sum(w)) is the accumulator's start value. */
#define TINYC_S8_Q_FAST 4
#define TINYC_S8_Q_GENERIC 6

/* An iteration space: dims (last fastest) and the element strides of up to three
 * tensors along them (0 on broadcast dims). */
typedef struct {
    int32_t rank;
    int32_t dims[TINYC_S8_MAX_RANK];
    int32_t s0[TINYC_S8_MAX_RANK];
    int32_t s1[TINYC_S8_MAX_RANK];
    int32_t s2[TINYC_S8_MAX_RANK];
} tinyc_s8_iter;

enum { TINYC_S8_OP_ADD = 0, TINYC_S8_OP_MUL = 1, TINYC_S8_OP_DIV = 2 };

/* y = a OP b, elementwise over `it` (s0: y, s1: a, s2: b).
 * ADD (and SUB): acc = ta[a] + tb[b], tables of the rescaled centered operands
 *   (tb negated for sub), then the output stage.
 * MUL: acc = (a - za)(b - zb). DIV: acc = div_round((a - za) << 16, b - zb).
 * The output stage's record and mode are passed with the call. */
typedef struct {
    int32_t op;
    int32_t za, zb, zy;
    int32_t lo, hi;
    const int32_t *ta, *tb;         /* ADD: 256 entries each, indexed by (uint8_t)code */
} tinyc_s8_binary_params;

typedef struct {
    int32_t n, c, h, w, oh, ow;
    int32_t kh, kw, sh, sw, dh, dw;
    int32_t pad_top, pad_left, pad_bottom, pad_right;
    int32_t count_include_pad;      /* avg only */
    int32_t zx;                     /* avg only */
    int32_t xs[4], ys[4];           /* element strides of n, c, h, w */
} tinyc_s8_pool_params;

/* Sum of centered codes over the reduced dims, requantized (mean). */
typedef struct {
    tinyc_s8_iter out;              /* kept dims: s0 = y strides, s1 = x strides */
    tinyc_s8_iter red;              /* reduced dims: s1 = x strides */
    int32_t zx, zy, m, n;
} tinyc_s8_mean_params;

typedef struct {
    tinyc_s8_iter outer;            /* s0 = y strides, s1 = x strides */
    int32_t len, xs, ys;            /* the softmax axis */
} tinyc_s8_softmax_params;

/* layer_norm / group_norm (docs/quantization.md, "Normalization"): `outer` walks the sets,
 * `inner` the elements of one set; s0 = y strides, s1 = x strides, s2 = parameter index strides.
 * q holds {M, n, B} per parameter index (the output stage of gamma and beta). */
typedef struct {
    tinyc_s8_iter outer;
    tinyc_s8_iter inner;
    int32_t count;                  /* elements per set */
    int32_t zx, zy;
    int32_t rms;                    /* 1: no mean subtracted (RMSNorm) */
    int64_t eps;                    /* eps in units of count^2 * x_scale^2 */
} tinyc_s8_norm_params;

/* conv_transpose2d: weight [O][KH][KW][Cg] int8, q: per-channel output records (bias first);
 * acc = bias + sum w * (x - zx) over the taps landing on each output pixel. */
typedef struct {
    int32_t n, c, h, w, o, oh, ow;
    int32_t kh, kw, sh, sw, dh, dw;
    int32_t pad_top, pad_left, groups;
    int32_t zx, zy, lo, hi, mode;
    int32_t xs[4], ys[4];           /* element strides of n, c, h, w */
} tinyc_s8_conv_t_params;

/* resize: nearest copies x[iy0, ix0]; bilinear: (wy0 (wx0 x00 + wx1 x01) + wy1 (wx0 x10 + wx1 x11)
 * + 2^19) >> 20 with Q10 weights (docs/quantization.md). */
typedef struct {
    int32_t n, c, h, w, oh, ow, bilinear;
    int32_t xs[4], ys[4];
} tinyc_s8_resize_params;

/* masked_softmax: rows walk `rows` (s0: y, s1: x, s2: mask bytes); the axis has len elements,
 * strides xs, ys, ms. */
typedef struct {
    tinyc_s8_iter rows;
    int32_t len, xs, ys, ms;
} tinyc_s8_masked_softmax_params;

/* prelu: it walks y (s0), x (s1) and the slope (s2: the slope's offset for the element's channel).
 * y = x > zx ? rq(x - zx; pos) : rq((x - zx)(slope - zs); neg), each with its zero point zy. */
typedef struct {
    tinyc_s8_iter it;
    int32_t zx, zs, zy;
    int32_t m_pos, n_pos, m_neg, n_neg;
} tinyc_s8_prelu_params;

/* log_softmax along one axis (docs/quantization.md, "log_softmax"); outer: s0 = y, s1 = x. */
typedef struct {
    tinyc_s8_iter outer;
    int32_t len, xs, ys;            /* the axis */
    int32_t zy;                     /* the fixed output zero point, 127 */
    int32_t m_d, n_d, m_l, n_l;     /* (max - q) and log2(sum) to Q16 output units */
} tinyc_s8_log_softmax_params;

/* amax / amin over the reduced dims (codes; the result keeps x's quantization). */
typedef struct {
    tinyc_s8_iter out;              /* kept dims: s0 = y strides, s1 = x strides */
    tinyc_s8_iter red;              /* reduced dims: s1 = x strides */
    int32_t is_min;
} tinyc_s8_extreme_params;

#endif /* TINYC_KERNELS_S8_H */
