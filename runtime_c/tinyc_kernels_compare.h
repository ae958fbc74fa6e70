/* tinyc kernels for comparisons, masks, selection, running sums and cubic resampling:
 * parameter types.
 *
 * The kernels live in tinyc_kernels_compare.c, which a generated model source #includes after
 * defining TINYC_CMP_<KERNEL> for each kernel it calls: every kernel is a static function private
 * to that model (as for the float and int8 kernels). Float and int8 forms sit side by side; the
 * int8 arithmetic is docs/quantization.md bit for bit, every constant computed by the compiler.
 *
 * Masks (docs/ir.md): a comparison writes 1.0f / 0.0f (float) or the codes 1 / 0 (int8, scale 1,
 * zero point 0); a condition is true where it is non-zero (int8: where its code is not its zero
 * point).
 */
#ifndef TINYC_KERNELS_COMPARE_H
#define TINYC_KERNELS_COMPARE_H

#include <stdint.h>

/* Rank limit of the strided walks, after the compiler merged contiguous dims. */
#define TINYC_CMP_MAX_RANK 8

#if defined(__GNUC__)
#define TINYC_CMP_HELPER static inline __attribute__((unused))
#else
#define TINYC_CMP_HELPER static inline
#endif

enum { TINYC_CMP_GT = 0, TINYC_CMP_GE = 1, TINYC_CMP_LT = 2, TINYC_CMP_LE = 3, TINYC_CMP_EQ = 4, TINYC_CMP_NE = 5 };
enum { TINYC_LOGIC_AND = 0, TINYC_LOGIC_OR = 1, TINYC_LOGIC_XOR = 2, TINYC_LOGIC_NOT = 3 };

/* A walk over dims (last fastest) with the element strides of up to four tensors along them:
 * s[0] the result, s[1..3] the operands (0 on broadcast dims). */
typedef struct {
    int32_t rank;
    int32_t dims[TINYC_CMP_MAX_RANK];
    int32_t s[4][TINYC_CMP_MAX_RANK];
} tinyc_cmp_iter;

/* int8 compare: same = 1 compares the centered codes (one scale); else each centered code,
 * shifted left by 20, is requantized by (m, n) to the common scale 2 max(sa, sb):
 * ((int64)(d << 20) * m + 2^(n-1)) >> n. */
typedef struct {
    int32_t pred;
    int32_t za, zb;
    int32_t same;
    int32_t ma, na, mb, nb;
} tinyc_cmp_s8_params;

/* cumsum: `outer` walks every line (s[0] = y, s[1] = x strides), a line has `len` elements
 * `xs` / `ys` apart. int8: the running sum of (x - zx), requantized by (m, n), + zy, saturated. */
typedef struct {
    tinyc_cmp_iter outer;
    int32_t len, xs, ys;
    int32_t zx, zy, m, n;
} tinyc_cmp_cumsum_params;

/* Bicubic resize (PyTorch's A = -0.75 kernel): four source rows iy[j * oh + oy] and columns
 * ix[k * ow + ox] (clamped to the input), weights wy / wx alike (float, or int8 Q10 summing to
 * 1024 per output index). xs / ys: element strides of x and y along N, C, H, W. */
typedef struct {
    int32_t n, c, h, w, oh, ow;
    int32_t xs[4], ys[4];
} tinyc_cmp_cubic_params;

#endif
