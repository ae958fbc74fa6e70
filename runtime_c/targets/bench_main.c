/* bench_main.c - tinyc "bench" harness for Cortex-M under QEMU -icount shift=0.
 *
 * With -icount shift=0 QEMU's virtual clock advances exactly 1 ns per guest
 * instruction, so a timer clocked from the CPU clock counts instructions / K,
 * where K = 1e9 / clock_hz (40 on the 25 MHz mps2 boards).  The harness:
 *   1. starts SysTick on the processor clock (reload 2^24-1, the SysTick
 *      interrupt counts wraps, so timestamps are 64-bit),
 *   2. times two calibration loops of a known instruction count (2 per
 *      iteration) so the host can compute K empirically,
 *   3. times two back-to-back stamps (the cost of a stamp, exact with the
 *      plugin) and 64 stamps in a row (that cost to a fraction of a tick),
 *   4. invokes the model once to warm up, paints the free stack with a
 *      pattern, then invokes it again between two stamps; in a TINYC_PROFILE
 *      build every TINYC_LAYER_MARK(i) adds a stamp,
 *   5. scans the stack for the high-water mark and prints everything as
 *      "tinyc-bench ..." lines (see backends/bench.py: _parse_bench).
 * Every stamp also calls tinyc_bench_point(), a no-op function whose entry the
 * optional QEMU TCG plugin (icount_plugin.c) watches to count instructions
 * exactly; the n-th plugin record belongs to stamp n.
 */
#include <stddef.h>
#include <stdint.h>

#include "harness_io.h"
#include "tinyc_bundle.h"

#define TINYC_REG32(addr) (*(volatile uint32_t *)(addr))
#define SYST_CSR   TINYC_REG32(0xE000E010u)
#define SYST_RVR   TINYC_REG32(0xE000E014u)
#define SYST_CVR   TINYC_REG32(0xE000E018u)
#define SCB_ICSR   TINYC_REG32(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define SYST_RELOAD 0x00FFFFFFu

#ifndef TINYC_BENCH_MAX_STAMPS
#define TINYC_BENCH_MAX_STAMPS 1024
#endif
#define TINYC_CALIB_N1 100000u
#define TINYC_CALIB_N2 200000u
#define TINYC_STACK_PATTERN 0xDEADBEEFu

#define TINYC_OVH_REPS 63

enum { ST_CALIB1_A, ST_CALIB1_B, ST_CALIB2_A, ST_CALIB2_B, ST_EMPTY_A, ST_EMPTY_B,
       ST_OVH_A, ST_OVH_B, ST_START, ST_MARK, ST_END };
static const char *const stamp_kind[] = {"calib1_a", "calib1_b", "calib2_a", "calib2_b",
                                         "empty_a", "empty_b", "ovh_a", "ovh_b",
                                         "start", "mark", "end"};

extern uint32_t __stack_limit[];

static volatile uint32_t systick_wraps;
static uint64_t stamp_ticks[TINYC_BENCH_MAX_STAMPS];
static uint8_t stamp_type[TINYC_BENCH_MAX_STAMPS];
static int16_t stamp_arg[TINYC_BENCH_MAX_STAMPS];
static int n_stamps;
static int n_dropped;
static volatile int recording;

static TINYC_INPUT_TYPE bench_in[TINYC_INPUT_SIZE];
static float bench_out[TINYC_OUTPUT_SIZE];

void SysTick_Handler(void)
{
    systick_wraps++;
}

/* The plugin's marker: must stay a real, out-of-line function. */
__attribute__((noinline, used)) void tinyc_bench_point(void)
{
    __asm__ volatile("" ::: "memory");
}

/* Same cost as tinyc_bench_point, at another address (the plugin ignores it). */
__attribute__((noinline, used)) void tinyc_bench_probe(void)
{
    __asm__ volatile("" ::: "memory");
}

static volatile uint64_t probe_sink;

static uint64_t ticks_now(void)
{
    uint32_t wraps, val;
    __asm__ volatile("cpsid i" ::: "memory");
    wraps = systick_wraps;
    val = SYST_CVR;
    if (SCB_ICSR & ICSR_PENDSTSET) {
        /* Wrapped, interrupt not yet taken: the value read may be from either
         * side of the wrap, so read again, now surely after it. */
        val = SYST_CVR;
        wraps++;
    }
    __asm__ volatile("cpsie i" ::: "memory");
    /* The counter runs RELOAD..1, 0 (wrap, interrupt), RELOAD, ...: 0 starts
     * a new period. */
    return ((uint64_t)wraps << 24) + ((0x01000000u - val) & SYST_RELOAD);
}

static void stamp(int type, int arg)
{
    tinyc_bench_point();
    if (n_stamps < TINYC_BENCH_MAX_STAMPS) {
        stamp_ticks[n_stamps] = ticks_now();
        stamp_type[n_stamps] = (uint8_t)type;
        stamp_arg[n_stamps] = (int16_t)arg;
        n_stamps++;
    } else {
        (void)ticks_now();
        n_dropped++;
    }
}

/* What a stamp costs, without storing it: timed many times in a row, this
 * gives the SysTick method the cost of a stamp to well under one tick. */
__attribute__((noinline)) static void stamp_probe(void)
{
    tinyc_bench_probe();
    probe_sink = ticks_now();
}

void tinyc_profile_mark(int layer)
{
    if (recording) {
        stamp(ST_MARK, layer);
    }
}

/* 2 instructions per iteration (subs + bne).  GCC hands Thumb-1 inline asm to
 * the assembler in divided syntax, so switch to unified syntax and back. */
#if defined(__ARM_ARCH_6M__)
#define TINYC_ASM_UNIFIED ".syntax unified\n\t"
#define TINYC_ASM_RESTORE "\n\t.syntax divided"
#else
#define TINYC_ASM_UNIFIED ""
#define TINYC_ASM_RESTORE ""
#endif
__attribute__((noinline)) static void calib_loop(uint32_t n)
{
    __asm__ volatile(TINYC_ASM_UNIFIED "1:\n\tsubs %0, %0, #1\n\tbne 1b" TINYC_ASM_RESTORE
                     : "+l"(n) : : "cc");
}

static inline __attribute__((always_inline)) uint32_t *current_sp(void)
{
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static void print_kv(const char *key, uint64_t value)
{
    char line[96];
    char *p = line;
    p = hio_fmt_str(p, "tinyc-bench ");
    p = hio_fmt_str(p, key);
    p = hio_fmt_str(p, " ");
    p = hio_fmt_u64(p, value);
    hio_fmt_str(p, "\n");
    hio_out(line);
}

int main(void)
{
    volatile uint32_t *p;
    uint32_t *sp_before;
    uint32_t *lowest;
    int i, rc;

    for (i = 0; i < TINYC_INPUT_SIZE; ++i) {
#if TINYC_INPUT_INT32
        /* Token ids: id 0 is in range of every embedding table. */
        bench_in[i] = 0;
#else
        /* Deterministic, non-trivial input: a small sawtooth in [-1, 1). */
        bench_in[i] = (float)((i * 37) % 64 - 32) / 32.0f;
#endif
    }

    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0u;
    SYST_CSR = 0x7u; /* ENABLE | TICKINT | CLKSOURCE = processor clock */

    recording = 1;
    stamp(ST_CALIB1_A, 0);
    calib_loop(TINYC_CALIB_N1);
    stamp(ST_CALIB1_B, 0);
    stamp(ST_CALIB2_A, 0);
    calib_loop(TINYC_CALIB_N2);
    stamp(ST_CALIB2_B, 0);
    stamp(ST_EMPTY_A, 0);
    stamp(ST_EMPTY_B, 0);
    stamp(ST_OVH_A, 0);
    for (i = 0; i < TINYC_OVH_REPS; ++i) {
        stamp_probe();
    }
    stamp(ST_OVH_B, 0);

    recording = 0;
    rc = TINYC_INVOKE(bench_in, bench_out); /* warm-up */
    if (rc != 0) {
        hio_err("tinyc-bench: model invoke returned an error code (warm-up)\n");
        return 2;
    }

    /* Paint the unused stack below us: main's frame is above sp_before and
     * this loop keeps its state in registers. */
    sp_before = current_sp();
    for (p = __stack_limit; p < sp_before; ++p) {
        *p = TINYC_STACK_PATTERN;
    }

    recording = 1;
    stamp(ST_START, 0);
    rc = TINYC_INVOKE(bench_in, bench_out);
    stamp(ST_END, 0);
    recording = 0;
    if (rc != 0) {
        hio_err("tinyc-bench: model invoke returned an error code\n");
        return 2;
    }

    lowest = sp_before;
    for (p = __stack_limit; p < sp_before; ++p) {
        if (*p != TINYC_STACK_PATTERN) {
            lowest = (uint32_t *)(uintptr_t)p;
            break;
        }
    }

    hio_out("tinyc-bench begin\n");
    print_kv("version", 1);
    print_kv("calib_n1_insns", 2u * TINYC_CALIB_N1);
    print_kv("calib_n2_insns", 2u * TINYC_CALIB_N2);
    print_kv("ovh_reps", TINYC_OVH_REPS);
    print_kv("stack_bytes", (uint64_t)((uintptr_t)sp_before - (uintptr_t)lowest));
    print_kv("stack_avail", (uint64_t)((uintptr_t)sp_before - (uintptr_t)__stack_limit));
    print_kv("stack_overflow", __stack_limit[0] != TINYC_STACK_PATTERN);
    print_kv("dropped", (uint64_t)n_dropped);
    print_kv("stamps", (uint64_t)n_stamps);
    for (i = 0; i < n_stamps; ++i) {
        char line[96];
        char *q = line;
        q = hio_fmt_str(q, "tinyc-bench stamp ");
        q = hio_fmt_str(q, stamp_kind[stamp_type[i]]);
        q = hio_fmt_str(q, " ");
        q = hio_fmt_i64(q, stamp_arg[i]);
        q = hio_fmt_str(q, " ");
        q = hio_fmt_u64(q, stamp_ticks[i]);
        hio_fmt_str(q, "\n");
        hio_out(line);
    }
    hio_out("tinyc-bench end\n");
    return 0;
}
