"""Every bit width stores what it says (backends/weight_formats.py, c_ops_packed.py,
runtime_c/tinyc_kernels_packed.c): codebook indices and low-bit codes of any width 1..8 pack in
exactly that many bits (dense_bits, the sparse stream, bitmap values, float codebook rows), the C
kernels are bit-exact with the interpreter for every width (per-layer and per-channel codebooks,
pruned + shared weights) on the host under ASan/UBSan and on QEMU Cortex-M4 and M3, and
report.json names each layer's storage format and why."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from test_int8_backend import assert_exact
from test_packed_backend import _conv_graph, _linear_chain, CONV_LAYERS
from tinyc.backends import c_ops_packed
from tinyc.backends import weight_formats as wf
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager


def _book(rng, bits):
    """2^bits distinct int8 codes, 0 among them."""
    return np.unique(np.append(np.unique(rng.integers(1, 128, 8 * 2 ** bits) * rng.choice([-1, 1], 8 * 2 ** bits))
                               [:2 ** bits - 1], 0))


def test_fields_of_every_width_round_trip():
    rng = np.random.default_rng(0)
    for bits in range(1, 17):
        f = rng.integers(0, 2 ** bits, 37)
        packed = wf.pack_fields(f, bits)
        assert packed.size == -(-37 * bits // 8), bits           # exactly `bits` bits a field
        assert np.array_equal(wf.unpack_fields(packed, bits, 37), f), bits
        assert np.array_equal(wf.unpack_fields(packed, bits, 5, offset=30), f[30:35]), bits


@pytest.mark.parametrize("bits", range(1, 9))
def test_every_width_encodes_in_its_bits_and_round_trips(bits):
    """A matrix with 2^bits distinct values: every candidate decodes back, the codebook formats
    use `bits`-bit indices (int8: up to 7; an 8-bit index is no smaller than a code), and the
    dense packed and sparse stream formats take the bytes their widths say."""
    rng = np.random.default_rng(bits)
    book = _book(rng, bits)
    w = rng.choice(book, (11, 45))
    w.ravel()[:len(book)] = book                                     # every value present
    for int8, mat in ((True, w), (False, (w / 7).astype(np.float32))):
        cands = wf.candidates(mat, int8)
        for e in cands:
            assert np.array_equal(e.decode(), mat), e.describe()
        luts = {e.values.bits for e in cands if e.values.lut and not e.values.per_channel}
        assert luts == ({bits} if not int8 or bits <= 7 else set()), (int8, luts)
        assert all(e.values.bits <= bits for e in cands if e.values.lut)     # per channel: its rows' values
    if bits <= 7:
        e = wf.encode(w, "dense_bits", "lut", True)
        assert e.nbytes == 11 * bits * -(-45 // 8) + wf.STREAM_PAD + 2 ** bits
    pruned = w.copy()
    pruned[rng.random(w.shape) < 0.85] = 0
    for g in (2, 4, 7):
        s = wf.encode(pruned, "stream", "lut", True, gap_bits=g)
        assert np.array_equal(s.decode(), pruned)
        counts = s.arrays["counts"].astype(int)
        want = sum(-(-c * (g + s.values.bits) // 8) for c in counts) + wf.STREAM_PAD
        assert s.arrays["w"].nbytes == want and s.values.bits == wf.lut_bits(len(np.unique(pruned)))


def test_raw_codes_of_any_width_pack_narrow():
    """int8 codes that fit in N bits pack as N-bit two's complement fields (no codebook)."""
    rng = np.random.default_rng(3)
    for bits in range(2, 8):
        lo, hi = wf.RAW_RANGE[f"i{bits}"]
        if bits == 7:       # 7/8 of dense saves less than the policy's 1/8: forced, it takes 7 bits
            w = rng.integers(lo, hi + 1, (16, 96))
            assert wf.encode(w, "dense_bits", "i7", True).nbytes == 16 * 96 * 7 // 8 + wf.STREAM_PAD
            continue
        w = rng.integers(lo, hi + 1, (16, 96))
        w[0, :2] = lo, hi
        e = wf.choose(w, True)
        assert e is not None and e.values.bits == bits and not e.values.lut, (bits, e and e.describe())
        assert np.array_equal(e.decode(), w)


def _share(graph, bits, per_channel, calib, prune=0.0):
    steps = ["quantize-int8"]
    if prune:
        steps.append(f"prune-weights{{sparsity={prune}}}")
    steps.append(f"share-weights{{bits={bits} per-channel={'true' if per_channel else 'false'}}}")
    return PassManager(",".join(steps)).run(graph, PassContext(calib=calib))


def _widths_chain(rng, density):
    """x [2, 264] -> 8 linear layers side by side (8 outputs); layer i's rows draw from 2^(i+1) distinct values (0 one of
    them where pruned), so after quantize-int8 a per-channel codebook of layer i needs i + 1 bits
    (fewer where two values round to one code)."""
    from test_planner import Builder
    b = Builder()
    x = b.input("x", (2, 264))
    outs = []
    for i in range(8):
        n = 2 ** (i + 1) - (density < 1)
        rows = []
        for _ in range(6):
            vals = np.unique(rng.standard_normal(n).astype(np.float32))
            rows.append(np.concatenate([vals, rng.choice(vals, 264 - len(vals))])[rng.permutation(264)])
        w = np.stack(rows)
        w[rng.random(w.shape) >= density] = 0.0
        outs.append(b.op("linear", x, b.const(f"w{i}", w), b.const(f"b{i}", rng.standard_normal(6).astype(np.float32)),
                         name=f"fc{i}"))
    return b.graph(*outs)


@pytest.mark.parametrize("density", [1.0, 0.2], ids=["dense", "pruned"])
def test_int8_every_width_exact_on_host(density, tmp_path):
    """Per-channel codebooks of 1..8 bits (one width per layer), dense (dense_bits; 8 bits: stream)
    and pruned (stream and bitmap), equal to the interpreter under ASan/UBSan; each layer's
    report names its width."""
    rng = np.random.default_rng(5)
    q = PassManager("quantize-int8").run(_widths_chain(rng, density),
                                         PassContext(calib=rng.standard_normal((16, 2, 264)).astype(np.float32)))
    layout = (lambda i: "dense_bits" if i < 7 else "stream") if density == 1.0 else \
        (lambda i: "stream" if i % 2 == 0 else "bitmap")
    force = {f"fc{i}": (layout(i), "lut", True) for i in range(8)}
    info = assert_exact(q, tmp_path, sanitize=True, packing=c_ops_packed.PackingPolicy(force=force))
    formats = {lay.name: lay.storage["format"] for lay in info.layers if lay.storage}
    consts = {op.result.name: op.attrs["value"] for op in q.const_ops()}
    widths = set()
    for op in q.compute_ops():
        if op.result.name in force:
            k = max(len(np.unique(r)) for r in consts[op.operands[1].name])
            widths.add(wf.lut_bits(k))
            assert f"codebook-{wf.lut_bits(k)}bit per-channel" in formats[op.result.name], (formats, k)
    assert widths >= set(range(1, 8 if density == 1.0 else 6)), widths


def test_shared_per_layer_and_pruned_conv_exact_on_host(tmp_path):
    """share-weights{bits=5} (per-layer codebooks: dense_bits, stream) on a linear chain and
    pruned + share-weights{bits=3 per-channel} on a conv chain (stream, dense_bits, im2col, 1x1)."""
    rng = np.random.default_rng(13)
    fc = _linear_chain(rng, [45, 37, 29, 7], [0.15, 1.0, 0.3], batch=2)
    q = _share(fc, 5, False, rng.standard_normal((16, 2, 45)).astype(np.float32))
    force = {"fc0": ("stream", "lut", False), "fc1": ("dense_bits", "lut", False), "fc2": ("bitmap", "lut", False)}
    assert_exact(q, tmp_path / "fc", sanitize=True, packing=c_ops_packed.PackingPolicy(force=force))
    conv = _conv_graph(rng, (2, 3, 9, 7), CONV_LAYERS)
    qc = _share(conv, 3, True, rng.standard_normal((8, 2, 3, 9, 7)).astype(np.float32), prune=0.7)
    force = {"c0": ("stream", "lut", True), "c1": ("dense_bits", "lut", True), "c2": ("stream", "lut", True),
             "c3": ("bitmap", "lut", True)}
    assert_exact(qc, tmp_path / "conv", sanitize=True, packing=c_ops_packed.PackingPolicy(force=force))


def test_low_bit_codes_exact_on_host(tmp_path):
    """Raw i4 / i2 codes (weight-bits) in the any-width layouts: dense_bits, stream, both
    choosing their own width."""
    rng = np.random.default_rng(7)
    for wbits in (4, 2):
        fc = _linear_chain(rng, [40, 21, 33, 6], [1.0, 0.2, 1.0])
        q = PassManager(f"quantize-int8{{weight-bits={wbits}}}").run(
            fc, PassContext(calib=rng.standard_normal((16, 1, 40)).astype(np.float32)))
        kind = f"i{wbits}"
        force = {"fc0": ("dense_bits", kind, False), "fc1": ("stream", kind, False), "fc2": ("stream", "i8", False)}
        assert_exact(q, tmp_path / kind, sanitize=True, packing=c_ops_packed.PackingPolicy(force=force))


def test_float_codebooks_of_any_width_close_on_host(tmp_path):
    """Float graphs: share-weights{bits=3,6} store exactly that many index bits."""
    from test_packed_backend import _close
    rng = np.random.default_rng(12)
    fc = _linear_chain(rng, [37, 23, 41, 9], [0.3, 1.0, 1.0], batch=2)
    for bits in (3, 6):
        g = PassManager(f"share-weights{{bits={bits}}}").run(fc.copy(), PassContext())
        _close(g, tmp_path / f"b{bits}", {"fc0": ("entries", "lut", False), "fc1": ("dense_lut", "lut", False),
                                          "fc2": ("bitmap", "lut", False)})
        chosen = c_ops_packed.Packing(g, policy=c_ops_packed.PackingPolicy(
            force={"fc1": ("dense_lut", "lut", False)})).choices["fc1"].enc
        assert chosen.values.bits == bits and chosen.row_bytes == -(-23 * bits // 8)     # K = 23


def _mlp(seed=0):
    from tinyc.frontend import from_torch
    import torch
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 10)).eval()
    return from_torch(m, (torch.zeros(1, 64),), name="mlp")


def test_report_names_the_format_per_layer_and_bits5_is_smaller(tmp_path):
    """tinyc compile writes each layer's storage and why into report.json; share-weights{bits=5}
    firmware is smaller than bits=8 and than int8 dense (the model object's text + data)."""
    from bench.benchmarks import model_flash
    graph = _mlp()
    model = tmp_path / "mlp.tir"
    from tinyc.text import print_graph
    model.write_text(print_graph(graph))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((16, 1, 64)).astype(np.float32))
    flash = {}
    for tag, pipeline in (("int8", "quantize-int8"), ("b8", "quantize-int8,share-weights{bits=8}"),
                          ("b5", "quantize-int8,share-weights{bits=5}")):
        out = tmp_path / tag
        proc = subprocess.run([sys.executable, "-m", "tinyc", "compile", str(model), "-o", str(out), "--calib",
                               str(calib), "--pipeline", pipeline, "--target", "cortex-m4"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "report.json").read_text())
        layers = [lay for lay in report["layers"] if lay["kind"] == "linear"]
        assert len(layers) == 2 and all(lay["storage"]["format"] and lay["storage"]["why"] for lay in layers)
        flash[tag] = (model_flash(out, "model"), layers)
    b5 = flash["b5"][1]
    assert all(lay["storage"]["format"].startswith("codebook-5bit") for lay in b5), b5
    assert all(lay["storage"]["bytes"] < lay["storage"]["dense_bytes"] for lay in b5)
    assert all(lay["storage"]["format"] == "int8 dense" and "no packed format" in lay["storage"]["why"]
               for lay in flash["int8"][1]), flash["int8"][1]
    assert flash["b5"][0] < flash["b8"][0] and flash["b5"][0] < flash["int8"][0], flash


@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m3"])
def test_any_width_exact_on_qemu(target, tmp_path):
    """5-bit and 3-bit codebooks (dense_bits, stream, pruned + shared) and 6-bit codes on the
    emulator: the DSP path (M4) and the portable C path (M3), equal to the interpreter."""
    rng = np.random.default_rng(21)
    fc = _linear_chain(rng, [45, 37, 29, 7], [0.15, 1.0, 0.3], batch=2)
    q = _share(fc, 5, False, rng.standard_normal((16, 2, 45)).astype(np.float32))
    force = {"fc0": ("stream", "lut", False), "fc1": ("dense_bits", "lut", False), "fc2": ("stream", "lut", False)}
    assert_exact(q, tmp_path / "fc", target=target, packing=c_ops_packed.PackingPolicy(force=force))
    conv = _conv_graph(rng, (2, 3, 9, 7), CONV_LAYERS)
    qc = _share(conv, 3, True, rng.standard_normal((8, 2, 3, 9, 7)).astype(np.float32), prune=0.8)
    force = {"c0": ("stream", "lut", True), "c1": ("dense_bits", "lut", True), "c2": ("stream", "lut", True),
             "c3": ("dense_bits", "lut", True)}
    assert_exact(qc, tmp_path / "conv", target=target, packing=c_ops_packed.PackingPolicy(force=force))


def test_shared_weights_stored_wider_warn_with_the_reason(tmp_path):
    """share-weights{bits=5} on layers too small for a packed format to pay: the compile warns per
    layer (stderr and report.json) that the 5-bit indices are stored as int8 dense, and why."""
    import torch
    from tinyc.frontend import from_torch
    from tinyc.text import print_graph
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).eval()
    model = tmp_path / "tiny.tir"
    model.write_text(print_graph(from_torch(m, (torch.zeros(1, 8),), name="tiny")))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((16, 1, 8)).astype(np.float32))
    out = tmp_path / "b5"
    proc = subprocess.run([sys.executable, "-m", "tinyc", "compile", str(model), "-o", str(out), "--calib",
                           str(calib), "--pipeline", "quantize-int8,share-weights{bits=5}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "%linear: weights with 5-bit indices stored as int8 dense" in proc.stderr, proc.stderr
    assert "no packed format is smaller" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert any("5-bit indices stored as int8 dense" in w for w in report["warnings"]), report["warnings"]
    lay = next(lay for lay in report["layers"] if lay["name"] == "linear")
    assert lay["storage"]["requested_bits"] == 5 and lay["storage"]["format"] == "int8 dense"
