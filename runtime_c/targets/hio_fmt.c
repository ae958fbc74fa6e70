/* hio_fmt.c - printf-free number formatting shared by host and target. */
#include "harness_io.h"

char *hio_fmt_u64(char *dst, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        *dst++ = tmp[--n];
    }
    *dst = '\0';
    return dst;
}

char *hio_fmt_i64(char *dst, int64_t v)
{
    if (v < 0) {
        *dst++ = '-';
        return hio_fmt_u64(dst, (uint64_t)(-(v + 1)) + 1u);
    }
    return hio_fmt_u64(dst, (uint64_t)v);
}

char *hio_fmt_str(char *dst, const char *s)
{
    while (*s != '\0') {
        *dst++ = *s++;
    }
    *dst = '\0';
    return dst;
}

char *hio_fmt_hex32(char *dst, uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    int i;
    *dst++ = '0';
    *dst++ = 'x';
    for (i = 7; i >= 0; --i) {
        *dst++ = digits[(v >> (4 * i)) & 0xFu];
    }
    *dst = '\0';
    return dst;
}
