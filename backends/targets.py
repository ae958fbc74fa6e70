"""The targets tinyc compiles for, and boards that only add memory budgets.

A *target* is a CPU core plus how to compile for it (compiler, -mcpu/-mfpu/
float-ABI flags, optimisation flags), the QEMU machine that runs it and that
machine's memory map (used for the linker script).  A *board* is a real part
with a core and flash/RAM budgets; building or running for a board uses its
core's target (and QEMU machine), the budgets are only checked.

Everything here was checked against the installed QEMU 7.2 (``info mtree``)
and by running the harnesses:

==========  ===========  =====================  ===========================  =====
target      QEMU -M      code region ("flash")  data region ("RAM")          SysTick
==========  ===========  =====================  ===========================  =====
host        (native)     -                      -                            -
cortex-m0   microbit     0x00000000, 256 KiB    0x20000000, 16 KiB           16 MHz
cortex-m3   mps2-an385   0x00000000, 4 MiB      0x20000000, 4 MiB            25 MHz
cortex-m4   mps2-an386   0x00000000, 4 MiB      0x20000000, 4 MiB            25 MHz
cortex-m7   mps2-an500   0x00000000, 4 MiB      0x20000000, 4 MiB            25 MHz
cortex-m33  mps2-an505   0x10000000, 4 MiB (S)  0x38000000, 4 MiB (S)        20 MHz
==========  ===========  =====================  ===========================  =====

Notes: the mps2 "flash" is ZBT SSRAM1, the "RAM" SSRAM2+3.  The AN505 core
boots in the Secure state from INITSVTOR0 = 0x10000000, so code and data are
linked at the Secure aliases.  QEMU's microbit (nRF51) really runs Cortex-M0
code including semihosting and SysTick (which the real nRF51 lacks); its
16 KiB of RAM limits which models can *run* on cortex-m0.  With QEMU's
``-icount shift=0`` one instruction takes 1 ns of virtual time, so a SysTick
tick on the processor clock is 1e9 / systick_hz instructions (40 on mps2
M3/M4/M7, 50 on AN505, 62.5 on microbit), measured by the bench harness.
"""
from __future__ import annotations

from dataclasses import dataclass

from tinyc.errors import BackendError

ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class MemoryRegion:
    origin: int
    size: int

    @property
    def end(self) -> int:
        return self.origin + self.size


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    cc: str                                # C compiler executable
    cpu_flags: tuple[str, ...] = ()        # -mcpu/-mthumb/-mfpu/-mfloat-abi
    opt_flags: tuple[str, ...] = ("-O2", "-ffunction-sections", "-fdata-sections")
    link_flags: tuple[str, ...] = ("-Wl,--gc-sections",)
    size_tool: str = "size"
    nm_tool: str = "nm"
    qemu_machine: str | None = None        # None: no emulator (see no_emulator_reason)
    qemu_cpu: str | None = None
    flash: MemoryRegion | None = None      # memory map of the QEMU machine
    ram: MemoryRegion | None = None
    stack_size: int = 0                    # main stack reserved in RAM (bytes)
    fpu: str | None = None                 # -mfpu value, None for soft float
    float_abi: str | None = None           # "hard" / "soft"
    dsp: bool = False                      # ARMv7E-M / v8-M DSP extension
    systick_hz: int | None = None          # SysTick processor clock on the QEMU machine
    bench_max_stamps: int = 1024           # per-layer stamps the bench harness stores
    no_emulator_reason: str = ""

    @property
    def is_host(self) -> bool:
        return self.name == "host"

    @property
    def bare_metal(self) -> bool:
        return not self.is_host

    @property
    def has_fpu(self) -> bool:
        return self.fpu is not None

    @property
    def can_run(self) -> bool:
        return self.is_host or self.qemu_machine is not None

    @property
    def instructions_per_tick(self) -> float | None:
        return None if self.systick_hz is None else 1e9 / self.systick_hz

    @property
    def clock_mhz(self) -> float | None:
        """The CPU clock of the emulated board (mps2 FPGA images: 25 MHz), the default for
        latencies when no board is named."""
        return None if self.systick_hz is None else self.systick_hz / 1e6


@dataclass(frozen=True)
class Board:
    name: str
    core: str              # target name
    flash_bytes: int
    ram_bytes: int
    description: str = ""
    clock_mhz: float | None = None   # maximum CPU clock (the part's datasheet), for latencies

    @property
    def target(self) -> Target:
        return get_target(self.core)

    def check(self, flash: int, ram: int) -> list[str]:
        """Budget violations (empty if the image fits)."""
        problems = []
        if flash > self.flash_bytes:
            problems.append(f"flash {flash} B exceeds {self.name}'s {self.flash_bytes} B")
        if ram > self.ram_bytes:
            problems.append(f"RAM {ram} B exceeds {self.name}'s {self.ram_bytes} B")
        return problems


_ARM = dict(cc="arm-none-eabi-gcc", size_tool="arm-none-eabi-size", nm_tool="arm-none-eabi-nm")
_MPS2_FLASH = MemoryRegion(0x00000000, 4 * MiB)   # ZBT SSRAM1
_MPS2_RAM = MemoryRegion(0x20000000, 4 * MiB)     # ZBT SSRAM2+3

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            name="host",
            description="the machine running tinyc (gcc, native executable)",
            cc="gcc",
        ),
        Target(
            name="cortex-m0",
            description="Arm Cortex-M0 (ARMv6-M, soft float) on QEMU microbit (nRF51)",
            cpu_flags=("-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"),
            qemu_machine="microbit", qemu_cpu="cortex-m0",
            flash=MemoryRegion(0x00000000, 256 * KiB), ram=MemoryRegion(0x20000000, 16 * KiB),
            stack_size=4 * KiB, float_abi="soft", systick_hz=16_000_000,
            bench_max_stamps=128, **_ARM,
        ),
        Target(
            name="cortex-m3",
            description="Arm Cortex-M3 (ARMv7-M, soft float) on QEMU mps2-an385",
            cpu_flags=("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"),
            qemu_machine="mps2-an385", qemu_cpu="cortex-m3",
            flash=_MPS2_FLASH, ram=_MPS2_RAM, stack_size=64 * KiB,
            float_abi="soft", systick_hz=25_000_000, **_ARM,
        ),
        Target(
            name="cortex-m4",
            description="Arm Cortex-M4F (ARMv7E-M, DSP, FPv4-SP) on QEMU mps2-an386",
            cpu_flags=("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
            qemu_machine="mps2-an386", qemu_cpu="cortex-m4",
            flash=_MPS2_FLASH, ram=_MPS2_RAM, stack_size=64 * KiB,
            fpu="fpv4-sp-d16", float_abi="hard", dsp=True, systick_hz=25_000_000, **_ARM,
        ),
        Target(
            name="cortex-m7",
            description="Arm Cortex-M7 (ARMv7E-M, DSP, FPv5 double precision) on QEMU mps2-an500",
            cpu_flags=("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
            qemu_machine="mps2-an500", qemu_cpu="cortex-m7",
            flash=_MPS2_FLASH, ram=_MPS2_RAM, stack_size=64 * KiB,
            fpu="fpv5-d16", float_abi="hard", dsp=True, systick_hz=25_000_000, **_ARM,
        ),
        Target(
            name="cortex-m33",
            description="Arm Cortex-M33 (ARMv8-M Mainline, DSP, FPv5-SP, Secure state) "
                        "on QEMU mps2-an505",
            cpu_flags=("-mcpu=cortex-m33", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
            qemu_machine="mps2-an505", qemu_cpu="cortex-m33",
            flash=MemoryRegion(0x10000000, 4 * MiB),   # SSRAM1, Secure alias
            ram=MemoryRegion(0x38000000, 4 * MiB),     # SSRAM2+3, Secure alias
            stack_size=64 * KiB, fpu="fpv5-sp-d16", float_abi="hard", dsp=True,
            systick_hz=20_000_000, **_ARM,
        ),
    ]
}

BOARDS: dict[str, Board] = {
    b.name: b
    for b in [
        # clocks: the datasheets' maximum CPU frequency (ST DS10693 STM32F446xC/E, DS11451
        # STM32L432KB/KC, DS10916 STM32F745/746, DS10006 STM32F091xB/xC, DS12736 STM32L552xx)
        Board("nucleo-f446re", "cortex-m4", 512 * KiB, 128 * KiB, "ST NUCLEO-F446RE (STM32F446RE)", 180.0),
        Board("nucleo-l432kc", "cortex-m4", 256 * KiB, 64 * KiB, "ST NUCLEO-L432KC (STM32L432KC)", 80.0),
        Board("nucleo-f746zg", "cortex-m7", 1 * MiB, 320 * KiB, "ST NUCLEO-F746ZG (STM32F746ZG)", 216.0),
        Board("nucleo-f091rc", "cortex-m0", 256 * KiB, 32 * KiB, "ST NUCLEO-F091RC (STM32F091RC)", 48.0),
        Board("stm32l552", "cortex-m33", 512 * KiB, 256 * KiB, "ST STM32L552 (e.g. NUCLEO-L552ZE-Q)", 110.0),
    ]
}


def target_names() -> list[str]:
    return list(TARGETS)


def board_names() -> list[str]:
    return list(BOARDS)


def get_target(name: str) -> Target:
    """The target called ``name``; a board name is not accepted here (see resolve)."""
    if isinstance(name, Target):
        return name
    try:
        return TARGETS[name]
    except KeyError:
        hint = f"valid targets: {', '.join(TARGETS)}"
        if name in BOARDS:
            hint = f"'{name}' is a board (core {BOARDS[name].core}); use --board {name}. " + hint
        else:
            hint += f"; boards (--board): {', '.join(BOARDS)}"
        raise BackendError(f"unknown target '{name}'", hint=hint) from None


def get_board(name: str) -> Board:
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except KeyError:
        hint = f"valid boards: {', '.join(BOARDS)}"
        if name in TARGETS:
            hint = f"'{name}' is a target, not a board (use --target {name}). " + hint
        raise BackendError(f"unknown board '{name}'", hint=hint) from None


def resolve(name: "str | Target | Board") -> tuple[Target, Board | None]:
    """A target or board name (or object) -> (target, board or None)."""
    if isinstance(name, Target):
        return name, None
    if isinstance(name, Board):
        return name.target, name
    if name in TARGETS:
        return TARGETS[name], None
    if name in BOARDS:
        return BOARDS[name].target, BOARDS[name]
    raise BackendError(
        f"unknown target or board '{name}'",
        hint=f"targets: {', '.join(TARGETS)}; boards: {', '.join(BOARDS)}",
    )
