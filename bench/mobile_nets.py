"""Third-party mobile nets on a Cortex-M4: instructions per MAC against issue 12's 2.0 goal.

Each model of bench.mobile_zoo (MobileNetV2/V3, MnasNet, GhostNet, PP-LCNet, TinyNet, SqueezeNet,
MobileNetV4, re-typed from their reference code at MCU sizes) is compiled int8 for `cortex-m4`
through `fuse,quantize-int8` (calibrated on 32 seeded random inputs, as bench.benchmarks does; the
default build's int16-weight allowance), run
under `qemu-system-arm -M mps2-an386 -icount shift=0` with tinyc's bench harness (exact
instructions from the TCG plugin, per layer from the profiled build), and its int8 output is
checked bit-exact: numpy interpreter == host C == QEMU Cortex-M4.

    python -m bench.mobile_nets [--models a,b] [--out docs/mobile_nets.md]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.benchmarks import calibration_data, model_flash

TARGET = "cortex-m4"
GOAL = 2.0                       # issue 12: <= 2.0 instr/MAC on every mobile net that fits 2 MB flash
CHECK_ROWS = 2                   # inputs checked bit-exact interpreter == host == QEMU
COMMAND = "python -m bench.mobile_nets --out docs/mobile_nets.md"


@dataclass
class LayerClass:
    """Layers of one kernel class in one model, summed."""
    name: str
    layers: int = 0
    macs: int = 0
    instructions: int = 0
    worst: str = ""              # the class's most expensive layer: its shape and instr/MAC
    worst_instructions: int = -1

    @property
    def per_mac(self) -> float | None:
        return self.instructions / self.macs if self.macs else None


@dataclass
class Result:
    model: str
    macs: int = 0
    params: int = 0
    instructions: int | None = None
    cycles: int | None = None
    flash_model: int | None = None
    flash_firmware: int | None = None
    arena: int | None = None
    static_ram: int | None = None
    stack: int | None = None
    exact: str = ""              # "yes" / what differed
    seconds: float = 0.0
    classes: list[LayerClass] = field(default_factory=list)   # by instructions, largest first
    error: str | None = None     # the import / compile / run failure, verbatim
    compact: bool = False        # built with --wide-weights 0: the default's int16 weights overflow 2 MB

    @property
    def per_mac(self) -> float | None:
        return self.instructions / self.macs if self.instructions and self.macs else None

    @property
    def fits(self) -> bool | None:
        from bench.mobile_zoo import FLASH_BUDGET
        return None if self.flash_model is None else self.flash_model <= FLASH_BUDGET

    @property
    def ram(self) -> int | None:
        return None if self.arena is None else self.arena + self.static_ram + self.stack


# ---- layer classes -----------------------------------------------------------------------------

def layer_class(op, graph) -> tuple[str, str]:
    """(kernel class, this layer's shape) of a compute op: convolutions by kernel, stride, groups and
    input channels; other ops by kind, with broadcasting called out (the squeeze-excite gate)."""
    consts = {id(c.result) for c in graph.const_ops()}
    weights = [v for v in op.operands if id(v) in consts and len(v.type.shape) >= 2]
    x, y = op.operands[0].type.shape, op.result.type.shape
    act = op.attrs.get("act")
    tail = f" + {act}" if act else ""
    if weights and len(weights[0].type.shape) == 4 and len(x) == 4:
        cout, cin_g, kh, kw = weights[0].type.shape
        groups = op.attrs.get("groups", 1)
        cin = x[1]
        stride = op.attrs.get("stride", [1, 1])[0]
        hw = f"{x[2]}x{x[3]} -> {y[2]}x{y[3]}" if stride > 1 else f"{x[2]}x{x[3]}"
        if groups > 1 and groups == cin and cin_g == 1:
            return f"depthwise {kh}x{kw} s{stride}{tail}", f"{cin} ch @ {hw}"
        if groups > 1:
            return f"grouped {kh}x{kw} s{stride}{tail}", f"{cin}->{cout} g{groups} @ {hw}"
        if kh == kw == 1 and x[2] == x[3] == 1:
            return f"1x1 conv on a 1x1 map (SE / head FC){tail}", f"{cin}->{cout}"
        if cin <= 3:
            return f"first conv {kh}x{kw} s{stride}, {cin} in{tail}", f"{cin}->{cout} @ {hw}"
        odd = "" if cin % 4 == 0 else ", in % 4 != 0"
        return f"{kh}x{kw} conv s{stride}{odd}{tail}", f"{cin}->{cout} @ {hw}"
    if weights:
        return f"fully connected{tail}", f"{x[-1]}->{y[-1]}"
    shapes = [tuple(v.type.shape) for v in op.operands if id(v) not in consts]
    if len(shapes) == 2 and shapes[0] != shapes[1]:
        return f"{op.kind} broadcast", " x ".join("x".join(map(str, s[1:])) for s in shapes)
    return op.kind, "x".join(map(str, y[1:]))


def _classes(graph, layer_instructions: list[int]) -> list[LayerClass]:
    from tinyc.stats import layer_table
    ops = list(graph.compute_ops())
    if len(layer_instructions) != len(ops):
        raise RuntimeError(f"{len(layer_instructions)} layer counts for {len(ops)} layers")
    by: dict[str, LayerClass] = {}
    for op, row, count in zip(ops, layer_table(graph), layer_instructions):
        name, shape = layer_class(op, graph)
        c = by.setdefault(name, LayerClass(name))
        c.layers += 1
        c.macs += row.macs
        c.instructions += count
        if count > c.worst_instructions:
            c.worst_instructions = count
            c.worst = shape + (f", {count / row.macs:.2f} instr/MAC" if row.macs else f", {count:,} instr")
    return sorted(by.values(), key=lambda c: -c.instructions)


# ---- measuring ---------------------------------------------------------------------------------

def quantized_graph(name: str):
    """(fused int8 graph, float model, example input) of a mobile zoo model."""
    from bench import mobile_zoo
    from tinyc.frontend import from_torch
    from tinyc.passes import PassContext
    from tinyc.passmanager import PassManager
    module, example = mobile_zoo.get(name)
    graph = from_torch(module, (example,), name=name)
    graph = PassManager("fuse,quantize-int8").run(graph, PassContext(calib=calibration_data(tuple(example.shape))))
    return graph, module, example


def check_inputs(shape: tuple[int, ...], rows: int = CHECK_ROWS, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, *shape[1:])).astype(np.float32)


def bit_exact(graph, work: Path, qemu_out: Path | None, shape, options: dict | None = None) -> str:
    """'yes' when the int8 outputs of the interpreter, the host C (emit_bundle `options`, those of the
    QEMU bundle) and (with qemu_out, a bundle emitted for cortex-m4) QEMU agree bit for bit on
    CHECK_ROWS seeded inputs, else what differed."""
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.backends.run import run_model
    from tinyc.interpreter import run as interpret
    xs = check_inputs(shape)
    want = np.stack([np.concatenate([o.ravel() for o in interpret(graph, [x[None]])]) for x in xs])
    host_dir = work / "host"
    emit_bundle(graph, host_dir, name="model", target_name="host", **(options or {}))
    host = run_model(host_dir, "host", "model", xs.reshape(len(xs), -1))
    problems = []
    if not np.array_equal(host.view(np.uint32), want.view(np.uint32)):
        problems.append(f"host != interpreter at {int((host != want).sum())} of {want.size} outputs")
    if qemu_out is not None:
        m4 = run_model(qemu_out, TARGET, "model", xs.reshape(len(xs), -1))
        if not np.array_equal(m4.view(np.uint32), host.view(np.uint32)):
            problems.append(f"QEMU != host at {int((m4 != host).sum())} of {host.size} outputs")
    return "; ".join(problems) or "yes"


def measure(name: str, workdir: Path) -> Result:
    from bench import mobile_zoo
    from tinyc.backends.bench import bench_model
    from tinyc.backends.c_emitter import balanced_options, emit_bundle
    from tinyc.backends.target_files import write_target_files
    from tinyc.stats import graph_stats

    t0 = time.perf_counter()
    entry = mobile_zoo.MOBILE[name]
    r = Result(name, entry.macs, entry.params)
    stage = "import + fuse,quantize-int8"
    try:
        graph, _, example = quantized_graph(name)
        r.macs = graph_stats(graph).macs
        stage = "emit C for cortex-m4"
        out = workdir / name / TARGET
        options = balanced_options(graph)
        info = emit_bundle(graph, out, name="model", target_name=TARGET, **options)
        stage = "model flash (arm-none-eabi-gcc -c)"
        r.flash_model = model_flash(out, "model")
        if r.flash_model > mobile_zoo.FLASH_BUDGET and options["wide_weights"]:
            # as `tinyc compile --board` does for a part the default build overflows: int8 weights only
            stage = "emit C for cortex-m4 (--wide-weights 0)"
            options, r.compact = {"wide_weights": 0}, True
            shutil.rmtree(out)
            info = emit_bundle(graph, out, name="model", target_name=TARGET, **options)
            r.flash_model = model_flash(out, "model")
        write_target_files(out, TARGET, "model")
        r.arena = info.arena_size
        stage = "bench under QEMU"
        b = bench_model(out, TARGET, "model")
        r.instructions, r.cycles, r.flash_firmware, r.stack = b.instructions, b.cycles, b.flash, b.stack
        r.static_ram = b.ram - info.arena_size - b.io_buffer_bytes
        r.classes = _classes(graph, b.layer_instructions)
        stage = "bit-exactness check"
        r.exact = bit_exact(graph, workdir / name, out, tuple(example.shape), options)
    except Exception as exc:  # recorded verbatim in the report: the compiler is not patched here
        r.error = f"{stage}: {type(exc).__name__}: {exc}".strip()
        traceback.print_exc(file=sys.stderr)
    r.seconds = time.perf_counter() - t0
    return r


# ---- report ------------------------------------------------------------------------------------

def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _pm(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _class_cell(c: LayerClass, total: int) -> str:
    share = f"{100 * c.instructions / total:.0f} %"
    ratio = f"{c.per_mac:.2f} instr/MAC" if c.per_mac is not None else "no MACs"
    return f"{c.name} ({c.layers}x): {share}, {ratio}; worst {c.worst}"


def summary_table(results: list[Result]) -> list[str]:
    rows = [f"| model | MACs | instructions | instr/MAC | <= {GOAL} | est. cycles (CPI) | model flash B | fits 2 MB "
            "| arena B | RAM B (arena + static + stack) | bit-exact (interp = host = M4) | the 3 largest layer classes "
            "(share of the layers' instructions, instr/MAC; the worst layer of the class) |",
            "|---|---:|---:|---:|:-:|---:|---:|:-:|---:|---:|:-:|---|"]
    for r in results:
        if r.error:
            rows.append(f"| {r.model} | {r.macs:,} | failed | - | - | - | {_n(r.flash_model)} | - | {_n(r.arena)} | - | - "
                        f"| `{r.error.splitlines()[0][:300]}` |")
            continue
        ok = "yes" if r.per_mac <= GOAL else "**no**"
        fits = {True: "yes", False: "**no**", None: "-"}[r.fits]
        total = sum(c.instructions for c in r.classes)
        top = "<br>".join(_class_cell(c, total) for c in r.classes[:3])
        cyc = f"{r.cycles:,} ({r.cycles / r.instructions:.2f})" if r.cycles else "-"
        rows.append(f"| {r.model} | {r.macs:,} | {r.instructions:,} | {r.per_mac:.2f} | {ok} | {cyc} | "
                    f"{r.flash_model:,}{' †' if r.compact else ''} | {fits} | {r.arena:,} | {r.ram:,} | {r.exact} | {top} |")
    return rows


def models_table(results: list[Result]) -> list[str]:
    from bench.mobile_zoo import MOBILE
    rows = ["| model | architecture (source) | input | what was chosen for the MCU | params (BN folded) |",
            "|---|---|---|---|---:|"]
    for e in (MOBILE[r.model] for r in results if r.model in MOBILE):
        rows.append(f"| {e.name} | {e.family} ({e.source}) | {'x'.join(map(str, e.input_shape[1:]))} | "
                    f"{e.description} | {e.params:,} |")
    return rows


def excess_table(results: list[Result]) -> list[str]:
    """Layer classes over all measured models that fit: their instructions beyond GOAL per MAC
    (ops without MACs count whole), largest first: what to write kernels for next."""
    agg: dict[str, list] = defaultdict(lambda: [0, 0, 0, set()])   # instructions, macs, excess, models
    for r in results:
        if r.error or not r.fits:
            continue
        for c in r.classes:
            a = agg[c.name]
            a[0] += c.instructions
            a[1] += c.macs
            a[2] += c.instructions - GOAL * c.macs
            a[3].add(r.model)
    total = sum(a[0] for a in agg.values()) or 1
    rows = [f"| layer class | models | instructions (all models) | share | MACs | instr/MAC | instructions above {GOAL}/MAC |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, (ins, macs, excess, models) in sorted(agg.items(), key=lambda kv: -kv[1][2]):
        if excess <= 0:
            continue
        rows.append(f"| {name} | {len(models)} | {ins:,} | {100 * ins / total:.1f} % | {macs:,} | "
                    f"{_pm(ins / macs if macs else None)} | {int(excess):,} |")
    return rows


def revision() -> str:
    """The commit measured (short hash, '+ uncommitted compiler edits' when compiler/, passes/, backends/
    or runtime_c/ differ from it), or '' outside a git checkout."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "compiler", "passes", "backends", "runtime_c"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + (" + uncommitted compiler edits" if dirty else "")


def render(results: list[Result], rev: str = "") -> str:
    fitting = [r for r in results if not r.error and r.fits]
    met = [r for r in fitting if r.per_mac <= GOAL]
    failed = [r for r in results if r.error]
    verdict = (f"**{len(met)} of {len(fitting)}** measured models that fit 2 MB of flash are at or below "
               f"{GOAL} instr/MAC" + (f"; {len(failed)} failed to compile or run (see the table)" if failed else "") + ".")
    if fitting:
        lo, hi = min(r.per_mac for r in fitting), max(r.per_mac for r in fitting)
        verdict += f" Range: {lo:.2f}–{hi:.2f} instr/MAC."
    head = [
        "# Third-party mobile nets on a Cortex-M4",
        "",
        f"Regenerate with `{COMMAND}`. Generated by tinyc; do not edit by hand."
        + (f" Measured at tinyc {rev}." if rev else ""),
        "",
        f"Issue 12 asks for **<= {GOAL} instructions per MAC on every third-party mobile net that fits a "
        "2 MB-flash MCU**. The architectures below are bench/mobile_zoo.py's re-typings of torchvision / timm / "
        "PaddleClas / CV-Backbones reference code (block structure, expansion ratios, squeeze-excite placement and "
        "reduction, activations, kernel sizes, strides, `_make_divisible` channel rounding) at MCU widths and "
        "resolutions, with seeded random weights and non-trivial batch-norm statistics. Each is compiled int8 for "
        "`cortex-m4` (`-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -O2`) through `fuse,quantize-int8`, "
        "calibrated on 32 seeded random inputs, as `tinyc compile`'s default build (int16 weight forms, "
        "Winograd or wide GEMM pairs, in at most half the int8 weight bytes more flash; † where that build's "
        "model flash would exceed 2 MB, with `--wide-weights 0` instead, as `tinyc compile --board` does for a "
        "2 MB part), and run under `qemu-system-arm -M mps2-an386 -icount shift=0`. "
        "*Instructions* are exact guest instructions of one inference after a warm-up (tinyc's TCG plugin), the "
        "float input quantization and output dequantization included; *MACs* are conv and linear "
        "multiply-accumulates. *Model flash* is text + data of the model's object file (weights, kernels, invoke; "
        "no harness or libc) and *fits 2 MB* compares it with 2,097,152 B. *Est. cycles* use the Cortex-M4 TRM "
        "cost model of docs/cycles.md (zero-wait-state memory). *Bit-exact*: the int8 outputs of tinyc's numpy "
        "interpreter, the host C build and the QEMU Cortex-M4 build agree bit for bit on "
        f"{CHECK_ROWS} seeded inputs. Layer classes come from the profiled build's per-layer counts (their sum "
        "is within about 1 % of the whole invoke); a class is the kernel a layer runs (convolutions by kernel, "
        "stride, groups and input channels, the fused activation after `+`; other ops by kind), *share* is its "
        "part of all layers' instructions.",
        "",
        verdict,
        "",
    ]
    body = ["## Results", ""] + summary_table(results)
    body += ["", "## Where the instructions above the goal go", "",
             f"Over the models that fit, each layer class's instructions beyond {GOAL} per MAC (ops without MACs — "
             "table activations, the squeeze-excite gate multiply, pools, residual adds — count whole), largest "
             "first: the kernels to write next.", ""] + excess_table(results)
    body += ["", "## The models", ""] + models_table(results)
    return "\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bench import mobile_zoo
    ap = argparse.ArgumentParser(prog="python -m bench.mobile_nets", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(mobile_zoo.names()), help="comma-separated mobile_zoo names")
    ap.add_argument("--out", type=Path, help="write the markdown report here (default: print it)")
    ap.add_argument("--revision", help="the tinyc commit measured, for the report (default: git rev-parse HEAD)")
    a = ap.parse_args(argv)
    names = a.models.split(",")
    unknown = [n for n in names if n not in mobile_zoo.MOBILE]
    if unknown:
        ap.error(f"unknown models {', '.join(unknown)}; known: {', '.join(mobile_zoo.names())}")
    results = []
    with tempfile.TemporaryDirectory(prefix="tinyc-mobile-") as tmp:
        for name in names:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            r = measure(name, Path(tmp))
            if r.error:
                print(f"  FAILED: {r.error}", file=sys.stderr, flush=True)
            else:
                print(f"  {r.instructions:,} instructions ({r.per_mac:.2f}/MAC), model flash {r.flash_model:,}, "
                      f"arena {r.arena:,}, bit-exact {r.exact}, {r.seconds:.0f} s", file=sys.stderr, flush=True)
            results.append(r)
    text = render(results, a.revision if a.revision is not None else revision())
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        print(f"wrote {a.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
