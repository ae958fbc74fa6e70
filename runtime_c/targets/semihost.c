/* semihost.c - minimal ARM semihosting for Cortex-M (Thumb "bkpt 0xAB"). */
#include <stdint.h>
#include <string.h>

#include "semihost.h"

int sh_call(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int sh_open(const char *path, int mode)
{
    uintptr_t args[3];
    args[0] = (uintptr_t)path;
    args[1] = (uintptr_t)mode;
    args[2] = (uintptr_t)strlen(path);
    return sh_call(SH_SYS_OPEN, args);
}

int sh_close(int handle)
{
    uintptr_t args[1];
    args[0] = (uintptr_t)handle;
    return sh_call(SH_SYS_CLOSE, args);
}

size_t sh_write(int handle, const void *buf, size_t n)
{
    uintptr_t args[3];
    args[0] = (uintptr_t)handle;
    args[1] = (uintptr_t)buf;
    args[2] = (uintptr_t)n;
    return (size_t)sh_call(SH_SYS_WRITE, args);
}

size_t sh_read(int handle, void *buf, size_t n)
{
    uintptr_t args[3];
    args[0] = (uintptr_t)handle;
    args[1] = (uintptr_t)buf;
    args[2] = (uintptr_t)n;
    return (size_t)sh_call(SH_SYS_READ, args);
}

long sh_flen(int handle)
{
    uintptr_t args[1];
    args[0] = (uintptr_t)handle;
    return (long)sh_call(SH_SYS_FLEN, args);
}

void sh_write0(const char *s)
{
    sh_call(SH_SYS_WRITE0, (void *)(uintptr_t)s);
}

void sh_exit(int code)
{
    uintptr_t args[2];
    args[0] = SH_ADP_STOPPED_APPLICATION_EXIT;
    args[1] = (uintptr_t)code;
    /* SYS_EXIT_EXTENDED carries the exit status on AArch32. */
    sh_call(SH_SYS_EXIT_EXTENDED, args);
    /* Fallback for hosts without it: SYS_EXIT can only say ok / not ok. */
    sh_call(SH_SYS_EXIT, (void *)(uintptr_t)(code == 0 ? SH_ADP_STOPPED_APPLICATION_EXIT
                                                         : SH_ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
        __asm__ volatile("wfi");
    }
}
