/* harness_io.h - the little I/O the tinyc harnesses need, so one harness source
 * builds for the host (io_host.c: stdio) and for Cortex-M (io_semihost.c:
 * ARM semihosting, files live in QEMU's working directory).
 */
#ifndef TINYC_HARNESS_IO_H
#define TINYC_HARNESS_IO_H

#include <stddef.h>
#include <stdint.h>

/* Open a file for binary reading (write == 0) or writing (write != 0).
 * Returns a handle >= 0, or -1. */
int hio_open(const char *path, int write);
/* Size of an open file in bytes, or -1. */
long hio_size(int handle);
/* Read exactly n bytes; returns 0 on success, -1 on a short read. */
int hio_read(int handle, void *buf, size_t n);
/* Write exactly n bytes; returns 0 on success, -1 on failure. */
int hio_write(int handle, const void *buf, size_t n);
/* Close; returns 0 on success. */
int hio_close(int handle);
/* Text to standard output / standard error (no newline added). */
void hio_out(const char *s);
void hio_err(const char *s);
/* Terminate the program with this exit status. */
void hio_exit(int code) __attribute__((noreturn));

/* Small formatting helpers (no printf needed on the target). */
char *hio_fmt_u64(char *dst, uint64_t v);   /* returns end of the written digits */
char *hio_fmt_i64(char *dst, int64_t v);
char *hio_fmt_str(char *dst, const char *s);
char *hio_fmt_hex32(char *dst, uint32_t v); /* "0x" + 8 hex digits */

#endif /* TINYC_HARNESS_IO_H */
