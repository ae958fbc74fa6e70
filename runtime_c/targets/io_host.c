/* io_host.c - harness I/O on a hosted C library (stdio). */
#include <stdio.h>
#include <stdlib.h>

#include "harness_io.h"

#define HIO_MAX_FILES 8
static FILE *hio_files[HIO_MAX_FILES];

int hio_open(const char *path, int write)
{
    int h;
    for (h = 0; h < HIO_MAX_FILES; ++h) {
        if (hio_files[h] == NULL) {
            FILE *f = fopen(path, write ? "wb" : "rb");
            if (f == NULL) {
                return -1;
            }
            hio_files[h] = f;
            return h;
        }
    }
    return -1;
}

long hio_size(int handle)
{
    FILE *f = hio_files[handle];
    long pos = ftell(f);
    long size;
    if (pos < 0 || fseek(f, 0L, SEEK_END) != 0) {
        return -1;
    }
    size = ftell(f);
    if (fseek(f, pos, SEEK_SET) != 0) {
        return -1;
    }
    return size;
}

int hio_read(int handle, void *buf, size_t n)
{
    return fread(buf, 1, n, hio_files[handle]) == n ? 0 : -1;
}

int hio_write(int handle, const void *buf, size_t n)
{
    return fwrite(buf, 1, n, hio_files[handle]) == n ? 0 : -1;
}

int hio_close(int handle)
{
    int rc = fclose(hio_files[handle]);
    hio_files[handle] = NULL;
    return rc == 0 ? 0 : -1;
}

void hio_out(const char *s)
{
    fputs(s, stdout);
    fflush(stdout);
}

void hio_err(const char *s)
{
    fputs(s, stderr);
    fflush(stderr);
}

void hio_exit(int code)
{
    exit(code);
}
