"""Estimated Cortex-M4 cycles from executed-instruction classes.

The bench's QEMU TCG plugin (runtime_c/targets/icount_plugin.c, ``classes=``) counts
the instructions one inference executes by timing class, from the instruction bytes,
and sees which control transfers were taken and which loads followed a load.  This
module prices each class with the Cortex-M4 Technical Reference Manual's timings and
sums.  References (Arm Cortex-M4 Processor Technical Reference Manual, r0p1, Arm DDI
0439B):

* ``TRM 3.3.1``: Table 3-1 "Cortex-M4 instruction set summary" (cycle counts, zero
  wait states; P = pipeline refill, 1-3 cycles; N = registers in the list),
* ``TRM 3.3.2``: "Load/store timings" (how loads and stores pair),
* ``TRM 7.2.3``: Table 7-1 "FPU instruction set" (FPv4-SP cycle counts).

The model is what docs/cycles.md describes: the classes, their costs, what it
assumes (zero-wait-state memory, P = 2, a fixed divide time) and how flash wait
states change the figure (:func:`wait_state_cycles`).  It is an estimate: the TRM
timings are per instruction in isolation and the pairing rules of TRM 3.3.2 that the
plugin sees (load after load); what it does not model is listed in ASSUMPTIONS.
"""
from __future__ import annotations

from dataclasses import dataclass

MODEL_TARGETS = ("cortex-m4",)     # cores whose timings the table below describes

REFILL_CYCLES = 2     # P: pipeline refill after a taken branch (TRM 3.3.1: 1 to 3; the 2)
DIV_CYCLES = 7        # SDIV/UDIV: 2 to 12 by early termination (TRM 3.3.1 note); the middle

TRM_TABLE = "Cortex-M4 TRM 3.3.1 Table 3-1"
TRM_LOADSTORE = "Cortex-M4 TRM 3.3.2"
TRM_FPU = "Cortex-M4 TRM 7.2.3 Table 7-1"

# The plugin's disjoint instruction classes: each executed instruction is in exactly one.
INSTRUCTION_CLASSES = (
    "ldr", "ldr_pipe", "ldr_pc", "ldrd", "strd", "str", "ldm", "ldm_pc", "stm", "imul", "idiv",
    "branch", "tbb", "pc_write", "it", "vldr", "vldr64", "vstr", "vstr64", "vldm", "vstm",
    "vmla", "vdiv", "vmov2", "vfp", "other",
)
# Further counters: registers/words of the multiple transfers, control transfers taken,
# literal loads and flash data reads.
EXTRA_COUNTERS = ("insns", "ldm_regs", "ldm_pc_regs", "stm_regs", "vldm_words", "vstm_words",
                  "branch_taken", "taken", "lit", "flash_reads")


@dataclass(frozen=True)
class Cost:
    counter: str        # a counter of the plugin
    cycles: float       # cycles per count
    what: str
    ref: str
    group: str          # for the breakdown: load, store, branch, multiply, vfp, other


def cost_table(refill: float = REFILL_CYCLES, div: float = DIV_CYCLES) -> tuple[Cost, ...]:
    """The per-counter costs (cycles per count) with their TRM references."""
    return (
        Cost("ldr", 2, "single load LDR/LDRB/LDRH/LDRSB/LDRSH/LDREX, literal included", f"{TRM_TABLE} Load 2", "load"),
        Cost("ldr_pipe", 1, "single load right after a single load whose result it does not use for "
             "its address: pipelined, one cycle less",
             f"{TRM_LOADSTORE} 'LDR [any] are pipelined when possible' (LDR R0,[R1]; LDR R1,[R2]: 3 cycles)",
             "load"),
        Cost("ldr_pc", 2, "LDR PC, [...] (+ P when it transfers control)", f"{TRM_TABLE} Load to PC 2 + P", "branch"),
        Cost("ldrd", 3, "LDRD: 1 + N with N = 2, never pipelined",
             f"{TRM_TABLE} Load doubleword 1 + N; {TRM_LOADSTORE} 'LDRD and STRD cannot be pipelined'", "load"),
        Cost("strd", 3, "STRD: 1 + N with N = 2", f"{TRM_TABLE} Store doubleword 1 + N", "store"),
        Cost("str", 1, "single store STR/STRB/STRH/STREX (through the write buffer)",
             f"{TRM_LOADSTORE} 'STR Rx,[Ry,#imm] is always one cycle'; {TRM_TABLE} note b", "store"),
        Cost("ldm", 1, "LDM/POP without PC: the 1 of 1 + N", f"{TRM_TABLE} Load multiple 1 + N", "load"),
        Cost("ldm_regs", 1, "... and 1 per register", f"{TRM_TABLE} Load multiple 1 + N", "load"),
        Cost("ldm_pc", 1, "LDM/POP with PC: the 1 of 1 + N (+ P when taken)",
             f"{TRM_TABLE} Pop and return 1 + N + P", "branch"),
        Cost("ldm_pc_regs", 1, "... and 1 per register, PC included", f"{TRM_TABLE} Pop and return 1 + N + P",
             "branch"),
        Cost("stm", 1, "STM/PUSH: the 1 of 1 + N", f"{TRM_TABLE} Store multiple / Push 1 + N", "store"),
        Cost("stm_regs", 1, "... and 1 per register", f"{TRM_TABLE} Store multiple / Push 1 + N", "store"),
        Cost("imul", 1, "MUL/MLA/MLS, SMULxy/SMLAxy, SMLAD/SMUAD/SMLSD, SMMUL/SMMLA, and the 64-bit "
             "SMULL/UMULL/SMLAL/UMLAL/SMLALxy/SMLALD: all single-cycle on the M4",
             f"{TRM_TABLE} Multiply 1 (long signed/unsigned and accumulate 1 too)", "multiply"),
        Cost("idiv", div, f"SDIV/UDIV: 2 to 12 by early termination on the operands, which the plugin "
             f"cannot see; priced at {div:g}", f"{TRM_TABLE} Divide 2 to 12 (note a)", "multiply"),
        Cost("branch", 1, "B, B<c>, BL, BX, BLX, CBZ, CBNZ (+ P when taken)",
             f"{TRM_TABLE} Branch 1 + P, conditional 1 when not taken (note c)", "branch"),
        Cost("tbb", 2, "TBB/TBH (+ P)", f"{TRM_TABLE} Table branch 2 + P", "branch"),
        Cost("pc_write", 1, "MOV PC / ADD PC (+ P)", f"{TRM_TABLE} Move to PC / Add to PC 1 + P", "branch"),
        Cost("taken", refill, f"pipeline refill P after each taken control transfer, P = {refill:g}",
             f"{TRM_TABLE} P = 1 to 3", "branch"),
        Cost("it", 1, "IT (not folded)", f"{TRM_TABLE} If-Then 1", "other"),
        Cost("vldr", 2, "VLDR.F32", f"{TRM_FPU} VLDR single 2", "load"),
        Cost("vldr64", 3, "VLDR.F64", f"{TRM_FPU} VLDR double 3", "load"),
        Cost("vstr", 2, "VSTR.F32", f"{TRM_FPU} VSTR single 2", "store"),
        Cost("vstr64", 3, "VSTR.F64", f"{TRM_FPU} VSTR double 3", "store"),
        Cost("vldm", 1, "VLDM/VPOP: the 1 of 1 + N", f"{TRM_FPU} VLDM/VPOP 1 + N", "load"),
        Cost("vldm_words", 1, "... and 1 per 32-bit word", f"{TRM_FPU} VLDM/VPOP 1 + N", "load"),
        Cost("vstm", 1, "VSTM/VPUSH: the 1 of 1 + N", f"{TRM_FPU} VSTM/VPUSH 1 + N", "store"),
        Cost("vstm_words", 1, "... and 1 per 32-bit word", f"{TRM_FPU} VSTM/VPUSH 1 + N", "store"),
        Cost("vmla", 3, "VMLA/VMLS/VNMLA/VNMLS, VFMA/VFMS/VFNMA/VFNMS", f"{TRM_FPU} multiply-accumulate 3", "vfp"),
        Cost("vdiv", 14, "VDIV, VSQRT", f"{TRM_FPU} VDIV 14, VSQRT 14", "vfp"),
        Cost("vmov2", 2, "VMOV two core registers <-> two singles or a double", f"{TRM_FPU} VMOV 2", "vfp"),
        Cost("vfp", 1, "VADD/VSUB/VMUL/VNMUL/VABS/VNEG/VCVT/VCMP/VMOV/VMRS/VMSR",
             f"{TRM_FPU} 1", "vfp"),
        Cost("other", 1, "every other instruction (data processing, DSP SIMD, saturation, extends, "
             "bit fields, hints)", f"{TRM_TABLE} 1", "other"),
    )


ASSUMPTIONS = (
    "Cortex-M4 TRM r0p1 timings (Table 3-1, 3.3.2, FPU Table 7-1) with zero-wait-state memory "
    f"for code and data; pipeline refill P = {REFILL_CYCLES} cycles after every taken control "
    f"transfer (TRM: 1 to 3); SDIV/UDIV {DIV_CYCLES} cycles (TRM: 2 to 12 by early termination, "
    "operands not seen); a single load right after a single load is 1 cycle unless its address "
    "uses the first load's result (TRM 3.3.2), LDRD/STRD/LDM/STM never pipeline, nothing "
    "pipelines after a store, stores are 1 cycle (write buffer). Not modelled: the extra cycle "
    "of a load/store whose address a data-processing instruction computed just before, "
    "unaligned accesses, IT folding, conditional instructions that fail their condition "
    "(priced as executed), interrupt entry/exit, bus contention and write-buffer stalls."
)

WAIT_STATE_NOTE = (
    "With N flash wait states, straight-line instruction fetch is mostly hidden by the "
    "prefetch buffer (ST's ART accelerator: 128-bit lines, while a line's 4-8 instructions "
    "take at least N + 1 cycles), but each taken control transfer refetches from flash and each "
    "data read from flash (literal pools, constants, weights) waits: "
    "cycles(N) <= cycles(0) + N x (taken + flash reads). An instruction/data cache (the ART) "
    "that hits removes the corresponding terms."
)


@dataclass
class CycleModel:
    """Prices the plugin's class counts (a dict counter -> count) in cycles."""
    refill: float = REFILL_CYCLES
    div: float = DIV_CYCLES

    @property
    def table(self) -> tuple[Cost, ...]:
        return cost_table(self.refill, self.div)

    def cycles(self, counts: dict) -> int:
        """Estimated cycles of the executed instructions in ``counts``."""
        check_counts(counts)
        return round(sum(c.cycles * counts.get(c.counter, 0) for c in self.table))

    def breakdown(self, counts: dict) -> dict[str, int]:
        """Estimated cycles by group (load, store, branch, multiply, vfp, other)."""
        out: dict[str, float] = {}
        for c in self.table:
            out[c.group] = out.get(c.group, 0) + c.cycles * counts.get(c.counter, 0)
        return {k: round(v) for k, v in out.items()}

    def describe(self) -> str:
        return f"Cortex-M4 TRM timings, zero wait states, P = {self.refill:g}, SDIV/UDIV {self.div:g}"


def check_counts(counts: dict) -> None:
    """The disjoint classes must add up to the instruction count (when it is given)."""
    if "insns" in counts:
        total = sum(counts.get(k, 0) for k in INSTRUCTION_CLASSES)
        if total != counts["insns"]:
            raise ValueError(f"instruction classes add up to {total}, not to the {counts['insns']} "
                             "instructions counted")


def flash_accesses(counts: dict) -> int:
    """Data reads from flash if the plugin counted them, else the literal loads."""
    return counts["flash_reads"] if counts.get("flash_reads") else counts.get("lit", 0)


def wait_state_cycles(counts: dict, wait_states: int, model: CycleModel | None = None) -> int:
    """Upper estimate with ``wait_states`` flash wait states: cycles(0) + N x (taken + flash reads)."""
    model = model or CycleModel()
    return model.cycles(counts) + wait_states * (counts.get("taken", 0) + flash_accesses(counts))


def supports(target_name: str) -> bool:
    return target_name in MODEL_TARGETS


def cpi(cycles: int | None, instructions: int) -> float | None:
    return None if cycles is None or not instructions else cycles / instructions


def latency_ms(cycles: int | None, clock_mhz: float | None) -> float | None:
    return None if cycles is None or not clock_mhz else cycles / (clock_mhz * 1e3)
