"""Estimated Cortex-M4 cycles: the instruction-class cost model (backends/cycles.py), the QEMU
plugin's class counts (runtime_c/targets/icount_plugin.c) on microbenchmarks whose cycle counts
the Cortex-M4 TRM fixes, and `tinyc bench` printing cycles, CPI and latency.

The microbenchmarks are hand-written assembly loops in a hand-made bundle (as in
test_targets.py). Each loop runs N and then 2N iterations in two consecutive profiled layers:
the difference of the two layers' class counts is exactly N loop iterations (call, set-up and the
final not-taken branch cancel), so it must equal N times the classes of one iteration, read off
the assembly, and its estimated cycles N times the TRM arithmetic for one iteration.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyc.backends import cycles as cyc
from tinyc.backends.bench import bench_model
from tinyc.backends.manifest import Manifest, Tensor, write_manifest
from tinyc.backends.target_files import PROFILE_HEADER

HAVE_QEMU = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="arm-none-eabi-gcc or qemu-system-arm not installed")

N = 100     # loop iterations of the first run; the second runs 2N

# ---------------------------------------------------------------- the cost model on its own


def counts(**kw) -> dict:
    """Class counts with 'insns' filled in from the disjoint classes."""
    kw["insns"] = sum(kw.get(k, 0) for k in cyc.INSTRUCTION_CLASSES)
    return kw


def test_cost_table_covers_every_class_with_a_trm_reference():
    table = cyc.cost_table()
    priced = [c.counter for c in table]
    assert len(priced) == len(set(priced))
    assert set(cyc.INSTRUCTION_CLASSES) <= set(priced)
    # the counters that are not instruction classes: only the multiple-transfer lengths and the
    # refills are priced; the rest are reported, not priced
    assert set(priced) - set(cyc.INSTRUCTION_CLASSES) == {
        "ldm_regs", "ldm_pc_regs", "stm_regs", "vldm_words", "vstm_words", "taken"}
    assert all("TRM" in c.ref and c.cycles >= 1 for c in table)
    assert {c.group for c in table} == {"load", "store", "branch", "multiply", "vfp", "other"}


@pytest.mark.parametrize("what, classes, trm_cycles", [
    # TRM 3.3.2 examples (zero wait states)
    ("LDR R0,[R1]; LDR R1,[R2]", counts(ldr=1, ldr_pipe=1), 3),
    ("LDR R0,[R1,R5]; LDR R1,[R2]; LDR R2,[R3,#4]", counts(ldr=1, ldr_pipe=2), 4),
    ("LDR R0,[R1,R2]; STR R0,[R3,#20]", counts(ldr=1, str=1), 3),
    # Table 3-1: 1 + N (3.3.2's prose says "2+1+1 or 5 cycles", which does not add up; the table rules)
    ("three-element LDM: 1 + N", counts(ldm=1, ldm_regs=3), 4),
    ("eight-element STM", counts(stm=1, stm_regs=8), 9),
    ("LDRD then LDR: neither pipelines", counts(ldrd=1, ldr=1), 5),
    # TRM 3.3.1 Table 3-1 with P = 2
    ("taken B", counts(branch=1, branch_taken=1, taken=1), 3),
    ("B<c> not taken", counts(branch=1), 1),
    ("POP {r4, pc}: 1 + N + P", counts(ldm_pc=1, ldm_pc_regs=2, taken=1), 5),
    ("TBB: 2 + P", counts(tbb=1, taken=1), 4),
    ("SMLAL, SMLAD, MUL: 1 each", counts(imul=3), 3),
    ("SDIV at the documented middle of 2-12", counts(idiv=1), cyc.DIV_CYCLES),
    # TRM 7.2.3 Table 7-1
    ("VLDR.F32, VMLA.F32, VDIV.F32, VSQRT.F32", counts(vldr=1, vmla=1, vdiv=2), 2 + 3 + 14 + 14),
    ("VPUSH {s16-s19}", counts(vstm=1, vstm_words=4), 5),
])
def test_cost_model_matches_trm_arithmetic(what, classes, trm_cycles):
    assert cyc.CycleModel().cycles(classes) == trm_cycles, what


def test_cost_model_parameters_breakdown_and_wait_states():
    c = counts(ldr=10, ldr_pipe=5, branch=4, branch_taken=3, taken=3, other=20, idiv=2, lit=2, flash_reads=7)
    base = cyc.CycleModel().cycles(c)
    assert base == 10 * 2 + 5 + 4 + 3 * cyc.REFILL_CYCLES + 20 + 2 * cyc.DIV_CYCLES
    assert cyc.CycleModel(refill=3, div=12).cycles(c) == base + 3 + 2 * (12 - cyc.DIV_CYCLES)
    groups = cyc.CycleModel().breakdown(c)
    assert sum(groups.values()) == base and groups["load"] == 25 and groups["multiply"] == 2 * cyc.DIV_CYCLES
    # N wait states: N more per taken transfer and per flash data read (literal loads if not counted)
    assert cyc.wait_state_cycles(c, 0) == base
    assert cyc.wait_state_cycles(c, 5) == base + 5 * (3 + 7)
    assert cyc.wait_state_cycles({**c, "flash_reads": 0}, 5) == base + 5 * (3 + 2)
    assert cyc.cpi(base, c["insns"]) == base / c["insns"] and cyc.cpi(None, 5) is None
    assert cyc.latency_ms(25_000, 25.0) == 1.0 and cyc.latency_ms(None, 25.0) is None


def test_docs_table_matches_the_cost_model():
    import re
    text = (Path(__file__).resolve().parents[1] / "docs" / "cycles.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", text, re.M))
    table = cyc.cost_table()
    assert all(f"`{c.counter}`" in text for c in table)
    assert len(rows) >= 10 and all(float(rows[c.counter]) == c.cycles for c in table if c.counter in rows)


def test_classes_must_add_up_to_the_instructions():
    with pytest.raises(ValueError, match="add up to 3"):
        cyc.CycleModel().cycles({"insns": 4, "ldr": 1, "other": 2})


def test_board_and_target_clocks():
    from tinyc.backends.targets import get_board, get_target
    from tinyc.compile import default_clock_mhz
    assert get_target("cortex-m4").clock_mhz == 25.0          # mps2-an386 FPGA image
    assert get_board("nucleo-f446re").clock_mhz == 180.0 and get_board("nucleo-l432kc").clock_mhz == 80.0
    assert default_clock_mhz({"board": "nucleo-l432kc", "target": "cortex-m4"})[0] == 80.0
    assert default_clock_mhz({"board": None, "target": "cortex-m4"})[0] == 25.0
    assert cyc.supports("cortex-m4") and not cyc.supports("cortex-m3")


# ---------------------------------------------------------------- microbenchmarks under QEMU

# Each kernel: (assembly of one loop iteration, its class counts, its TRM cycles). Registers: r0
# points to `src` (src[0] = &src[0], src[1] = 0, src[2] = 3), r1 to `dst`, r2 = 0, r3 counts down;
# every iteration ends with "subs r3, r3, #1; bne 1b" (other + taken branch: 1 + 1 + P); label 3
# is after the loop, 4 a PUSH/POP {pc} subroutine, 5 a BX LR one.
LOOP_END = {"other": 1, "branch": 1, "branch_taken": 1, "taken": 1}
LOOP_CYCLES = 1 + 1 + cyc.REFILL_CYCLES
KERNELS = {
    # four independent loads: the first follows the taken bne, the other three pipeline
    "ldr_pipelined": ("ldr r4, [r0]; ldr r5, [r0, #4]; ldr r6, [r0, #8]; ldr r7, [r0, #12]",
                      {"ldr": 1, "ldr_pipe": 3}, 2 + 1 + 1 + 1),
    # a load whose address is the previous load's result, a store, a load after the store, a
    # load whose offset register is the previous load's result: none pipelines
    "ldr_dependent": ("ldr r4, [r0]; ldr r5, [r4]; str r5, [r1]; ldr r6, [r0, #4]; ldr r7, [r0, r6]",
                      {"ldr": 4, "str": 1}, 2 + 2 + 1 + 2 + 2),
    # 16-bit register-offset and SP-relative loads pipeline like any LDR; STRH
    "ldr_narrow": ("ldrh r4, [r0, r2]; ldrsb r5, [r0, r2]; ldr r6, [sp]; strh r4, [r1, r2]",
                   {"ldr": 1, "ldr_pipe": 2, "str": 1}, 2 + 1 + 1 + 1),
    "ldm_stm": ("ldm r0, {r4-r7}; stm r1, {r4-r7}; push {r4, r5}; pop {r4, r5}",
                {"ldm": 2, "ldm_regs": 6, "stm": 2, "stm_regs": 6}, 5 + 5 + 3 + 3),
    "ldrd_strd": ("ldrd r4, r5, [r0]; ldr r6, [r0, #8]; strd r4, r5, [r1]",
                  {"ldrd": 1, "ldr": 1, "strd": 1}, 3 + 2 + 3),
    # a taken B over a NOP, two conditional branches not taken
    "branches": ("b 2f; nop; 2: cmp r3, #0; beq 3f; cbz r3, 3f",
                 {"branch": 3, "branch_taken": 1, "taken": 1, "other": 1}, 3 + 1 + 1 + 1),
    # calls: BL to PUSH/POP {.., pc}, BL to BX LR
    "calls": ("bl 4b; bl 5b",
              {"branch": 3, "branch_taken": 3, "ldm_pc": 1, "ldm_pc_regs": 2, "stm": 1, "stm_regs": 2,
               "taken": 4},
              3 + 3 + (1 + 2 + 2) + 3 + 3),
    "divide": ("sdiv r4, r5, r6; udiv r4, r5, r6", {"idiv": 2}, 2 * cyc.DIV_CYCLES),
    "multiply": ("muls r4, r6, r4; mul r4, r5, r6; mla r4, r5, r6, r4; smlad r4, r5, r6, r4; "
                 "smull r4, r7, r5, r6; smlal r4, r7, r5, r6; smlabb r4, r5, r6, r4; umull r4, r7, r5, r6",
                 {"imul": 8}, 8),
    "vfp": ("vldr s0, [r0]; vadd.f32 s1, s0, s0; vmul.f32 s2, s1, s0; vmla.f32 s3, s0, s1; "
            "vfma.f32 s4, s0, s1; vdiv.f32 s5, s1, s2; vsqrt.f32 s6, s1; vstr s6, [r1]; vmov r4, s1; "
            "vmov s7, r4; vmov r4, r5, d0; vcvt.s32.f32 s8, s1; vcmp.f32 s1, s2; vmrs APSR_nzcv, fpscr; "
            "vpush {s16-s17}; vpop {s16-s17}; vldr d1, [r0]",
            {"vldr": 1, "vldr64": 1, "vfp": 7, "vmla": 2, "vdiv": 2, "vstr": 1, "vmov2": 1,
             "vstm": 1, "vstm_words": 2, "vldm": 1, "vldm_words": 2},
            2 + 3 + 7 + 2 * 3 + 2 * 14 + 2 + 2 + 3 + 3),
    # IT block, a literal load (flash), two pipelined loads, PLD, TBB (table in flash), MOV PC
    "control": ("cmp r3, #1; ite eq; moveq r4, #1; movne r4, #2; ldr r5, =0x12345678; "
                "ldr.w r6, [r0, r2]; ldrb r7, [r0, #1]; pld [r0]; tbb [pc, r2]; 6: .byte (7f - 6b) / 2, 0; "
                ".align 1; 7: adr r7, 8f; mov pc, r7; nop; .align 2; 8:",
                {"other": 5, "it": 1, "ldr": 1, "ldr_pipe": 2, "lit": 1, "tbb": 1, "pc_write": 1,
                 "taken": 2, "flash_reads": 2},
                5 + 1 + 2 + 1 + 1 + (2 + 2) + (1 + 2)),
}

MODEL_H = """\
#ifndef MODEL_H
#define MODEL_H
#define model_INPUT_SIZE 4
#define model_OUTPUT_SIZE 4
#define model_ARENA_SIZE 16
int model_invoke(const float *input, float *output);
#endif
"""

KERNEL_C = """
__attribute__((noinline)) static void k_{name}(unsigned n)
{{
    __asm__ volatile(
        "mov r3, %0\\n\\tmov r0, %1\\n\\tmov r1, %2\\n\\tmovs r2, #0\\n\\tmovs r5, #7\\n\\tmovs r6, #3\\n\\t"
        "b 1f\\n"
        "4:\\tpush {{r4, lr}}\\n\\tpop {{r4, pc}}\\n"
        "5:\\tbx lr\\n"
        "1:\\t{body}\\n\\t"
        "subs r3, r3, #1\\n\\tbne 1b\\n"
        "3:\\tb 9f\\n\\t.ltorg\\n9:\\n"
        : : "r"(n), "r"(src), "r"(dst)
        : "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "s0", "s1", "s2", "s3", "s4", "s5", "s6",
          "s7", "s8", "s16", "s17", "lr", "cc", "memory");
}}
"""


def make_microbench(root: Path) -> Path:
    out = root / "ubench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.h").write_text(MODEL_H)
    shutil.copyfile(PROFILE_HEADER, out / "tinyc_profile.h")
    src = ['#include <stdint.h>', '#include "model.h"', '#include "tinyc_profile.h"',
           "static uint32_t src[8] __attribute__((aligned(8)));",
           "static uint32_t dst[8] __attribute__((aligned(8)));"]
    calls = []
    for i, (name, (asm, _, _)) in enumerate(KERNELS.items()):
        src.append(KERNEL_C.format(name=name, body=asm.replace("; ", "\\n\\t")))
        calls += [f"    TINYC_LAYER_MARK({2 * i});", f"    k_{name}({N}u);",
                  f"    TINYC_LAYER_MARK({2 * i + 1});", f"    k_{name}({2 * N}u);"]
    src += ["int model_invoke(const float *input, float *output)", "{", "    int i;",
            "    src[0] = (uint32_t)(uintptr_t)src; src[1] = 0; src[2] = 3; src[3] = 0x3f800000u;",
            *calls, f"    TINYC_LAYER_MARK({2 * len(KERNELS)});",
            "    for (i = 0; i < model_INPUT_SIZE; ++i) {", "        output[i] = input[i];", "    }",
            "    return 0;", "}", ""]
    (out / "model.c").write_text("\n".join(src))
    write_manifest(out, Manifest("model", "cortex-m4", (Tensor("x", (1, 4), "f32", 0, 4),),
                                 (Tensor("y", (1, 4), "f32", 0, 4),), 16))
    return out


@pytest.fixture(scope="module")
def microbench(tmp_path_factory):
    return bench_model(make_microbench(tmp_path_factory.mktemp("cycles")), "cortex-m4", "model",
                       method="plugin")


@pytest.mark.qemu
@needs_qemu
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_microbenchmark_classes_and_cycles_are_exact(microbench, kernel):
    r = microbench
    i = list(KERNELS).index(kernel)
    assert len(r.layer_classes) == 2 * len(KERNELS)
    once, twice = r.layer_classes[2 * i], r.layer_classes[2 * i + 1]
    got = {k: twice[k] - once[k] for k in once}
    asm, classes, trm = KERNELS[kernel]
    per_iter = dict(LOOP_END)
    for k, v in classes.items():
        per_iter[k] = per_iter.get(k, 0) + v
    per_iter["insns"] = sum(per_iter.get(k, 0) for k in cyc.INSTRUCTION_CLASSES)
    want = {k: N * per_iter.get(k, 0) for k in got}
    assert got == want, asm
    assert cyc.CycleModel().cycles(got) == N * (trm + LOOP_CYCLES), asm
    # the same N iterations in the plain instruction counts
    assert r.layer_instructions[2 * i + 1] - r.layer_instructions[2 * i] == got["insns"]
    assert r.layer_cycles[2 * i + 1] - r.layer_cycles[2 * i] == N * (trm + LOOP_CYCLES)


@pytest.mark.qemu
@needs_qemu
def test_microbench_totals_and_systick_has_no_cycles(microbench, tmp_path):
    r = microbench
    assert r.method == "plugin" and r.classes is not None and r.cycles is not None
    assert r.classes["insns"] == r.instructions and r.cycles >= r.instructions
    assert r.cpi == r.cycles / r.instructions
    # layers add up to the whole invoke of the profiled build within the stamps' overhead (a layer
    # mark costs a call and a test more than the back-to-back stamps subtracted: ~12 cycles)
    marks = len(r.layer_cycles) + 1
    assert 0 <= r.profiled_cycles - sum(r.layer_cycles) <= 20 * marks
    assert abs(r.profiled_cycles - r.cycles) <= 20 * marks
    assert r.cycles_with_wait_states(3) == r.cycles + 3 * (r.classes["taken"] + r.classes["flash_reads"])
    d = r.to_dict()
    assert d["cycles"] == r.cycles and len(d["layer_cycles"]) == 2 * len(KERNELS)
    s = bench_model(make_microbench(tmp_path), "cortex-m4", "model", method="systick", profile=False)
    assert s.method == "systick" and s.cycles is None and s.classes is None and s.cpi is None
    assert "unavailable" in s.cycle_model and "SysTick" in s.cycle_model


# ---------------------------------------------------------------- `tinyc bench`


def tinyc(*args):
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True)


@pytest.mark.qemu
@needs_qemu
def test_bench_command_prints_estimated_cycles(zoo_archive, tmp_path):
    from helpers import zoo_inputs
    np.save(tmp_path / "calib.npy", zoo_inputs("mlp", rows=8))
    out = tmp_path / "out"
    result = tinyc("compile", zoo_archive("mlp"), "--board", "nucleo-l432kc", "--calib", tmp_path / "calib.npy",
                   "-o", out)
    assert result.returncode == 0, result.stderr
    result = tinyc("bench", out, "--json", tmp_path / "bench.json", "--clock-mhz", "64")
    assert result.returncode == 0, result.stderr
    f = json.loads((tmp_path / "bench.json").read_text())
    assert f["method"] == "plugin" and f["clock_mhz"] == 64.0 and f["clock_from"] == "--clock-mhz"
    assert f["cycles"] >= f["instructions"] > 0 and f["cpi"] == f["cycles"] / f["instructions"]
    assert f["latency_ms"] == pytest.approx(f["cycles"] / 64e3)
    assert sum(f["classes"][k] for k in cyc.INSTRUCTION_CLASSES) == f["instructions"] == f["classes"]["insns"]
    assert f"estimated cycles          {f['cycles']:>12,}" in result.stdout
    assert f"ms at 64 MHz" in result.stdout and "flash wait states" in result.stdout
    layers = [row["cycles"] for row in f["layers"]]
    assert all(c is not None and c > 0 for c in layers)
    # per-layer cycles add up to the total within the stamps' overhead (profiled vs plain build)
    assert abs(sum(layers) - f["cycles"]) <= 25 * (len(layers) + 2)
    # the board's clock without --clock-mhz
    result = tinyc("bench", out)
    assert result.returncode == 0 and "ms at 80 MHz (nucleo-l432kc's clock)" in result.stdout
