/* tinyc binary-layer kernels: bit-packed sign activations, XNOR/popcount layers.
 *
 * The kernels live in tinyc_kernels_bin.c, which a generated model source #includes
 * (after tinyc_kernels_s8.c in an int8 bundle) once it has defined TINYC_BIN_<KERNEL>
 * for each kernel it calls: every kernel is a static function private to that model.
 * Semantics: docs/compression_formats.md (sign, bin_conv2d, bin_linear), bit for bit
 * for u1 and i8 inputs; float inputs match to rounding like the float conv.
 *
 * Packed u1 tensors ("bit streams"): element i of the tensor in *packing order* is
 * bit i % 32 of 32-bit word i / 32 (little-endian, so also bit i % 8 of byte i / 8).
 * The packing order is channels-last (N, H, W, C) for a tensor read by bin_conv2d and
 * row-major for one read by bin_linear: the C (or K) bits of one pixel (row) are
 * consecutive, so the layers XOR whole words. Bits past the last element of the
 * last word are 0. The tensor takes ceil(numel / 8) bytes of the arena; kernels access
 * whole words, which stay inside the planner's 8-byte aligned slot.
 *
 * Weights: per output channel, the bits of its (ky, kx, c) taps in that order
 * (a linear layer: its K inputs), packed the same way and padded with 0 bits to
 * `kwords` 32-bit words. The layer kernels gather each output pixel's input bits into
 * the same order (a bit im2col row, padded taps 0 and masked out), then per output
 * channel S = K_valid - 2 * popcount((row ^ w) & mask): no multiplies.
 */
#ifndef TINYC_KERNELS_BIN_H
#define TINYC_KERNELS_BIN_H

#include <stdint.h>
#include <string.h>

/* Helpers are marked unused: a kernel file compiled on its own (a bundle's every .c file is
 * compiled) or into a model that calls only some of its kernels leaves helpers unused, and
 * clang's -Wunused-function reports unused static inline functions of a .c file (gcc does
 * not). The attribute changes no code. */
#if defined(__GNUC__)
#define TINYC_BIN_INLINE static inline __attribute__((always_inline, unused))
/* Words of packed bits may alias the byte arena. */
typedef uint32_t __attribute__((__may_alias__)) tinyc_bin_word;
#else
#define TINYC_BIN_INLINE static inline
typedef uint32_t tinyc_bin_word;
#endif

/* The per-shape wrappers the emitter generates (same definition as tinyc_kernels_s8.h,
 * which a float bundle does not include). */
#ifndef TINYC_S8_WRAPPER
#if defined(__GNUC__)
#define TINYC_S8_WRAPPER static __attribute__((noinline))
#else
#define TINYC_S8_WRAPPER static
#endif
#endif

/* Fused activation of the float output forms (the `act` literal). */
enum { TINYC_BIN_ACT_NONE = 0, TINYC_BIN_ACT_RELU = 1, TINYC_BIN_ACT_CLAMP = 2, TINYC_BIN_ACT_LEAKY = 3 };

#endif /* TINYC_KERNELS_BIN_H */
