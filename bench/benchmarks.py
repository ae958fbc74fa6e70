"""`make bench`: the MLPerf Tiny reference architectures compiled for a Cortex-M4, int8 and float32,
measured under QEMU and compared with TFLite Micro + CMSIS-NN, and the recurrent and attention zoo
models (GRU keyword spotter, LSTM activity recognizer, transformer encoder), which the baseline file
has no figures for. Writes docs/benchmarks.md.

    python -m bench.benchmarks --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TARGET = "cortex-m4"
COMMAND = "make bench   (python -m bench.benchmarks --out docs/benchmarks.md)"


@dataclass(frozen=True)
class Baseline:
    """TFLite Micro + CMSIS-NN on the same QEMU mps2-an386, from shared/baselines/tflm-cmsis-nn-cortex-m4.md."""

    title: str
    macs: int
    instructions: int
    reference_kernels: int
    arena: int
    stack: int
    library_flash: int
    flatbuffer: int
    cycles: int     # the file's TRM-model estimate (zero-wait-state memory), the model tinyc's cycles use




# The "toward the Cortex-M4 limit" targets against TFLM + CMSIS-NN: (instructions, RAM, est. cycles) ratios.
TARGETS = {"ds_cnn": (0.40, 0.5, 0.45), "resnet8": (0.40, 0.75, 0.45), "mobilenet_v1_025": (0.40, 0.5, 0.45),
           "fc_autoencoder": (0.60, 1.0, 0.65)}

BASELINES = {
    "ds_cnn": Baseline("DS-CNN keyword spotting (1x49x10)", 2_656_768, 7_699_893, 43_042_472, 22_820, 1_176, 76_369, 53_940, 9_205_767),
    "resnet8": Baseline("ResNet-8 image classification (3x32x32)", 12_501_632, 29_863_353, 107_404_888, 54_996, 1_176, 71_131, 98_500, 36_467_873),
    "mobilenet_v1_025": Baseline("MobileNetV1-0.25 visual wake words (3x96x96)", 7_489_664, 24_101_963, 100_250_554, 100_708, 1_176, 76_369, 333_292, 29_123_205),
    "fc_autoencoder": Baseline("FC autoencoder anomaly detection (640)", 264_192, 582_945, 1_952_293, 2_580, 680, 26_587, 276_980, 724_960),
}


# Models beyond convnets: measured the same way; the baseline file has no TFLM figures for them.
# name -> (title, time steps: per-step figures divide by it)
SEQUENCE_MODELS = {
    "gru_kws": ("GRU keyword spotting (49 frames x 10 MFCC)", 49),
    "lstm_imu": ("LSTM activity recognition (32 steps x 6 IMU axes)", 32),
    "transformer_encoder": ("transformer encoder layer (16 tokens x 64)", 16),
}


@dataclass
class Result:
    model: str
    precision: str
    macs: int
    instructions: int
    flash_firmware: int
    flash_model: int
    arena: int
    static_ram: int
    stack: int
    compile_seconds: float
    layers: list[dict] = field(default_factory=list)
    cycles: int | None = None           # estimated Cortex-M4 cycles (backends/cycles.py, docs/cycles.md)

    @property
    def per_mac(self) -> float:
        return self.instructions / self.macs

    def without_float_io(self, key: str) -> int | None:
        """The whole count less the layers that convert the float input and output (TFLM's int8 invoke starts
        from int8 input in its tensor and ends with the int8 output), or None without per-layer figures."""
        total = self.instructions if key == "instructions" else self.cycles
        edge = [layer[key] for layer in self.layers if layer.get("float_io")]
        if total is None or any(v is None for v in edge):
            return None
        return total - sum(edge)


def calibration_data(shape: tuple[int, ...], rows: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, *shape[1:])).astype(np.float32)


def model_flash(out: Path, name: str) -> int:
    """text + data of the model's own object (weights, kernels, invoke), without harness or libc."""
    from tinyc.backends.build_flags import compile_flags
    from tinyc.backends.targets import get_target

    target = get_target(TARGET)
    cflags, _, _ = compile_flags(target)
    obj = out / f"{name}.o"
    subprocess.run([target.cc, *cflags, "-I", str(out), "-c", str(out / f"{name}.c"), "-o", str(obj)], check=True)
    size = subprocess.run([target.size_tool, str(obj)], capture_output=True, text=True, check=True).stdout
    text, data, _bss = (int(v) for v in size.splitlines()[1].split()[:3])
    return text + data


# "int8" is `tinyc compile --calib`'s default build: int16 weight forms (Winograd, wide GEMM pairs) in at
# most half the int8 weight bytes more flash (c_emitter.balanced_allowance). For the conv nets also the
# smallest build (`--wide-weights 0`, int8 weights only) and every layer that can (`--wide-weights all`).
WIDE = "int8 wide"
COMPACT = "int8 compact"
WIDE_MODELS = ("ds_cnn", "resnet8", "mobilenet_v1_025")


def _label(r: Result) -> str:
    return r.model if r.precision == "int8" else f"{r.model} ({r.precision})"


def _int8(precision: str) -> bool:
    return precision in ("int8", WIDE, COMPACT)


def _allowance(graph, precision: str) -> dict:
    from tinyc.backends.c_emitter import balanced_options
    if precision == WIDE:
        return {"wide_weights": -1}
    if precision == "int8":
        return balanced_options(graph)
    return {"wide_weights": 0}


def measure(model: str, precision: str, workdir: Path) -> Result:
    from bench import zoo
    from tinyc.backends.bench import bench_model
    from tinyc.backends.build import build
    from tinyc.backends.target_files import write_target_files
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.frontend import from_torch
    from tinyc.passes import PassContext
    from tinyc.passmanager import PassManager
    from tinyc.stats import graph_stats

    t0 = time.perf_counter()
    module, example = zoo.get(model)
    graph = from_torch(module, (example,), name=model)
    pipeline = "fuse,quantize-int8" if _int8(precision) else "fuse"
    graph = PassManager(pipeline).run(graph, PassContext(calib=calibration_data(tuple(example.shape))))
    out = workdir / f"{model}-{precision.replace(' ', '-')}"
    info = emit_bundle(graph, out, name="model", target_name=TARGET, **_allowance(graph, precision))
    write_target_files(out, TARGET, "model")
    build(out, TARGET, "model", "run")
    seconds = time.perf_counter() - t0
    bench = bench_model(out, TARGET, "model")
    static = bench.ram - info.arena_size - bench.io_buffer_bytes
    layer_cycles = bench.layer_cycles or [None] * len(bench.layer_instructions)
    layers = [{"name": op.result.name, "kind": op.kind, "macs": row.macs, "instructions": count, "cycles": cyc,
               "float_io": _float_io(graph, op)}
              for op, row, count, cyc in zip(graph.compute_ops(), _layer_rows(graph), bench.layer_instructions,
                                             layer_cycles)]
    return Result(model, precision, graph_stats(graph).macs, bench.instructions, bench.flash,
                  model_flash(out, "model"), info.arena_size, static, bench.stack, seconds, layers, bench.cycles)


def _float_io(graph, op) -> bool:
    """A layer that only converts between the float32 interface and int8: its operand is a float graph input
    and its result int8, or its result is a float graph output computed from one int8 operand."""
    inputs, outputs = {id(v) for v in graph.inputs}, {id(v) for v in graph.outputs}
    if len(op.operands) != 1:
        return False
    (x,) = op.operands
    src, dst = str(x.type.dtype), str(op.result.type.dtype)
    return (id(x) in inputs and src == "f32" and dst == "i8") or (id(op.result) in outputs and src == "i8" and dst == "f32")


def _cycles(r: Result) -> str:
    return f"{r.cycles:,} ({r.cycles / r.instructions:.2f})" if r.cycles else "-"


def _layer_rows(graph):
    from tinyc.stats import layer_table
    return layer_table(graph)


# ---- report -----------------------------------------------------------------------

def fmt_m(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def verdict(ours: int, theirs: int, precision: str) -> str:
    """Ratio to TFLM's int8 figure; the check mark only judges like against like (int8)."""
    mark = (" ✔" if ours <= theirs else " ✘") if _int8(precision) else ""
    return f"{ours / theirs:.2f}x{mark}"


def _ratio(ours: int | None, theirs: int) -> str:
    return "-" if ours is None else f"{ours / theirs:.2f}x"


def summary_table(results: list[Result]) -> list[str]:
    rows = ["| model | precision | MACs | instructions | instr/MAC | vs TFLM+CMSIS-NN | est. cycles (CPI) | cycles vs TFLM "
            "| int8 invoke: instr, cycles vs TFLM | arena B (TFLM) | static B | stack B "
            "| model flash B (TFLM lib + flatbuffer) | firmware flash B | compile s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.model not in BASELINES:
            continue
        b = BASELINES[r.model]
        int8 = _int8(r.precision)
        core = (f"{_ratio(r.without_float_io('instructions'), b.instructions)}, "
                f"{_ratio(r.without_float_io('cycles'), b.cycles)}") if int8 else "-"
        rows.append(
            f"| {r.model} | {r.precision} | {r.macs:,} | {r.instructions:,} | {r.per_mac:.2f} | "
            f"{verdict(r.instructions, b.instructions, r.precision)} | {_cycles(r)} | "
            f"{_ratio(r.cycles, b.cycles) if int8 else '-'} | {core} | {r.arena:,} ({b.arena:,}) | "
            f"{r.static_ram:,} | {r.stack:,} | "
            f"{r.flash_model:,} ({b.library_flash + b.flatbuffer:,}) | {r.flash_firmware:,} | {r.compile_seconds:.1f} |")
    return rows


def goals(results: list[Result]) -> list[str]:
    int8 = [r for r in results if _int8(r.precision) and r.model in BASELINES]
    if not int8:
        return ["No int8 results: the goals below compare int8 builds."]
    lines = []
    for r in int8:
        b = BASELINES[r.model]
        checks = [("instructions", r.instructions, b.instructions), ("arena", r.arena, b.arena),
                  ("model flash", r.flash_model, b.library_flash + b.flatbuffer)]
        failed = [f"{what} {ours:,} > {theirs:,}" for what, ours, theirs in checks if ours > theirs]
        lines.append(f"- {_label(r)}: " + ("all three goals met" if not failed else "NOT met: " + "; ".join(failed)))
    for r in int8:
        b = BASELINES[r.model]
        ours, theirs = r.arena + r.static_ram + r.stack, b.arena + b.stack
        lines.append(f"- {_label(r)}: RAM (arena + static + stack) {ours:,} B against TFLM's arena + stack {theirs:,} B: "
                     f"{ours / theirs:.2f}x")
    for r in int8:
        b = BASELINES[r.model]
        want_i, want_ram, want_c = TARGETS[r.model]
        ram = (r.arena + r.static_ram + r.stack) / (b.arena + b.stack)
        checks = [("instructions", r.instructions / b.instructions, want_i),
                  ("est. cycles", None if r.cycles is None else r.cycles / b.cycles, want_c)]
        core_i, core_c = r.without_float_io("instructions"), r.without_float_io("cycles")
        checks += [("int8 invoke instructions", None if core_i is None else core_i / b.instructions, want_i),
                   ("int8 invoke est. cycles", None if core_c is None else core_c / b.cycles, want_c),
                   ("RAM", ram, want_ram)]
        verdicts = [f"{what} {'-' if ratio is None else f'{ratio:.3f}x'} (target <= {want:.2f}x: "
                    f"{'not measured' if ratio is None else 'met' if ratio <= want else 'NOT met'})"
                    for what, ratio, want in checks]
        lines.append(f"- {_label(r)}, toward the M4 limit: " + "; ".join(verdicts))
    plain = [r for r in int8 if r.precision == "int8"]
    lower = sum(r.instructions < BASELINES[r.model].instructions for r in plain)
    lines.append(f"- instructions lower than TFLM+CMSIS-NN on {lower} of {len(plain)} models (goal: at most on each, lower on at least two)")
    return lines


def sequence_table(results: list[Result]) -> list[str]:
    rows = ["| model | precision | MACs | instructions | instr/MAC | instr/step | CMSIS-NN LSTM instr/step "
            "| arena B | static B | stack B | model flash B | compile s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.model not in SEQUENCE_MODELS:
            continue
        title, steps = SEQUENCE_MODELS[r.model]
        ref = CMSIS_NN_LSTM_PER_STEP.get(r.model)
        ref_text = f"{ref[0]:,}" if ref and r.precision == "int8" else "-"
        rows.append(f"| {r.model}: {title} | {r.precision} | {r.macs:,} | {r.instructions:,} | {r.per_mac:.2f} | "
                    f"{r.instructions // steps:,} | {ref_text} | {r.arena:,} | {r.static_ram:,} | {r.stack:,} | {r.flash_model:,} | "
                    f"{r.compile_seconds:.1f} |")
    return rows if len(rows) > 2 else []


def layer_tables(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        if r.precision != "int8":
            continue
        lines += ["", f"### {r.model} (int8)", "", "| # | layer | op | MACs | instructions | instr/MAC | est. cycles | "
                  "cycles/MAC |", "|---:|---|---|---:|---:|---:|---:|---:|"]
        for i, layer in enumerate(r.layers):
            count, cyc = layer["instructions"], layer.get("cycles")
            ratio = f"{count / layer['macs']:.2f}" if layer["macs"] and count is not None else ""
            cratio = f"{cyc / layer['macs']:.2f}" if layer["macs"] and cyc is not None else ""
            lines.append(f"| {i} | {layer['name']} | {layer['kind']} | {layer['macs']:,} | "
                         f"{count if count is None else format(count, ',')} | {ratio} | "
                         f"{'' if cyc is None else format(cyc, ',')} | {cratio} |")
    return lines


# TFLite Micro's int8 LSTM on Cortex-M4 is CMSIS-NN's arm_lstm_unidirectional_s8 (int16 cell state).
# Measured once beside the project (not built by it): CMSIS-NN commit 99f736a6 (v7.0.0-43), -O2
# -mcpu=cortex-m4 with the DSP path, the same QEMU, start-up code and instruction counter as tinyc;
# per step = (count for T steps - count for 1 step) / (T - 1); no TFLM interpreter overhead counted.
# model -> (instructions per step, the shape measured)
CMSIS_NN_LSTM_PER_STEP = {"lstm_imu": (29_475, "input 6, hidden 32, 32 steps")}

SEQUENCE_NOTE = (
    "Same build, emulator and counting as above. *instr/step* divides by the time steps (frames, IMU samples, "
    "tokens). `shared/baselines/tflm-cmsis-nn-cortex-m4.md` has no recurrent or attention figures. For the LSTM, "
    "TFLite Micro's int8 kernel is CMSIS-NN's `arm_lstm_unidirectional_s8` (int16 cell state); measured beside "
    "the project on the same emulator and counter (CMSIS-NN commit 99f736a6, -O2, DSP path, per step = "
    "(T-step count - 1-step count) / (T - 1), no TFLM interpreter overhead), it needs **29,475 instructions per "
    "step** for lstm_imu's shape (input 6, hidden 32) and 74,669 for a GRU-KWS-sized LSTM (input 10, hidden 64); "
    "the *CMSIS-NN LSTM instr/step* column repeats that figure (tinyc's *instr/step* divides the whole model, input quantization and linear head included, so it slightly overstates tinyc's LSTM per step). TFLite Micro has no GRU kernel (a GRU converts to "
    "many elementwise ops), so there is no GRU comparison.")


def render(results: list[Result], shapes: str | None = None) -> str:
    head = [
        "# Benchmarks: MLPerf Tiny architectures on a Cortex-M4",
        "",
        f"Regenerate with `{COMMAND}`. Generated by tinyc; do not edit by hand.",
        "",
        "Each model is compiled for `cortex-m4` (`-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -O2`) and run under "
        "`qemu-system-arm -M mps2-an386 -icount shift=0`. *Instructions* are exact guest instructions for one inference "
        "after a warm-up call (counted by tinyc's TCG plugin). The architectures are tinyc's zoo versions of the MLPerf Tiny "
        "reference models with seeded random weights; int8 uses `fuse,quantize-int8` calibrated on 32 random inputs. "
        "*Model flash* is text+data of the model's object file (weights, kernels and invoke, no harness or libc); "
        "*firmware flash* is the whole run image. RAM = arena + static + stack high-water mark. The TFLM figures are "
        "from `shared/baselines/tflm-cmsis-nn-cortex-m4.md` (TFLite Micro with CMSIS-NN kernels, same emulator and counting); "
        "they are int8 figures, so float32 rows show the ratio for scale only. tinyc's int8 counts include quantizing the "
        "float input and dequantizing the output, which TFLM's int8 invoke does not do. *Est. cycles* are Cortex-M4 "
        "cycles estimated from the executed instruction classes with the TRM's timings, zero-wait-state memory "
        "(docs/cycles.md: the cost model, its assumptions and how flash wait states change it); CPI in brackets. "
        "*Cycles vs TFLM* divides by the baseline file's estimate for TFLM + CMSIS-NN from the same TRM model "
        "(its runs start from int8 input in the tensor and include softmax). *int8 invoke* is the like-for-like "
        "figure: tinyc's count less the layers that convert the float input to int8 and the output to float "
        "(measured per layer in the same run), against TFLM's int8 invoke. The *int8* rows are `tinyc compile`'s "
        "default build: int16 weight forms in at most half the int8 weight bytes more flash, on the layers that "
        "save at least 8 instructions per added byte (3x3 stride-1 convs as Winograd F(2x2, 3x3), 16 int16 "
        "weights per 9; other dense convs as the int16 pairs the GEMM multiplies, twice their weight flash). "
        "*int8 compact* rows are the smallest build (`--wide-weights 0`: int8 weights only, the direct kernels); "
        "*int8 wide* rows take every layer that can (`--wide-weights all`).",
        "",
    ]
    body = summary_table(results) + ["", "## Goals (int8 against TFLite Micro + CMSIS-NN)", ""] + goals(results)
    sequence = sequence_table(results)
    if sequence:
        body += ["", "## Recurrent and attention models", "", SEQUENCE_NOTE, ""] + sequence
    if shapes:
        body += ["", shapes.rstrip("\n")]
    body += ["", "## Per layer"] + layer_tables(results)
    return "\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--models", default=",".join([*BASELINES, *SEQUENCE_MODELS]), help="comma-separated zoo names")
    parser.add_argument("--precisions", default=f"int8,{COMPACT},{WIDE},float32",
                        help=f"'{COMPACT}' (--wide-weights 0) and '{WIDE}' (--wide-weights all) are measured for "
                             f"{', '.join(WIDE_MODELS)} only")
    parser.add_argument("--no-shapes", action="store_true", help="leave out the per-shape kernel table (bench.kernel_shapes)")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="tinyc-bench-") as tmp:
        for model in args.models.split(","):
            for precision in args.precisions.split(","):
                if precision in (WIDE, COMPACT) and model not in WIDE_MODELS:
                    continue
                print(f"benchmarking {model} {precision} ...", file=sys.stderr, flush=True)
                r = measure(model, precision, Path(tmp))
                print(f"  {r.instructions:,} instructions ({r.per_mac:.2f}/MAC), arena {r.arena:,}, "
                      f"model flash {r.flash_model:,}", file=sys.stderr)
                results.append(r)
    shapes = None
    if not args.no_shapes:
        from bench.kernel_shapes import markdown_section
        print("measuring the per-shape kernel table ...", file=sys.stderr, flush=True)
        shapes = markdown_section()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, shapes))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
