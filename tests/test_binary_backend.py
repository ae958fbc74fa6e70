"""The binary-layer C backend (backends/c_ops_binary.py, runtime_c/tinyc_kernels_bin.c): sign
writes bit-packed activations, bin_conv2d / bin_linear run XNOR + popcount on packed words
(u1 input), sign-selected byte sums (i8 input) or +-x sums (f32 input). Every u1 / i8 form
must equal the interpreter bit for bit (host under ASan/UBSan, QEMU Cortex-M4 with the DSP
primitives, Cortex-M3 without), float inputs to rounding; the binarized digits models must
be exact end to end and layer by layer, and their binary layers cheaper than the int8 ones."""
from __future__ import annotations

import functools
import math
import re
import subprocess

import numpy as np
import pytest

from helpers import layer_tensor, record_layers
from tinyc import quant
from tinyc.backends import c_ops_binary
from tinyc.backends.bench import bench_model
from tinyc.backends.build import build
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.backends.targets import get_target
from tinyc.interpreter import run as interpret, run_all
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.ops import infer_type
from tinyc.verifier import verify

BINARY_ACT = "fuse,binarize{activations=binary},quantize-int8"
FLOAT_ACT = "fuse,binarize,quantize-int8"
INT8 = "fuse,quantize-int8"
ACTS = {"none": {}, "relu": {"act": "relu"}, "clamp": {"act": "clamp", "act_min": -0.25, "act_max": 0.75},
        "leaky": {"act": "leaky_relu", "act_alpha": 0.125}}


# ---- one binary layer between float edges ----------------------------------------------------------

class _G:
    def __init__(self):
        self.ops: list[Op] = []

    def const(self, name, arr, dtype, q=None) -> Value:
        v = Value(name, TensorType(tuple(arr.shape), dtype, q))
        self.ops.append(Op("const", [], v, {"value": arr}))
        return v

    def op(self, kind, operands, name, attrs=None, q=None) -> Value:
        t = infer_type(kind, [v.type for v in operands], attrs or {})
        if q is not None:
            t = TensorType(t.shape, t.dtype, q)
        v = Value(name, t)
        self.ops.append(Op(kind, list(operands), v, dict(attrs or {})))
        return v


def layer_graph(kind, x_shape, w_shape, x_kind, out, attrs=None, bias=True, threshold="channel", seed=0) -> Graph:
    """x (f32) -> [sign | quantize | quantize, sign] -> kind -> [dequantize]: one binary layer
    in the form (input x_kind: u1, s8sign (u1 from int8 codes), i8, f32; output f32 / i8)."""
    rng = np.random.default_rng(seed)
    attrs = dict(attrs or {})
    if kind == "bin_conv2d":
        for k, v in (("stride", [1, 1]), ("dilation", [1, 1]), ("groups", 1), ("padding", [0, 0, 0, 0])):
            attrs.setdefault(k, v)
    x = Value("x", TensorType(tuple(x_shape)))
    b = _G()
    chan = (x_shape[1], 1, 1) if kind == "bin_conv2d" else (x_shape[-1],)
    tshape = {"channel": chan, "full": tuple(x_shape[1:]), "scalar": ()}.get(threshold)
    xq = QuantParams((0.04,), (-7,))
    h = x
    if x_kind in ("i8", "s8sign"):
        h = b.op("quantize", [x], "x.q", q=xq)
    if x_kind == "u1":
        t = np.asarray(0.3 * rng.standard_normal(tshape or ()), np.float32)
        operands = [x] if tshape is None else [x, b.const("t", t, "f32")]
        h = b.op("sign", operands, "x.sign")
    elif x_kind == "s8sign":
        codes = np.asarray(rng.integers(-20, 20, tshape or ()), np.int32)
        if codes.size >= 2:
            codes.flat[0], codes.flat[1] = -129, 128            # always 1, never 1
        operands = [h] if tshape is None else [h, b.const("t", codes, "i32")]
        h = b.op("sign", operands, "x.sign")
    o = w_shape[0]
    k = math.prod(w_shape[1:])
    w = b.const("w", rng.integers(0, 2, w_shape).astype(np.uint8), "u1")
    alpha = rng.uniform(0.05, 0.5, o).astype(np.float32)
    a = b.const("alpha", alpha, "f32")
    operands = [h, w, a]
    if out == "i8":
        in_scale = xq.scale[0] if x_kind == "i8" else quant.BIN_U1_SCALE
        bq = quant.bin_bias_params(in_scale, alpha)
        real = rng.standard_normal(o) * alpha * math.sqrt(k) * (0.04 if x_kind == "i8" else 1.0)
        operands.append(b.const("b", quant.quantize_bias(real, bq), "i32", bq))
        span = float(alpha.mean()) * math.sqrt(k) * (3.0 if x_kind == "i8" else 2.5)
        q = QuantParams((quant.f32(span / 127),), (int(rng.integers(-20, 20)),))
        y = b.op(kind, operands, "y", attrs, q)
        y = b.op("dequantize", [y], "y.dq")
    else:
        if bias:
            operands.append(b.const("b", rng.standard_normal(o).astype(np.float32), "f32"))
        y = b.op(kind, operands, "y", attrs)
    g = Graph("t", [x], [y], b.ops)
    verify(g)
    return g


def rows_for(graph, rows=3, seed=7, scale=1.5, special=False):
    rng = np.random.default_rng(seed)
    shape = graph.inputs[0].type.shape
    out = [(scale * rng.standard_normal(shape)).astype(np.float32) for _ in range(rows)]
    if special:   # NaN is below every threshold; infinities and -0.0 compare as numbers
        flat = out[0].reshape(-1)
        flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 3e38][:flat.size]
    return out


def run_bundle(graph, out_dir, target="host", rows=None, **options):
    """(the C outputs, the interpreter's) for the rows; the bundle built for `target`."""
    rows = rows if rows is not None else rows_for(graph)
    emit_bundle(graph, out_dir, target_name=target)
    if target != "host":
        write_target_files(out_dir, target, "model")
    got = run_model(out_dir, target, "model", np.stack([r.ravel() for r in rows]), **options)
    want = np.stack([np.asarray(interpret(graph, [r])[0], np.float32).ravel() for r in rows])
    return got, want


def assert_bits_equal(got, want):
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, f"{bad.size} outputs differ, first at {bad[:6]}: {got.ravel()[bad[:4]]} vs {want.ravel()[bad[:4]]}"


CONV = "bin_conv2d"
LIN = "bin_linear"
PAD1 = {"padding": [1, 1, 1, 1]}
CASES = {
    # u1 input, float output (bit exact): odd channels, padding, stride, dilation, groups, every act
    "conv_u1_f32_pad_relu": (CONV, (1, 5, 6, 7), (7, 5, 3, 3), "u1", "f32", {**PAD1, **ACTS["relu"]}, True, "channel"),
    "conv_u1_f32_stride_asym_clamp_nobias": (CONV, (2, 37, 7, 6), (6, 37, 3, 2), "u1", "f32",
                                             {"stride": [2, 1], "padding": [0, 1, 2, 0], **ACTS["clamp"]}, False,
                                             "full"),
    "conv_u1_f32_dilation_leaky_nothreshold": (CONV, (1, 33, 9, 9), (4, 33, 3, 3), "u1", "f32",
                                               {"dilation": [2, 3], "padding": [2, 3, 2, 3], **ACTS["leaky"]}, True,
                                               None),
    "conv_u1_f32_groups": (CONV, (1, 6, 5, 5), (4, 3, 3, 3), "u1", "f32", {**PAD1, "groups": 2}, True, "scalar"),
    # u1 input, int8 output
    "conv_u1_i8_groups_wide": (CONV, (1, 70, 5, 4), (6, 35, 3, 3), "u1", "i8", {**PAD1, "groups": 2, **ACTS["relu"]},
                               True, "channel"),
    "conv_u1_i8_kernel_past_input": (CONV, (1, 3, 2, 3), (2, 3, 5, 5), "u1", "i8", {"padding": [2, 2, 2, 2]}, True,
                                     "channel"),
    "conv_u1_i8_1x1_stride2_aligned": (CONV, (1, 64, 5, 5), (9, 64, 1, 1), "u1", "i8", {"stride": [2, 2]}, True,
                                       "channel"),
    "conv_u1_i8_digits_like_leaky": (CONV, (1, 16, 8, 8), (32, 16, 3, 3), "u1", "i8", {**PAD1, **ACTS["leaky"]},
                                     True, "channel"),
    "conv_s8sign_i8_clamp": (CONV, (1, 5, 6, 6), (4, 5, 3, 3), "s8sign", "i8", {**PAD1, **ACTS["clamp"]}, True,
                             "channel"),
    "conv_s8sign_nothreshold": (CONV, (1, 40, 4, 4), (3, 40, 3, 3), "s8sign", "i8", PAD1, True, None),
    # int8 input
    "conv_i8_stride_pad_relu": (CONV, (1, 5, 6, 6), (3, 5, 3, 3), "i8", "i8", {**PAD1, "stride": [2, 2],
                                                                            **ACTS["relu"]}, True, None),
    "conv_i8_groups_dilation_clamp": (CONV, (1, 8, 7, 7), (6, 4, 3, 3), "i8", "i8",
                                      {"groups": 2, "dilation": [2, 2], "padding": [2, 2, 2, 2], **ACTS["clamp"]},
                                      True, None),
    "conv_i8_leaky_asym": (CONV, (2, 3, 5, 9), (5, 3, 2, 3), "i8", "i8",
                           {"padding": [0, 2, 1, 0], "stride": [1, 2], **ACTS["leaky"]}, True, None),
    # linear
    "lin_u1_f32_relu": (LIN, (1, 40), (7, 40), "u1", "f32", ACTS["relu"], True, "channel"),
    "lin_u1_f32_rows_leaky_nobias": (LIN, (2, 3, 45), (5, 45), "u1", "f32", ACTS["leaky"], False, "full"),
    "lin_u1_i8_rows": (LIN, (3, 100), (10, 100), "u1", "i8", ACTS["relu"], True, "channel"),
    "lin_u1_i8_aligned": (LIN, (1, 128), (8, 128), "u1", "i8", {}, True, "scalar"),
    "lin_s8sign_i8": (LIN, (2, 33), (4, 33), "s8sign", "i8", ACTS["clamp"], True, "channel"),
    "lin_i8_i8_relu": (LIN, (2, 37), (6, 37), "i8", "i8", ACTS["relu"], True, None),
}
FLOAT_CASES = {
    "conv_f32_pad_relu": (CONV, (1, 5, 6, 7), (7, 5, 3, 3), "f32", "f32", {**PAD1, **ACTS["relu"]}, True, None),
    "conv_f32_groups_stride_nobias_leaky": (CONV, (1, 6, 7, 7), (4, 3, 3, 3), "f32", "f32",
                                            {"groups": 2, "stride": [2, 2], "padding": [0, 1, 1, 0],
                                             **ACTS["leaky"]}, False, None),
    "lin_f32_rows_clamp": (LIN, (2, 3, 45), (5, 45), "f32", "f32", ACTS["clamp"], True, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_exact_on_host(case, tmp_path):
    graph = layer_graph(*CASES[case])
    got, want = run_bundle(graph, tmp_path, sanitize=True)
    assert_bits_equal(got, want)


@pytest.mark.parametrize("case", sorted(FLOAT_CASES))
def test_float_input_layer_to_rounding(case, tmp_path):
    graph = layer_graph(*FLOAT_CASES[case])
    got, want = run_bundle(graph, tmp_path, sanitize=True)
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got - want).max()) <= 1e-5 * scale


def test_sign_special_values(tmp_path):
    """NaN gives bit 0 (-1), infinities and signed zeros compare as numbers (sign(0) = +1)."""
    for k, threshold in enumerate([None, "channel"]):
        graph = layer_graph(LIN, (1, 70), (9, 70), "u1", "f32", {}, True, threshold, seed=k)
        rows = rows_for(graph, special=True)
        got, want = run_bundle(graph, tmp_path / str(k), rows=rows, sanitize=True)
        assert_bits_equal(got, want)


def test_packing_order_and_words(tmp_path):
    """sign packs a conv input channels-last and a linear input row-major, 32 bits per
    word, bit i of the stream in byte i // 8; weights are words of (ky, kx, c) bits."""
    w = np.zeros((2, 40), np.uint8)
    w[0, [0, 33]] = 1
    w[1, 39] = 1
    words = c_ops_binary.pack_bits(w, 2)
    assert words.tolist() == [1, 2, 0, 1 << 7]
    assert c_ops_binary.bit_offsets((1, 3, 2, 2), c_ops_binary.CONV)[0, :, 0, 1].tolist() == [3, 4, 5]
    raw = np.packbits(np.arange(24) % 3 == 0, bitorder="little")
    got = c_ops_binary.unpack_stream(raw, (1, 3, 2, 4), c_ops_binary.CONV)
    assert got[0, :, 0, 0].tolist() == [1, 0, 0] and got[0, 0, 0, 1] == 1
    g = layer_graph(CONV, (1, 16, 8, 8), (32, 16, 3, 3), "u1", "i8", PAD1)
    assert c_ops_binary.BinaryLowering(g).order(g.ops[1].result) == c_ops_binary.CONV
    emit_bundle(g, tmp_path)
    text = (tmp_path / "model.c").read_text()
    assert "static const uint32_t model_w_y_w[160]" in text        # 32 channels x 5 words (144 bits)
    assert "#define TINYC_BIN_CONV_U1" in text and "#define TINYC_BIN_SIGN_F32" in text


def test_backend_errors():
    from tinyc.errors import BackendError
    g = layer_graph(CONV, (1, 4, 5, 5), (3, 4, 3, 3), "u1", "f32", PAD1)
    sign = g.ops[1].result
    b = _G()
    b.ops = list(g.ops)
    b.op(LIN, [sign, b.const("w2", np.ones((2, 5), np.uint8), "u1"), b.const("a2", np.ones(2, np.float32), "f32")],
         "z")
    with pytest.raises(BackendError, match="both bin_conv2d and bin_linear"):
        c_ops_binary.BinaryLowering(Graph("t", g.inputs, g.outputs, b.ops))
    b.ops = list(g.ops)
    b.op("reshape", [sign], "r", {"shape": [1, 100]})
    with pytest.raises(BackendError, match="activations only with sign"):
        c_ops_binary.BinaryLowering(Graph("t", g.inputs, g.outputs, b.ops))


# ---- the digits models ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def digits(which: str, pipeline: str):
    from bench import compression_eval as ce
    graph, _ = ce.compile_digits(which, pipeline)
    return graph


def digits_rows(which: str, n: int):
    from bench import compression_eval as ce
    _, (_, _, x_test, _) = ce.trained(which)
    return [x.reshape(1, 1, 8, 8).astype(np.float32) for x in x_test[:n]]


@pytest.mark.parametrize("which", ["cnn", "mlp"])
@pytest.mark.parametrize("pipeline", [BINARY_ACT, FLOAT_ACT])
def test_digits_exact_on_host_and_accuracy(which, pipeline, tmp_path):
    """The whole test split through the sanitized host build: outputs equal the
    interpreter's, so the C model's accuracy is compression_eval's."""
    from bench import compression_eval as ce
    graph = digits(which, pipeline)
    rows = digits_rows(which, 360)
    got, want = run_bundle(graph, tmp_path, rows=rows, sanitize=True)
    assert_bits_equal(got, want)
    _, (_, _, _, y_test) = ce.trained(which)
    from bench.digits import accuracy
    assert accuracy(got, y_test) == pytest.approx(ce.accuracy(graph, which))
    kinds = [op.kind for op in graph.compute_ops()]
    assert ("sign" in kinds) == (pipeline == BINARY_ACT) and ("bin_conv2d" in kinds or "bin_linear" in kinds)


def test_binarized_classifier_reads_the_flattened_nhwc_pool(tmp_path):
    """Binarizing the CNN's classifier: sign (u1) or the i8 bin_linear reads the flatten of a
    channels-last pool, a permuted view (strided walk / permuted weight columns)."""
    for k, act in enumerate(["binary", "float"]):
        graph = digits("cnn", f"fuse,binarize{{layers=conv2d_1,linear activations={act}}},quantize-int8")
        got, want = run_bundle(graph, tmp_path / str(k), rows=digits_rows("cnn", 16), sanitize=True)
        assert_bits_equal(got, want)


def test_float_graphs_digits(tmp_path):
    """Float binarized graphs compile; the binary layer's own u1 -> f32 output is exact, the
    float layers around it match to rounding."""
    for k, (which, pipeline) in enumerate([("cnn", "fuse,binarize{activations=binary}"), ("mlp", "fuse,binarize")]):
        graph = digits(which, pipeline)
        got, want = run_bundle(graph, tmp_path / str(k), rows=digits_rows(which, 8), sanitize=True)
        assert float(np.abs(got - want).max()) <= 1e-5 * float(np.abs(want).max())


@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_every_layer_exact_through_the_debug_hook(which, tmp_path):
    """TINYC_LAYER_OUTPUT records each layer; int8 tensors mapped back through the bundle's
    layouts and the packed sign bits through their packing order equal the interpreter's."""
    graph = digits(which, BINARY_ACT)
    info = emit_bundle(graph, tmp_path)
    x = digits_rows(which, 1)[0]
    env = run_all(graph, [x])
    ops = list(graph.compute_ops())
    orders = c_ops_binary.BinaryLowering(graph)
    seen = []
    for layer, raw in record_layers(tmp_path, x):
        v = ops[layer].result
        want = env[v.name]
        if v.type.dtype == "u1":
            got = c_ops_binary.unpack_stream(raw, v.type.shape, orders.order(v))
        else:
            got = layer_tensor(raw, v, want.shape, info)
        assert np.array_equal(got, want), f"layer {layer} %{v.name} ({ops[layer].kind}) differs"
        seen.append(layer)
    assert seen == list(range(len(ops)))
    assert {"sign"} <= {ops[i].kind for i in seen}


# ---- Cortex-M ----------------------------------------------------------------------------------------

@pytest.mark.qemu
@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_digits_exact_on_cortex_m4(which, tmp_path):
    for k, pipeline in enumerate([BINARY_ACT, FLOAT_ACT]):
        graph = digits(which, pipeline)
        got, want = run_bundle(graph, tmp_path / str(k), "cortex-m4", rows=digits_rows(which, 24))
        assert_bits_equal(got, want)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m3"])
def test_layers_exact_on_cortex_m(target, tmp_path):
    """The DSP (USADA8) and portable paths, and the float output's separate multiply and add
    (soft float on M3, FPv4 on M4)."""
    for name in ("conv_u1_f32_stride_asym_clamp_nobias", "conv_u1_i8_groups_wide", "conv_i8_groups_dilation_clamp",
                 "lin_u1_f32_rows_leaky_nobias", "lin_s8sign_i8"):
        got, want = run_bundle(layer_graph(*CASES[name]), tmp_path / name, target)
        assert_bits_equal(got, want)


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m3", "cortex-m0"])
def test_small_model_exact_without_dsp(target, tmp_path):
    got, want = run_bundle(digits("mlp", BINARY_ACT), tmp_path, target, rows=digits_rows("mlp", 16))
    assert_bits_equal(got, want)


@pytest.mark.parametrize("target", ["cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33"])
def test_compiles_warning_free_for_cortex_m(target, tmp_path):
    """-std=c99 -Wall -Wextra -Werror with the target's flags: every binary kernel (int8 and
    float bundles), with and without the DSP extension."""
    t = get_target(target)
    graphs = {"cnn": digits("cnn", BINARY_ACT), "mlp_f": digits("mlp", FLOAT_ACT),
              "conv_f": layer_graph(*CASES["conv_u1_f32_groups"]), "lin_f": layer_graph(*FLOAT_CASES["lin_f32_rows_clamp"])}
    for name, graph in graphs.items():
        emit_bundle(graph, tmp_path / name, name=name, target_name=target)
        for src in (f"{name}.c", "tinyc_kernels_bin.c"):
            proc = subprocess.run([t.cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *t.opt_flags, *t.cpu_flags, "-c",
                                   src, "-o", src + ".o"], cwd=tmp_path / name, capture_output=True, text=True)
            assert proc.returncode == 0 and not proc.stderr, proc.stderr


def _disassembly(elf) -> str:
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout


def test_float_output_never_fuses_the_multiply_add(tmp_path):
    """(float)S * alpha, then + bias: even with -ffp-contract=fast (GCC's GNU-mode default) the
    M4 code of the binary layer has no VFMA; without the kernel's guard it would."""
    graph = layer_graph(*CASES["conv_u1_f32_pad_relu"])
    emit_bundle(graph, tmp_path, target_name="cortex-m4")
    write_target_files(tmp_path, "cortex-m4", "model")
    fma = re.compile(r"\bvf(n?m[as]|ma|ms)\.f32")

    def conv_code(extra):
        elf = build(tmp_path, "cortex-m4", "model", "run", extra_cflags=["-ffp-contract=fast", *extra],
                    force=True)
        wrapper = re.search(r"void (model_s\d+)\(.*\n\{\n\s*tinyc_bin_conv_u1", (tmp_path / "model.c").read_text())
        text = _disassembly(elf)
        start = text.index(f"<{wrapper.group(1)}")
        return text[start:text.index("\n\n", start)]

    assert "vmul.f32" in conv_code([]) and not fma.search(conv_code([]))
    assert fma.search(conv_code(["-DTINYC_BIN_ROUNDED(v)=((void)0)"]))


@pytest.mark.qemu
def test_binary_layers_cheaper_than_int8(tmp_path):
    """Per-layer instruction counts (QEMU Cortex-M4, exact): sign + the binary layer against
    the int8 layer it replaces, on the digits CNN and MLP."""
    for which, layer in (("cnn", "conv2d_1"), ("mlp", "linear_1")):
        counts = {}
        for label, pipeline in (("int8", INT8), ("binary", BINARY_ACT)):
            out = tmp_path / f"{which}_{label}"
            info = emit_bundle(digits(which, pipeline), out, target_name="cortex-m4")
            write_target_files(out, "cortex-m4", "model")
            result = bench_model(out, "cortex-m4", "model")
            counts[label] = {(li.kind, li.name): n for li, n in zip(info.layers, result.layer_instructions)}
        int8 = counts["int8"][("conv2d" if which == "cnn" else "linear", layer)]
        binary = sum(n for (kind, name), n in counts["binary"].items() if kind in ("sign", "bin_conv2d", "bin_linear"))
        # was < int8 / 2 until the int8 GEMM's register blocking (1d8978f) made the int8 conv 19 %
        # faster: the binary CNN layer is 0.53x of it now (163,947 vs 311,107), the MLP's under 0.5x
        assert binary < (0.6 if which == "cnn" else 0.5) * int8, (which, binary, int8)
