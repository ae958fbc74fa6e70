"""Benchmarking a bundle on a Cortex-M target under QEMU ``-icount shift=0``.

The bench harness (OUT/target/bench_main.c) stamps SysTick around one inference (and
every layer in a TINYC_PROFILE build) and measures the stack high-water mark; an
optional QEMU TCG plugin (OUT/target/icount_plugin.c) counts instructions exactly.
``measure_stack`` runs the same harness only for the stack of one inference.
On cortex-m4 the plugin also counts the executed instructions by timing class and
``backends/cycles.py`` turns them into estimated cycles (per inference and per layer).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tinyc.backends import cycles as cyc
from tinyc.backends.build import build
from tinyc.backends.manifest import read_manifest
from tinyc.backends.size import MemoryUse, SizeInfo, size
from tinyc.backends.target_files import TARGET_SUBDIR
from tinyc.backends.targets import Board, Target, resolve
from tinyc.backends.tools import QEMU, qemu_command, require_tool, run_process
from tinyc.errors import BackendError

STACK_MEASURED = "measured on the emulator"


@dataclass
class BenchResult:
    target: str
    name: str
    method: str                         # "plugin" (exact, TCG plugin) or "systick"
    instructions: int                   # guest instructions per inference
    layer_instructions: list[int]       # per layer (profiled build), [] without marks
    profiled_instructions: int | None   # whole invoke in the profiled build, marks' cost removed
    resolution: float                   # instructions per count unit (1 for plugin)
    instructions_per_tick: float        # SysTick calibration measured on the target
    systick_instructions: int           # the SysTick estimate of `instructions`
    stack: int                          # stack high-water mark of one invoke, bytes
    flash: int                          # text+rodata+data of the run image
    ram: int                            # data+bss of the run image (arena included)
    sizes: SizeInfo
    io_buffer_bytes: int = 0            # the run harness's input+output row buffers (in ram)
    notes: list[str] = field(default_factory=list)
    # Estimated cycles (backends/cycles.py; plugin method on a core the cost model knows, else None)
    classes: dict[str, int] | None = None           # instruction class counts per inference
    layer_classes: list[dict[str, int]] = field(default_factory=list)   # per layer (profiled build)
    cycles: int | None = None                       # estimated cycles per inference
    layer_cycles: list[int] = field(default_factory=list)               # per layer (profiled build)
    profiled_cycles: int | None = None              # whole invoke in the profiled build, marks removed
    cycle_model: str = ""                           # the model used, or why there are no cycles

    @property
    def cpi(self) -> float | None:
        """Estimated cycles per instruction."""
        return cyc.cpi(self.cycles, self.instructions)

    def latency_ms(self, clock_mhz: float | None) -> float | None:
        return cyc.latency_ms(self.cycles, clock_mhz)

    def cycles_with_wait_states(self, wait_states: int) -> int | None:
        """Upper estimate with N flash wait states (see cycles.WAIT_STATE_NOTE)."""
        return None if self.classes is None else cyc.wait_state_cycles(self.classes, wait_states)

    def to_dict(self) -> dict:
        return {
            "target": self.target, "name": self.name, "method": self.method,
            "instructions": self.instructions, "layer_instructions": list(self.layer_instructions),
            "profiled_instructions": self.profiled_instructions, "resolution": self.resolution,
            "instructions_per_tick": self.instructions_per_tick,
            "systick_instructions": self.systick_instructions, "stack": self.stack,
            "flash": self.flash, "ram": self.ram, "sizes": self.sizes.to_dict(),
            "io_buffer_bytes": self.io_buffer_bytes, "notes": list(self.notes),
            "classes": dict(self.classes) if self.classes is not None else None,
            "layer_classes": [dict(c) for c in self.layer_classes], "cycles": self.cycles,
            "layer_cycles": list(self.layer_cycles), "profiled_cycles": self.profiled_cycles,
            "cycle_model": self.cycle_model,
        }


@dataclass
class _Measurement:
    stamps: list[tuple[str, int, int]]      # (kind, arg, ticks)
    keys: dict[str, int]
    counts: list[int] | None                # plugin instruction counts per stamp
    classes: tuple[list[str], list[list[int]]] | None = None   # plugin class names, counts per stamp


def _parse_bench(text: str) -> tuple[dict[str, int], list[tuple[str, int, int]]]:
    keys: dict[str, int] = {}
    stamps: list[tuple[str, int, int]] = []
    began = ended = False
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "tinyc-bench":
            continue
        if parts[1:] == ["begin"]:
            began = True
        elif parts[1:] == ["end"]:
            ended = True
        elif parts[1] == "stamp" and len(parts) == 5:
            stamps.append((parts[2], int(parts[3]), int(parts[4])))
        elif len(parts) == 3:
            keys[parts[1]] = int(parts[2])
    if not (began and ended) or len(stamps) != keys.get("stamps", -1):
        raise ValueError("incomplete bench output")
    return keys, stamps


def _plugin_path(out: Path) -> Path:
    """Compile the TCG plugin with the host compiler (once per bundle)."""
    src = out / TARGET_SUBDIR / "icount_plugin.c"
    so = out / "build" / "qemu-plugin" / "icount_plugin.so"
    if so.exists() and so.stat().st_mtime >= src.stat().st_mtime:
        return so
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BackendError("no host C compiler to build the QEMU plugin", hint="apt-get install gcc")
    so.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-std=c99", "-Wall", "-Wextra",
                           "-Werror", "-o", str(so), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendError("building the QEMU icount plugin failed", hint=proc.stderr.strip())
    return so


def _symbol_address(target: Target, elf: Path, symbol: str) -> int:
    nm = require_tool(target.nm_tool, target)
    proc = subprocess.run([nm, str(elf)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16)
    raise BackendError(f"symbol {symbol} not found in {elf}")


def _parse_classes(text: str, n_stamps: int) -> tuple[list[str], list[list[int]]]:
    lines = text.splitlines()
    head = lines[0].split() if lines else []
    if head[:3] != ["#", "tinyc-icount-classes", "1"]:
        raise BackendError("the QEMU icount plugin wrote no instruction classes")
    names = head[3:]
    rows = [[int(v) for v in line.split()] for line in lines[1:] if line and not line.startswith("total")]
    if len(rows) < n_stamps or any(len(r) != len(names) for r in rows):
        raise BackendError("the QEMU icount plugin missed stamps in its class counts",
                           hint=f"{len(rows)} rows for {n_stamps} stamps")
    return names, rows[:n_stamps]


def _measure(out: Path, t: Target, elf: Path, use_plugin: bool, timeout: float,
             classes: bool = False) -> _Measurement:
    cmd = qemu_command(t, elf)
    with tempfile.TemporaryDirectory(prefix="tinyc-bench-") as tmp:
        tmpdir = Path(tmp)
        counts_file = tmpdir / "icount.txt"
        class_file = tmpdir / "classes.txt"
        if use_plugin:
            addr = _symbol_address(t, elf, "tinyc_bench_point")
            arg = f"{_plugin_path(out)},addr=0x{addr:x},out={counts_file}"
            if classes:
                arg += f",classes={class_file}"
                if t.flash is not None:
                    arg += f",flash=0x{t.flash.origin:x}:0x{t.flash.end:x}"
            cmd += ["-plugin", arg]
        proc = run_process(cmd, tmpdir, timeout, f"benchmark of {elf.name} on {t.name}")
        text = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise BackendError(f"benchmark of {elf.name} on {t.name} failed with exit status "
                               f"{proc.returncode}", where=str(elf), hint=(err or text)[-4000:] or None)
        try:
            keys, stamps = _parse_bench(text)
        except ValueError:
            raise BackendError(f"benchmark of {elf.name} printed no complete result",
                               where=str(elf), hint=(text + err)[-4000:] or None) from None
        counts = None
        if use_plugin:
            if not counts_file.exists():
                raise BackendError("the QEMU icount plugin wrote no output", hint=err or None)
            counts = [int(v) for v in counts_file.read_text().split() if v.isdigit()]
            if len(counts) < len(stamps):
                raise BackendError("the QEMU icount plugin missed stamps",
                                   hint=f"{len(counts)} counts for {len(stamps)} stamps")
            counts = counts[:len(stamps)]
        class_counts = None
        if use_plugin and classes:
            if not class_file.exists():
                raise BackendError("the QEMU icount plugin wrote no instruction classes", hint=err or None)
            class_counts = _parse_classes(class_file.read_text(), len(stamps))
    return _Measurement(stamps, keys, counts, class_counts)


def _analyse(m: _Measurement, t: Target, notes: list[str]) -> dict:
    """Interval arithmetic over the stamps, in instructions."""
    idx = {}
    for i, (kind, _, _) in enumerate(m.stamps):
        idx.setdefault(kind, i)
    ticks = [s[2] for s in m.stamps]

    def span(a: str, b: str, vals: list[int]) -> int:
        return vals[idx[b]] - vals[idx[a]]

    c1, c2 = span("calib1_a", "calib1_b", ticks), span("calib2_a", "calib2_b", ticks)
    n1, n2 = m.keys["calib_n1_insns"], m.keys["calib_n2_insns"]
    if c2 <= c1:
        raise BackendError("SysTick calibration failed (the timer does not advance)",
                           hint="is QEMU run with -icount shift=0?")
    ipt_measured = (n2 - n1) / (c2 - c1)
    ipt = ipt_measured
    nominal = t.instructions_per_tick
    if nominal is not None:
        if abs(ipt_measured - nominal) <= 0.01 * nominal:
            ipt = nominal
        else:
            notes.append(f"SysTick calibration {ipt_measured:.3f} instructions/tick differs from "
                         f"the expected {nominal:g}; using the measured value")

    def intervals(vals: list[int], scale: float, ovh: float) -> dict:
        start, end = idx["start"], len(vals) - 1
        if m.stamps[end][0] != "end":
            raise BackendError("bench output is missing the end stamp (too many layer stamps?)")
        marks = [i for i in range(start + 1, end) if m.stamps[i][0] == "mark"]
        total = (vals[end] - vals[start]) - (len(marks) + 1) * ovh
        layers = [max(0, vals[i + 1] - vals[i] - ovh) for i in marks if i + 1 < end]
        return {"total": max(0, round(total * scale)),
                "layers": [round(v * scale) for v in layers], "marks": len(marks)}

    # The cost of one stamp: exact from two back-to-back stamps with the plugin;
    # for SysTick averaged over a run of ovh_reps + 1 stamps.
    ovh_ticks = span("ovh_a", "ovh_b", ticks) / (m.keys["ovh_reps"] + 1)
    res = {"ipt": ipt, "ipt_measured": ipt_measured, "systick": intervals(ticks, ipt, ovh_ticks)}
    if m.counts is not None:
        res["plugin"] = intervals(m.counts, 1.0, span("empty_a", "empty_b", m.counts))
    if m.classes is not None:
        res["classes"] = _class_intervals(m, idx)
    return res


def _class_intervals(m: _Measurement, idx: dict[str, int]) -> dict:
    """The plugin's class counts over the same intervals as the instruction counts, without
    clamping (a class of the stamps' own code may come out -1 in a layer): every interval's
    disjoint classes still add up to its instructions."""
    names, rows = m.classes
    start, end = idx["start"], len(rows) - 1
    ovh = [b - a for a, b in zip(rows[idx["empty_a"]], rows[idx["empty_b"]])]
    marks = [i for i in range(start + 1, end) if m.stamps[i][0] == "mark"]

    def diff(i: int, j: int, n_ovh: int) -> dict[str, int]:
        return {k: b - a - n_ovh * o for k, a, b, o in zip(names, rows[i], rows[j], ovh)}

    return {"total": diff(start, end, len(marks) + 1),
            "layers": [diff(i, i + 1, 1) for i in marks if i + 1 < end]}


def bench_model(out_dir: Path | str, target: "str | Target | Board" = "cortex-m4",
          name: str = "model", *, profile: bool = True, method: str = "auto",
          timeout: float = 120.0, classes: bool = True) -> BenchResult:
    """Benchmark one inference on a Cortex-M target under QEMU -icount shift=0.

    ``instructions`` comes from a build without layer marks; with ``profile`` a
    second, TINYC_PROFILE build gives ``layer_instructions``.  ``method``:
    "systick" (SysTick on the CPU clock, resolution = instructions per tick),
    "plugin" (exact counts from a QEMU TCG plugin) or "auto" (plugin if it works,
    else SysTick).  ``flash`` = text+rodata+data and ``ram`` = data+bss (the
    arena is in .bss) of the run image: start-up code + model + the run harness,
    whose input/output row buffers (``io_buffer_bytes``) are part of ``ram``.
    With a board name, budget overruns are added to ``notes`` (RAM counted as
    budget.check_budget does: arena + static + the measured stack).  With the plugin
    on a core backends/cycles.py has timings for (``classes``), the instructions are
    also counted by class and priced: ``cycles`` / ``layer_cycles`` (else None / [],
    ``cycle_model`` says why).
    """
    out = Path(out_dir).resolve()
    t, board = resolve(target)
    if t.is_host:
        raise BackendError("bench needs a Cortex-M target", hint="e.g. target='cortex-m4'")
    if method not in ("auto", "systick", "plugin"):
        raise BackendError(f"unknown bench method '{method}'", hint="auto, systick or plugin")
    if t.qemu_machine is None:
        qemu_command(t)
    require_tool(QEMU, t)
    manifest = read_manifest(out, name)
    notes: list[str] = []
    elf = build(out, t, name, "bench", False)
    elves = [elf] + ([build(out, t, name, "bench", True)] if profile else [])

    use_plugin = method in ("auto", "plugin")
    want_classes = classes and cyc.supports(t.name)
    results = []
    for e in elves:
        try:
            m = _measure(out, t, e, use_plugin, timeout, want_classes and use_plugin)
        except BackendError as exc:
            if method != "auto" or not use_plugin:
                raise
            notes.append(f"TCG plugin unavailable, used SysTick: {exc.what}")
            use_plugin = False
            m = _measure(out, t, e, False, timeout)
        results.append((m, _analyse(m, t, notes)))

    m_plain, a_plain = results[0]
    best = "plugin" if use_plugin and "plugin" in a_plain else "systick"
    layers: list[int] = []
    profiled = None
    model = cyc.CycleModel()
    est: dict = {"cycle_model": model.describe()}
    if "classes" in a_plain:
        est["classes"] = a_plain["classes"]["total"]
        est["cycles"] = model.cycles(est["classes"])
    elif not want_classes:
        est["cycle_model"] = (f"unavailable: the cost model has {', '.join(cyc.MODEL_TARGETS)} timings, "
                              f"not {t.name}'s" if classes else "unavailable: not asked for")
    else:
        est["cycle_model"] = "unavailable: the SysTick count has no instruction classes"
    if profile:
        m_prof, a_prof = results[1]
        src = a_prof[best] if best in a_prof else a_prof["systick"]
        layers, profiled = src["layers"], src["total"]
        if "classes" in a_prof and "cycles" in est:
            est["layer_classes"] = a_prof["classes"]["layers"]
            est["layer_cycles"] = [max(0, model.cycles(c)) for c in est["layer_classes"]]
            est["profiled_cycles"] = model.cycles(a_prof["classes"]["total"])
        if src["marks"] == 0:
            notes.append("the model has no TINYC_LAYER_MARK calls: no per-layer counts")
        if m_prof.keys.get("dropped", 0):
            notes.append(f"{m_prof.keys['dropped']} layer stamps were dropped "
                         f"(more than {t.bench_max_stamps})")
    if m_plain.keys.get("stack_overflow"):
        notes.append(f"the stack overflowed its {t.stack_size} B reservation")
    # Sizes of the run image (start-up + model + the small run harness); the
    # bench image also holds the stamp buffers.
    info = size(build(out, t, name, "run", False))
    stack = m_plain.keys.get("stack_bytes", 0)
    if board is not None:
        notes += MemoryUse.of(info, manifest.arena_size, manifest.io_bytes, stack,
                              STACK_MEASURED).problems(board)
    return BenchResult(
        target=t.name, name=name, method=best,
        instructions=a_plain[best]["total"], layer_instructions=layers,
        profiled_instructions=profiled,
        resolution=1.0 if best == "plugin" else a_plain["ipt"],
        instructions_per_tick=a_plain["ipt_measured"],
        systick_instructions=a_plain["systick"]["total"],
        stack=stack,
        flash=info.flash, ram=info.ram, sizes=info,
        io_buffer_bytes=manifest.io_bytes, notes=notes, **est,
    )


def measure_stack(out_dir: Path | str, target: "str | Target | Board", name: str = "model", *,
                  timeout: float = 120.0, where: str | None = None) -> int:
    """Stack bytes one inference uses on ``target`` (high-water mark of the bench harness
    under QEMU, after a warm-up inference)."""
    out = Path(out_dir).resolve()
    t, _ = resolve(target)
    if t.is_host:
        raise BackendError("the stack is measured on a Cortex-M target", hint="e.g. target='cortex-m4'")
    qemu_command(t)
    require_tool(QEMU, t)
    elf = build(out, t, name, "bench", False, where=where)
    m = _measure(out, t, elf, False, timeout)
    if m.keys.get("stack_overflow"):
        raise BackendError(f"'{name}' overflows the {t.stack_size:,} B stack reserved on {t.name}",
                           where=where or str(out),
                           hint="the model needs more stack than the emulated part reserves")
    return m.keys.get("stack_bytes", 0)
