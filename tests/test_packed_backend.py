"""Packed weight storage in the C backend (backends/weight_formats.py, c_ops_packed.py,
runtime_c/tinyc_kernels_packed.c): sparse (pruned), codebook (shared) and low-bit weights.

The encoders round-trip and the choice keeps dense storage unless packing pays; every format
computes what the interpreter computes (int8: equal, float: to rounding) on the host under
ASan/UBSan, with odd sizes, empty and full rows, 1/2/4/8-bit indices, per-channel codebooks
and i4/i2 codes; the digits pipelines run exactly on QEMU Cortex-M4 with the flash and speed
measured for docs/compression_formats.md."""
from __future__ import annotations

import functools
import re
import subprocess

import numpy as np
import pytest

from helpers import binomial_margin, layer_tensor, record_layers
from test_int8_backend import assert_exact, quantize, sample_rows
from test_planner import Builder
from bench import compression_eval as ce
from tinyc.backends import c_ops_packed
from tinyc.backends import weight_formats as wf
from tinyc.backends.bench import bench_model
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.interpreter import run as interpret, run_all
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager

RELU6 = {"act": "clamp", "act_min": 0.0, "act_max": 6.0}


# ---- encoders --------------------------------------------------------------------------------

def _sparse_codes(rng, shape, density, lo=-127, hi=127):
    w = rng.integers(lo, hi + 1, shape)
    w[rng.random(shape) >= density] = 0
    return w


def _matrices():
    rng = np.random.default_rng(0)
    ints = {
        "i8_sparse_odd": _sparse_codes(rng, (7, 37), 0.15),
        "i8_long_gaps": _sparse_codes(rng, (5, 300), 0.02),          # 4- and 8-bit gap fillers
        "i4_codes": rng.integers(-7, 8, (6, 19)),
        "i2_codes": rng.integers(-1, 2, (9, 45)),
        "two_values": np.where(rng.random((4, 33)) < 0.5, 0, 127),   # a 1-bit codebook
        "lut4_per_channel": np.stack([rng.choice(rng.integers(-127, 128, 16), 40) for _ in range(6)]),
    }
    ints["i8_sparse_odd"][2] = 0                                     # an empty row
    ints["i8_sparse_odd"][4] = rng.integers(1, 127, 37)              # a full row
    ints["i8_long_gaps"][1, :] = 0
    ints["i8_long_gaps"][3, 299] = 5
    book = np.array([-0.75, 0.0, 0.125, 1.5], np.float32)
    floats = {
        "f32_sparse": np.where(rng.random((8, 70)) < 0.1, rng.standard_normal((8, 70)), 0).astype(np.float32),
        "f32_lut2": book[rng.integers(0, 4, (7, 300))],
        "f32_lut8": np.where(rng.random((3, 50)) < 0.5, rng.integers(-100, 100, (3, 50)) / 7, 0).astype(np.float32),
        "f32_all_zero": np.zeros((3, 9), np.float32),
    }
    return ints, floats


def test_bit_fields_round_trip():
    rng = np.random.default_rng(1)
    for bits in (1, 2, 4, 8):
        f = rng.integers(0, 2 ** bits, 37)
        packed = wf.pack_fields(f, bits)
        assert packed.size == -(-37 * bits // 8)
        assert np.array_equal(wf.unpack_fields(packed, bits, 37), f)
        assert np.array_equal(wf.signed(f, bits), np.where(f >= 2 ** (bits - 1), f - 2 ** bits, f))


@pytest.mark.parametrize("int8", [True, False], ids=["int8", "float"])
def test_every_encoding_round_trips(int8):
    """decode(encode(W)) == W for every candidate of every matrix, and the sizes are the arrays'."""
    ints, floats = _matrices()
    layouts = set()
    for name, w in (ints if int8 else floats).items():
        cands = wf.candidates(w, int8)
        assert cands or name == "f32_all_zero", name
        for e in cands:
            assert np.array_equal(e.decode(), w), f"{name}: {e.describe()}"
            assert e.nbytes == sum(a.nbytes for a in e.arrays.values())
            layouts.add((e.layout, e.values.kind, e.values.bits, e.values.per_channel, e.gap_bits))
    kinds = {(lay, kind) for lay, kind, *_ in layouts}
    if int8:
        assert {("dense_lut", "lut"), ("dense_i4", "i4"), ("dense_i2", "i2"), ("entries", "i8"), ("bitmap", "i8"),
                ("entries", "i4"), ("entries", "i2"), ("entries", "lut"), ("bitmap", "lut")} <= kinds
        assert {1, 2, 4} <= {b for lay, kind, b, *_ in layouts if kind == "lut"}   # every width: test_packed_any_width
        assert {g for lay, kind, _, _, g in layouts if lay == "entries" and kind == "i8"} == {4, 8}
    else:
        assert {("dense_lut", "lut"), ("entries", "f32"), ("bitmap", "f32"), ("entries", "lut")} <= kinds
        widths = {b for lay, kind, b, *_ in layouts if lay == "dense_lut"}
        assert widths >= {2, 4} and max(widths) >= 5, widths     # f32_lut8: ceil(log2 k) bits, not 8


def test_entries_fillers_and_wide_counts():
    w = np.zeros((2, 700), np.int64)
    w[0, [0, 16, 17, 100, 699]] = [1, -2, 3, 4, -5]      # gaps 15, 0, 82, 598
    w[1, ::2] = 7                                         # 350 entries in one row: uint16 counts
    e8 = wf.encode(w, "entries", "i8", True)
    e4 = wf.encode(w, "entries", "i8", True, gap_bits=4)
    assert e8.arrays["counts"].dtype == np.uint16 and e8.entries == 5 + 2 + 350     # fillers at 255, 255
    assert e4.entries == 5 + (82 // 16) + (598 // 16) + 350
    assert e4.split and e4.arrays["vals"].dtype == np.int8
    for e in (e8, e4):
        assert np.array_equal(e.decode(), w)
    lut = wf.encode(np.where(w != 0, 3, 0), "entries", "lut", True)
    assert lut.values.bits == 1 and lut.gap_bits == 7 and np.array_equal(lut.decode(), np.where(w != 0, 3, 0))


def test_choice_keeps_dense_unless_packing_pays():
    rng = np.random.default_rng(2)
    dense_i8 = rng.integers(-127, 128, (32, 64))
    assert wf.choose(dense_i8, True) is None                       # nothing to pack
    assert wf.choose(rng.standard_normal((32, 64)).astype(np.float32), False) is None
    mild = _sparse_codes(rng, (32, 64), 0.8)                       # 20 % zeros: sparse would be larger
    assert wf.choose(mild, True) is None
    tiny = _sparse_codes(rng, (2, 8), 0.1)                         # smaller, but below the margin
    assert wf.choose(tiny, True) is None
    sparse = wf.choose(_sparse_codes(rng, (32, 64), 0.1), True)
    assert sparse.layout in ("entries", "stream") and sparse.nbytes < 0.25 * 32 * 64
    lut = wf.choose(rng.integers(-4, 12, (32, 64)) * 9, True)      # 16 values, too wide for i4
    assert lut.layout == "dense_lut" and lut.values.bits == 4 and not lut.values.per_channel
    assert wf.choose(rng.integers(-7, 8, (32, 64)), True).layout == "dense_i4"
    assert wf.choose(rng.integers(-1, 2, (32, 64)), True).layout == "dense_i2"
    # a fully dense K=9 layer: a bitmap would beat the word-padded codebook rows by a little
    small_k = rng.integers(0, 16, (16, 9)) * 9 - 70
    assert all(not e.sparse for e in [wf.choose(small_k, True)] if e is not None)


# ---- host exactness, format by format ---------------------------------------------------------

def _linear_chain(rng, widths, densities, values=None, act=None, batch=1):
    """x [batch, widths[0]] -> linear -> ... (layer i: fc{i}), weights with the given densities;
    `values`: weights drawn from these values (a small codebook)."""
    b = Builder()
    h = b.input("x", (batch, widths[0]))
    for i, (k, n, d) in enumerate(zip(widths, widths[1:], densities)):
        w = rng.standard_normal((n, k)).astype(np.float32) if values is None else \
            rng.choice(np.asarray(values, np.float32), (n, k))
        w[rng.random((n, k)) >= d] = 0
        if n > 2:
            w[1] = 0                                          # an empty row
            if d > 0.3:                                       # a full row
                w[2] = rng.standard_normal(k) + 3.0 if values is None else rng.choice(values, k)
        attrs = (act or {"act": "relu"}) if i + 2 < len(widths) else {}
        h = b.op("linear", h, b.const(f"w{i}", w), b.const(f"b{i}", rng.standard_normal(n).astype(np.float32)),
                 name=f"fc{i}", **attrs)
    return b.graph(h)


def _exact(graph, tmp_path, force, **kw):
    info = assert_exact(graph, tmp_path, sanitize=True, packing=c_ops_packed.PackingPolicy(force=force), **kw)
    text = (tmp_path / "model.c").read_text()
    for name, fmt in force.items():
        assert (f"model_w_{name}_pw" in text) == (fmt != "dense"), f"{name} is not stored as {fmt}"
    return info


def _close(graph, tmp_path, force, rows=3):
    emit_bundle(graph, tmp_path, packing=c_ops_packed.PackingPolicy(force=force))
    samples = sample_rows(graph, rows)
    got = run_model(tmp_path, "host", "model", np.stack([x[0].ravel() for x in samples]), sanitize=True)
    for r, xs in enumerate(samples):
        want = interpret(graph, xs)[0].ravel()
        np.testing.assert_allclose(got[r], want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    text = (tmp_path / "model.c").read_text()
    for name, fmt in force.items():
        assert (f"model_w_{name}_pw" in text) == (fmt != "dense"), f"{name} is not stored as {fmt}"


INT8_FC = {
    # name: (pipeline after the float graph, graph builder args, per-layer forced formats)
    "sparse_i8": ("quantize-int8", dict(widths=[37, 23, 41, 9, 6], densities=[0.12, 0.3, 0.05, 0.6]),
                  {"fc0": ("entries", "i8", False), "fc1": ("bitmap", "i8", False),
                   "fc2": ("entries", "i8", False, 4), "fc3": ("entries", "i8", False, 4)}),
    "shared_lut": ("quantize-int8,share-weights{bits=4}", dict(widths=[29, 18, 33, 7], densities=[1.0, 0.2, 1.0],
                                                                batch=2),
                   {"fc0": ("dense_lut", "lut", False), "fc1": ("entries", "lut", False),
                    "fc2": ("bitmap", "lut", False)}),
    "shared_lut_per_channel": ("quantize-int8,share-weights{bits=2 per-channel=true}",
                               dict(widths=[29, 18, 33, 7], densities=[1.0, 0.2, 1.0]),
                               {"fc0": ("dense_lut", "lut", True), "fc1": ("entries", "lut", True),
                                "fc2": ("bitmap", "lut", True)}),
    "lut_1bit": ("quantize-int8", dict(widths=[45, 12, 20], densities=[0.5, 0.4], values=[0.5]),
                 {"fc0": ("dense_lut", "lut", False), "fc1": ("entries", "lut", False)}),
    "lowbit_i4": ("quantize-int8{weight-bits=4}", dict(widths=[21, 10, 35, 5], densities=[1.0, 0.15, 1.0]),
                  {"fc0": ("dense_i4", "i4", False), "fc1": ("entries", "i4", False),
                   "fc2": ("bitmap", "i4", False)}),
    "lowbit_i2": ("quantize-int8{weight-bits=2}", dict(widths=[50, 13, 19, 6], densities=[1.0, 0.2, 1.0]),
                  {"fc0": ("dense_i2", "i2", False), "fc1": ("entries", "i2", False),
                   "fc2": ("dense_lut", "lut", False)}),
    "batch_rows_relu6": ("quantize-int8", dict(widths=[40, 17, 8], densities=[0.1, 1.0], act=RELU6, batch=3),
                         {"fc0": ("entries", "i8", False, 4)}),
}


@pytest.mark.parametrize("case", sorted(INT8_FC))
def test_int8_linear_formats_exact_on_host(case, tmp_path):
    pipeline, args, force = INT8_FC[case]
    rng = np.random.default_rng(sorted(INT8_FC).index(case))
    graph = _linear_chain(rng, **args)
    rows = args.get("batch", 1)
    calib = rng.standard_normal((16, rows, args["widths"][0])).astype(np.float32)
    graph = PassManager(pipeline).run(graph, PassContext(calib=calib))
    _exact(graph, tmp_path, force)


def _conv_graph(rng, x_shape, layers, density=1.0, values=None):
    """conv chain: layers = [(name, w_shape, attrs)]."""
    b = Builder()
    h = b.input("x", x_shape)
    for name, w_shape, attrs in layers:
        w = rng.standard_normal(w_shape).astype(np.float32) if values is None else \
            rng.choice(np.asarray(values, np.float32), w_shape)
        w[rng.random(w_shape) >= density] = 0
        full = {"stride": [1, 1], "dilation": [1, 1], "groups": 1, "padding": [0, 0, 0, 0], **attrs}
        h = b.op("conv2d", h, b.const(name + "_w", w), b.const(name + "_b", rng.standard_normal(w_shape[0])
                                                              .astype(np.float32)), name=name, **full)
    return b.graph(h)


CONV_LAYERS = [  # im2col with bytes (cg = 3), groups, strides, dilation, expand (cg % 4 == 0), direct 1x1
    ("c0", (8, 3, 3, 3), {"padding": [1, 1, 1, 1], "act": "relu"}),
    ("c1", (8, 4, 3, 2), {"groups": 2, "stride": [2, 1], "padding": [0, 1, 1, 0], "dilation": [1, 2]}),
    ("c2", (12, 8, 3, 3), {"padding": [1, 1, 1, 1], "act": "relu"}),
    ("c3", (5, 12, 1, 1), {}),
]


def _conv_int8(pipeline, density, seed):
    rng = np.random.default_rng(seed)
    graph = _conv_graph(rng, (2, 3, 9, 7), CONV_LAYERS, density)
    calib = rng.standard_normal((8, 2, 3, 9, 7)).astype(np.float32)
    return PassManager(pipeline).run(graph, PassContext(calib=calib))


INT8_CONV = {
    "sparse": ("quantize-int8", 0.15, {"c0": ("entries", "i8", False), "c1": ("bitmap", "i8", False),
                                      "c2": ("entries", "i8", False, 4), "c3": ("entries", "i8", False, 4)}),
    "shared": ("quantize-int8,share-weights{bits=4}", 1.0,
               {"c0": ("dense_lut", "lut", False), "c1": ("dense_lut", "lut", True),
                "c2": ("dense_lut", "lut", False), "c3": ("entries", "lut", False)}),
    "pruned_shared": ("quantize-int8,prune-weights{sparsity=0.8},share-weights{bits=2 per-channel=true}", 1.0,
                      {"c0": ("entries", "lut", True), "c1": ("bitmap", "lut", True),
                       "c2": ("entries", "lut", True), "c3": ("dense_lut", "lut", True)}),
    "lowbit": ("quantize-int8{weight-bits=4}", 1.0, {"c0": ("dense_i4", "i4", False), "c1": ("entries", "i4", False),
                                                     "c2": ("dense_i4", "i4", False), "c3": ("bitmap", "i4", False)}),
    "ternary": ("quantize-int8{weight-bits=2}", 1.0, {"c0": ("dense_i2", "i2", False), "c1": ("dense_i2", "i2", False),
                                                      "c2": ("entries", "i2", False), "c3": ("dense_i2", "i2", False)}),
}


@pytest.mark.parametrize("case", sorted(INT8_CONV))
def test_int8_conv_formats_exact_on_host(case, tmp_path):
    pipeline, density, force = INT8_CONV[case]
    _exact(_conv_int8(pipeline, density, 5), tmp_path, force)


def test_float_formats_close_on_host(tmp_path):
    rng = np.random.default_rng(11)
    fc = _linear_chain(rng, [37, 23, 41, 16, 9, 6], [0.1, 0.3, 0.08, 1.0, 0.2], batch=2)
    _close(fc, tmp_path / "fc", {"fc0": ("entries", "f32", False), "fc1": ("bitmap", "f32", False),
                                 "fc2": ("entries", "f32", False, 4)})
    shared = PassManager("share-weights{bits=4}").run(fc.copy(), PassContext())
    _close(shared, tmp_path / "shared", {"fc0": ("entries", "lut", False), "fc1": ("bitmap", "lut", False),
                                         "fc3": ("dense_lut", "lut", False), "fc4": ("entries", "lut", False)})
    wide = PassManager("share-weights{bits=8}").run(fc.copy(), PassContext())     # 8-bit indices
    _close(wide, tmp_path / "wide", {"fc1": ("dense_lut", "lut", False), "fc0": ("entries", "lut", False),
                                     "fc2": ("bitmap", "lut", False)})
    per_ch = PassManager("share-weights{bits=8 per-channel=true}").run(fc.copy(), PassContext())
    _close(per_ch, tmp_path / "per_ch", {"fc3": ("dense_lut", "lut", True), "fc1": ("entries", "lut", True),
                                         "fc0": "dense"})    # the decoded weights as a float array
    conv = _conv_graph(rng, (2, 3, 9, 7), CONV_LAYERS, 0.2)
    _close(conv, tmp_path / "conv", {"c0": ("entries", "f32", False), "c1": ("bitmap", "f32", False),
                                     "c2": ("entries", "f32", False, 4), "c3": ("entries", "f32", False)})
    conv_shared = PassManager("share-weights{bits=2}").run(_conv_graph(rng, (1, 3, 9, 7), CONV_LAYERS), PassContext())
    _close(conv_shared, tmp_path / "conv_shared", {"c0": ("dense_lut", "lut", False), "c1": ("dense_lut", "lut", False),
                                                   "c2": ("dense_lut", "lut", False), "c3": ("bitmap", "lut", False)})


def test_all_zero_layer_and_depthwise_shared_weights(tmp_path):
    """A layer pruned to nothing stores no entries (its output is the bias); a depthwise conv
    reading a decode keeps the dense kernel, with the decoded weights as constants."""
    rng = np.random.default_rng(4)
    graph = _linear_chain(rng, [24, 16, 8], [0.0, 1.0])
    q = quantize(graph, calib_rows=16)
    _exact(q, tmp_path / "zero", {"fc0": ("entries", "i8", False)})
    b = Builder()
    x = b.input("x", (1, 4, 6, 6))
    y = b.op("conv2d", x, b.const("w", rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
             b.const("b", rng.standard_normal(4).astype(np.float32)), name="dw", stride=[1, 1], dilation=[1, 1],
             groups=4, padding=[1, 1, 1, 1])
    dw = PassManager("quantize-int8,share-weights{bits=2}").run(
        b.graph(y), PassContext(calib=rng.standard_normal((8, 1, 4, 6, 6)).astype(np.float32)))
    info = assert_exact(dw, tmp_path / "dw", sanitize=True)
    decode = next(op for op in dw.ops if op.kind == "decode")
    assert info.tensors[decode.result.name].space == "const"      # no arena for decoded weights


# ---- the digits models --------------------------------------------------------------------------

D30 = "distill{epochs=30 lr=0.003}"
D10 = "distill{epochs=10 lr=0.003}"
PIPELINES = {
    "float": "fuse",
    "int8": "fuse,quantize-int8",
    # prune-weights 90 % per layer (the global and rms variants lose 3-6 points with distill's pinned
    # 10 epochs; 30 epochs bring this one back to the int8 model's accuracy)
    "pruned int8": f"fuse,prune-weights{{sparsity=0.9 scope=layer}},{D30},quantize-int8",
    "int8 share4": "fuse,quantize-int8,share-weights{bits=4}",
    # Deep Compression: prune, retrain, share (k-means), retrain the codebooks, quantize
    "deep compression": f"fuse,prune-weights{{sparsity=0.9 scope=layer}},{D30},share-weights{{bits=4}},{D10},"
                        "quantize-int8",
}


@functools.lru_cache(maxsize=None)
def digits(which: str, label: str):
    graph, _ = ce.compile_digits(which, PIPELINES[label])
    return graph


def _weight_bytes(path) -> int:
    """Bytes of the layers' weight arrays in a generated model (not biases or records)."""
    text = path.read_text()
    total = 0
    for ctype, name, size in re.findall(r"static const (\w+) (model_w_\w+)\[(\d+)\]", text):
        if re.search(r"_(w|pw|pv|pc|cb)(_\d+)?$", name):
            total += int(size) * {"float": 4, "int32_t": 4, "uint16_t": 2}.get(ctype, 1)
    return total


def test_digits_formats_chosen_and_deterministic(tmp_path):
    """The choice on the digits MLP pipelines, and byte-identical re-emission."""
    expected = {"pruned int8": ("entries i8, 4-bit gaps", 3), "int8 share4": ("dense_lut 4-bit lut", 3),
                "deep compression": ("entries 4-bit lut", 3)}
    for label, (fmt, count) in expected.items():
        graph = digits("mlp", label)
        chosen = list(c_ops_packed.describe(graph).values())
        assert len(chosen) == count and all(c.startswith(fmt) for c in chosen), chosen
    graph = digits("mlp", "deep compression")
    a = emit_bundle(graph, tmp_path / "a")
    b = emit_bundle(graph.copy(), tmp_path / "b")
    for fa, fb in zip(a.files, b.files):
        assert fa.read_bytes() == fb.read_bytes(), fa.name


def test_digits_packed_exact_on_host_layer_by_layer(tmp_path):
    """Through the TINYC_LAYER_OUTPUT hook every layer of the Deep Compression MLP (packed) and
    of the pruned CNN equals the interpreter's."""
    cnn = PassManager(f"fuse,prune-weights{{sparsity=0.8 scope=layer}},quantize-int8,share-weights{{bits=4}}") \
        .run(ce.trained("cnn")[0].copy(), ce.context("cnn"))
    for tag, graph in (("mlp", digits("mlp", "deep compression")), ("cnn", cnn)):
        out = tmp_path / tag
        info = emit_bundle(graph, out)
        assert "tinyc_pk_s8_" in (out / "model.c").read_text()
        x = ce.trained(tag)[1][2][:1]
        env = run_all(graph, [x])
        ops = list(graph.compute_ops())
        seen = 0
        for layer, raw in record_layers(out, x):
            v = ops[layer].result
            got = layer_tensor(raw, v, env[v.name].shape, info)
            assert np.array_equal(got, env[v.name]), f"{tag}: layer {layer} %{v.name} ({ops[layer].kind})"
            seen += 1
        assert seen == sum(op.kind != "decode" for op in ops)


def _firmware(graph, out, bench: bool):
    from bench.benchmarks import model_flash
    from tinyc.evaluate import as_samples, run_batch
    emit_bundle(graph, out, target_name="cortex-m4")
    write_target_files(out, "cortex-m4", "model")
    rows = ce.trained("mlp")[1][2][:8]
    got = run_model(out, "cortex-m4", "model", rows.reshape(len(rows), -1))
    want = np.concatenate([o.reshape(len(rows), -1) for o in run_batch(graph, as_samples(graph, rows))], axis=1)
    if any(op.kind == "quantize" for op in graph.ops):
        assert np.array_equal(got, want), out.name
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    instructions = bench_model(out, "cortex-m4", "model", profile=False).instructions if bench else None
    return model_flash(out, "model"), _weight_bytes(out / "model.c"), instructions


@pytest.mark.qemu
def test_digits_mlp_acceptance_on_cortex_m4(tmp_path):
    """The acceptance figures (measured, see the module doc of c_ops_packed): exact on QEMU, and
    - pruned 90 % + int8: model flash >= 4x below int8 dense, fewer instructions;
    - int8 + share 4-bit: weight arrays at most half of int8's;
    - Deep Compression: model flash >= 20x below float32, within 1 point of its accuracy.
    The accuracies come out of distillation (training), which moves from CPU to CPU: each is held to
    the figure measured in docs/compression.md (pruned int8 96.94 %, Deep Compression 96.39 %) less
    the 99 % binomial margin of 360 test images (tests/helpers.binomial_margin)."""
    fw = {label: _firmware(digits("mlp", label), tmp_path / label.replace(" ", "_"),
                           bench=label in ("int8", "pruned int8", "deep compression")) for label in PIPELINES}
    flash = {k: v[0] for k, v in fw.items()}
    weights = {k: v[1] for k, v in fw.items()}
    instr = {k: v[2] for k, v in fw.items()}
    assert flash["int8"] >= 4 * flash["pruned int8"], flash
    # issue 11's requirement: at >= 80 % sparsity the packed layers cost no more than int8 dense. The
    # ratio has shrunk each time the dense FC kernel got faster: < 0.8x until its asm loop (97b6b71),
    # 0.86x / 0.87x after it, 0.94x / 0.94x (33,261 / 33,569 vs 35,537) since its 6-row blocks over
    # expanded x; the sparse kernels' per-output stage (~15 instructions) is now their main cost.
    assert instr["pruned int8"] < instr["int8"], instr
    assert weights["int8 share4"] <= weights["int8"] / 2 + 3 * 16, weights     # + 3 codebooks of 16
    assert flash["float"] >= 20 * flash["deep compression"], flash
    assert instr["deep compression"] < instr["int8"], instr
    acc = {label: ce.accuracy(digits("mlp", label), "mlp") for label in ("float", "pruned int8", "deep compression")}
    for label, measured in (("pruned int8", 96.94), ("deep compression", 96.39)):
        assert acc[label] >= measured - binomial_margin(measured, 360), acc


def test_packed_kernels_compile_warning_free_for_cortex_m(tmp_path):
    """-std=c99 -Wall -Wextra -Werror with each target's flags: the DSP instructions on M4 / M7 /
    M33, the C stand-ins on M0 / M3; every int8 and float packed kernel."""
    from tinyc.backends.targets import get_target
    models = {"conv": (_conv_int8(INT8_CONV["pruned_shared"][0], 1.0, 5), INT8_CONV["pruned_shared"][2]),
              "sparse": (_conv_int8(INT8_CONV["sparse"][0], 0.15, 5), INT8_CONV["sparse"][2]),
              "lowbit": (_conv_int8(INT8_CONV["lowbit"][0], 1.0, 5), INT8_CONV["lowbit"][2]),
              "fc": (PassManager("quantize-int8,share-weights{bits=4}").run(
                  _linear_chain(np.random.default_rng(0), [29, 18, 33, 7], [1.0, 0.2, 1.0]),
                  PassContext(calib=np.random.default_rng(1).standard_normal((8, 1, 29)).astype(np.float32))),
                  INT8_FC["shared_lut"][2]),
              "fc_sparse": (PassManager("quantize-int8").run(
                  _linear_chain(np.random.default_rng(3), **INT8_FC["sparse_i8"][1]),
                  PassContext(calib=np.random.default_rng(1).standard_normal((8, 1, 37)).astype(np.float32))),
                  INT8_FC["sparse_i8"][2]),
              "float": (_conv_graph(np.random.default_rng(2), (1, 3, 9, 7), CONV_LAYERS, 0.2),
                        {"c0": ("entries", "f32", False), "c1": ("bitmap", "f32", False)})}
    for target in ("cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33"):
        t = get_target(target)
        for name, (graph, force) in models.items():
            out = tmp_path / f"{target}-{name}"
            emit_bundle(graph, out, target_name=target, packing=c_ops_packed.PackingPolicy(force=force))
            proc = subprocess.run([t.cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *t.opt_flags, *t.cpu_flags, "-c",
                                   "model.c", "-o", "model.o"], cwd=out, capture_output=True, text=True)
            assert proc.returncode == 0 and not proc.stderr, f"{target} {name}: {proc.stderr}"


def test_one_bit_shared_weights_compile_and_match_the_interpreter(tmp_path):
    """share-weights{bits=1} stores u1 codebook indices: the binary-layer planner must leave them alone."""
    from bench.compression_eval import compile_digits, trained
    from tinyc.interpreter import run
    graph, _ = compile_digits("mlp", "fuse,quantize-int8,share-weights{bits=1}")
    _, (_, _, x_test, _) = trained("mlp")
    emit_bundle(graph, tmp_path, target_name="host")
    write_target_files(tmp_path, "host", "model")
    x = x_test[:5]
    got = run_model(tmp_path, "host", "model", x.reshape(len(x), -1), sanitize=True)
    want = np.concatenate([run(graph, [x[i:i + 1]])[0] for i in range(len(x))])
    assert np.array_equal(got, want)
