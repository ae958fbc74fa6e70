"""Targets, start-up code, harnesses, build/run/bench on the host and under QEMU.

Uses small hand-made bundles (model.h/model.c written here), so it does not
depend on the code generator.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyc.backends import targets as tg
from tinyc.backends import tools
from tinyc.backends.bench import bench_model
from tinyc.backends.build import build
from tinyc.backends.manifest import Manifest, Tensor, write_manifest
from tinyc.backends.run import run_model
from tinyc.backends.size import size
from tinyc.backends.target_files import PROFILE_HEADER, write_target_files
from tinyc.errors import BackendError

ARM_TARGETS = [n for n in tg.target_names() if n != "host"]
HAVE_ARM = shutil.which("arm-none-eabi-gcc") is not None
HAVE_QEMU = HAVE_ARM and shutil.which("qemu-system-arm") is not None
needs_arm = pytest.mark.skipif(not HAVE_ARM, reason="arm-none-eabi-gcc not installed")
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="qemu-system-arm not installed")

MODEL_H = """\
#ifndef {NAME}_H
#define {NAME}_H
#define {name}_INPUT_SIZE 4
#define {name}_OUTPUT_SIZE 4
#define {name}_ARENA_SIZE 16
int {name}_invoke(const float *input, float *output);
#endif
"""

# y = 2x + 1, in two "layers" through a static arena, optionally preceded by
# WORK iterations of a serial float recurrence (known, linear work) whose
# result cannot change the output (|acc| <= 2) but cannot be optimised away.
MODEL_C = """\
#include "{name}.h"
#include "tinyc_profile.h"

#define WORK {work}
static float arena[{name}_ARENA_SIZE / sizeof(float)];
static float acc[{name}_INPUT_SIZE];

int {name}_invoke(const float *input, float *output)
{{
    int i, k;
    if (input == 0 || output == 0) {{
        return -1;
    }}
    TINYC_LAYER_MARK(0);
    for (k = 0; k < WORK; ++k) {{
        for (i = 0; i < {name}_INPUT_SIZE; ++i) {{
            acc[i] = acc[i] * 0.5f + input[i];
        }}
    }}
    TINYC_LAYER_MARK(1);
    for (i = 0; i < {name}_INPUT_SIZE; ++i) {{
        arena[i] = 2.0f * input[i];
    }}
    TINYC_LAYER_MARK(2);
    for (i = 0; i < {name}_INPUT_SIZE; ++i) {{
        output[i] = arena[i] + 1.0f + (acc[i] > 1e30f ? 1.0f : 0.0f);
    }}
    TINYC_LAYER_MARK(3);
    {extra}
    return 0;
}}
"""


def make_bundle(root: Path, name: str = "model", work: int = 0, extra: str = "") -> Path:
    out = root / f"{name}_w{work}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.h").write_text(MODEL_H.format(name=name, NAME=name.upper()))
    (out / f"{name}.c").write_text(MODEL_C.format(name=name, work=work, extra=extra))
    shutil.copyfile(PROFILE_HEADER, out / "tinyc_profile.h")
    write_manifest(out, Manifest(name, "host", (Tensor("x", (1, 4), "f32", 0, 4),),
                                 (Tensor("y", (1, 4), "f32", 0, 4),), 16))
    return out


def expected(x: np.ndarray) -> np.ndarray:
    return (2.0 * x + 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).uniform(-3, 3, size=(5, 4)).astype(np.float32)


def _log(product: Path) -> str:
    return product.with_name(product.name + ".log").read_text()


# ---------------------------------------------------------------- table

def test_target_table():
    assert set(tg.target_names()) == {"host", "cortex-m0", "cortex-m3", "cortex-m4",
                                      "cortex-m7", "cortex-m33"}
    m4 = tg.get_target("cortex-m4")
    assert m4.qemu_machine == "mps2-an386" and m4.dsp and m4.fpu == "fpv4-sp-d16"
    assert "-mfloat-abi=hard" in m4.cpu_flags
    assert tg.get_target("cortex-m3").float_abi == "soft" and not tg.get_target("cortex-m0").dsp
    assert tg.get_target("cortex-m33").flash.origin == 0x10000000
    for t in ARM_TARGETS:
        assert tg.get_target(t).can_run  # every core has a QEMU machine in QEMU 7.2
    board = tg.get_board("nucleo-f446re")
    assert board.target.name == "cortex-m4" and board.ram_bytes == 128 * 1024
    assert tg.resolve("nucleo-f746zg")[0].name == "cortex-m7"
    assert board.check(600 * 1024, 1000) and not board.check(1000, 1000)


def test_unknown_names_give_clear_errors():
    with pytest.raises(BackendError) as e:
        tg.get_target("cortex-m99")
    assert "cortex-m99" in str(e.value) and "cortex-m4" in str(e.value)
    with pytest.raises(BackendError) as e:
        tg.get_target("nucleo-f446re")
    assert "board" in str(e.value)
    with pytest.raises(BackendError) as e:
        tg.get_board("arduino")
    assert "nucleo-l432kc" in str(e.value)
    with pytest.raises(BackendError):
        build("/nonexistent", "cortex-m99")


def test_missing_tool_names_the_package(bundle, monkeypatch):
    monkeypatch.setattr(tools.shutil, "which", lambda exe: None)
    with pytest.raises(BackendError) as e:
        build(bundle, "cortex-m4")
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm" in str(e.value)


# ---------------------------------------------------------------- host

def test_host_build_and_run(bundle, rows):
    exe = build(bundle, "host")
    assert exe.exists() and _log(exe) == ""
    np.testing.assert_array_equal(run_model(bundle, "host", "model", rows), expected(rows))
    np.testing.assert_array_equal(run_model(bundle, "host", "model", rows[0]), expected(rows[:1]))
    assert run_model(bundle, "host", "model", rows[:0]).shape == (0, 4)


def test_host_sanitizers(bundle, rows):
    y = run_model(bundle, "host", "model", rows, sanitize=True, profile=True)
    np.testing.assert_array_equal(y, expected(rows))


def test_bad_inputs_and_failing_model(bundle, tmp_path):
    with pytest.raises(BackendError, match="rows of 4"):
        run_model(bundle, "host", "model", np.zeros((2, 3), np.float32))
    with pytest.raises(BackendError, match="bench needs a Cortex-M"):
        bench_model(bundle, "host")
    failing = make_bundle(tmp_path, "bad", extra="if (input[0] > 100.0f) { return 7; }")
    with pytest.raises(BackendError, match="exit status 2") as e:
        run_model(failing, "host", "bad", np.full((1, 4), 200, np.float32))
    assert "row" in str(e.value)
    broken = make_bundle(tmp_path, "broken", extra="int unused_var;")
    with pytest.raises(BackendError, match="unused") as e:  # -Werror
        build(broken, "host", "broken")
    assert "failed" in str(e.value)


def test_makefile(bundle, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    write_target_files(bundle, "host", "model")
    proc = subprocess.run(["make", "-s"], cwd=bundle, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (bundle / "build" / "host" / "model_run").exists()
    # the bundle compiles with no paths but its own: cc -I OUT OUT/*.c app.c
    app = tmp_path / "app.c"
    app.write_text('#include "model.h"\nint main(void){float x[4]={0},y[4];'
                   'return model_invoke(x,y)!=0 || y[0]!=1.0f;}\n')
    proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(bundle),
                           *map(str, sorted(bundle.glob("*.c"))), str(app), "-o",
                           str(tmp_path / "app")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert subprocess.run([str(tmp_path / "app")]).returncode == 0


# ---------------------------------------------------------------- Cortex-M

@needs_arm
@pytest.mark.parametrize("target", ARM_TARGETS)
def test_cortex_m_builds_warning_free(bundle, target):
    for kind, profile in (("run", False), ("bench", False), ("bench", True)):
        elf = build(bundle, target, "model", kind, profile)
        assert elf.suffix == ".elf" and _log(elf) == "", _log(elf)
    info = size(elf)
    assert info.text > 0 and info.ram == info.data + info.bss
    assert info.flash == info.text + info.rodata + info.data
    assert info.stack_reserved == tg.get_target(target).stack_size


@needs_arm
def test_makefile_cortex_m(bundle):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    write_target_files(bundle, "cortex-m4", "model")
    assert (bundle / "target" / "cortex-m4.ld").exists()
    proc = subprocess.run(["make", "-s", "all", "bench", "size"], cwd=bundle,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert ".bss" in proc.stdout and (bundle / "build/cortex-m4/model_bench.elf").exists()


@pytest.mark.qemu
@needs_qemu
@pytest.mark.parametrize("target", ARM_TARGETS)
def test_qemu_run(bundle, rows, target):
    np.testing.assert_array_equal(run_model(bundle, target, "model", rows), expected(rows))


@pytest.mark.qemu
@needs_qemu
def test_qemu_board_name_and_failure_exit(bundle, rows, tmp_path):
    np.testing.assert_array_equal(run_model(bundle, "nucleo-l432kc", "model", rows[:2]),
                                  expected(rows[:2]))
    failing = make_bundle(tmp_path, "bad", extra="if (input[0] > 100.0f) { return 7; }")
    with pytest.raises(BackendError, match="exit status 2"):
        run_model(failing, "cortex-m3", "bad", np.full((2, 4), 200, np.float32))
    # a CPU fault is reported through semihosting and fails the run
    faulting = make_bundle(tmp_path, "crash", extra='__asm__ volatile("udf #0");')
    with pytest.raises(BackendError) as e:
        run_model(faulting, "cortex-m4", "crash", rows[:1])
    assert "exit status 3" in str(e.value) and "fatal exception" in str(e.value)


@pytest.mark.qemu
@needs_qemu
def test_bench_linear_layers_and_stack(tmp_path):
    work = {n: make_bundle(tmp_path, work=n) for n in (1000, 2000)}
    res = {n: bench_model(b, "cortex-m4", method="systick") for n, b in work.items()}
    r1, r2 = res[1000], res[2000]
    assert r1.method == "systick" and r1.resolution == 40.0  # 25 MHz SysTick, 1 ns/insn
    assert abs(r1.instructions_per_tick - 40.0) < 0.1
    # 4 multiply-adds per iteration: at least 4 instructions each
    assert 4_000 < r1.instructions < 200_000
    # linear in the loop count: (I(2000) - I(1000)) vs I(1000) - constant part
    per_1000 = r2.instructions - r1.instructions
    assert abs(per_1000 - r1.instructions) <= 0.01 * per_1000
    for r in (r1, r2):
        assert len(r.layer_instructions) == 3
        assert r.layer_instructions[0] > 0.9 * per_1000 * (1 if r is r1 else 2)
        slack = (len(r.layer_instructions) + 2) * r.resolution + 100
        assert abs(sum(r.layer_instructions) - r.profiled_instructions) <= slack
        assert abs(r.profiled_instructions - r.instructions) <= slack
        assert r.stack > 0 and r.flash > r.ram > 0
        assert not r.notes

    # exact counts from the TCG plugin agree with SysTick within its resolution
    p1 = bench_model(work[1000], "cortex-m4", method="plugin")
    assert p1.method == "plugin" and p1.resolution == 1.0
    assert abs(p1.instructions - r1.instructions) <= 3 * r1.resolution
    assert abs(sum(p1.layer_instructions) - p1.profiled_instructions) <= 100
    p2 = bench_model(work[2000], "cortex-m4", method="plugin", profile=False)
    assert abs((p2.instructions - p1.instructions) - (p1.instructions - 0)) <= 0.01 * p1.instructions


def test_no_emulator_and_timeout(bundle, tmp_path):
    from dataclasses import replace
    ghost = replace(tg.get_target("cortex-m4"), name="cortex-m4-noemu", qemu_machine=None,
                    no_emulator_reason="no QEMU machine for this core")
    with pytest.raises(BackendError, match="has no emulator"):
        run_model(bundle, ghost, "model", np.zeros((1, 4), np.float32))
    hang = make_bundle(tmp_path, "hang", extra="for (;;) { acc[0] += 1.0f; }")
    with pytest.raises(BackendError, match="did not finish"):
        run_model(hang, "host", "hang", np.zeros((1, 4), np.float32), timeout=1.0)
