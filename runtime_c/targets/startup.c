/* startup.c - start-up code for the tinyc Cortex-M harnesses (M0/M3/M4/M7/M33).
 *
 * Vector table, Reset_Handler (FPU enable, .data copy, .bss zeroing, main),
 * and fault handlers that report through semihosting and exit non-zero, so a
 * crashing model fails the QEMU run instead of hanging it.
 * Symbols come from the linker script generated from link.ld.in.
 */
#include <stdint.h>
#include <string.h>

#include "harness_io.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[];
extern uint32_t _estack[], __stack_limit[];

int main(void);
void Reset_Handler(void) __attribute__((noreturn));
void Fault_Handler(void);
void tinyc_fault_report(const uint32_t *frame) __attribute__((noreturn, used));

void NMI_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void SecureFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Fault_Handler")));

typedef void (*tinyc_vector_t)(void);

/* Architectural exceptions only: the harnesses use no peripheral IRQs. */
__attribute__((section(".isr_vector"), used))
const tinyc_vector_t tinyc_vectors[16] = {
    (tinyc_vector_t)(uintptr_t)_estack, /* 0: initial main stack pointer */
    Reset_Handler,                      /* 1 */
    NMI_Handler,                        /* 2 */
    HardFault_Handler,                  /* 3 */
    MemManage_Handler,                  /* 4 */
    BusFault_Handler,                   /* 5 */
    UsageFault_Handler,                 /* 6 */
    SecureFault_Handler,                /* 7 (ARMv8-M) */
    0, 0, 0,                            /* 8-10 reserved */
    SVC_Handler,                        /* 11 */
    DebugMon_Handler,                   /* 12 */
    0,                                  /* 13 reserved */
    PendSV_Handler,                     /* 14 */
    SysTick_Handler,                    /* 15 */
};

#define TINYC_REG32(addr) (*(volatile uint32_t *)(addr))
#define SCB_CPACR TINYC_REG32(0xE000ED88u)
#define SCB_CFSR  TINYC_REG32(0xE000ED28u)
#define SCB_HFSR  TINYC_REG32(0xE000ED2Cu)
#define SCB_MMFAR TINYC_REG32(0xE000ED34u)
#define SCB_BFAR  TINYC_REG32(0xE000ED38u)

void Reset_Handler(void)
{
#if defined(__ARM_FP)
    /* Full access to CP10/CP11 before any floating-point instruction runs. */
    SCB_CPACR |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
#if defined(__ARM_ARCH_8M_MAIN__)
    /* ARMv8-M: let the core trap a stack overflow (UsageFault STKOF). */
    __asm__ volatile("msr msplim, %0" : : "r"(__stack_limit));
#endif
    memcpy(_sdata, _sidata, (size_t)((char *)_edata - (char *)_sdata));
    memset(_sbss, 0, (size_t)((char *)_ebss - (char *)_sbss));
    hio_exit(main());
}

/* Pass the stacked exception frame (r0-r3, r12, lr, pc, xpsr) to C. Thumb-1
 * only, so it also assembles for ARMv6-M. */
__attribute__((naked)) void Fault_Handler(void)
{
    __asm__ volatile(
        "movs r0, #4\n\t"
        "mov r1, lr\n\t"
        "tst r0, r1\n\t"
        "beq 1f\n\t"
        "mrs r0, psp\n\t"
        "b 2f\n"
        "1:\n\t"
        "mrs r0, msp\n"
        "2:\n\t"
        "ldr r1, =tinyc_fault_report\n\t"
        "bx r1\n\t"
        ".ltorg\n");
}

void tinyc_fault_report(const uint32_t *frame)
{
    static const char *const names[16] = {
        "thread", "reset", "NMI", "HardFault", "MemManage", "BusFault", "UsageFault",
        "SecureFault", "reserved", "reserved", "reserved", "SVC", "DebugMon",
        "reserved", "PendSV", "SysTick"};
    char line[192];
    char *p = line;
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    ipsr &= 0x1FFu;
    p = hio_fmt_str(p, "tinyc: fatal exception ");
    p = hio_fmt_u64(p, ipsr);
    p = hio_fmt_str(p, " (");
    p = hio_fmt_str(p, ipsr < 16u ? names[ipsr] : "IRQ");
    p = hio_fmt_str(p, ") pc=");
    p = hio_fmt_hex32(p, frame[6]);
    p = hio_fmt_str(p, " lr=");
    p = hio_fmt_hex32(p, frame[5]);
#if !defined(__ARM_ARCH_6M__)
    p = hio_fmt_str(p, " cfsr=");
    p = hio_fmt_hex32(p, SCB_CFSR);
    p = hio_fmt_str(p, " hfsr=");
    p = hio_fmt_hex32(p, SCB_HFSR);
    p = hio_fmt_str(p, " mmfar=");
    p = hio_fmt_hex32(p, SCB_MMFAR);
    p = hio_fmt_str(p, " bfar=");
    p = hio_fmt_hex32(p, SCB_BFAR);
#endif
    p = hio_fmt_str(p, "\n");
    hio_err(line);
    hio_exit(3);
}
