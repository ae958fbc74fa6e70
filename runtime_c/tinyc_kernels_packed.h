/* tinyc packed-weight kernels: sparse and low-bit storage of conv2d / linear weights.
 *
 * tinyc_kernels_packed.c is #included by a generated model after the float (and, for int8
 * models, the int8) kernels, with TINYC_PK_<KERNEL> defined for each kernel it calls; every
 * kernel is a static function of that model, called through per-layer wrappers whose
 * format and shape arguments are literals (GCC folds the format switches away).
 *
 * A layer's weights are a matrix W [N, K]: one row per output channel, K in the order the
 * kernel reads its inputs (linear: the input's physical order; int8 conv: im2col order
 * (ky, kx, c); float conv: (c, ky, kx)). tinyc.backends.weight_formats encodes W and
 * documents every layout bit for bit; in short:
 *
 *   DENSE_LUT  b-bit codebook indices. int8: rows of 32-bit words of chunks of 4 weights,
 *              fields idx(w0) idx(w2) idx(w1) idx(w3), so a 2b-bit field selects an int16
 *              pair for SMLAD (a table of all pairs, built in scratch, for a per-layer
 *              codebook; two lookups and a PKHBT for a per-channel one). float: b-bit
 *              fields, rows start on a byte.
 *   DENSE_I4 / DENSE_I2   int8 codes of 4 / 2 bits, 8 / 16 per word, byte j holding code j
 *              of each chunk: one AND (after a shift) and SXTB16 give two codes times 16
 *              (64); the sum is shifted back, exactly.
 *   ENTRIES    sparse: per row counts[r] entries (gap, value): gap = columns skipped, value
 *              a b-bit field (b <= 4: one byte, gap in the low 8 - b bits; b = 8: a byte
 *              pair gap, value; float values: a gap byte, the float in `vals`). Long gaps
 *              are bridged by zero-valued fillers. The stream runs on across rows.
 *   BITMAP     sparse: per row ceil(K / 8) bytes of non-zero flags (LSB first), then the
 *              non-zero values of all rows as one stream of b-bit fields (or floats).
 *   DENSE_BITS int8, any b in 1..7: every weight a b-bit field (codebook index or two's
 *              complement code), LSB first, rows of ceil(K / 8) groups of 8 fields (b bytes,
 *              padded with index / code 0), read through unaligned 32-bit windows at literal
 *              offsets (tinyc_pk_win).
 *   STREAM     int8 sparse: per row counts[r] entries of g + b bits (g, b literals, g + b <=
 *              16), LSB first, the row starting on a byte: the gap in the low g bits, the b-bit
 *              value field (index or code) above; groups of 8 entries (g + b bytes) unrolled.
 *   The field streams of DENSE_BITS and STREAM end with 3 padding bytes (the last window).
 *
 * int8 arithmetic is docs/quantization.md's: the accumulator starts at the folded bias
 * (bias - zp_x * sum of the stored weights) and adds raw input codes times weight codes,
 * then the output stage. Compact output records: with the fast form (see
 * tinyc_kernels_s8.h) a channel needs its bias, M and S = n - 32 only (R is derived):
 *   qmode 0: qb[o] = bias * 32 + S (the bias fits 27 bits), M = qm[o];
 *   qmode 2: qb[o] = bias, M = qm[o], S = qs[o] (a larger bias);
 * a multiplier (or shift) shared by every channel is a literal instead of an array.
 *   qmode 1: the 6-word generic records of tinyc_kernels_s8.h (leaky_relu, extreme ratios).
 */
#ifndef TINYC_KERNELS_PACKED_H
#define TINYC_KERNELS_PACKED_H

#include <stdint.h>

enum {
    TINYC_PK_DENSE_LUT = 1,
    TINYC_PK_DENSE_I4 = 2,
    TINYC_PK_DENSE_I2 = 3,
    TINYC_PK_ENTRIES = 4,
    TINYC_PK_BITMAP = 5,
    TINYC_PK_DENSE_BITS = 6,
    TINYC_PK_STREAM = 7
};

/* Value kinds: f32; int8 codes; i4 / i2 and TINYC_PK_INT: b-bit two's complement codes (b = the
 * `bits` argument, 2 to 7); b-bit codebook indices. */
enum { TINYC_PK_F32 = 0, TINYC_PK_I8 = 1, TINYC_PK_I4 = 2, TINYC_PK_I2 = 3, TINYC_PK_LUT = 4, TINYC_PK_INT = 5 };

/* Helpers are marked unused: a kernel file compiled on its own (a bundle's every .c file is
 * compiled) or into a model that calls only some of its kernels leaves helpers unused, and
 * clang's -Wunused-function reports unused static inline functions of a .c file (gcc does
 * not). The attribute changes no code. */
#if defined(__GNUC__)
#define TINYC_PK_INLINE static inline __attribute__((always_inline, unused))
#else
#define TINYC_PK_INLINE static inline
#endif

/* Float graphs do not include tinyc_kernels_s8.h, which defines the wrapper attribute. */
#ifndef TINYC_S8_WRAPPER
#if defined(__GNUC__)
#define TINYC_S8_WRAPPER static __attribute__((noinline))
#else
#define TINYC_S8_WRAPPER static
#endif
#endif

#endif /* TINYC_KERNELS_PACKED_H */
