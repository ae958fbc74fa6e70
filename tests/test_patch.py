"""The `patch` pass (passes/patch.py): patch-based execution of the first stage (MCUNetV2).

Patched graphs must compute exactly what the unpatched graph computes (the int8 interpreter bit for
bit, the host C build equal to the interpreter), print and parse back, and plan a smaller static
arena on the zoo's MobileNets; what the pass cannot do is a PassError."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from helpers import fused_graph, zoo_inputs
from test_int8_backend import assert_exact, quantize
from test_planner import Builder
from tinyc import text
from tinyc.backends.c_emitter import emit_bundle
from tinyc.errors import ParseError, PassError
from tinyc.interpreter import random_inputs, run as interpret
from tinyc.passes import PassContext
from tinyc.passes.patch import find_stage, live_peak
from tinyc.passmanager import PassManager
from tinyc.stats import graph_stats


@functools.lru_cache(maxsize=None)
def v1_int8():
    """bench.zoo's mobilenet_v1_025, fused and quantized with seeded calibration (do not mutate)."""
    name = "mobilenet_v1_025"
    return PassManager("fuse,quantize-int8").run(fused_graph(name).copy(),
                                                 PassContext(calib=zoo_inputs(name, 8, seed=1)))


def patched(graph, spec):
    return PassManager(spec).run(graph.copy())


def assert_same_outputs(a, b, rows=3, seed=5, scale=1.5):
    rng = np.random.default_rng(seed)
    for _ in range(rows):
        xs = random_inputs(a, rng, scale=scale)
        for got, want in zip(interpret(b, xs), interpret(a, xs)):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} outputs differ"


def concats(graph) -> int:
    """Ops of the patched graph that assemble pieces (several operands along H or W)."""
    return sum(1 for op in graph.compute_ops() if len(op.operands) > 1 and "axis" in op.attrs)


def small_graph():
    """Stride-2 conv with asymmetric padding, depthwise, dilated conv, a standalone activation, a
    residual add inside the stage, then a conv and a pool the stage cannot hold."""
    rng = np.random.default_rng(3)
    w = lambda *s: (0.4 * rng.standard_normal(s)).astype(np.float32)   # noqa: E731
    b = Builder()
    x = b.input("x", [1, 3, 21, 19])
    c1 = b.op("conv2d", x, b.const("w1", w(8, 3, 3, 3)), b.const("b1", w(8)), name="c1", stride=[2, 2],
              padding=[1, 0, 1, 1], dilation=[1, 1], groups=1)
    r1 = b.op("relu", c1, name="r1")
    dw = b.op("conv2d", r1, b.const("w2", w(8, 1, 3, 3)), b.const("b2", w(8)), name="dw", stride=[1, 1],
              padding=[1, 1, 1, 1], dilation=[1, 1], groups=8, act="relu")
    dil = b.op("conv2d", dw, b.const("w3", w(8, 8, 3, 3)), name="dil", stride=[1, 1],
               padding=[2, 2, 2, 2], dilation=[2, 2], groups=1)
    add = b.op("add", dil, r1, name="res")
    s2 = b.op("conv2d", add, b.const("w4", w(12, 8, 3, 3)), b.const("b4", w(12)), name="s2", stride=[2, 2],
              padding=[0, 1, 1, 1], dilation=[1, 1], groups=1, act="relu")
    pool = b.op("avg_pool2d", s2, name="pool", kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 0],
                ceil_mode=False, count_include_pad=True)
    return b.graph(pool)


@functools.lru_cache(maxsize=None)
def small_int8():
    return quantize(small_graph(), calib_rows=16, seed=1)


# ---- exactness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["patch{patches=2}", "patch{patches=3}", "patch{patches=4 input=whole}",
                                  "patch{patches=3 layers=3}"])
def test_mobilenet_v1_int8_patched_is_bit_exact(spec):
    g = v1_int8()
    p = patched(g, spec)
    assert concats(p) > 0
    assert graph_stats(p).macs > graph_stats(g).macs          # the halos are recomputed
    assert_same_outputs(g, p)


@pytest.mark.parametrize("patches", [2, 3, 4])
def test_small_graph_float_and_int8_are_exact(patches):
    for g in (small_graph(), small_int8()):
        st = find_stage(g, False)
        if g is not small_int8():
            # the strided, padded, depthwise and dilated convs and the residual add; not the pool
            assert [op.result.name for op in st.prefix(st.ends[-1])] == ["c1", "r1", "dw", "dil", "res", "s2"]
        for layers in st.ends:
            p = patched(g, f"patch{{patches={patches} layers={layers}}}")
            assert_same_outputs(g, p)


def test_patched_ir_prints_and_parses_back_deterministically():
    p = patched(small_int8(), "patch{patches=3}")
    printed = text.print_graph(p)
    assert text.print_graph(text.parse(printed)) == printed
    assert text.print_graph(patched(small_int8(), "patch{patches=3}")) == printed
    assert_same_outputs(p, text.parse(printed), rows=1)


@pytest.mark.parametrize("target", ["host", pytest.param("cortex-m4", marks=pytest.mark.qemu)])
def test_patched_int8_build_equals_interpreter(target, tmp_path):
    p = patched(small_int8(), "patch{patches=2}")
    assert concats(p) > 0
    assert_exact(p, tmp_path, target)


# ---- memory -------------------------------------------------------------------------------------

def arena(graph, tmp_path, tag):
    return emit_bundle(graph, tmp_path / tag).arena_size


def test_patches_lower_the_arena_of_mobilenet_v1(tmp_path):
    g = v1_int8()
    base = arena(g, tmp_path, "base")
    p = patched(g, "patch{patches=4}")
    assert live_peak(p) < live_peak(g)
    assert arena(p, tmp_path, "patched") < 0.7 * base


def test_patches_lower_the_peak_of_mobilenet_v2():
    """bench.mobile_zoo's MobileNetV2 (residual adds inside the stage): bit-exact, and the pass's
    live-bytes model of the peak more than halves. Its planned arena (emit_bundle takes ~10 s per
    plan here) is measured in docs/memory.md."""
    from bench.mobile_nets import quantized_graph
    g = quantized_graph("mobilenet_v2_035_96")[0]
    p = patched(g, "patch{patches=4}")
    assert live_peak(p) < 0.5 * live_peak(g)
    assert_same_outputs(g, p, rows=1)


# ---- what the pass refuses -------------------------------------------------------------------------

def test_refusals_are_pass_errors():
    b = Builder()
    x = b.input("x", [1, 16])
    y = b.op("linear", x, b.const("w", np.ones((4, 16))), name="y")
    with pytest.raises(PassError, match="no rank-4"):
        patched(b.graph(y), "patch")
    b = Builder()
    x = b.input("x", [1, 3, 8, 8])
    y = b.op("max_pool2d", x, name="y", kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 0], dilation=[1, 1],
             ceil_mode=False)
    y = b.op("conv2d", y, b.const("w", np.ones((4, 3, 1, 1))), name="c", stride=[1, 1], padding=[0, 0, 0, 0],
             dilation=[1, 1], groups=1)
    with pytest.raises(PassError, match="no stage to patch"):
        patched(b.graph(y), "patch")
    with pytest.raises(PassError, match="smaller than a 40x40 grid"):
        patched(small_graph(), "patch{patches=40}")
    with pytest.raises(PassError, match="layers=3 does not end a stage") as e:
        patched(small_graph(), "patch{layers=3}")          # dw and the residual's r1 both cross
    assert "valid values" in (e.value.hint or "")
    with pytest.raises(PassError, match="layers=9 does not end a stage"):
        patched(small_graph(), "patch{layers=9}")          # the pool is not patchable
    with pytest.raises(ParseError, match="patches=1 must be >= 2"):
        PassManager("patch{patches=1}")
