"""quantize-int8{weight-bits=4|2}: i4 / i2 weight codes in range with least-squares scales,
unchanged integer arithmetic (an i4 graph computes what the same codes typed i8 compute),
packed weight bytes, composition with prune/share, and the digits figures."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc import quant
from tinyc.errors import ParseError
from tinyc.interpreter import run
from tinyc.ir import TensorType
from tinyc.passes import PassContext, parse_pipeline
from tinyc.passmanager import PassManager
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify

from test_prune_weights import calib, small_cnn

rng = np.random.default_rng(11)


def layers(g):
    return [op for op in g.compute_ops() if op.kind in ("conv2d", "linear")]


def sq_err(w, q, bits):
    codes = quant.quantize_weight(w, q, bits)
    return ((w.astype(np.float64) - quant.dequantize(codes, q)) ** 2).reshape(len(w), -1).sum(axis=1)


@pytest.mark.parametrize("bits,qmax", [(4, 7), (2, 1)])
def test_weight_params_low_bits(bits, qmax):
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0
    q = quant.weight_params(w, bits)
    assert q.axis == 0 and not any(q.zero_point) and all(s > 0 for s in q.scale)
    codes = quant.quantize_weight(w, q, bits)
    assert codes.dtype == np.int8 and codes.min() >= -qmax and codes.max() <= qmax
    assert np.all(codes[2] == 0)
    # no worse than max-abs scaling, and (grid search) no worse than any clipping point on the grid
    peak = np.abs(w.reshape(6, -1)).max(axis=1)
    maxabs = quant.QuantParams(tuple(quant.f32(max(p / qmax, quant.MIN_SCALE)) for p in peak), (0,) * 6, 0)
    assert np.all(sq_err(w, q, bits) <= sq_err(w, maxabs, bits) + 1e-12)
    if bits == 2:
        assert np.mean(codes != 0) > 0.3       # max-abs ternary would zero almost everything


def test_weight_params_8_bits_unchanged():
    w = rng.standard_normal((4, 10)).astype(np.float32)
    q = quant.weight_params(w)
    assert q.scale == tuple(quant.f32(p / 127) for p in np.abs(w).max(axis=1).astype(np.float64))


@pytest.mark.parametrize("bits,dtype,qmax,per_byte", [(4, "i4", 7, 2), (2, "i2", 1, 4)])
def test_quantize_int8_low_bit_weights(bits, dtype, qmax, per_byte):
    g = small_cnn()
    c = calib()
    ctx = PassContext(calib=c)
    q8 = PassManager("quantize-int8").run(g.copy(), PassContext(calib=c))
    q = PassManager(f"quantize-int8{{weight-bits={bits}}}").run(g.copy(), ctx)
    assert ctx.stats["quantize-int8"]["weight_bits"] == bits
    for op in layers(q):
        w = op.operands[1]
        assert w.type.dtype == dtype and w.type.quant.axis == 0
        codes = q.const_value(w)
        assert codes.min() >= -qmax and codes.max() <= qmax
        bq = op.operands[2].type.quant
        want = quant.bias_params(op.operands[0].type.quant, w.type.quant)
        np.testing.assert_allclose(bq.scale, want.scale, rtol=1e-12)
    # only the weights shrink: packed bits
    wn = sum(op.operands[1].type.numel for op in layers(q))
    assert graph_stats(q8).weight_bytes - graph_stats(q).weight_bytes == wn - wn // per_byte
    text = print_graph(q)
    q2 = parse(text)
    verify(q2)
    assert print_graph(q2) == text
    # the integer kernels compute exactly what the same codes typed i8 compute
    as_i8 = q.copy()
    for op in as_i8.const_ops():
        if op.result.type.dtype == dtype:
            op.result.type = TensorType(op.result.type.shape, "i8", op.result.type.quant)
    verify(as_i8)
    x = c[:1]
    np.testing.assert_array_equal(run(q, [x])[0], run(as_i8, [x])[0])


def test_weight_bits_option_errors():
    with pytest.raises(ParseError, match="weight-bits must be 8, 4 or 2"):
        parse_pipeline("quantize-int8{weight-bits=3}")
    (p,) = parse_pipeline("quantize-int8{weight-bits=4}")
    assert p.spec() == "quantize-int8{weight-bits=4}"


def test_low_bit_composes_with_prune_and_share():
    g = PassManager("prune-weights{sparsity=0.5}").run(small_cnn())
    zeros = [g.const_value(op.operands[1]) == 0 for op in layers(g)]
    q = PassManager("quantize-int8{weight-bits=4},share-weights{bits=2}").run(g, PassContext(calib=calib()))
    decodes = [op for op in q.compute_ops() if op.kind == "decode"]
    assert len(decodes) == 3
    from tinyc.interpreter import run_all
    env = run_all(q, [calib(1)])
    for d, z in zip(decodes, zeros):
        assert d.operands[1].type.dtype == "i4" and d.result.type.dtype == "i4"
        w = env[d.result.name]
        assert np.abs(w).max() <= 7 and len(np.unique(w)) <= 4 and np.all(w[z] == 0)
    # share-weights before a low-bit quantize-int8: the codebook becomes i4
    s = PassManager("share-weights{bits=3},quantize-int8{weight-bits=4}").run(small_cnn(), PassContext(calib=calib()))
    for d in (op for op in s.compute_ops() if op.kind == "decode"):
        assert d.operands[1].type.dtype == "i4" and np.abs(s.const_value(d.operands[1])).max() <= 7


# ---- digits (checked-in weights, tests/data; no training in the pipeline) ---------------------------------
# The pipeline trains nothing, so on the checked-in weights the figure moves only with float rounding in
# calibration (a sample or so of 360 across CPUs): thresholds stay 0.5 point under the measured figures.

@pytest.mark.parametrize("which,bits,measured", [("mlp", 4, 97.22), ("cnn", 4, 99.17), ("mlp", 2, 92.50), ("cnn", 2, 96.11)])
def test_digits_low_bit_accuracy(which, bits, measured):
    from bench.compression_eval import accuracy, compile_digits
    g, _ = compile_digits(which, f"fuse,quantize-int8{{weight-bits={bits}}}")
    assert accuracy(g, which) >= measured - 0.5
    if bits == 4:
        q, _ = compile_digits(which, "fuse,quantize-int8")
        assert accuracy(g, which) >= accuracy(q, which) - 1.0
