"""Does a bundle fit a board?  The flash of its run image and the model's own RAM.

RAM counted against the board: the model's arena, the image's other static data (the
model's weights kept in RAM, the start-up code's and C library's data) and the stack
of one inference measured on the emulator.  The run harness's input/output row
buffers and the target's whole stack reservation are not the model's, so they are not
counted (without an emulator the reservation is counted instead, and the error says so).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from tinyc.backends.bench import STACK_MEASURED, measure_stack
from tinyc.backends.build import build
from tinyc.backends.manifest import read_manifest
from tinyc.backends.size import MemoryUse, SizeInfo, size
from tinyc.backends.targets import Board, resolve
from tinyc.backends.tools import QEMU
from tinyc.errors import BackendError


def memory_use(out_dir: Path | str, board: "str | Board", name: str = "model", *,
               where: str | None = None) -> tuple[SizeInfo, MemoryUse]:
    """Section sizes of the run image and the memory counted against ``board``."""
    out = Path(out_dir).resolve()
    t, b = resolve(board)
    if b is None:
        raise BackendError(f"'{board}' is not a board")
    manifest = read_manifest(out, name)
    info = size(build(out, t, name, "run", where=where))
    if t.qemu_machine is not None and shutil.which(QEMU) is not None:
        stack, how = measure_stack(out, t, name, where=where), STACK_MEASURED
    else:
        stack = t.stack_size
        how = f"the whole {t.name} stack reservation: {QEMU} is not there to measure it"
    return info, MemoryUse.of(info, manifest.arena_size, manifest.io_bytes, stack, how)


def check_budget(out_dir: Path | str, board: "str | Board", name: str = "model", *,
                 where: str | None = None) -> tuple[SizeInfo, MemoryUse]:
    """Raise BackendError if the bundle does not fit the board's flash/RAM budget; else
    the sizes.  ``where`` is how the error names the bundle (default: OUT)."""
    info, use = memory_use(out_dir, board, name, where=where)
    problems = use.problems(resolve(board)[1])
    if problems:
        raise BackendError("; ".join(problems), where=where or str(Path(out_dir).resolve()),
                           hint="shrink the model (quantize, prune) or pick a bigger board")
    return info, use
