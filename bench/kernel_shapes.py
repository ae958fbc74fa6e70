"""Per-shape int8 kernel table (issue 12): instructions per MAC of each kernel class and shape on a Cortex-M4.

Each shape class is a tiny seeded PyTorch model of one layer (or a layer with its epilogue: an
activation, a residual add, a squeeze-excite gate) at a feature-map size typical of MLPerf Tiny
and mobile nets. It is compiled int8 for `cortex-m4` through `fuse,quantize-int8` (calibrated on
32 seeded random inputs), run under QEMU `-icount shift=0` with tinyc's bench harness in its
profiled build, and the exact instructions and estimated cycles (backends/cycles.py) of its layers
are set against its MACs. The float input quantization and output dequantization (the int8
boundary) are left out of the kernel's figures. 0.75 instr/MAC is issue 12's target for a dense
int8 kernel on the M4 (SMLAD: 0.5 is the ceiling).

    python -m bench.kernel_shapes [--out FILE] [--classes name,name] [--jobs N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

TARGET = "cortex-m4"
GOAL = 0.75          # instr/MAC a dense int8 kernel can approach on the M4 (issue 12)
CALIB_ROWS = 32
COMMAND = "python -m bench.kernel_shapes --out FILE"


@dataclass(frozen=True)
class ShapeClass:
    name: str                       # a short id (command line, tests)
    kernel: str                     # the kernel class it stands for
    shape: str                      # what the layer is: input -> output, kernel, stride
    input_shape: tuple[int, ...]    # batch included
    build: Callable[[], object]     # -> torch module in eval mode (seeded by the caller)
    macs: int                       # analytic MACs of the layer(s)
    wide: bool = False              # compiled with --wide-weights all (weights as int16 pairs), no Winograd
    winograd: bool = False          # compiled with --wide-weights all: Winograd F(2x2, 3x3) (instr per direct MAC)


def _conv_macs(cin: int, cout: int, k: tuple[int, int], out_hw: tuple[int, int], groups: int = 1) -> int:
    return cout * out_hw[0] * out_hw[1] * (cin // groups) * k[0] * k[1]


def _out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


# ---- the shape classes -----------------------------------------------------------------------

def _nn():
    import torch.nn as nn
    return nn


def _conv(cin, cout, k, stride=1, pad=0, groups=1, act=None):
    def build():
        nn = _nn()
        layers = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups)]
        if act is not None:
            layers.append(act())
        return nn.Sequential(*layers)
    return build


def _linear(n_in, n_out, act=None):
    def build():
        nn = _nn()
        return nn.Sequential(nn.Linear(n_in, n_out), *([act()] if act is not None else []))
    return build


def _ds_cnn_first():
    """DS-CNN's first layer as the zoo builds it (an asymmetric zero pad before the conv)."""
    from bench.zoo import conv_same
    nn = _nn()
    return nn.Sequential(conv_same(1, 64, (10, 4), 2, (49, 10)), nn.ReLU())


def _residual(c):
    def build():
        import torch
        nn = _nn()

        class Residual(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(c, c, 1)

            def forward(self, x):
                return torch.relu(self.conv(x) + x)
        return Residual()
    return build


def _squeeze_excite(c, squeezed):
    def build():
        nn = _nn()

        class SqueezeExcite(nn.Module):
            def __init__(self):
                super().__init__()
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.fc1 = nn.Conv2d(c, squeezed, 1)
                self.fc2 = nn.Conv2d(squeezed, c, 1)
                self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

            def forward(self, x):
                return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return SqueezeExcite()
    return build


def _pw(name, cin, cout, hw):
    return ShapeClass(name, "1x1 conv", f"{cin}->{cout} @ {hw[0]}x{hw[1]}", (1, cin, *hw),
                      _conv(cin, cout, 1, act=lambda: _nn().ReLU()), _conv_macs(cin, cout, (1, 1), hw))


def _dw(name, c, k, stride, hw):
    o = (_out(hw[0], k, stride, k // 2), _out(hw[1], k, stride, k // 2))
    return ShapeClass(name, f"depthwise {k}x{k} s{stride}", f"{c} ch @ {hw[0]}x{hw[1]} -> {o[0]}x{o[1]}",
                      (1, c, *hw), _conv(c, c, k, stride, k // 2, groups=c, act=lambda: _nn().ReLU()),
                      _conv_macs(c, c, (k, k), o, groups=c))


def shape_classes() -> list[ShapeClass]:
    """The shape classes, in table order."""
    def hswish():
        return _nn().Hardswish()

    def relu():
        return _nn().ReLU()

    ds_first = (25, 5)                                   # DS-CNN's first layer, TF 'same' padding
    mb_first = (_out(64, 3, 2, 1), _out(64, 3, 2, 1))
    return [
        _pw("pw_64_64", 64, 64, (25, 5)),
        ShapeClass("pw_64_64_wide", "1x1 conv, wide weights", "64->64 @ 25x5", (1, 64, 25, 5),
                   _conv(64, 64, 1, act=lambda: _nn().ReLU()),
                   _conv_macs(64, 64, (1, 1), (25, 5)), wide=True),
        _pw("pw_16_16", 16, 16, (32, 32)),
        _pw("pw_8_24", 8, 24, (32, 32)),
        _pw("pw_6_10", 6, 10, (32, 32)),
        ShapeClass("conv3x3_32_32", "3x3 dense conv", "32->32 @ 16x16, pad 1", (1, 32, 16, 16),
                   _conv(32, 32, 3, 1, 1, act=relu), _conv_macs(32, 32, (3, 3), (16, 16))),
        ShapeClass("conv3x3_32_32_wide", "3x3 dense conv, wide weights", "32->32 @ 16x16, pad 1", (1, 32, 16, 16),
                   _conv(32, 32, 3, 1, 1, act=relu), _conv_macs(32, 32, (3, 3), (16, 16)), wide=True),
        ShapeClass("conv3x3_32_32_wino", "3x3 dense conv, Winograd", "32->32 @ 16x16, pad 1", (1, 32, 16, 16),
                   _conv(32, 32, 3, 1, 1, act=relu), _conv_macs(32, 32, (3, 3), (16, 16)), winograd=True),
        ShapeClass("conv3x3_16_16_wino", "3x3 dense conv, Winograd", "16->16 @ 32x32, pad 1", (1, 16, 32, 32),
                   _conv(16, 16, 3, 1, 1, act=relu), _conv_macs(16, 16, (3, 3), (32, 32)), winograd=True),
        ShapeClass("conv3x3_s2_16_32", "3x3 dense conv s2", "16->32 @ 32x32 -> 16x16, pad 1", (1, 16, 32, 32),
                   _conv(16, 32, 3, 2, 1, act=relu), _conv_macs(16, 32, (3, 3), (16, 16))),
        ShapeClass("first_10x4_s2", "first layer, 1 input channel",
                   f"1->64 10x4 s2 'same' @ 49x10 -> {ds_first[0]}x{ds_first[1]}", (1, 1, 49, 10), _ds_cnn_first,
                   _conv_macs(1, 64, (10, 4), ds_first)),
        ShapeClass("first_3x3_c3_s2", "first layer, 3 input channels", f"3->16 3x3 s2 @ 64x64 -> {mb_first[0]}x{mb_first[1]}",
                   (1, 3, 64, 64), _conv(3, 16, 3, 2, 1, act=relu), _conv_macs(3, 16, (3, 3), mb_first)),
        _dw("dw3_s1", 64, 3, 1, (25, 5)),
        _dw("dw3_s2", 32, 3, 2, (32, 32)),
        _dw("dw5_s1", 32, 5, 1, (16, 16)),
        _dw("dw5_s2", 32, 5, 2, (32, 32)),
        ShapeClass("fc_640_128", "fully connected, batch 1", "640->128", (1, 640), _linear(640, 128, relu),
                   640 * 128),
        ShapeClass("fc_128_10", "fully connected, batch 1", "128->10", (1, 128), _linear(128, 10), 128 * 10),
        ShapeClass("se_64", "squeeze-excite", "64 ch @ 16x16, squeeze 16: pool, FC, relu, FC, hardsigmoid, x",
                   (1, 64, 16, 16), _squeeze_excite(64, 16), 64 * 16 * 2),
        ShapeClass("pw_hswish", "1x1 conv + hardswish", "32->32 @ 16x16", (1, 32, 16, 16),
                   _conv(32, 32, 1, act=hswish), _conv_macs(32, 32, (1, 1), (16, 16))),
        ShapeClass("pw_silu", "1x1 conv + SiLU", "32->32 @ 16x16", (1, 32, 16, 16),
                   _conv(32, 32, 1, act=lambda: _nn().SiLU()), _conv_macs(32, 32, (1, 1), (16, 16))),
        ShapeClass("pw_residual", "1x1 conv + residual add", "32->32 @ 16x16, relu(conv(x) + x)", (1, 32, 16, 16),
                   _residual(32), _conv_macs(32, 32, (1, 1), (16, 16))),
    ]


# ---- measuring ---------------------------------------------------------------------------------

@dataclass
class Layer:
    name: str
    kind: str
    macs: int
    instructions: int
    cycles: int | None
    outputs: int                    # elements of its result
    fused: bool = False             # a table activation the previous layer's kernel applies (no code of its own)


@dataclass
class Row:
    cls: ShapeClass
    layers: list[Layer]             # the kernel's layers (the int8 boundary left out)
    boundary_instructions: int      # input quantize + output dequantize

    @property
    def macs(self) -> int:
        return sum(lay.macs for lay in self.layers)

    @property
    def instructions(self) -> int:
        return sum(lay.instructions for lay in self.layers)

    @property
    def cycles(self) -> int | None:
        cyc = [lay.cycles for lay in self.layers]
        return None if any(c is None for c in cyc) else sum(cyc)

    @property
    def outputs(self) -> int:
        """Elements of the row's result (its last layer's)."""
        return self.layers[-1].outputs

    @property
    def per_mac(self) -> float:
        return self.instructions / self.macs

    @property
    def cycles_per_mac(self) -> float | None:
        return None if self.cycles is None else self.cycles / self.macs


def _is_boundary(op) -> bool:
    """The float <-> int8 edge (quantize, dequantize): its result dtype differs from its operand's
    while one side is float."""
    a, r = op.operands[0].type.dtype, op.result.type.dtype
    return a != r and "f32" in (a, r)


def graph_of(cls: ShapeClass):
    """The fused, int8-quantized graph of a shape class and its calibration rows."""
    import torch
    from tinyc.frontend import from_torch
    from tinyc.passes import PassContext
    from tinyc.passmanager import PassManager
    torch.manual_seed(0)
    module = cls.build().eval()
    graph = from_torch(module, (torch.zeros(cls.input_shape),), name=cls.name)
    calib = np.random.default_rng(0).standard_normal((CALIB_ROWS, *cls.input_shape[1:])).astype(np.float32)
    return PassManager("fuse,quantize-int8").run(graph, PassContext(calib=calib))


def measure(cls: ShapeClass, work: Path) -> Row:
    from tinyc.backends.bench import bench_model
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.backends.target_files import write_target_files
    from tinyc.stats import layer_table

    graph = graph_of(cls)
    out = work / cls.name
    info = emit_bundle(graph, out, name="model", target_name=TARGET, wide_weights=-1 if cls.wide or cls.winograd else 0,
                       winograd=cls.winograd)
    write_target_files(out, TARGET, "model")
    b = bench_model(out, TARGET, "model", profile=True)
    fused = {lay.fused_into for lay in info.layers if lay.fused_into}
    ops = list(graph.compute_ops())
    if len(b.layer_instructions) != len(ops):
        raise RuntimeError(f"{cls.name}: {len(b.layer_instructions)} layer counts for {len(ops)} layers")
    cycles = b.layer_cycles or [None] * len(ops)
    layers, boundary = [], 0
    for op, stats, count, cyc in zip(ops, layer_table(graph), b.layer_instructions, cycles):
        if _is_boundary(op):
            boundary += count
        else:
            layers.append(Layer(op.result.name, op.kind, stats.macs, count, cyc, op.result.type.numel,
                                op.result.name in fused))
    return Row(cls, layers, boundary)


def _job(args):
    name, work = args                 # by name: the classes' builders are closures (not picklable)
    row = measure(next(c for c in shape_classes() if c.name == name), work)
    return row.layers, row.boundary_instructions


def measure_all(classes: list[ShapeClass], jobs: int = 1) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="tinyc-kshapes-") as tmp:
        work = Path(tmp)
        if jobs <= 1:
            return [measure(c, work) for c in classes]
        with ProcessPoolExecutor(jobs) as pool:
            return [Row(c, *r) for c, r in zip(classes, pool.map(_job, [(c.name, work) for c in classes]))]


# ---- the table ---------------------------------------------------------------------------------

def table(rows: list[Row]) -> list[str]:
    lines = ["| kernel class | shape | layers (instructions) | MACs | instructions | instr/MAC | instr/output "
             f"| est. cycles | cycles/MAC | vs {GOAL} instr/MAC |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cyc, cpm = r.cycles, r.cycles_per_mac
        layers = (r.layers[0].kind if len(r.layers) == 1 else
                  " + ".join(f"{lay.kind} (fused into the layer before)" if lay.fused else
                             f"{lay.kind} {lay.instructions:,}" for lay in r.layers))
        lines.append(f"| {r.cls.kernel} | {r.cls.shape} | {layers} | {r.macs:,} | {r.instructions:,} | "
                     f"{r.per_mac:.2f} | {r.instructions / r.outputs:.1f} | {'-' if cyc is None else format(cyc, ',')} | "
                     f"{'-' if cpm is None else format(cpm, '.2f')} | {r.per_mac - GOAL:+.2f} ({r.per_mac / GOAL:.2f}x) |")
    return lines


INTRO = (
    "Each row is one kernel class at one shape: a seeded single-layer PyTorch model (the layer with its "
    "fused epilogue; squeeze-excite is global pool, FC, relu, FC, hardsigmoid and the multiply) compiled "
    "int8 for `cortex-m4` through `fuse,quantize-int8` (calibrated on 32 seeded random inputs) and run "
    "under `qemu-system-arm -M mps2-an386 -icount shift=0` with tinyc's profiled bench harness. "
    "*Instructions* are the exact guest instructions of the row's layers for one inference (TCG plugin, "
    "layer marks' cost removed), without the float input quantization and output dequantization; "
    "*layers* names the ops left after fusion (with each one's instructions when there are several); "
    "*instr/output* divides by the elements of the row's result (the figure to read for squeeze-excite, "
    "whose MACs are only its two small FCs while its cost is the pool and the gate multiply over the "
    "feature map); *est. cycles* are the Cortex-M4 cycles "
    "estimated from the executed instruction classes (docs/cycles.md). The last column is the distance "
    f"from issue 12's {GOAL} instr/MAC for a dense int8 kernel (SMLAD makes 0.5 the ceiling): "
    "instr/MAC minus the goal, and instr/MAC over it. *Wide weights* rows are compiled with `--wide-weights all` "
    "and Winograd off; *Winograd* rows divide by the direct conv's MACs while the kernel multiplies 16 of every "
    "36 (F(2x2, 3x3)), so they can go below the SMLAD ceiling."
)


def markdown_section(rows: list[Row] | None = None, jobs: int = 1) -> str:
    """The "## Per-shape kernel table" section of docs/benchmarks.md (measures every class unless
    ``rows`` are given)."""
    if rows is None:
        rows = measure_all(shape_classes(), jobs)
    return "\n".join(["## Per-shape kernel table", "", INTRO, "", *table(rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kernel_shapes", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the markdown section here (default: print it)")
    ap.add_argument("--classes", help="comma-separated class names (default: all)")
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args(argv)
    classes = shape_classes()
    if a.classes:
        known = {c.name: c for c in classes}
        unknown = [n for n in a.classes.split(",") if n not in known]
        if unknown:
            ap.error(f"unknown classes {', '.join(unknown)}; known: {', '.join(known)}")
        classes = [known[n] for n in a.classes.split(",")]
    text = markdown_section(measure_all(classes, a.jobs))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        print(f"wrote {a.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
