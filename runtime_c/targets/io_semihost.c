/* io_semihost.c - harness I/O on Cortex-M through ARM semihosting. */
#include <string.h>

#include "harness_io.h"
#include "semihost.h"

static int hio_stdout = -2;
static int hio_stderr = -2;

int hio_open(const char *path, int write)
{
    return sh_open(path, write ? SH_MODE_WB : SH_MODE_RB);
}

long hio_size(int handle)
{
    return sh_flen(handle);
}

int hio_read(int handle, void *buf, size_t n)
{
    unsigned char *p = (unsigned char *)buf;
    while (n > 0) {
        size_t left = sh_read(handle, p, n);
        size_t got;
        if (left > n) {
            return -1; /* error */
        }
        got = n - left;
        if (got == 0) {
            return -1; /* end of file */
        }
        p += got;
        n -= got;
    }
    return 0;
}

int hio_write(int handle, const void *buf, size_t n)
{
    return sh_write(handle, buf, n) == 0 ? 0 : -1;
}

int hio_close(int handle)
{
    return sh_close(handle) == 0 ? 0 : -1;
}

static void hio_console(int *handle, int mode, const char *s)
{
    if (*handle == -2) {
        *handle = sh_open(":tt", mode);
    }
    if (*handle >= 0) {
        sh_write(*handle, s, strlen(s));
    } else {
        sh_write0(s);
    }
}

void hio_out(const char *s)
{
    hio_console(&hio_stdout, SH_MODE_W, s);
}

void hio_err(const char *s)
{
    hio_console(&hio_stderr, SH_MODE_A, s);
}

void hio_exit(int code)
{
    sh_exit(code);
}
