"""Backend limits and budgets (issue 13, item 5): sizes beyond int32 indexing are refused with the
tensor's name and size; a board budget counts the model's own RAM (arena + static + the stack one
inference measured on QEMU), says what it counted and names the bundle the user asked for, not a
temporary folder; a bundle folder gets the permissions the umask gives."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.limits import INT32_MAX
from tinyc.backends.targets import get_board
from tinyc.errors import BackendError
from tinyc.text import parse

HAVE_QEMU = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="arm-none-eabi-gcc / qemu-system-arm not installed")


# 10^10 elements in dimensions that each fit int32 (a single 10^10 dimension is a parse error)
TEN_BILLION = "100000x100000"


def chain(n: int | str, *, parallel: int = 1, name: str = "g") -> str:
    """IR text: `parallel` unary ops of an input of shape 1 x n (n: a size or "AxB" dims), all live
    until they are summed."""
    t = f"tensor<1x{n}xf32>"
    kinds = ["relu", "sigmoid", "tanh"][:parallel]
    lines = [f"graph @{name}(%x: {t}) -> ({t}) {{"]
    lines += [f"  %u{i} = {k}(%x) : {t}" for i, k in enumerate(kinds)]
    last = "u0"
    for i in range(1, parallel):
        lines.append(f"  %s{i} = add(%{last}, %u{i}) : {t}")
        last = f"s{i}"
    lines += [f"  return %{last}", "}"]
    return "\n".join(lines) + "\n"


def tinyc(*args, umask: int | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


# ---- sizes C cannot index ---------------------------------------------------------------------

def test_ten_billion_element_input_is_refused(tmp_path):
    graph = parse(chain(TEN_BILLION))
    for target in ("host", "cortex-m4"):
        with pytest.raises(BackendError) as e:
            emit_bundle(graph, tmp_path / target, target_name=target)
        msg = str(e.value)
        assert "input %x" in msg and "10,000,000,000 elements" in msg and f"{INT32_MAX:,}" in msg, msg
        assert not (tmp_path / target).exists()     # nothing half-written


def test_one_tensor_over_2_gib_is_refused(tmp_path):
    graph = parse(chain(600_000_000))               # 2.4 GB of float32: fewer than 2^31 elements
    with pytest.raises(BackendError) as e:
        emit_bundle(graph, tmp_path, target_name="host")
    assert "%x" in str(e.value) and "2,400,000,000 bytes" in str(e.value)


def test_four_gb_arena_is_refused_naming_its_tensors(tmp_path):
    graph = parse(chain(500_000_000, parallel=3))   # three 2 GB tensors live at once
    with pytest.raises(BackendError) as e:
        emit_bundle(graph, tmp_path, target_name="host")
    msg = str(e.value)
    assert "arena needs 4,000,000,000 bytes" in msg and "2,000,000,000 B" in msg and "%u" in msg, msg
    assert not tmp_path.joinpath("model.c").exists()


def test_cli_refuses_oversized_models_without_traceback(tmp_path):
    for n, parallel, words in ((TEN_BILLION, 1, "10,000,000,000 elements"),
                               (500_000_000, 3, "4,000,000,000 bytes")):
        src = tmp_path / f"m{parallel}.tir"
        src.write_text(chain(n, parallel=parallel))
        proc = tinyc("compile", src, "-o", tmp_path / f"out{parallel}")
        assert proc.returncode == 1 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / f"out{parallel}").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".out{parallel}")]


def test_largest_addressable_sizes_still_emit(tmp_path):
    info = emit_bundle(parse(chain(500_000_000, parallel=2)), tmp_path, target_name="host")
    assert info.arena_size == 2_000_000_000 <= INT32_MAX


# ---- board budgets ------------------------------------------------------------------------------

@pytest.mark.qemu
@needs_qemu
def test_board_counts_the_models_ram_not_the_harness_buffers(tmp_path):
    """48 KB in and 48 KB out: the run harness's row buffers (96 KB) exceed the 64 KiB of a
    nucleo-l432kc, but the model itself needs no arena and little static RAM and stack."""
    src = tmp_path / "wide.tir"
    src.write_text(chain(12_000))
    out = tmp_path / "wide"
    proc = tinyc("compile", src, "--board", "nucleo-l432kc", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "bundle.json").exists()
    m = json.loads((out / "report.json").read_text())["board_memory"]
    assert m["ram"] == m["arena"] + m["static"] + m["stack"] <= m["ram_budget"] == 64 * 1024 < 96_000
    assert m["stack_how"] == "measured on the emulator" and 0 < m["stack"] < 4096
    assert f"counted against nucleo-l432kc: RAM {m['ram']:,} of 65,536 bytes" in proc.stdout, proc.stdout


@pytest.mark.qemu
@needs_qemu
def test_board_budget_error_names_the_bundle_and_what_was_counted(tmp_path):
    src = tmp_path / "big.tir"
    src.write_text(chain(12_000, parallel=3))       # two 48 KB tensors in the arena: 96 KB > 64 KiB
    out = tmp_path / "requested"
    proc = tinyc("compile", src, "--board", "nucleo-l432kc", "-o", out)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr
    assert "RAM" in err and "nucleo-l432kc" in err and "arena 96,000" in err and "static" in err, err
    assert "stack" in err and "measured on the emulator" in err, err
    assert f"at {out}\n" in err and f".{out.name}." not in err, err    # not the deleted temporary folder
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".requested")]


@pytest.mark.qemu
@needs_qemu
def test_budget_api_and_bench_count_the_same_ram(tmp_path):
    from tinyc.backends.bench import bench_model
    from tinyc.backends.budget import memory_use

    emit_bundle(parse(chain(2_000, parallel=2)), tmp_path, target_name="cortex-m4")
    info, use = memory_use(tmp_path, "nucleo-f446re")
    result = bench_model(tmp_path, "nucleo-f446re", profile=False)
    assert use.arena == 8_000 and use.stack == result.stack > 0
    assert use.static == result.ram - use.arena - result.io_buffer_bytes
    assert use.ram == use.arena + use.static + use.stack < info.ram + use.stack
    assert not use.problems(get_board("nucleo-f446re"))
    assert not result.notes


# ---- permissions --------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_bundle_folder_honours_the_umask(tmp_path, umask, mode):
    src = tmp_path / "m.tir"
    src.write_text(chain(4))
    out = tmp_path / "out"
    proc = tinyc("compile", src, "-o", out, umask=umask)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert stat.S_IMODE((out / "model.c").stat().st_mode) == 0o666 & ~umask
