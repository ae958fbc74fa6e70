/* icount_plugin.c - QEMU TCG plugin (plugin API version 1, QEMU 7.x) for the
 * tinyc bench harness: counts every guest instruction executed and, each time
 * the instruction at the marker address (tinyc_bench_point in bench_main.c)
 * executes, appends the running count to the output file, one per line.
 *
 * Built with the host C compiler by backends/bench.py:
 *   gcc -shared -fPIC -O2 -o icount_plugin.so icount_plugin.c
 * Loaded as:
 *   qemu-system-arm ... -plugin ./icount_plugin.so,addr=0x1234,out=counts.txt
 * Debian's QEMU ships no qemu-plugin.h, so the few API entries used are
 * declared here; they match include/qemu/qemu-plugin.h of QEMU 7.x.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- QEMU plugin API v1 subset (declarations only) ---- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only ever used through a pointer */
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);

#define TINYC_PLUGIN_EXPORT __attribute__((visibility("default")))
TINYC_PLUGIN_EXPORT int qemu_plugin_version = 1;
/* ---- end of API subset ---- */

static uint64_t insn_count;  /* updated inline by translated code */
static uint64_t marker_addr;
static FILE *out_file;

static void on_marker(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    /* insn_count already includes the whole translation block holding the
     * marker (the inline add runs at block entry): a constant offset that
     * cancels in differences. */
    fprintf(out_file, "%llu\n", (unsigned long long)insn_count);
}

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, n);
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_vaddr(insn) == marker_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void on_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    fprintf(out_file, "total %llu\n", (unsigned long long)insn_count);
    fclose(out_file);
    out_file = NULL;
}

TINYC_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                            int argc, char **argv)
{
    const char *out_path = "tinyc_icount.txt";
    int i, have_addr = 0;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "addr=", 5) == 0) {
            marker_addr = strtoull(argv[i] + 5, NULL, 0) & ~(uint64_t)1; /* drop Thumb bit */
            have_addr = 1;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = argv[i] + 4;
        } else {
            fprintf(stderr, "tinyc icount plugin: unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    if (!have_addr) {
        fprintf(stderr, "tinyc icount plugin: needs addr=<marker address>\n");
        return -1;
    }
    out_file = fopen(out_path, "w");
    if (out_file == NULL) {
        fprintf(stderr, "tinyc icount plugin: cannot open '%s'\n", out_path);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
