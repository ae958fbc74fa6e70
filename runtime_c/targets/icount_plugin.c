/* icount_plugin.c - QEMU TCG plugin (plugin API version 1, QEMU 7.x) for the
 * tinyc bench harness: counts every guest instruction executed and, each time
 * the instruction at the marker address (tinyc_bench_point in bench_main.c)
 * executes, appends the running count to the output file, one per line.
 *
 * With classes=PATH it also counts the executed instructions by Cortex-M4
 * timing class (backends/cycles.py turns them into estimated cycles) and
 * appends the running class counts to PATH at every marker, one line each:
 *   # tinyc-icount-classes 1 <name> <name> ...      (header, once)
 *   <count> <count> ...                             (one line per marker)
 *   total <count> <count> ...                       (at exit)
 * The classes come from the instruction bytes (Thumb-2 opcode bits, decoded
 * once per translation block), plus what only execution shows: whether the
 * instruction that ends a block transferred control (the next block executed
 * does not start right after it: a taken branch, pipeline refill), and
 * whether a load at the start of a block pipelines with a load ending the
 * previous one.  flash=LO:HI (with classes=) also counts data reads whose
 * address is in [LO, HI) (loads from the code region: constants, weights).
 *
 * Built with the host C compiler by backends/bench.py:
 *   gcc -shared -fPIC -O2 -o icount_plugin.so icount_plugin.c
 * Loaded as:
 *   qemu-system-arm ... -plugin ./icount_plugin.so,addr=0x1234,out=counts.txt
 *   qemu-system-arm ... -plugin ./icount_plugin.so,addr=0x1234,out=counts.txt,classes=cls.txt
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
typedef uint32_t qemu_plugin_meminfo_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_mem_cb_t)(unsigned int vcpu_index, qemu_plugin_meminfo_t info,
                                          uint64_t vaddr, void *userdata);
_Bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t info);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_mem_cb_t cb,
                                      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw,
                                      void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);

#define TINYC_PLUGIN_EXPORT __attribute__((visibility("default")))
TINYC_PLUGIN_EXPORT int qemu_plugin_version = 1;
/* ---- end of API subset ---- */

/* ---- instruction classes (names are read by backends/cycles.py) ---- */
enum {
    K_INSNS,        /* every instruction (same as the plain count) */
    K_LDR,          /* single load LDR/LDRB/LDRH/LDRSB/LDRSH/LDREX (literal too), not pipelined */
    K_LDR_PIPE,     /* single load right after a single load it does not depend on (address) */
    K_LDR_PC,       /* LDR PC, [...] */
    K_LDRD, K_STRD,
    K_STR,          /* single store STR/STRB/STRH/STREX */
    K_LDM, K_LDM_REGS,          /* LDM/POP without PC: instructions, registers */
    K_LDM_PC, K_LDM_PC_REGS,    /* LDM/POP with PC: instructions, registers (PC included) */
    K_STM, K_STM_REGS,          /* STM/PUSH: instructions, registers */
    K_IMUL,          /* MUL/MLA/MLS, SMUL/SMLA<x><y>, SMLAD/SMUAD/..., SMULL/UMULL/SMLAL/UMLAL/... */
    K_IDIV,          /* SDIV/UDIV */
    K_BRANCH,       /* B, B<c>, BL, BX, BLX, CBZ, CBNZ */
    K_BRANCH_TAKEN, /* of K_BRANCH: those that transferred control */
    K_TBB,          /* TBB/TBH */
    K_PC_WRITE,     /* MOV PC / ADD PC (16-bit forms) */
    K_TAKEN,        /* every control transfer: taken branches, TBB/TBH, LDR/LDM/POP/MOV/ADD to PC */
    K_IT,
    K_VLDR, K_VLDR64, K_VSTR, K_VSTR64,
    K_VLDM, K_VLDM_WORDS, K_VSTM, K_VSTM_WORDS,   /* VLDM/VPOP, VSTM/VPUSH: instructions, words */
    K_VMLA,         /* VMLA/VMLS/VNMLA/VNMLS/VFMA/VFMS/VFNMA/VFNMS */
    K_VDIV,         /* VDIV, VSQRT */
    K_VMOV2,        /* VMOV between two core registers and two singles / a double */
    K_VFP,          /* other VFP: VADD/VSUB/VMUL/VNMUL/VABS/VNEG/VCVT/VCMP/VMOV/VMRS/VMSR */
    K_OTHER,        /* everything else */
    K_LIT,          /* of the loads above: PC-relative (literal) ones */
    K_FLASH_READS,  /* data reads from the flash=LO:HI region (with flash=) */
    K_N
};
static const char *const class_name[K_N] = {
    "insns", "ldr", "ldr_pipe", "ldr_pc", "ldrd", "strd", "str", "ldm", "ldm_regs",
    "ldm_pc", "ldm_pc_regs", "stm", "stm_regs", "imul", "idiv", "branch", "branch_taken",
    "tbb", "pc_write", "taken", "it", "vldr", "vldr64", "vstr", "vstr64", "vldm",
    "vldm_words", "vstm", "vstm_words", "vmla", "vdiv", "vmov2", "vfp", "other", "lit",
    "flash_reads",
};

/* What the decoder says about one instruction. */
struct insn_class {
    int cls;             /* the instruction's class (one of the disjoint ones) */
    int regs;            /* LDM/STM/VLDM/VSTM: registers or words */
    int single_load;     /* LDR-family single load not writing PC (pipelining) */
    int rt;              /* its destination register */
    unsigned addr_regs;  /* bit mask of the registers its address is computed from */
    int control;         /* can transfer control (ends a translation block) */
    int literal;         /* PC-relative load */
    int reads;           /* reads memory (for flash=) */
};

static int popcount16(unsigned v)
{
    int n = 0;
    for (v &= 0xFFFFu; v; v &= v - 1u) {
        ++n;
    }
    return n;
}

static void set_load(struct insn_class *c, int rt, int rn, int rm)
{
    if (rt == 15) {
        c->cls = K_LDR_PC;
        c->control = 1;
    } else {
        c->cls = K_LDR;
        c->single_load = 1;
        c->rt = rt;
    }
    c->reads = 1;
    c->literal = (rn == 15);
    if (rn != 15) {
        c->addr_regs |= 1u << rn;
    }
    if (rm >= 0) {
        c->addr_regs |= 1u << rm;
    }
}

static void decode16(unsigned h, struct insn_class *c)
{
    if ((h & 0xFFC0u) == 0x4340u) {                 /* MULS */
        c->cls = K_IMUL;
    } else if ((h & 0xFF00u) == 0x4700u) {          /* BX, BLX (register) */
        c->cls = K_BRANCH;
        c->control = 1;
    } else if ((h & 0xFD00u) == 0x4400u) {          /* ADD / MOV (high registers) */
        if ((((h >> 4) & 8u) | (h & 7u)) == 15u) {
            c->cls = K_PC_WRITE;
            c->control = 1;
        }
    } else if ((h & 0xF800u) == 0x4800u) {          /* LDR (literal) */
        set_load(c, (int)((h >> 8) & 7u), 15, -1);
    } else if ((h & 0xF000u) == 0x5000u) {          /* load/store, register offset */
        if (((h >> 9) & 7u) >= 3u) {
            set_load(c, (int)(h & 7u), (int)((h >> 3) & 7u), (int)((h >> 6) & 7u));
        } else {
            c->cls = K_STR;
        }
    } else if ((h & 0xE000u) == 0x6000u || (h & 0xF000u) == 0x8000u) {  /* imm offset */
        if (h & 0x0800u) {
            set_load(c, (int)(h & 7u), (int)((h >> 3) & 7u), -1);
        } else {
            c->cls = K_STR;
        }
    } else if ((h & 0xF000u) == 0x9000u) {          /* SP-relative */
        if (h & 0x0800u) {
            set_load(c, (int)((h >> 8) & 7u), 13, -1);
        } else {
            c->cls = K_STR;
        }
    } else if ((h & 0xFE00u) == 0xB400u) {          /* PUSH */
        c->cls = K_STM;
        c->regs = popcount16(h & 0x1FFu);
    } else if ((h & 0xFE00u) == 0xBC00u) {          /* POP */
        c->regs = popcount16(h & 0x1FFu);
        c->cls = (h & 0x100u) ? K_LDM_PC : K_LDM;
        c->control = (h & 0x100u) != 0;
        c->reads = 1;
    } else if ((h & 0xF500u) == 0xB100u) {          /* CBZ, CBNZ */
        c->cls = K_BRANCH;
        c->control = 1;
    } else if ((h & 0xFF00u) == 0xBF00u && (h & 0xFu) != 0) {   /* IT */
        c->cls = K_IT;
    } else if ((h & 0xF800u) == 0xC000u) {          /* STM */
        c->cls = K_STM;
        c->regs = popcount16(h & 0xFFu);
    } else if ((h & 0xF800u) == 0xC800u) {          /* LDM */
        c->cls = K_LDM;
        c->regs = popcount16(h & 0xFFu);
        c->reads = 1;
    } else if ((h & 0xF000u) == 0xD000u) {          /* B<c>, UDF, SVC */
        if (((h >> 8) & 0xEu) != 0xEu) {
            c->cls = K_BRANCH;
            c->control = 1;
        }
    } else if ((h & 0xF800u) == 0xE000u) {          /* B */
        c->cls = K_BRANCH;
        c->control = 1;
    }
}

static void decode_vfp(unsigned h1, unsigned h2, struct insn_class *c)
{
    int rn = (int)(h1 & 0xFu);
    if ((h1 & 0x0F00u) == 0x0E00u) {
        if (h2 & 0x10u) {                           /* VMOV core <-> single, VMRS, VMSR */
            c->cls = K_VFP;
            return;
        }
        switch (((h1 >> 4) & 0x8u) | ((h1 >> 4) & 0x3u)) {  /* opc1 without D */
        case 0x0: case 0x1: case 0x9: case 0xA:     /* VMLA/VMLS, VNMLA/VNMLS, VFNMA/S, VFMA/S */
            c->cls = K_VMLA;
            break;
        case 0x8:                                   /* VDIV */
            c->cls = K_VDIV;
            break;
        case 0xB:                                   /* VSQRT among the other operations */
            c->cls = ((h1 & 0xFu) == 1u && (h2 & 0xC0u) == 0xC0u) ? K_VDIV : K_VFP;
            break;
        default:                                    /* VMUL/VNMUL, VADD/VSUB */
            c->cls = K_VFP;
            break;
        }
    } else if ((h1 & 0x0FE0u) == 0x0C40u) {         /* 64-bit transfers */
        c->cls = K_VMOV2;
    } else if ((h1 & 0x0E00u) == 0x0C00u) {         /* extension register load/store */
        int p = (h1 >> 8) & 1u, u = (h1 >> 7) & 1u, w = (h1 >> 5) & 1u, l = (h1 >> 4) & 1u;
        int dbl = (h2 & 0x0100u) != 0;
        if (p && !w) {                              /* VLDR / VSTR */
            c->cls = l ? (dbl ? K_VLDR64 : K_VLDR) : (dbl ? K_VSTR64 : K_VSTR);
            c->literal = l && rn == 15;
            c->reads = l;
        } else if (p || u) {                        /* VLDM/VPOP, VSTM/VPUSH */
            c->cls = l ? K_VLDM : K_VSTM;
            c->regs = (int)(h2 & 0xFFu);
            c->reads = l;
        }
    }
}

static void decode32(unsigned h1, unsigned h2, struct insn_class *c)
{
    if ((h1 & 0xFE40u) == 0xE800u) {                /* load/store multiple */
        unsigned op = (h1 >> 7) & 3u;
        if (op == 1u || op == 2u) {
            c->regs = popcount16(h2);
            if (h1 & 0x10u) {
                c->cls = (h2 & 0x8000u) ? K_LDM_PC : K_LDM;
                c->control = (h2 & 0x8000u) != 0;
                c->reads = 1;
            } else {
                c->cls = K_STM;
            }
        }
    } else if ((h1 & 0xFE40u) == 0xE840u) {         /* dual, exclusive, table branch */
        if (h1 & 0x0120u) {                         /* LDRD / STRD */
            c->cls = (h1 & 0x10u) ? K_LDRD : K_STRD;
            c->literal = (h1 & 0x10u) && (h1 & 0xFu) == 15u;
            c->reads = (h1 & 0x10u) != 0;
        } else if ((h1 & 0xFFF0u) == 0xE850u) {     /* LDREX */
            set_load(c, (int)(h2 >> 12), (int)(h1 & 0xFu), -1);
        } else if ((h1 & 0xFFF0u) == 0xE840u) {     /* STREX */
            c->cls = K_STR;
        } else if ((h1 & 0xFFF0u) == 0xE8D0u) {
            unsigned op3 = (h2 >> 4) & 0xFu;
            if (op3 <= 1u) {                        /* TBB, TBH */
                c->cls = K_TBB;
                c->control = 1;
                c->reads = 1;
            } else if (op3 == 4u || op3 == 5u) {    /* LDREXB/H */
                set_load(c, (int)(h2 >> 12), (int)(h1 & 0xFu), -1);
            }
        } else if ((h1 & 0xFFF0u) == 0xE8C0u) {     /* STREXB/H */
            c->cls = K_STR;
        }
    } else if ((h1 & 0xEC00u) == 0xEC00u) {         /* coprocessor: VFP is cp10/cp11 */
        if ((h1 & 0x1000u) == 0 && (h2 & 0x0E00u) == 0x0A00u) {
            decode_vfp(h1, h2, c);
        }
    } else if ((h1 & 0xF800u) == 0xF000u) {
        if (h2 & 0x8000u) {                         /* branches and miscellaneous control */
            if ((h2 & 0x5000u) != 0 || ((h1 >> 6) & 0xEu) != 0xEu) {
                c->cls = K_BRANCH;
                c->control = 1;
            }
        }
    } else if ((h1 & 0xFF10u) == 0xF800u) {         /* store single */
        c->cls = K_STR;
    } else if ((h1 & 0xFE10u) == 0xF810u) {         /* load single, memory hints */
        int rt = (int)(h2 >> 12), rn = (int)(h1 & 0xFu), rm = -1;
        if (rt == 15 && (h1 & 0x60u) != 0x40u) {
            return;                                 /* PLD / PLI: "other" */
        }
        if ((h1 & 0x80u) == 0 && (h2 & 0x0FC0u) == 0 && rn != 15) {
            rm = (int)(h2 & 0xFu);                  /* register offset */
        }
        set_load(c, rt, rn, rm);
    } else if ((h1 & 0xFF80u) == 0xFB00u) {         /* multiply, multiply-accumulate */
        c->cls = K_IMUL;
    } else if ((h1 & 0xFF80u) == 0xFB80u) {         /* long multiply, divide */
        unsigned op1 = (h1 >> 4) & 7u, op2 = (h2 >> 4) & 0xFu;
        c->cls = ((op1 == 1u || op1 == 3u) && op2 == 0xFu) ? K_IDIV : K_IMUL;
    }
}

static void decode(const uint8_t *b, size_t size, struct insn_class *c)
{
    unsigned h1 = (unsigned)b[0] | ((unsigned)b[1] << 8);
    memset(c, 0, sizeof(*c));
    c->cls = K_OTHER;
    c->rt = -1;
    if (size >= 4) {
        decode32(h1, (unsigned)b[2] | ((unsigned)b[3] << 8), c);
    } else {
        decode16(h1, c);
    }
}

/* ---- per translation block ---- */
struct tb_add {
    uint32_t k;
    uint32_t n;
};
struct tb_rec {
    uint64_t start, end;       /* first instruction; the address right after the last */
    int last_control;          /* the last instruction can transfer control */
    int last_branch;           /* ... and is a branch instruction (K_BRANCH) */
    unsigned last_load_rt;     /* bit of the last instruction's Rt if it is a single load, else 0 */
    int first_load;            /* the first instruction is a single load ... */
    unsigned first_addr_regs;  /* ... whose address comes from these registers */
    size_t n_adds;
    struct tb_add adds[];      /* static class counts of the block */
};

#define MAX_VCPUS 64
static uint64_t insn_count;  /* updated inline by translated code */
static uint64_t marker_addr;
static FILE *out_file;
static FILE *class_file;
static uint64_t classes[K_N];
static struct tb_rec *prev_tb[MAX_VCPUS];
static uint64_t flash_lo, flash_hi;
static int count_flash;

static void write_classes(const char *prefix)
{
    int k;
    fputs(prefix, class_file);
    for (k = 0; k < K_N; ++k) {
        fprintf(class_file, k ? " %llu" : "%llu", (unsigned long long)classes[k]);
    }
    fputc('\n', class_file);
}

static void on_marker(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    /* insn_count already includes the whole translation block holding the
     * marker (the inline add runs at block entry): a constant offset that
     * cancels in differences.  The class counts likewise. */
    fprintf(out_file, "%llu\n", (unsigned long long)insn_count);
    if (class_file != NULL) {
        write_classes("");
    }
}

static void on_tb_exec(unsigned int vcpu_index, void *userdata)
{
    struct tb_rec *r = userdata, *p;
    size_t i;
    for (i = 0; i < r->n_adds; ++i) {
        classes[r->adds[i].k] += r->adds[i].n;
    }
    p = prev_tb[vcpu_index % MAX_VCPUS];
    if (p != NULL) {
        int fall_through = r->start == p->end;
        if (p->last_control) {
            if (!fall_through) {
                classes[K_TAKEN]++;
                if (p->last_branch) {
                    classes[K_BRANCH_TAKEN]++;
                }
            }
        } else if (fall_through && p->last_load_rt && r->first_load
                   && !(r->first_addr_regs & p->last_load_rt)) {
            classes[K_LDR]--;           /* counted as K_LDR by the static add above */
            classes[K_LDR_PIPE]++;
        }
    }
    prev_tb[vcpu_index % MAX_VCPUS] = r;
}

static void on_flash_read(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                          void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    if (!qemu_plugin_mem_is_store(info) && vaddr >= flash_lo && vaddr < flash_hi) {
        classes[K_FLASH_READS]++;
    }
}

static void classify_tb(struct qemu_plugin_tb *tb, size_t n)
{
    uint64_t counts[K_N];
    struct tb_rec *r;
    size_t i, m = 0;
    unsigned prev_load_rt = 0;
    int k;
    memset(counts, 0, sizeof(counts));
    r = calloc(1, sizeof(*r) + K_N * sizeof(struct tb_add));
    if (r == NULL) {
        fprintf(stderr, "tinyc icount plugin: out of memory\n");
        abort();
    }
    r->start = qemu_plugin_tb_vaddr(tb);
    r->end = r->start;
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t size = qemu_plugin_insn_size(insn);
        struct insn_class c;
        decode(qemu_plugin_insn_data(insn), size, &c);
        if (c.single_load && prev_load_rt && !(c.addr_regs & prev_load_rt)) {
            c.cls = K_LDR_PIPE;
        }
        counts[K_INSNS]++;
        counts[c.cls]++;
        switch (c.cls) {
        case K_LDM: counts[K_LDM_REGS] += c.regs; break;
        case K_LDM_PC: counts[K_LDM_PC_REGS] += c.regs; break;
        case K_STM: counts[K_STM_REGS] += c.regs; break;
        case K_VLDM: counts[K_VLDM_WORDS] += c.regs; break;
        case K_VSTM: counts[K_VSTM_WORDS] += c.regs; break;
        default: break;
        }
        counts[K_LIT] += c.literal;
        if (count_flash && c.reads) {
            /* QEMU 7.2 calls no QEMU_PLUGIN_MEM_R callback: ask for both, drop stores */
            qemu_plugin_register_vcpu_mem_cb(insn, on_flash_read, QEMU_PLUGIN_CB_NO_REGS,
                                             QEMU_PLUGIN_MEM_RW, NULL);
        }
        if (i == 0) {
            r->first_load = c.single_load;
            r->first_addr_regs = c.addr_regs;
        }
        if (i + 1 == n) {
            r->last_control = c.control;
            r->last_branch = c.cls == K_BRANCH;
            r->end = qemu_plugin_insn_vaddr(insn) + size;
        }
        /* a control transfer inside a block fell through: counted as not taken */
        prev_load_rt = c.single_load ? 1u << c.rt : 0u;
    }
    r->last_load_rt = prev_load_rt;
    for (k = 0; k < K_N; ++k) {
        if (counts[k]) {
            r->adds[m].k = (uint32_t)k;
            r->adds[m].n = (uint32_t)counts[k];
            ++m;
        }
    }
    r->n_adds = m;
    /* block records are kept for the whole run (a few per translated block) */
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, r);
}

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, n);
    if (class_file != NULL) {
        classify_tb(tb, n);
    }
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
    if (class_file != NULL) {
        write_classes("total ");
        fclose(class_file);
        class_file = NULL;
    }
}

TINYC_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                            int argc, char **argv)
{
    const char *out_path = "tinyc_icount.txt";
    const char *class_path = NULL;
    int i, k, have_addr = 0;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "addr=", 5) == 0) {
            marker_addr = strtoull(argv[i] + 5, NULL, 0) & ~(uint64_t)1; /* drop Thumb bit */
            have_addr = 1;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = argv[i] + 4;
        } else if (strncmp(argv[i], "classes=", 8) == 0) {
            class_path = argv[i] + 8;
        } else if (strncmp(argv[i], "flash=", 6) == 0) {
            char *end;
            flash_lo = strtoull(argv[i] + 6, &end, 0);
            if (*end != ':') {
                fprintf(stderr, "tinyc icount plugin: flash=LO:HI expected, got '%s'\n", argv[i]);
                return -1;
            }
            flash_hi = strtoull(end + 1, NULL, 0);
            count_flash = 1;
        } else {
            fprintf(stderr, "tinyc icount plugin: unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    if (!have_addr) {
        fprintf(stderr, "tinyc icount plugin: needs addr=<marker address>\n");
        return -1;
    }
    if (count_flash && class_path == NULL) {
        fprintf(stderr, "tinyc icount plugin: flash= needs classes=<path>\n");
        return -1;
    }
    out_file = fopen(out_path, "w");
    if (out_file == NULL) {
        fprintf(stderr, "tinyc icount plugin: cannot open '%s'\n", out_path);
        return -1;
    }
    if (class_path != NULL) {
        class_file = fopen(class_path, "w");
        if (class_file == NULL) {
            fprintf(stderr, "tinyc icount plugin: cannot open '%s'\n", class_path);
            return -1;
        }
        fputs("# tinyc-icount-classes 1", class_file);
        for (k = 0; k < K_N; ++k) {
            fprintf(class_file, " %s", class_name[k]);
        }
        fputc('\n', class_file);
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
