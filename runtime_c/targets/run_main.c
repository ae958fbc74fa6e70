/* run_main.c - tinyc "run" harness: input.bin -> model -> output.bin.
 *
 * input.bin holds rows of TINYC_INPUT_SIZE little-endian float32 (int32 token ids
 * when the model's input type TINYC_INPUT_TYPE is int32_t); the model is invoked
 * once per row and the rows of TINYC_OUTPUT_SIZE float32 results are
 * written to output.bin.  Exit status 0 on success; otherwise a message on
 * stderr and: 1 = I/O or usage error, 2 = the model's invoke returned non-zero,
 * 3 = CPU fault (startup.c).
 *
 * The same source builds for the host (io_host.c; optional argv[1]/argv[2]
 * override the file names) and for Cortex-M (io_semihost.c, -DTINYC_BARE_METAL;
 * the files are opened in QEMU's working directory).  The model is selected by
 * tinyc_bundle.h, which target_files.write_target_files() generates: it includes
 * NAME.h and maps TINYC_INVOKE / TINYC_INPUT_SIZE / TINYC_OUTPUT_SIZE to the
 * model's NAME_invoke / NAME_INPUT_SIZE / NAME_OUTPUT_SIZE.
 */
#include <stddef.h>
#include <stdint.h>

#include "harness_io.h"
#include "tinyc_bundle.h"

static TINYC_INPUT_TYPE tinyc_in_row[TINYC_INPUT_SIZE];
static float tinyc_out_row[TINYC_OUTPUT_SIZE];

#ifdef TINYC_PROFILE
/* A profiling build of the model calls this; the run harness only counts. */
static volatile uint32_t tinyc_mark_count;
void tinyc_profile_mark(int layer)
{
    (void)layer;
    tinyc_mark_count++;
}
#endif

static void fail(int code, const char *what, const char *path, long value)
{
    char msg[256];
    char *p = msg;
    p = hio_fmt_str(p, "tinyc-run: ");
    p = hio_fmt_str(p, what);
    if (path != NULL) {
        p = hio_fmt_str(p, " '");
        p = hio_fmt_str(p, path);
        p = hio_fmt_str(p, "'");
    }
    if (value >= 0) {
        p = hio_fmt_str(p, " (");
        p = hio_fmt_i64(p, value);
        p = hio_fmt_str(p, ")");
    }
    hio_fmt_str(p, "\n");
    hio_err(msg);
    hio_exit(code);
}

static int run(const char *in_path, const char *out_path)
{
    const long row_in = (long)sizeof(tinyc_in_row);
    const long row_out = (long)sizeof(tinyc_out_row);
    long size, rows, r;
    int fin, fout;

    fin = hio_open(in_path, 0);
    if (fin < 0) {
        fail(1, "cannot open input file", in_path, -1);
    }
    size = hio_size(fin);
    if (size < 0) {
        fail(1, "cannot get the size of", in_path, -1);
    }
    if (size % row_in != 0) {
        fail(1, "input size is not a multiple of the row size in bytes", in_path, row_in);
    }
    rows = size / row_in;
    fout = hio_open(out_path, 1);
    if (fout < 0) {
        fail(1, "cannot create output file", out_path, -1);
    }
    for (r = 0; r < rows; ++r) {
        int rc;
        if (hio_read(fin, tinyc_in_row, (size_t)row_in) != 0) {
            fail(1, "short read from", in_path, r);
        }
        rc = TINYC_INVOKE(tinyc_in_row, tinyc_out_row);
        if (rc != 0) {
            /* -2: a token id outside its embedding table (NAME_ERR_INDEX) */
            fail(2, rc == -2 ? "model invoke returned -2 (a token id is out of range) at row"
                             : "model invoke returned an error code at row", NULL, r);
        }
        if (hio_write(fout, tinyc_out_row, (size_t)row_out) != 0) {
            fail(1, "write failed on", out_path, r);
        }
    }
    if (hio_close(fout) != 0) {
        fail(1, "cannot close", out_path, -1);
    }
    hio_close(fin);
    return 0;
}

#ifdef TINYC_BARE_METAL
int main(void)
{
    return run("input.bin", "output.bin");
}
#else
int main(int argc, char **argv)
{
    return run(argc > 1 ? argv[1] : "input.bin", argc > 2 ? argv[2] : "output.bin");
}
#endif
