"""Sizes of built products (arm-none-eabi-size) and the memory a model needs on a board.

``SizeInfo`` reads the section sizes of a product.  ``MemoryUse`` is what tinyc counts
against a board's budget: the flash of the run image, and the model's own RAM - its
arena, the rest of the image's static data (without the run harness's input/output
row buffers) and the stack of one inference (measured on the emulator, or the
target's whole stack reservation when it cannot be measured).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tinyc.backends.targets import ARM_PACKAGES, Board
from tinyc.errors import BackendError


@dataclass
class SizeInfo:
    sections: dict[str, int]

    def _get(self, *names: str) -> int:
        return sum(self.sections.get(n, 0) for n in names)

    @property
    def text(self) -> int:
        return self._get(".text", ".ARM.exidx", ".ARM.extab", ".init", ".fini", ".plt")

    @property
    def rodata(self) -> int:
        return self._get(".rodata")

    @property
    def data(self) -> int:
        return self._get(".data")

    @property
    def bss(self) -> int:
        return self._get(".bss")

    @property
    def stack_reserved(self) -> int:
        return self._get(".stack")

    @property
    def flash(self) -> int:
        """Bytes of flash: code + read-only data + initial values of .data."""
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        """Bytes of static RAM: .data + .bss (the arena is in .bss); no stack."""
        return self.data + self.bss

    def to_dict(self) -> dict[str, int]:
        return {"text": self.text, "rodata": self.rodata, "data": self.data, "bss": self.bss,
                "flash": self.flash, "ram": self.ram, "stack_reserved": self.stack_reserved}


def _is_arm_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(20)
    return head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 40


def size(elf: Path | str) -> SizeInfo:
    """Section sizes of a built product (arm-none-eabi-size -A, or size -A for host)."""
    elf = Path(elf)
    if not elf.exists():
        raise BackendError(f"no such file: {elf}")
    arm = _is_arm_elf(elf)
    tool = "arm-none-eabi-size" if arm else "size"
    if shutil.which(tool) is None:
        raise BackendError(f"'{tool}' was not found on PATH",
                           hint=f"apt-get install {ARM_PACKAGES}" if arm else "apt-get install binutils")
    proc = subprocess.run([tool, "-A", str(elf)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendError(f"{tool} failed on {elf}", hint=proc.stderr.strip())
    sections = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    return SizeInfo(sections)


@dataclass(frozen=True)
class MemoryUse:
    """The memory a model needs, as counted against a board's budget."""

    flash: int          # text + rodata + data of the run image (model, start-up code, harness)
    arena: int          # the model's activation arena
    static: int         # the rest of the image's .data + .bss, less the harness's I/O row buffers
    stack: int          # stack of one inference
    stack_how: str      # how `stack` was obtained

    @classmethod
    def of(cls, info: SizeInfo, arena: int, io_bytes: int, stack: int, stack_how: str) -> "MemoryUse":
        return cls(info.flash, arena, max(0, info.ram - arena - io_bytes), stack, stack_how)

    @property
    def ram(self) -> int:
        return self.arena + self.static + self.stack

    def ram_counted(self) -> str:
        return (f"arena {self.arena:,} + static {self.static:,} + stack {self.stack:,} "
                f"({self.stack_how}) = {self.ram:,} B")

    def problems(self, board: Board) -> list[str]:
        """Budget overruns, each saying what was counted (empty if the model fits)."""
        out = []
        if self.flash > board.flash_bytes:
            out.append(f"flash {self.flash:,} B (code + read-only data + .data of the run image: "
                       f"model, start-up code and run harness) exceeds {board.name}'s "
                       f"{board.flash_bytes:,} B")
        if self.ram > board.ram_bytes:
            out.append(f"RAM {self.ram:,} B exceeds {board.name}'s {board.ram_bytes:,} B; counted: "
                       f"{self.ram_counted()} (the run harness's input/output buffers are not counted)")
        return out
