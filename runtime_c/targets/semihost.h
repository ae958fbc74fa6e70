/* semihost.h - minimal ARM semihosting (raw "bkpt 0xAB" calls), no newlib rdimon.
 *
 * Only the calls the tinyc harnesses need.  Under QEMU this requires
 * "-semihosting-config enable=on,target=native".
 */
#ifndef TINYC_SEMIHOST_H
#define TINYC_SEMIHOST_H

#include <stddef.h>

#define SH_SYS_OPEN          0x01
#define SH_SYS_CLOSE         0x02
#define SH_SYS_WRITE0        0x04
#define SH_SYS_WRITE         0x05
#define SH_SYS_READ          0x06
#define SH_SYS_FLEN          0x0C
#define SH_SYS_EXIT          0x18
#define SH_SYS_EXIT_EXTENDED 0x20

/* SYS_OPEN modes (ISO C fopen modes, in this order). */
#define SH_MODE_RB  1
#define SH_MODE_W   4
#define SH_MODE_WB  5
#define SH_MODE_A   8

#define SH_ADP_STOPPED_APPLICATION_EXIT 0x20026
#define SH_ADP_STOPPED_RUNTIME_ERROR    0x20023

int sh_call(int op, void *arg);
int sh_open(const char *path, int mode);       /* handle, or -1 */
int sh_close(int handle);                       /* 0 on success */
size_t sh_write(int handle, const void *buf, size_t n); /* bytes NOT written */
size_t sh_read(int handle, void *buf, size_t n);        /* bytes NOT read */
long sh_flen(int handle);                       /* file length, or -1 */
void sh_write0(const char *s);                  /* debug console */
void sh_exit(int code) __attribute__((noreturn));

#endif /* TINYC_SEMIHOST_H */
