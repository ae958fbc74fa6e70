"""The int8 C backend: quantize-int8 graphs compiled to C must compute exactly what the
integer interpreter computes (equal outputs, not close), on the host under ASan/UBSan, on
QEMU Cortex-M4 (DSP kernels) and Cortex-M3 (portable kernels), layer by layer; and the
bundle must build warning-free for every Cortex-M target and beat TFLite Micro."""
from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import fused_graph, layer_tensor, record_layers, zoo_inputs
from test_planner import Builder
from bench import zoo
from tinyc import quant
from tinyc.backends import c_ops_int8, int8_layout, int8_weights
from tinyc.backends.bench import bench_model
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.backends.targets import get_target
from tinyc.interpreter import random_inputs, run as interpret, run_all
from tinyc.ir import QuantParams, TensorType
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager

RELU6 = {"act": "clamp", "act_min": 0.0, "act_max": 6.0}
LEAKY = {"act": "leaky_relu", "act_alpha": 0.1}


# ---- helpers ------------------------------------------------------------------------------

def quantize(graph, calib_rows=16, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    calib = [(scale * rng.standard_normal((calib_rows, *v.type.shape))).astype(np.float32) for v in graph.inputs]
    return PassManager("quantize-int8").run(graph, PassContext(calib=calib[0] if len(calib) == 1 else calib))


@functools.lru_cache(maxsize=None)
def zoo_int8(name: str):
    """The fused zoo model quantized with seeded random calibration data (cached: do not mutate)."""
    return PassManager("fuse,quantize-int8").run(fused_graph(name).copy(),
                                                 PassContext(calib=zoo_inputs(name, 8, seed=1)))


def sample_rows(graph, rows=3, seed=7, scale=1.5):
    rng = np.random.default_rng(seed)
    return [random_inputs(graph, rng, scale=scale) for _ in range(rows)]


def assert_exact(graph, out_dir, target="host", rows=3, seed=7, scale=1.5, packing=None, wide_weights=0,
                 winograd=True, **run_options):
    """Emit, build, run every row on `target`, and require the interpreter's outputs bit for bit."""
    info = emit_bundle(graph, out_dir, target_name=target, packing=packing, wide_weights=wide_weights,
                       winograd=winograd)
    if target != "host":
        write_target_files(out_dir, target, "model")
    samples = sample_rows(graph, rows, seed, scale)
    flat = np.stack([np.concatenate([x.ravel() for x in row]) for row in samples])
    got = run_model(out_dir, target, "model", flat, **run_options)
    for r, xs in enumerate(samples):
        want = np.concatenate([np.asarray(o, np.float32).ravel() for o in interpret(graph, xs)])
        assert got[r].shape == want.shape
        bad = np.flatnonzero(got[r].view(np.uint32) != want.view(np.uint32))
        assert bad.size == 0, f"row {r}: {bad.size} outputs differ, first at {bad[:8]}: " \
                              f"{got[r][bad[:4]]} vs {want[bad[:4]]}"
    return info


def w(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# ---- one small graph per op variant ---------------------------------------------------------

def conv(x_shape, w_shape, bias=True, then=None, **attrs):
    def build(b, rng):
        x = b.input("x", x_shape)
        operands = [x, b.const("w", w(rng, *w_shape))] + ([b.const("b", w(rng, w_shape[0]))] if bias else [])
        for k, v in (("stride", [1, 1]), ("dilation", [1, 1]), ("groups", 1), ("padding", [0, 0, 0, 0])):
            attrs.setdefault(k, v)
        y = b.op("conv2d", *operands, name="y", **attrs)
        return b.graph(then(b, y) if then else y)
    return build


def pool_after(kind, **attrs):
    def then(b, y):
        attrs.setdefault("padding", [0, 0, 0, 0])
        attrs.setdefault("ceil_mode", False)
        if kind == "max_pool2d":
            attrs.setdefault("dilation", [1, 1])
        else:
            attrs.setdefault("count_include_pad", True)
        return b.op(kind, y, name="p", **attrs)
    return then


def mean_after(**attrs):
    def then(b, y):
        return b.op("mean", y, name="m", **attrs)
    return then


def gate_after(channels: int):
    """y * g, g [1, C, 1, 1] computed from y (a squeeze-excite gate over a channels-last map)."""
    def then(b, y):
        g = b.op("sigmoid", b.op("mean", y, name="m", axes=[2, 3], keepdim=True), name="g")
        return b.op("mul", g, y, name="s")          # the gate first, as torchvision's SE writes scale * input
    return then


def linear(x_shape, n, bias=True, **attrs):
    def build(b, rng):
        k = x_shape[-1]
        operands = [b.input("x", x_shape), b.const("w", w(rng, n, k))] + ([b.const("b", w(rng, n))] if bias else [])
        return b.graph(b.op("linear", *operands, name="y", **attrs))
    return build


def binary(kind, a_shape, b_shape, const_b=False, **attrs):
    def build(b, rng):
        a = b.input("a", a_shape)
        other = b.const("k", w(rng, *b_shape) + 2.0) if const_b else b.input("b", b_shape)
        return b.graph(b.op(kind, a, other, name="y", **attrs))
    return build


def unary(kind, shape, **attrs):
    def build(b, rng):
        return b.graph(b.op(kind, b.input("x", shape), name="y", **attrs))
    return build


def conv_then_view(view_kind, **attrs):
    """conv (channels-last result) -> a view with a non-trivial layout -> a consumer."""
    def build(b, rng):
        x = b.input("x", (1, 3, 5, 6))
        y = b.op("conv2d", x, b.const("w", w(rng, 4, 3, 3, 3)), b.const("b", w(rng, 4)), name="c",
                 stride=[1, 1], dilation=[1, 1], groups=1, padding=[1, 1, 1, 1], act="relu")
        v = b.op(view_kind, y, name="v", **attrs)
        if view_kind == "transpose":      # [1, 6, 5, 4] -> softmax over the last axis
            return b.graph(b.op("softmax", v, name="s", axis=3))
        return b.graph(b.op("linear", v, b.const("fw", w(rng, 5, 120)), name="fc"))
    return build


def matmul(a_shape, b_shape, **attrs):
    def build(b, rng):
        return b.graph(b.op("matmul", b.input("a", a_shape), b.input("b", b_shape), name="y", **attrs))
    return build


def cat(shapes, axis):
    def build(b, rng):
        xs = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
        return b.graph(b.op("cat", *[b.op("tanh", x, name=f"t{i}") if i else x for i, x in enumerate(xs)],
                            name="y", axis=axis))
    return build


def lut_chain(b, rng):
    x = b.input("x", (2, 3, 4, 5))
    h = b.op("hardswish", b.op("sigmoid", x, name="s"), name="h")
    return b.graph(b.op("leaky_relu", b.op("clamp", h, name="c", min=-0.2, max=0.4), name="l", alpha=0.3))


OP_CASES = {
    # convolutions: GEMM (any groups), depthwise variants, 1x1 direct, odd channels
    "conv3x3_pad1": conv((1, 3, 8, 8), (4, 3, 3, 3), padding=[1, 1, 1, 1]),
    "conv_odd_channels_relu": conv((2, 5, 6, 7), (7, 5, 3, 2), bias=False, act="relu"),
    "conv_stride2_asym_pad": conv((1, 3, 9, 8), (6, 3, 3, 3), stride=[2, 2], padding=[0, 1, 1, 0], **RELU6),
    "conv_stride_hw_differ": conv((1, 2, 10, 9), (2, 2, 3, 1), stride=[3, 1], padding=[2, 0, 1, 0]),
    "conv_dilation_leaky": conv((1, 2, 9, 9), (3, 2, 3, 3), dilation=[2, 3], padding=[2, 3, 2, 3], **LEAKY),
    "conv_groups": conv((1, 4, 6, 6), (6, 2, 3, 3), groups=2, padding=[1, 1, 1, 1], **RELU6),
    "conv3x3_c8_expand_pad": conv((1, 8, 7, 6), (5, 8, 3, 3), stride=[2, 1], padding=[1, 2, 0, 1], act="relu"),
    "conv_groups_c4_expand": conv((1, 8, 5, 5), (6, 4, 3, 3), groups=2, padding=[1, 1, 1, 1], dilation=[1, 2]),
    "conv_few_pixels_tail": conv((1, 8, 3, 2), (9, 8, 3, 3), padding=[1, 1, 1, 1]),
    "conv_1x1_direct": conv((1, 8, 5, 3), (5, 8, 1, 1), act="relu"),
    "conv_1x1_stride2": conv((1, 12, 5, 5), (3, 12, 1, 1), stride=[2, 2]),
    "conv_1x1_map_fc_rows": conv((2, 10, 1, 1), (7, 10, 1, 1), act="relu"),      # the FC kernel: k, n % 4 != 0
    "conv_1x1_map_fc_then_gate": conv((1, 3, 4, 4), (16, 3, 1, 1), act="relu", then=lambda b, y: b.op(
        "mul", y, b.op("conv2d", b.op("mean", y, name="m", axes=[2, 3], keepdim=True),
                       b.const("wf", np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16, 1, 1)), name="f",
                       stride=[1, 1], dilation=[1, 1], groups=1, padding=[0, 0, 0, 0]), name="s")),
    "conv_hardswish_fused": conv((1, 3, 6, 7), (8, 3, 3, 3), padding=[1, 1, 1, 1],
                                 then=lambda b, y: b.op("hardswish", y, name="h")),
    "dw_sigmoid_fused": conv((1, 8, 6, 7), (8, 1, 3, 3), groups=8, padding=[1, 1, 1, 1],
                             then=lambda b, y: b.op("sigmoid", y, name="h")),
    "dw5_silu_fused": conv((1, 4, 7, 9), (4, 1, 5, 5), groups=4, padding=[2, 2, 2, 2],
                           then=lambda b, y: b.op("silu", y, name="h")),
    "conv_1x1_padded": conv((1, 4, 3, 3), (5, 4, 1, 1), padding=[1, 0, 0, 2]),
    "conv_single_channel": conv((1, 1, 9, 6), (9, 1, 4, 3), stride=[2, 2], padding=[1, 1, 2, 1], act="relu"),
    "conv_kernel_past_input": conv((1, 1, 2, 3), (2, 1, 5, 5), padding=[2, 2, 2, 2]),
    "conv_1ch_10x4_s2": conv((1, 1, 13, 10), (6, 1, 10, 4), stride=[2, 2], padding=[4, 1, 4, 1], act="relu"),
    "dw3x3_s1_odd_width": conv((1, 6, 5, 7), (6, 1, 3, 3), groups=6, padding=[1, 1, 1, 1], act="relu"),
    "dw3x3_s2_asym": conv((1, 5, 9, 8), (5, 1, 3, 3), groups=5, stride=[2, 2], padding=[0, 0, 1, 1]),
    "dw3x3_multiplier2": conv((1, 3, 6, 6), (6, 1, 3, 3), groups=3, padding=[1, 1, 1, 1], **LEAKY),
    "dw5x5_s1_odd": conv((1, 5, 9, 11), (5, 1, 5, 5), groups=5, padding=[2, 2, 2, 2], act="relu"),
    "dw5x5_s2_asym": conv((1, 4, 11, 10), (4, 1, 5, 5), groups=4, stride=[2, 2], padding=[1, 2, 2, 1]),
    "dw7x7_s1": conv((1, 3, 9, 9), (3, 1, 7, 7), groups=3, padding=[3, 3, 3, 3], **RELU6),
    "dw2x2_s2": conv((1, 3, 8, 9), (3, 1, 2, 2), groups=3, stride=[2, 2]),
    "dw3x5_mult2": conv((1, 2, 7, 12), (4, 1, 3, 5), groups=2, stride=[1, 2], padding=[1, 2, 1, 2], **LEAKY),
    "dw9x1_s1": conv((1, 3, 12, 4), (3, 1, 9, 1), groups=3, padding=[4, 0, 4, 0]),
    "dw_5x3_dilated": conv((1, 3, 9, 9), (6, 1, 5, 3), groups=3, dilation=[2, 1], padding=[4, 1, 4, 1]),
    "dw_then_maxpool": conv((1, 4, 7, 7), (4, 1, 3, 3), groups=4, padding=[1, 1, 1, 1],
                            then=pool_after("max_pool2d", kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1],
                                            ceil_mode=True)),
    "global_avgpool_c8_lanes": conv((2, 1, 20, 16), (8, 1, 1, 1), act="relu",     # 320 pixels: two lane runs
                                    then=pool_after("avg_pool2d", kernel=[20, 16], stride=[20, 16])),
    "global_avgpool_padded_c4": conv((1, 2, 5, 6), (4, 2, 1, 1),
                                     then=pool_after("avg_pool2d", kernel=[6, 7], stride=[6, 7], padding=[1, 1, 0, 0])),
    "global_mean_c12_lanes": conv((1, 1, 17, 17), (12, 1, 1, 1), then=mean_after(axes=[2, 3], keepdim=False)),
    "global_mean_c8_keepdim": conv((1, 3, 5, 7), (8, 3, 3, 3), padding=[1, 1, 1, 1],
                                   then=mean_after(axes=[2, 3], keepdim=True)),
    "conv_then_gate_cl": conv((1, 3, 6, 7), (8, 3, 3, 3), padding=[1, 1, 1, 1], act="relu", then=gate_after(8)),
    "conv_then_avgpool": conv((1, 3, 7, 5), (4, 3, 3, 3), padding=[1, 1, 1, 1],
                              then=pool_after("avg_pool2d", kernel=[2, 3], stride=[2, 2], padding=[1, 1, 1, 1],
                                              ceil_mode=True, count_include_pad=False)),
    "avgpool_include_pad": conv((1, 2, 6, 7), (3, 2, 1, 1),
                                then=pool_after("avg_pool2d", kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1])),
    "maxpool_cl_c8_ceil": conv((1, 3, 9, 10), (8, 3, 1, 1), act="relu",
                               then=pool_after("max_pool2d", kernel=[3, 3], stride=[2, 2], padding=[1, 0, 1, 0],
                                               ceil_mode=True)),
    "maxpool_cl_c12_dilated": conv((2, 2, 8, 9), (12, 2, 1, 1),
                                   then=pool_after("max_pool2d", kernel=[2, 3], stride=[1, 2], dilation=[2, 2],
                                                   padding=[1, 1, 1, 1])),
    "maxpool_dilation": conv((2, 1, 9, 9), (2, 1, 1, 1),
                             then=pool_after("max_pool2d", kernel=[2, 3], stride=[1, 2], dilation=[2, 2])),
    # dense
    "linear": linear((1, 10), 4),
    "linear_rows_tail": linear((3, 16), 7, act="relu"),
    "linear_tanh_fused": lambda b, rng: b.graph(b.op("tanh", linear((2, 12), 9)(b, rng).outputs[0], name="h")),
    "linear_3d_nobias_leaky": linear((2, 3, 6), 5, bias=False, **LEAKY),
    "flatten_nhwc_linear": conv_then_view("reshape", shape=[1, 120]),
    "transpose_view_softmax": conv_then_view("transpose", perm=[0, 3, 2, 1]),
    "matmul": matmul((3, 4), (4, 5)),
    "matmul_broadcast_batch": matmul((2, 1, 3, 4), (5, 4, 2), act="relu"),
    # elementwise
    "add_same_shape_relu": binary("add", (2, 3, 4), (2, 3, 4), act="relu"),
    "sub_const_scalar": binary("sub", (2, 3, 4), (), const_b=True),
    "mul_per_channel_relu6": binary("mul", (2, 3, 4, 5), (1, 3, 1, 1), const_b=True, **RELU6),
    "div_by_tensor": binary("div", (3, 1, 4), (2, 1)),
    "add_both_broadcast_leaky": binary("add", (1, 4, 1), (3, 1, 5), **LEAKY),
    "lut_chain": lut_chain,
    # reductions and data movement
    "mean_hw_keepdim": unary("mean", (2, 3, 4, 5), axes=[2, 3], keepdim=True),
    "mean_contiguous_lanes": unary("mean", (1, 2, 601), axes=[2], keepdim=False),   # 150 words + 1 byte per row
    "mean_outer_axes": unary("mean", (2, 3, 4, 2), axes=[0, 2], keepdim=False),
    "softmax_middle": unary("softmax", (2, 5, 3), axis=1),
    "cat_requant": cat([(1, 2, 3, 3), (1, 1, 3, 3), (1, 3, 3, 3)], axis=1),
    "pad_asym": unary("pad", (1, 2, 3, 4), pads=[0, 0, 1, 2, 0, 1, 0, 3], value=0.5),
    "pad_crop": unary("pad", (2, 5, 6), pads=[0, -1, 2, 0, -2, -1], value=-1.0),
    "transpose_3d": unary("transpose", (2, 3, 4), perm=[2, 0, 1]),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_exact_on_host(case, tmp_path):
    graph = quantize(OP_CASES[case](Builder(), np.random.default_rng(1)))
    assert_exact(graph, tmp_path, sanitize=True)


def _shrink_result_scale(graph, name: str, factor: float):
    """Divide the output scale of op `name` (read by a dequantize only): requantization ratios
    grow past 1/2 (positive shifts, the 64-bit output stage) and most outputs saturate."""
    op = next(o for o in graph.ops if o.result.name == name)
    q = op.result.type.quant
    op.result.type = TensorType(op.result.type.shape, "i8", QuantParams((q.scale[0] / factor,), q.zero_point))


@pytest.mark.parametrize("factor", [300.0, 1e6])
def test_saturation_and_positive_shifts(factor, tmp_path):
    graphs = [OP_CASES["conv_odd_channels_relu"], OP_CASES["linear"], OP_CASES["dw3x3_s1_odd_width"],
              OP_CASES["add_same_shape_relu"]]
    for k, build in enumerate(graphs):
        graph = quantize(build(Builder(), np.random.default_rng(2)))
        _shrink_result_scale(graph, "y", factor)
        assert_exact(graph, tmp_path / str(k), sanitize=True, scale=4.0)


def _float_neighbours(x: np.float32, n: int = 4) -> list[np.float32]:
    out, lo, hi = [x], x, x
    for _ in range(n):
        lo, hi = np.nextafter(lo, np.float32(-np.inf)), np.nextafter(hi, np.float32(np.inf))
        out += [lo, hi]
    return out


@pytest.mark.parametrize("target", ["host", pytest.param("cortex-m4", marks=pytest.mark.qemu)])
def test_quantize_special_values(target, tmp_path):
    """NaN gives the zero point, infinities and huge values saturate, halves round away
    from zero (the quantize kernel's trunc(2 x inv) trick), on the host and with the M4's
    saturating fixed-point VCVT."""
    b = Builder()
    graph = quantize(b.graph(b.op("relu", b.input("x", (1, 64)), name="y")))
    q = graph.ops[[op.kind for op in graph.ops].index("quantize")].result.type.quant
    s = np.float32(q.scale[0])
    special = [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-40, -0.0, 0.0]
    ties = [np.float32(k + 0.5) * s for k in range(-6, 6)]
    inv = np.float32(1) / s            # inputs whose float32 product with 1 / scale is exactly k + 0.5
    exact = [c for k in range(-6, 6) for c in _float_neighbours(np.float32(k + 0.5) / inv)
             if np.float32(c * inv) == np.float32(k + 0.5)]
    assert len(exact) >= 6
    ties += exact[:12]
    near = [np.nextafter(np.float32(0.5) * s, np.float32(0)), np.nextafter(np.float32(-0.5) * s, np.float32(0))]
    x = np.array(special + ties + near, np.float32)
    x = np.concatenate([x, np.linspace(-3, 3, 64 - x.size, dtype=np.float32)])
    info = emit_bundle(graph, tmp_path, target_name=target)
    if target != "host":
        write_target_files(tmp_path, target, "model")
    got = run_model(tmp_path, target, "model", x[None], sanitize=target == "host")
    want = interpret(graph, [x[None]])[0]
    assert np.array_equal(got[0].view(np.uint32), want.ravel().view(np.uint32))
    assert info.arena_size > 0


def test_keep_float_island_mixes_backends(tmp_path):
    b = Builder()
    rng = np.random.default_rng(3)
    x = b.input("x", (1, 3, 6, 6))
    c = b.op("conv2d", x, b.const("w", w(rng, 8, 3, 3, 3)), name="c", stride=[1, 1], dilation=[1, 1], groups=1,
             padding=[1, 1, 1, 1])
    t = b.op("tanh", c, name="t")                       # stays float
    m = b.op("mean", t, name="m", axes=[2, 3], keepdim=False)
    graph = PassManager("quantize-int8{keep-float=t}").run(
        b.graph(b.op("linear", m, b.const("fw", w(rng, 4, 8)), name="y")),
        PassContext(calib=rng.standard_normal((8, 1, 3, 6, 6)).astype(np.float32)))
    assert any(op.kind == "tanh" for op in graph.ops)
    assert_exact(graph, tmp_path, sanitize=True)


# ---- zoo models -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", zoo.names())
def test_zoo_exact_on_host_under_sanitizers(name, tmp_path):
    info = assert_exact(zoo_int8(name), tmp_path, rows=2, sanitize=True)
    info.plan.check()
    assert info.lower_bound <= info.arena_size


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m3"])
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_exact_on_qemu(name, target, tmp_path):
    assert_exact(zoo_int8(name), tmp_path, target, rows=2)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0"])
@pytest.mark.parametrize("case", ["dw5x5_s1_odd", "dw5x5_s2_asym", "dw3x5_mult2", "global_avgpool_c8_lanes",
                                  "global_mean_c12_lanes", "mean_contiguous_lanes", "mul_per_channel_relu6",
                                  "conv_then_gate_cl", "maxpool_cl_c8_ceil", "maxpool_cl_c12_dilated",
                                  "conv_1x1_map_fc_rows", "conv_1x1_map_fc_then_gate", "conv_hardswish_fused",
                                  "dw5_silu_fused", "linear_tanh_fused", "conv_1ch_10x4_s2", "linear_rows_tail"])
def test_fast_paths_exact_on_qemu(case, target, tmp_path):
    """The kernels' fast paths on the M4's DSP path and the M0's portable one (no unaligned loads): the
    any-size depthwise loop (variant 4: words of 4 taps at any alignment), the channels-last global pools
    (4 channels per word, 16-bit lanes flushed every 256 pixels), the specialised mul (a gate broadcast
    along rows: one MLA per element) and the channels-last max pool (4 channels per SSUB8 + SEL)."""
    assert_exact(quantize(OP_CASES[case](Builder(), np.random.default_rng(1))), tmp_path, target, rows=2)


WIDE_CASES = ["conv3x3_pad1", "conv_odd_channels_relu", "conv3x3_c8_expand_pad", "conv_1x1_stride2", "conv_1ch_10x4_s2",
              "conv_groups", "conv_groups_c4_expand", "conv_few_pixels_tail"]


@pytest.mark.parametrize("case", WIDE_CASES)
def test_wide_weights_exact_on_host(case, tmp_path):
    """Dense conv weights stored as int16 pairs (wide_weights): the same outputs, bit for bit; odd channel
    counts (the 3 x 1 path), partial and single-pixel blocks (gemm1x2), groups of pixels that cross rows."""
    graph = quantize(OP_CASES[case](Builder(), np.random.default_rng(1)))
    info = assert_exact(graph, tmp_path, wide_weights=-1, winograd=False)
    assert info.wide_layers, "no layer was widened"


WINO_CASES = {
    "even_16x16": conv((1, 16, 8, 10), (16, 16, 3, 3), padding=[1, 1, 1, 1], act="relu"),
    "odd_map_odd_out": conv((1, 8, 7, 9), (7, 8, 3, 3), padding=[1, 1, 1, 1]),
    "no_pad_batch2_relu6": conv((2, 12, 9, 8), (6, 12, 3, 3), **RELU6),
    "asym_pad_leaky": conv((1, 4, 6, 5), (5, 4, 3, 3), padding=[2, 0, 1, 1], **LEAKY),
    "chunks10_no_bias": conv((1, 40, 5, 6), (4, 40, 3, 3), bias=False, padding=[1, 1, 1, 1]),
    "hardswish_fused": conv((1, 8, 6, 7), (8, 8, 3, 3), padding=[1, 1, 1, 1],
                            then=lambda b, y: b.op("hardswish", y, name="h")),
}


@pytest.mark.parametrize("case", sorted(WINO_CASES))
def test_winograd_exact_on_host(case, tmp_path):
    """3x3 stride-1 convs as Winograd F(2x2, 3x3) (int16 transformed weights) give the direct conv's outputs
    bit for bit: odd output sizes (partial tiles), odd channel counts (the 3 x 1 path), a last block of
    fewer than 3 tiles, asymmetric padding, batch 2, more than 8 chunks (the GEMM's loop), a fused lut."""
    graph = quantize(WINO_CASES[case](Builder(), np.random.default_rng(3)))
    info = assert_exact(graph, tmp_path, wide_weights=-1)
    assert info.winograd_layers == ("y",), info.winograd_layers
    assert "tinyc_s8_conv_wino(" in (tmp_path / "model.c").read_text()


@pytest.mark.qemu
def test_winograd_resnet8_exact_on_m4(tmp_path):
    """ResNet-8 with every int16 weight form (4 Winograd convs, some writing over their input's bytes in the
    arena, the rest wide GEMM pairs): the interpreter's outputs bit for bit on the Cortex-M4."""
    graph = zoo_int8("resnet8")
    info = assert_exact(graph, tmp_path, "cortex-m4", rows=2, wide_weights=-1)
    assert len(info.winograd_layers) == 4 and info.wide_layers
    loc = info.plan.locations
    overlapping = [op.result.name for op in graph.compute_ops() if op.result.name in info.winograd_layers
                   and abs(loc[op.result.name].offset - loc[op.operands[0].name].offset) < op.result.type.nbytes]
    assert overlapping, "no Winograd conv overlaps its input: the in-place case is not exercised"


def test_winograd_budget(tmp_path):
    """choose_wino spends the allowance on the 3x3 stride-1 convs by instructions saved per added byte (the
    32 x 32 ones first), skips what does not fit, and leaves the rest to wide GEMM weights; a Winograd layer's
    weights are 16 int16 per (output, input) channel pair and its result may still overlap its input."""
    graph = zoo_int8("resnet8")
    extra = {"conv2d_1": 32 * 16 * 16 - 16 * 144, "conv2d_4": 32 * 32 * 32 - 32 * 288}
    two = emit_bundle(graph, tmp_path / "two", target_name="cortex-m4", wide_weights=2 * extra["conv2d_1"] + 100)
    assert two.winograd_layers == ("conv2d_1", "conv2d_2"), two.winograd_layers
    assert two.wide_layers == (), two.wide_layers          # 100 bytes left: no wide layer fits
    three = emit_bundle(graph, tmp_path / "three", target_name="cortex-m4",
                        wide_weights=2 * extra["conv2d_1"] + extra["conv2d_4"] + 16 * 28)
    assert three.winograd_layers == ("conv2d_1", "conv2d_2", "conv2d_4"), three.winograd_layers
    assert three.wide_layers == ("conv2d",), three.wide_layers     # the stem takes what is left
    text = (tmp_path / "two" / "model.c").read_text()
    assert int(re.search(r"model_w_conv2d_1_w\[(\d+)\]", text).group(1)) == 16 * 16 * 16 // 2
    plain = emit_bundle(graph, tmp_path / "plain", target_name="cortex-m4")
    assert plain.winograd_layers == ()
    assert two.arena_size <= plain.arena_size + 2048      # V and M scratch only: the overlaps still plan


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0"])
@pytest.mark.parametrize("case", ["odd_map_odd_out", "chunks10_no_bias"])
def test_winograd_exact_on_qemu(case, target, tmp_path):
    info = assert_exact(quantize(WINO_CASES[case](Builder(), np.random.default_rng(3))), tmp_path, target, rows=2,
                        wide_weights=-1)
    assert info.winograd_layers == ("y",)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0"])
@pytest.mark.parametrize("case", ["conv_odd_channels_relu", "conv3x3_c8_expand_pad"])
def test_wide_weights_exact_on_qemu(case, target, tmp_path):
    assert_exact(quantize(OP_CASES[case](Builder(), np.random.default_rng(1))), tmp_path, target, rows=2,
                 wide_weights=-1, winograd=False)


def test_wide_weights_budget(tmp_path):
    """choose_wide spends the flash budget on the layers with the most output pixels per weight first and
    skips what does not fit; the widened layers' weight arrays are twice as long."""
    graph = zoo_int8("resnet8")
    plain = emit_bundle(graph, tmp_path / "plain", target_name="cortex-m4")
    names = [op.result.name for op in graph.compute_ops() if op.kind == "conv2d"]
    # at 32 x 32: the stem (16 x 28 bytes), conv2d_1 and conv2d_2 (16 x 144 each); then at 16 x 16 conv2d_3
    # (32 x 144) does not fit the 100 bytes left, nor conv2d_4 (32 x 288), nor the 1x1 conv2d_5 (32 x 16)
    some = emit_bundle(graph, tmp_path / "some", target_name="cortex-m4", winograd=False, wide_weights=16 * 28 + 2 * 16 * 144 + 100)
    assert some.wide_layers == ("conv2d", "conv2d_1", "conv2d_2"), some.wide_layers
    more = emit_bundle(graph, tmp_path / "more", target_name="cortex-m4", winograd=False, wide_weights=16 * 28 + 2 * 16 * 144 + 600)
    assert more.wide_layers == ("conv2d", "conv2d_1", "conv2d_2", "conv2d_5"), more.wide_layers
    every = emit_bundle(graph, tmp_path / "all", target_name="cortex-m4", wide_weights=-1, winograd=False)
    assert set(every.wide_layers) == set(names)        # every conv of ResNet-8 reduces over more than 8
    assert plain.wide_layers == ()
    def weight_words(out, layer):
        text = (out / "model.c").read_text()
        decl = re.search(r"model_w_%s_w\[(\d+)\]" % layer, text)
        return int(decl.group(1))
    assert weight_words(tmp_path / "all", "conv2d_1") == 2 * weight_words(tmp_path / "plain", "conv2d_1")


@pytest.mark.parametrize("name, wide", [("kitchen_sink", 0), ("mobilenet_v1_025", 0), ("resnet8", -1)])
def test_every_layer_exact_through_the_debug_hook(name, wide, tmp_path):
    """TINYC_LAYER_OUTPUT records every layer's result; mapped back through the bundle's
    layouts, each intermediate int8 (and float) tensor equals the interpreter's. A layer whose
    kernel applies the next lut (a fused table epilogue) has no result of its own: it is not
    recorded, and its lut's record is checked. ResNet-8 with every int16 weight form (its Winograd convs, some
    overlapping their input, and wide GEMM weights): every intermediate too."""
    graph = zoo_int8(name)
    info = emit_bundle(graph, tmp_path, wide_weights=wide)
    x = sample_rows(graph, 1)[0]
    env = run_all(graph, x)
    ops = list(graph.compute_ops())
    seen = []
    for layer, raw in record_layers(tmp_path, x[0]):
        v = ops[layer].result
        want = env[v.name]
        got = layer_tensor(raw, v, want.shape, info)
        if v.type.dtype == "f32":
            assert np.array_equal(got.view(np.uint32), np.asarray(want, np.float32).view(np.uint32)), v.name
        else:
            assert np.array_equal(got, want), f"layer {layer} %{v.name} ({ops[layer].kind}) differs"
        seen.append(layer)
    fused = [lay.index for lay in info.layers if lay.fused_into]
    assert seen == [i for i in range(len(ops)) if i not in fused]
    if name == "kitchen_sink":      # the grouped conv's hardswish runs in the conv kernel
        assert [info.layers[i].fused_into for i in fused] == ["hardswish"]


# ---- the bundle ---------------------------------------------------------------------------------

def test_reemission_is_byte_identical(tmp_path):
    graph = zoo_int8("kitchen_sink")
    a = emit_bundle(graph, tmp_path / "a", name="ks")
    b = emit_bundle(graph.copy(), tmp_path / "b", name="ks")
    assert [f.name for f in a.files] == [f.name for f in b.files]
    for fa, fb in zip(a.files, b.files):
        assert fa.read_bytes() == fb.read_bytes(), fa.name
    assert str(tmp_path) not in (tmp_path / "a" / "ks.c").read_text()


@pytest.mark.parametrize("target", ["cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33"])
def test_compiles_warning_free_for_cortex_m(target, tmp_path):
    """-std=c99 -Wall -Wextra -Werror with the target's flags, every kernel included."""
    t = get_target(target)
    for name in ("kitchen_sink", "mobilenet_v1_025", "resnet8", "fc_autoencoder"):
        # ResNet-8 with every int16 weight form: the Winograd and wide GEMM kernels too
        emit_bundle(zoo_int8(name), tmp_path / name, name=name, target_name=target,
                    wide_weights=-1 if name == "resnet8" else 0)
        proc = subprocess.run([t.cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *t.opt_flags, *t.cpu_flags, "-c",
                               f"{name}.c", "-o", f"{name}.o"], cwd=tmp_path / name, capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr


def test_layouts_and_kernels_chosen(tmp_path):
    """ds_cnn: every conv result is channels-last (depthwise convs run in place over a
    channels-last operand: the arena is smaller than with channels-first operands, see
    tests/test_inplace_memory.py); every conv runs a specialised GEMM or depthwise kernel."""
    graph = zoo_int8("ds_cnn")
    info = emit_bundle(graph, tmp_path)
    text = (tmp_path / "model.c").read_text()
    convs = [op for op in graph.compute_ops() if op.kind == "conv2d"]
    for op in convs:
        off = info.int8_layouts[op.result.name]
        assert np.array_equal(off, int8_layout.perm_offsets(off.shape, (0, 2, 3, 1))), op.result.name
    # one wrapper per shape: the 10x4 conv, and the four 1x1 convs (all channels-last to channels-last)
    assert text.count("tinyc_s8_dw(") == 1 and text.count("tinyc_s8_conv_gemm(") == 2
    # the 25 x 5 depthwise maps run transposed: h, w, oh, ow = 5, 25, 5, 25 and the strides exchanged
    call = text[text.index("tinyc_s8_dw(p0"):].split(")")[0]
    assert ", 1, 5, 25, 5, 25, 3, 3, 1, 1, 1, 1, 1, 1, 7, 27, 0, 1, 64, 320, 0, 1, 64, 320," in call, call
    assert "int8_t i8[model_ARENA_SIZE]" in text and "TINYC_LAYER_OUTPUT(" in text


def test_dw_transpose_choice():
    """A 3x3 stride-1 depthwise conv runs on transposed planes only when the cost model says so: a narrow
    channels-last map (DS-CNN's 25 x 5) yes; square maps, stride 2 and planar narrow maps no."""
    def geom(h, w, s=1):
        return dict(n=1, c=8, o=8, h=h, w=w, oh=(h - 1) // s + 1, ow=(w - 1) // s + 1, kh=3, kw=3, sh=s, sw=s,
                    dh=1, dw=1, pt=1, pl=1, groups=8, cg=1)
    cl = lambda h, w: [0, 1, w * 64, 64]          # channels-last strides (n, c, h, w) of a 64-channel map
    assert c_ops_int8.dw_transpose(geom(25, 5), cl(25, 5))
    assert not c_ops_int8.dw_transpose(geom(12, 12), cl(12, 12))
    assert not c_ops_int8.dw_transpose(geom(5, 25), cl(5, 25))
    assert not c_ops_int8.dw_transpose(geom(25, 5, s=2), cl(25, 5))
    assert not c_ops_int8.dw_transpose(geom(25, 5), [0, 125, 5, 1])


def test_weight_transforms():
    rng = np.random.default_rng(0)
    w8 = rng.integers(-127, 128, (6, 10)).astype(np.int8)
    padded = int8_weights.pad_k(w8)
    assert padded.shape == (6, 12) and not padded[:, 10:].any()
    inter = int8_weights.fc_interleave(padded)
    assert inter[:24].tolist() == [v for r in range(6) for v in padded[r, :4]]
    assert inter[-24:].tolist() == [v for r in range(6) for v in padded[r, 8:]]
    for n, blocks in ((13, (6, 6, 1)), (11, (6, 4, 1)), (9, (6, 2, 1)), (3, (2, 1)), (4, (4,))):
        rows = rng.integers(-127, 128, (n, 8)).astype(np.int8)     # blocks of 6, then 4, 2, 1 interleaved per chunk
        want, r0 = [], 0
        for rb in blocks:
            want += [v for c in range(2) for r in range(r0, r0 + rb) for v in rows[r, 4 * c:4 * c + 4]]
            r0 += rb
        assert int8_weights.fc_interleave(rows).tolist() == want, n
    words = int8_weights.words(padded)
    assert words.dtype == np.int32 and words.view(np.int8).tolist() == padded.ravel().tolist()
    bias = int8_weights.folded_bias(w8, np.arange(6, dtype=np.int32), -5)
    assert bias.tolist() == (np.arange(6) + 5 * w8.astype(np.int64).sum(axis=1)).tolist()
    x = QuantParams((0.02,), (3,))
    table = int8_weights.requant_table(x, QuantParams((0.05,), (-7,)))
    codes = np.arange(-128, 128)
    m, s = quant.quantize_multiplier(0.02 / 0.05)
    assert table.tolist() == np.clip(quant.requantize(codes - 3, m, s) - 7, -128, 127).tolist()


def test_layout_iteration_and_strides():
    off = int8_layout.perm_offsets((2, 3, 4, 5), (0, 2, 3, 1))
    assert int8_layout.dim_strides(off) == [60, 1, 15, 3]
    assert int8_layout.dim_strides(off.reshape(2, 60)) is None             # flatten of NHWC
    base, dims, (s0, s1) = int8_layout.iteration(int8_layout.row_major((2, 3, 4, 5)), off)
    assert base == [0, 0] and dims == [2, 3, 20] and s0 == [60, 20, 1] and s1 == [60, 1, 3]
    b = np.broadcast_to(int8_layout.row_major((1, 3, 1)), (2, 3, 4))
    assert int8_layout.iteration(int8_layout.row_major((2, 3, 4)), b)[1:] == ([2, 3, 4], [[12, 4, 1], [0, 1, 0]])


# ---- performance ----------------------------------------------------------------------------------

TFLM = {  # instructions per inference and arena bytes, TFLite Micro + CMSIS-NN on the same QEMU Cortex-M4
    "ds_cnn": (7_699_893, 22_820),
    "resnet8": (29_863_353, 54_996),
    "mobilenet_v1_025": (24_101_963, 100_708),
    "fc_autoencoder": (582_945, 2_580),
}


@pytest.mark.qemu
@pytest.mark.parametrize("name", ["ds_cnn", "fc_autoencoder"])
def test_faster_and_smaller_than_tflite_micro(name, tmp_path):
    info = emit_bundle(zoo_int8(name), tmp_path, target_name="cortex-m4")
    write_target_files(tmp_path, "cortex-m4", "model")
    result = bench_model(tmp_path, "cortex-m4", "model", profile=False)
    instructions, arena = TFLM[name]
    assert result.instructions < instructions
    assert info.arena_size < arena


@pytest.mark.parametrize("case", ["conv_hardswish_fused", "dw_sigmoid_fused", "dw5_silu_fused", "linear_tanh_fused",
                                  "lut_chain"])
def test_table_epilogues_fused_into_the_layer(case, tmp_path):
    """A lut right after a conv2d / linear (its only user) runs in that layer's kernel: no lut call, the
    lut's result is the layer's bytes; a lut after anything else (lut_chain) keeps its own pass."""
    graph = quantize(OP_CASES[case](Builder(), np.random.default_rng(1)))
    info = emit_bundle(graph, tmp_path)
    text = (tmp_path / "model.c").read_text()
    fused = [lay for lay in info.layers if lay.fused_into]
    if case == "lut_chain":
        assert not fused and "tinyc_s8_lut(" in text
        return
    assert [lay.fused_into for lay in fused] == ["h"] and "tinyc_s8_lut(" not in text
    assert info.layers[fused[0].index + 1].kernels == ()


def test_identical_derived_arrays_are_stored_once(tmp_path):
    """Two layers with the same weights (as the patch pass makes, one copy per patch) share one array:
    the second name is a #define of the first, and the results stay exact."""
    b, rng = Builder(), np.random.default_rng(5)
    x = b.input("x", (1, 4, 6, 6))
    wv, bv = w(rng, 8, 4, 3, 3), w(rng, 8)
    convs = [b.op("conv2d", x, b.const(f"w{i}", wv), b.const(f"b{i}", bv), name=f"c{i}", stride=[1, 1],
                  dilation=[1, 1], groups=1, padding=[1, 1, 1, 1]) for i in range(2)]
    graph = quantize(b.graph(b.op("add", *convs, name="y")))
    assert_exact(graph, tmp_path, sanitize=True)
    text = (tmp_path / "model.c").read_text()
    arrays = re.findall(r"static const int32_t (model_w_c\d_w)\[", text)
    aliases = re.findall(r"#define (model_w_c\d_w) (model_w_c\d_w)", text)
    assert arrays == ["model_w_c0_w"] and aliases == [("model_w_c1_w", "model_w_c0_w")]
