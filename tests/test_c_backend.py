"""The float32 C backend: every op and every zoo model, built with -Werror and
ASan/UBSan on the host and compared with the reference interpreter."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from helpers import assert_close, fused_graph, zoo_graph
from test_planner import Builder
from bench import zoo
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.c_ops import c_floats
from tinyc.backends.run import run_model
from tinyc.errors import BackendError
from tinyc.interpreter import random_inputs as graph_inputs, run as interpret
from tinyc.ir import TensorType, Value

RTOL = 1e-4
HOST_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
              "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
            "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-c"]


def random_inputs(graph, rows: int, seed: int = 0, scale: float = 1.0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [graph_inputs(graph, rng, scale=scale) for _ in range(rows)]


def check_on_host(graph, out_dir, *, rows: int = 2, scale: float = 1.0, name: str = "model"):
    """Emit, build with sanitizers, run every row, compare each output with the interpreter."""
    emit_bundle(graph, out_dir, name=name)
    samples = random_inputs(graph, rows, scale=scale)
    flat = np.stack([np.concatenate([x.ravel() for x in row]) for row in samples])
    got = run_model(out_dir, "host", name, flat, sanitize=True)
    for row, xs in zip(got, samples):
        start = 0
        for want in interpret(graph, xs):
            assert_close(row[start:start + want.size], want.ravel(), RTOL)
            start += want.size
        assert start == row.size


def w(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---- one graph per op variant ------------------------------------------------------

def conv(x_shape, w_shape, bias=True, **attrs):
    def build(b, rng):
        x = b.input("x", x_shape)
        operands = [x, b.const("w", w(rng, *w_shape))] + ([b.const("b", w(rng, w_shape[0]))] if bias else [])
        attrs.setdefault("stride", [1, 1])
        attrs.setdefault("dilation", [1, 1])
        attrs.setdefault("groups", 1)
        attrs.setdefault("padding", [0, 0, 0, 0])
        return b.graph(b.op("conv2d", *operands, name="y", **attrs))
    return build


def unary(kind, shape=(2, 3, 5), **attrs):
    def build(b, rng):
        return b.graph(b.op(kind, b.input("x", shape), name="y", **attrs))
    return build


def binary(kind, a_shape, b_shape, const_b=False, **attrs):
    def build(b, rng):
        a = b.input("a", a_shape)
        other = b.const("k", w(rng, *b_shape) + 3.0) if const_b else b.input("b", b_shape)
        return b.graph(b.op(kind, a, other, name="y", **attrs))
    return build


def pool(kind, shape, **attrs):
    def build(b, rng):
        attrs.setdefault("padding", [0, 0, 0, 0])
        attrs.setdefault("ceil_mode", False)
        if kind == "max_pool2d":
            attrs.setdefault("dilation", [1, 1])
        else:
            attrs.setdefault("count_include_pad", True)
        return b.graph(b.op(kind, b.input("x", shape), name="y", **attrs))
    return build


def linear(x_shape, n, bias=True, **attrs):
    def build(b, rng):
        k = x_shape[-1]
        operands = [b.input("x", x_shape), b.const("w", w(rng, n, k))] + ([b.const("b", w(rng, n))] if bias else [])
        return b.graph(b.op("linear", *operands, name="y", **attrs))
    return build


def matmul(a_shape, b_shape, **attrs):
    def build(b, rng):
        return b.graph(b.op("matmul", b.input("a", a_shape), b.input("b", b_shape), name="y", **attrs))
    return build


def batch_norm(shape):
    def build(b, rng):
        c = shape[1]
        stats = [b.const("mean", w(rng, c)), b.const("var", np.abs(w(rng, c)) + 0.1),
                 b.const("gamma", w(rng, c)), b.const("beta", w(rng, c))]
        return b.graph(b.op("batch_norm", b.input("x", shape), *stats, name="y", eps=1e-5))
    return build


def cat(shapes, axis):
    def build(b, rng):
        xs = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
        return b.graph(b.op("cat", *xs, name="y", axis=axis))
    return build


RELU6 = {"act": "clamp", "act_min": 0.0, "act_max": 6.0}
LEAKY = {"act": "leaky_relu", "act_alpha": 0.1}

OP_CASES = {
    "conv3x3_pad1": conv((1, 3, 8, 8), (4, 3, 3, 3), padding=[1, 1, 1, 1]),
    "conv_nobias_relu": conv((2, 2, 6, 7), (3, 2, 3, 2), bias=False, act="relu"),
    "conv_stride2_asym_pad": conv((1, 3, 9, 8), (4, 3, 3, 3), stride=[2, 2], padding=[0, 1, 1, 0]),
    "conv_channel_blocks": conv((1, 6, 7, 6), (3, 6, 3, 3), stride=[2, 1], padding=[1, 0, 1, 2]),
    "conv_stride_hw_differ": conv((1, 2, 10, 9), (2, 2, 3, 1), stride=[3, 1], padding=[2, 0, 1, 0]),
    "conv_dilation": conv((1, 2, 9, 9), (3, 2, 3, 3), dilation=[2, 3], padding=[2, 3, 2, 3], **LEAKY),
    "conv_groups": conv((1, 4, 6, 6), (6, 2, 3, 3), groups=2, padding=[1, 1, 1, 1], **RELU6),
    "conv_depthwise": conv((1, 4, 7, 7), (4, 1, 3, 3), groups=4, stride=[2, 2], padding=[1, 1, 1, 1]),
    "conv_depthwise_mult2": conv((1, 3, 6, 5), (6, 1, 5, 3), groups=3, padding=[2, 1, 2, 1]),
    "conv_1x1": conv((2, 5, 4, 3), (7, 5, 1, 1), **RELU6),
    "conv_1x1_stride2": conv((1, 5, 5, 5), (3, 5, 1, 1), stride=[2, 2]),
    "conv_kernel_past_input": conv((1, 1, 2, 3), (2, 1, 5, 5), padding=[2, 2, 2, 2]),
    "linear": linear((1, 10), 4),
    "linear_3d_nobias": linear((2, 3, 6), 5, bias=False, **LEAKY),
    "linear_relu6": linear((4, 6), 3, **RELU6),
    "matmul": matmul((3, 4), (4, 5)),
    "matmul_broadcast_batch": matmul((2, 1, 3, 4), (5, 4, 2), act="relu"),
    "batch_norm_4d": batch_norm((2, 3, 4, 5)),
    "batch_norm_2d": batch_norm((3, 6)),
    "relu": unary("relu"),
    "clamp": unary("clamp", min=-0.5, max=0.25),
    "leaky_relu": unary("leaky_relu", alpha=0.02),
    "sigmoid": unary("sigmoid"),
    "tanh": unary("tanh"),
    "hardswish": unary("hardswish"),
    "add_same_shape": binary("add", (2, 3, 4), (2, 3, 4), act="relu"),
    "sub_scalar": binary("sub", (2, 3, 4), (), const_b=True),
    "mul_per_channel": binary("mul", (2, 3, 4, 5), (1, 3, 1, 1), const_b=True, **RELU6),
    "div_general_broadcast": binary("div", (3, 1, 4), (2, 1), const_b=True),
    "add_both_broadcast": binary("add", (1, 4, 1), (3, 1, 5), **LEAKY),
    "sub_scalar_first": binary("sub", (), (2, 3)),
    "max_pool_2x2": pool("max_pool2d", (1, 2, 6, 8), kernel=[2, 2], stride=[2, 2]),
    "max_pool_pad_ceil": pool("max_pool2d", (1, 2, 7, 6), kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1],
                              ceil_mode=True),
    "max_pool_dilation": pool("max_pool2d", (2, 1, 9, 9), kernel=[2, 3], stride=[1, 2], dilation=[2, 2]),
    "avg_pool_include_pad": pool("avg_pool2d", (1, 2, 6, 7), kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1]),
    "avg_pool_exclude_pad_ceil": pool("avg_pool2d", (1, 3, 7, 5), kernel=[2, 3], stride=[2, 2],
                                      padding=[1, 1, 1, 1], ceil_mode=True, count_include_pad=False),
    "avg_pool_include_pad_ceil": pool("avg_pool2d", (1, 1, 5, 5), kernel=[2, 2], stride=[2, 2], ceil_mode=True),
    "mean_hw_keepdim": unary("mean", (2, 3, 4, 5), axes=[2, 3], keepdim=True),
    "mean_channels": unary("mean", (2, 3, 4), axes=[1], keepdim=False),
    "mean_outer_axes": unary("mean", (2, 3, 4, 2), axes=[0, 2], keepdim=False),
    "reshape_chain": lambda b, rng: b.graph(b.op("relu", b.op("reshape", b.op("tanh", b.input("x", (2, 6)), name="t"),
                                                              name="r", shape=[3, 4]), name="y")),
    "transpose_nchw_nhwc": unary("transpose", (2, 3, 4, 5), perm=[0, 2, 3, 1]),
    "transpose_3d": unary("transpose", (2, 3, 4), perm=[2, 0, 1]),
    "cat_channels": cat([(1, 2, 3, 3), (1, 1, 3, 3), (1, 3, 3, 3)], axis=1),
    "cat_last_axis": cat([(2, 3, 1), (2, 3, 4)], axis=2),
    "softmax_last": unary("softmax", (3, 7), axis=1),
    "softmax_middle": unary("softmax", (2, 5, 3), axis=1),
    "pad_asym": unary("pad", (1, 2, 3, 4), pads=[0, 0, 1, 2, 0, 1, 0, 3], value=0.5),
    "pad_crop": unary("pad", (2, 5, 6), pads=[0, -1, 2, 0, -2, -1], value=-1.0),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_matches_interpreter(case, tmp_path):
    graph = OP_CASES[case](Builder(), np.random.default_rng(1))
    check_on_host(graph, tmp_path)


def test_sigmoid_tanh_saturate(tmp_path):
    b = Builder()
    x = b.input("x", (4, 16))
    graph = b.graph(b.op("sigmoid", x, name="s"), b.op("tanh", x, name="t"))
    check_on_host(graph, tmp_path, scale=60.0)


# ---- memory plan corner cases, run end to end ------------------------------------------

def test_multiple_inputs_and_outputs(tmp_path):
    b = Builder()
    x, y = b.input("x", (2, 4)), b.input("y", (4, 3))
    m = b.op("matmul", x, y, name="m")
    r = b.op("relu", m, name="r")               # output, and read again below
    s = b.op("sigmoid", r, name="s")
    v = b.op("reshape", y, name="v", shape=[12])  # a view of an input, as an output
    graph = b.graph(s, r, v, r)
    check_on_host(graph, tmp_path)
    header = (tmp_path / "model.h").read_text()
    for macro, value in [("INPUT_SIZE", 20), ("OUTPUT_SIZE", 30), ("INPUT1_OFFSET", 8), ("INPUT1_SIZE", 12),
                         ("OUTPUT2_OFFSET", 12), ("OUTPUT3_OFFSET", 24), ("OUTPUT3_SIZE", 6)]:
        assert f"#define model_{macro} {value}\n" in header


def test_identity_and_const_outputs(tmp_path):
    b = Builder()
    x = b.input("x", (3,))
    k = b.const("k", np.arange(4, dtype=np.float32))
    check_on_host(b.graph(x, k, b.op("reshape", k, name="kv", shape=[2, 2])), tmp_path)


def test_output_written_in_place_without_arena(tmp_path):
    b = Builder()
    x = b.input("x", (1, 32))
    y = b.op("hardswish", b.op("tanh", x, name="t"), name="y")
    info = emit_bundle(b.graph(y), tmp_path)
    assert info.arena_size == 0 and info.tensors["t"].space == "output"
    assert "_arena" not in (tmp_path / "model.c").read_text()
    check_on_host(b.graph(y), tmp_path)


# ---- zoo models ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True], ids=["imported", "fused"])
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_on_host(name, fused, tmp_path):
    graph = fused_graph(name) if fused else zoo_graph(name)
    check_on_host(graph, tmp_path, name=name)
    info = emit_bundle(graph, tmp_path, name=name)
    assert info.lower_bound <= info.arena_size
    assert f"#define {name}_ARENA_SIZE {info.arena_size}\n" in (tmp_path / f"{name}.h").read_text()
    info.plan.check()


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("fused", [False, True], ids=["imported", "fused"])
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_compiles_for_cortex_m4(name, fused, tmp_path):
    emit_bundle(fused_graph(name) if fused else zoo_graph(name), tmp_path, name=name, target_name="cortex-m4")
    subprocess.run(["arm-none-eabi-gcc", *M4_FLAGS, "-I", str(tmp_path), str(tmp_path / f"{name}.c"),
                    "-o", str(tmp_path / f"{name}.o")], check=True, capture_output=True)


# ---- the bundle itself -----------------------------------------------------------------

def test_reemission_is_byte_identical(tmp_path):
    graph = fused_graph("kitchen_sink")
    a = emit_bundle(graph, tmp_path / "a", name="ks")
    b = emit_bundle(graph.copy(), tmp_path / "b", name="ks")
    assert [f.name for f in a.files] == [f.name for f in b.files]
    for fa, fb in zip(a.files, b.files):
        assert fa.read_bytes() == fb.read_bytes(), fa.name
    text = (tmp_path / "a" / "ks.c").read_text()
    assert str(tmp_path) not in text and "malloc" not in text


APP = r"""
#include <stdio.h>
#include "net_a.h"
#include "net_b.h"
static float in_a[net_a_INPUT_SIZE], out_a[net_a_OUTPUT_SIZE];
static float in_b[net_b_INPUT_SIZE], out_b[net_b_OUTPUT_SIZE];
void tinyc_profile_mark(int layer) { fprintf(stderr, "%d ", layer); }
int main(void)
{
    if (fread(in_a, sizeof in_a, 1, stdin) != 1 || fread(in_b, sizeof in_b, 1, stdin) != 1) return 3;
    if (net_a_invoke(in_a, out_a) != 0 || net_b_invoke(in_b, out_b) != 0) return 2;
    if (net_a_invoke(0, out_a) != -1) return 4;
    fwrite(out_a, sizeof out_a, 1, stdout);
    fwrite(out_b, sizeof out_b, 1, stdout);
    return 0;
}
"""


def test_two_bundles_link_into_one_program(tmp_path):
    graphs = {"net_a": fused_graph("mlp"), "net_b": zoo_graph("cnn_bn")}
    infos = {n: emit_bundle(g, tmp_path, name=n) for n, g in graphs.items()}
    (tmp_path / "app.c").write_text(APP)
    exe = tmp_path / "app"
    sources = sorted(str(p) for p in tmp_path.glob("*.c"))
    subprocess.run(["gcc", *HOST_FLAGS, "-DTINYC_PROFILE", "-I", str(tmp_path), *sources, "-o", str(exe), "-lm"],
                   check=True)
    xs = {n: random_inputs(g, 1)[0][0] for n, g in graphs.items()}
    proc = subprocess.run([str(exe)], input=xs["net_a"].tobytes() + xs["net_b"].tobytes(),
                          capture_output=True, check=True)
    got = np.frombuffer(proc.stdout, np.float32)
    want = [interpret(g, [xs[n]])[0].ravel() for n, g in graphs.items()]
    assert_close(got[:want[0].size], want[0], RTOL)
    assert_close(got[want[0].size:], want[1], RTOL)
    # with -DTINYC_PROFILE each model marks its layers 0..n in order
    marks = [str(i) for n in graphs for i in range(len(infos[n].layers) + 1)]
    assert proc.stderr.decode().split() == marks


def test_layers_and_marks(tmp_path):
    graph = fused_graph("cnn_bn")
    info = emit_bundle(graph, tmp_path)
    text = (tmp_path / "model.c").read_text()
    ops = list(graph.compute_ops())
    assert [layer.name for layer in info.layers] == [op.result.name for op in ops]
    assert re.findall(r"TINYC_LAYER_MARK\((\d+)\);", text) == [str(i) for i in range(len(ops) + 1)]
    assert '#include "tinyc_profile.h"' in text


def test_weights_are_const_arrays_with_exact_literals(tmp_path):
    b = Builder()
    values = np.array([1.5, -0.0, 1e-45, 3.4028235e38, 0.1, 1 / 3, 2.0 ** -126, 123456789.0], np.float32)
    graph = b.graph(b.op("add", b.input("x", (8,)), b.const("k", values), name="y"))
    emit_bundle(graph, tmp_path)
    text = (tmp_path / "model.c").read_text()
    body = re.search(r"static const float model_w_k\[8\] = \{(.*?)\};", text, re.S).group(1)
    literals = [s.strip() for s in body.split(",")]
    assert literals[0] == "1.5f" and all(s.endswith("f") for s in literals)
    assert np.array_equal(np.array([float(s[:-1]) for s in literals], np.float32).view(np.uint32),
                          values.view(np.uint32))
    assert c_floats(np.array([np.inf, -np.inf], np.float32)) == ["INFINITY", "-INFINITY"]
    check_on_host(graph, tmp_path)


def test_rejects_non_float_graphs_and_bad_names(tmp_path):
    b = Builder()
    graph = b.graph(b.op("relu", b.input("x", (4,)), name="y"))
    with pytest.raises(BackendError, match="not a C identifier"):
        emit_bundle(graph, tmp_path, name="my-model")
    graph.inputs[0] = Value("x", TensorType((4,), "i8"))
    with pytest.raises(BackendError, match="needs f32 tensors"):
        emit_bundle(graph, tmp_path)
