"""int8 quantization: the arithmetic of tinyc.quant against exact rationals, every integer
kernel against a plain-Python reference, and quantize-int8 on every zoo model."""
from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from helpers import fused_graph, zoo_inputs
from tinyc import quant
from tinyc.errors import PassError, TinycError, VerifyError
from tinyc.interpreter import run, run_all, run_op
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.ops import check_result_quant, infer_type
from tinyc.passes import PassContext, parse_pipeline, print_pipeline
from tinyc.passes.quant_calibrate import observe_ranges
from tinyc.passmanager import PassManager
from tinyc.stats import graph_stats
from tinyc.text import parse, print_graph
from tinyc.verifier import verify
from bench import zoo
from bench.zoo import names as zoo_names

rng = np.random.default_rng(0)


# ---- plain-Python reference arithmetic (Fractions and ints, no numpy) -------------------------

def round_half_away(f: Fraction) -> int:
    r = math.floor(abs(f) + Fraction(1, 2))
    return r if f >= 0 else -r


def ref_requant(acc: int, ratio: float) -> int:
    """floor(acc * M / 2^n + 1/2), n = 31 - shift: the documented rounding, with Python ints."""
    m, shift = quant.quantize_multiplier(ratio)
    return math.floor(Fraction(acc * m, 2 ** (31 - shift)) + Fraction(1, 2))


def ref_out(acc: int, ratio: float, attrs: dict, out: QuantParams) -> int:
    """Output stage: requantize (negatives by alpha * ratio for leaky_relu), add zp, clamp to the act."""
    if attrs.get("act") == "leaky_relu" and acc < 0:
        ratio = ratio * attrs["act_alpha"]
    lo, hi = quant.act_bounds(attrs, out)
    return min(max(ref_requant(acc, ratio) + out.zero_point[0], lo), hi)


def sat(v: int) -> int:
    return min(max(v, quant.QMIN), quant.QMAX)


# ---- quant.py ----------------------------------------------------------------------------------

EDGE_REALS = [1.0, 0.5, 0.75, 1 - 2 ** -40, 2 ** -31, 2 ** -32, 2 ** -40, 2 ** -70, 2.0 ** 29, 2.0 ** 30 - 1,
              2.0 ** 30, 1e12, 1e-300, 0.0003, 1 / 3]


@pytest.mark.parametrize("real", EDGE_REALS + list(10 ** rng.uniform(-12, 9, 40)))
@pytest.mark.parametrize("sign", [1, -1])
def test_quantize_multiplier_range_and_accuracy(real, sign):
    m, shift = quant.quantize_multiplier(sign * real)
    assert -31 <= shift <= 30 and abs(m) <= 2 ** 31 - 1 and (m == 0 or (m > 0) == (sign > 0))
    approx = Fraction(abs(m)) / 2 ** (31 - shift)
    if 2 ** -31 <= real < 2 ** 30:
        assert 2 ** 30 <= abs(m)                                    # full Q31 precision
        assert abs(approx - Fraction(real)) <= Fraction(1, 2 ** (32 - shift))   # half a unit
    elif real < 2 ** -31:
        assert shift == -31 and abs(approx - Fraction(real)) <= Fraction(1, 2 ** 63)
    else:
        assert (abs(m), shift) == (2 ** 31 - 1, 30)                  # saturating ratio


def test_quantize_multiplier_zero():
    assert quant.quantize_multiplier(0.0) == (0, 0)
    assert quant.requantize(np.array([123, -7]), 0, 0).tolist() == [0, 0]


ACCS = [0, 1, -1, 2, -2, 3, -3, 2 ** 31 - 1, -2 ** 31, 2 ** 31, -2 ** 31 + 1, 12345, -12345]


def test_requantize_matches_exact_rational_rounding():
    accs = ACCS + rng.integers(-2 ** 31, 2 ** 31, 300).tolist()
    ratios = EDGE_REALS[:10] + list(10 ** rng.uniform(-10, 1, 30)) + [-0.3, -1.7]
    for ratio in ratios:
        m, shift = quant.quantize_multiplier(ratio)
        got = quant.requantize(np.array(accs, np.int64), m, shift)
        assert got.tolist() == [ref_requant(a, ratio) for a in accs], ratio
        # and it is the real product to within rounding plus the multiplier's relative error
        for a, g in zip(accs, got.tolist()):
            assert abs(g - a * ratio) <= 0.5 + abs(a * ratio) * 2 ** -30 + 1e-9


def test_requantize_rounds_half_up():
    m, shift = quant.quantize_multiplier(0.5)
    assert quant.requantize(np.array([1, -1, 3, -3, 5, -5]), m, shift).tolist() == [1, 0, 2, -1, 3, -2]


def test_requantize_per_channel_broadcasts():
    acc = rng.integers(-10 ** 6, 10 ** 6, (2, 3, 4))
    ratios = np.array([1e-3, 0.2, 7e-5]).reshape(1, 3, 1)
    m, s = quant.quantize_multipliers(ratios)
    got = quant.requantize(acc, m, s)
    want = [[[ref_requant(int(acc[i, c, j]), float(ratios[0, c, 0])) for j in range(4)] for c in range(3)]
            for i in range(2)]
    assert got.tolist() == want


def test_div_round_is_exact():
    for n, d in itertools.product(range(-60, 61), [d for d in range(-9, 10) if d]):
        assert int(quant.div_round(n, d)) == round_half_away(Fraction(n, d)), (n, d)


def test_quantize_rounds_half_away_and_saturates():
    q = QuantParams((0.5,), (3,))
    x = np.array([0.25, -0.25, 0.75, -0.75, 0.0, 1e9, -1e9, np.inf, -np.inf, np.nan, 63.0, -65.5], np.float32)
    assert quant.quantize(x, q).tolist() == [4, 2, 5, 1, 3, 127, -128, 127, -128, 3, 127, -128]


def test_quantize_matches_reference_and_dequantize_inverts():
    q = QuantParams((quant.f32(0.0173),), (-17,))
    x = rng.uniform(-2.5, 2.5, 2000).astype(np.float32)
    want = [sat(round_half_away(Fraction(float(np.float32(v) / np.float32(q.scale[0])))) - 17) for v in x]
    got = quant.quantize(x, q)
    assert got.tolist() == want
    back = quant.dequantize(got, q)
    assert back.dtype == np.float32
    inside = (x >= back.min()) & (x <= back.max())
    assert np.all(np.abs(back - x)[inside] <= q.scale[0] / 2 * (1 + 1e-6))


def test_range_params():
    for lo, hi in [(-1.0, 3.0), (0.0, 6.0), (-4.0, 0.0), (0.5, 2.0), (-3.0, -1.0), (-1e-3, 1e-3)]:
        q = quant.range_params(lo, hi)
        (s,), (zp,) = q.scale, q.zero_point
        assert s == quant.f32(s) and quant.QMIN <= zp <= quant.QMAX
        assert int(quant.quantize(np.float32(0.0), q)) == zp          # zero is exact
        assert quant.dequantize(quant.QMIN, q) <= min(lo, 0) + s and quant.dequantize(quant.QMAX, q) >= max(hi, 0) - s
    assert quant.range_params(0.0, 0.0).scale == (quant.MIN_SCALE,)
    assert quant.range_params(0.0, 6.0).zero_point == (-128,)


def test_weight_and_bias_quantization():
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    w[2] = 0.0
    q = quant.weight_params(w)
    codes = quant.quantize_weight(w, q)
    assert q.axis == 0 and q.zero_point == (0,) * 4
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127 and not codes[2].any()
    assert np.all(np.abs(codes.reshape(4, -1)).max(axis=1)[[0, 1, 3]] == 127)
    xq = QuantParams((0.02,), (5,))
    bq = quant.bias_params(xq, q)
    assert bq.scale == tuple(0.02 * s for s in q.scale)
    b = np.array([0.1, -0.2, 1e9, -1e9], np.float32)
    got = quant.quantize_bias(b, bq)
    assert got.dtype == np.int32 and got[2] == 2 ** 31 - 1 and got[3] == -2 ** 31 + 1
    assert got[0] == round_half_away(Fraction(float(b[0])) / Fraction(bq.scale[0]))


def test_lut_and_exp_tables():
    xq, oq = QuantParams((0.05,), (10,)), QuantParams((1 / 255,), (-128,))
    sigmoid = lambda a: (1 / (1 + np.exp(-a.astype(np.float64)))).astype(np.float32)
    table = quant.lut_table(sigmoid, xq, oq)
    assert table.dtype == np.int8 and table.shape == (256,)
    for q in (-128, 10, 127):
        x = float(np.float32(q - 10) * np.float32(0.05))
        assert table[q + 128] == quant.quantize(np.float32(1 / (1 + math.exp(-x))), oq)
    exp = quant.softmax_exp_table(QuantParams((0.1,), (0,)))
    assert exp.dtype == np.int32 and exp[0] == 2 ** 20
    assert exp[10] == math.floor(2 ** 20 * math.exp(-1.0) + 0.5)
    assert np.all(np.diff(exp) <= 0)


# ---- integer kernels against plain-Python loops -------------------------------------------------

def qp(scale: float, zp: int) -> QuantParams:
    return QuantParams((quant.f32(scale),), (zp,))


def codes(*shape) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def int_op(kind: str, inputs, consts=(), out: QuantParams | None = None, **attrs) -> tuple[Graph, np.ndarray]:
    """Run one int8 op; inputs: [(codes, quant)], consts: [(array, dtype, quant)]. Returns the op's result."""
    xs = [Value(f"x{i}", TensorType(a.shape, "i8", q)) for i, (a, q) in enumerate(inputs)]
    g = Graph("t", xs, [])
    cs = [Value(f"c{i}", TensorType(a.shape, dt, q)) for i, (a, dt, q) in enumerate(consts)]
    g.ops = [Op("const", [], v, {"value": a}) for v, (a, _, _) in zip(cs, consts)]
    operands = xs + cs
    t = infer_type(kind, [v.type for v in operands], attrs)
    y = Value("y", TensorType(t.shape, t.dtype, out))
    g.ops.append(Op(kind, operands, y, attrs))
    g.outputs = [y]
    verify(g)
    check_result_quant(kind, [v.type for v in operands], y.type)
    (result,) = run(g, [a for a, _ in inputs])
    return g, result


ACTS = [{}, dict(act="relu"), dict(act="clamp", act_min=-0.4, act_max=0.9), dict(act="leaky_relu", act_alpha=0.1)]


def weight_const(o, *rest):
    w = rng.integers(-127, 128, (o, *rest)).astype(np.int8)
    return w, "i8", QuantParams(tuple(quant.f32(s) for s in rng.uniform(0.002, 0.02, o)), (0,) * o, axis=0)


def bias_const(xq, wq):
    bq = quant.bias_params(xq, wq)
    return rng.integers(-20000, 20000, len(wq.scale)).astype(np.int32), "i32", bq


CONV_CASES = [
    # C, O, (kh, kw), stride, padding, dilation, groups
    (3, 4, (3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1),
    (4, 6, (3, 2), [2, 1], [0, 1, 2, 0], [1, 1], 2),
    (4, 4, (3, 3), [2, 2], [1, 1, 1, 1], [2, 1], 4),     # depthwise, dilated
    (2, 4, (1, 1), [1, 1], [0, 0, 0, 0], [1, 1], 2),     # depthwise multiplier 2, pointwise
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("act", range(len(ACTS)))
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_int8_matches_loops(case, act, bias):
    c, o, (kh, kw), stride, padding, dilation, groups = case
    xq, oq = qp(0.05, -7), qp(0.02, 11)
    x = codes(1, c, 6, 5)
    w = weight_const(o, c // groups, kh, kw)
    consts = [w] + ([bias_const(xq, w[2])] if bias else [])
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, **ACTS[act])
    _, y = int_op("conv2d", [(x, xq)], consts, oq, **attrs)
    cg, top, left = c // groups, padding[0], padding[1]
    want = np.zeros(y.shape, np.int64)
    for oc, i, j in itertools.product(range(o), range(y.shape[2]), range(y.shape[3])):
        acc = int(consts[1][0][oc]) if bias else 0
        for ci, u, v in itertools.product(range(cg), range(kh), range(kw)):
            r, s = i * stride[0] - top + u * dilation[0], j * stride[1] - left + v * dilation[1]
            if 0 <= r < 6 and 0 <= s < 5:
                acc += (int(x[0, oc // (o // groups) * cg + ci, r, s]) + 7) * int(w[0][oc, ci, u, v])
        want[0, oc, i, j] = ref_out(acc, xq.scale[0] * w[2].scale[oc] / oq.scale[0], attrs, oq)
    assert y.dtype == np.int8 and y.tolist() == want.tolist()


@pytest.mark.parametrize("act", range(len(ACTS)))
def test_linear_int8_matches_loops(act):
    xq, oq = qp(0.03, 4), qp(0.05, -3)
    x, w = codes(3, 7), weight_const(5, 7)
    b = bias_const(xq, w[2])
    _, y = int_op("linear", [(x, xq)], [w, b], oq, **ACTS[act])
    for i, n in itertools.product(range(3), range(5)):
        acc = int(b[0][n]) + sum((int(x[i, k]) - 4) * int(w[0][n, k]) for k in range(7))
        assert y[i, n] == ref_out(acc, xq.scale[0] * w[2].scale[n] / oq.scale[0], ACTS[act], oq)


def test_matmul_int8_matches_loops():
    aq, bq, oq = qp(0.04, -5), qp(0.03, 9), qp(0.4, 2)
    a, b = codes(2, 3, 4), codes(4, 5)
    _, y = int_op("matmul", [(a, aq), (b, bq)], out=oq, act="relu")
    for n, i, j in itertools.product(range(2), range(3), range(5)):
        acc = sum((int(a[n, i, k]) + 5) * (int(b[k, j]) - 9) for k in range(4))
        assert y[n, i, j] == ref_out(acc, aq.scale[0] * bq.scale[0] / oq.scale[0], dict(act="relu"), oq)


@pytest.mark.parametrize("kind", ["add", "sub"])
@pytest.mark.parametrize("act", range(len(ACTS)))
def test_add_sub_int8_matches_loops(kind, act):
    aq, bq, oq = qp(0.02, -10), qp(0.07, 3), qp(0.05, 1)
    a, b = codes(2, 3, 4), codes(3, 1)
    _, y = int_op(kind, [(a, aq), (b, bq)], out=oq, **ACTS[act])
    ra, rb, ro = quant.add_ratios(aq, bq, oq)
    sign = 1 if kind == "add" else -1
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        a2 = ref_requant((int(a[i, j, k]) + 10) << 20, ra)
        b2 = ref_requant((int(b[j, 0]) - 3) << 20, rb)
        assert y[i, j, k] == ref_out(a2 + sign * b2, ro, ACTS[act], oq)


def test_add_is_close_to_real_sum():
    aq, bq, oq = qp(0.02, -10), qp(0.07, 3), qp(0.05, 1)
    a, b = codes(500), codes(500)
    _, y = int_op("add", [(a, aq), (b, bq)], out=oq)
    real = quant.dequantize(a, aq).astype(np.float64) + quant.dequantize(b, bq)
    inside = np.abs(real / 0.05 + 1) < 126
    assert np.abs(quant.dequantize(y, oq) - real)[inside].max() <= 0.05 * 0.5 + 1e-6


def test_mul_int8_matches_loops():
    aq, bq, oq = qp(0.02, -10), qp(0.07, 3), qp(0.01, -20)
    a, b = codes(4, 5), codes(5)
    _, y = int_op("mul", [(a, aq), (b, bq)], out=oq, act="clamp", act_min=-0.5, act_max=0.8)
    attrs = dict(act="clamp", act_min=-0.5, act_max=0.8)
    for i, j in itertools.product(range(4), range(5)):
        acc = (int(a[i, j]) + 10) * (int(b[j]) - 3)
        assert y[i, j] == ref_out(acc, aq.scale[0] * bq.scale[0] / oq.scale[0], attrs, oq)


def test_div_int8_matches_loops():
    aq, bq, oq = qp(0.02, -10), qp(0.07, 3), qp(0.05, 0)
    a, b = codes(6, 40), codes(40)
    b[:3] = 3                                    # divisor zero (q == zp)
    a[:, 0] = -10                                # 0 / 0
    _, y = int_op("div", [(a, aq), (b, bq)], out=oq)
    ratio = aq.scale[0] / (bq.scale[0] * oq.scale[0] * 2 ** quant.DIV_SHIFT)
    for i, j in itertools.product(range(6), range(40)):
        num, den = (int(a[i, j]) + 10) << quant.DIV_SHIFT, int(b[j]) - 3
        if den == 0:
            want = 127 if num > 0 else -128 if num < 0 else 0
        else:
            want = ref_out(round_half_away(Fraction(num, den)), ratio, {}, oq)
        assert y[i, j] == want, (i, j)


def _window_range(o, k, s, d, pad, size, extra_end):
    start = o * s - pad
    return [start + t * d for t in range(k)], start, min(start + (k - 1) * d + 1, size + extra_end)


@pytest.mark.parametrize("ceil_mode,include_pad", [(False, True), (True, False), (True, True), (False, False)])
def test_avg_pool2d_int8_matches_loops(ceil_mode, include_pad):
    xq = qp(0.05, -20)
    x = codes(1, 2, 7, 6)
    attrs = dict(kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=ceil_mode, count_include_pad=include_pad)
    _, y = int_op("avg_pool2d", [(x, xq)], out=xq, **attrs)
    for c, i, j in itertools.product(range(2), range(y.shape[2]), range(y.shape[3])):
        rows, r0, r1 = _window_range(i, 3, 2, 1, 1, 7, 1)
        cols, c0, c1 = _window_range(j, 2, 2, 1, 0, 6, 1)
        valid = [(r, s) for r in rows for s in cols if 0 <= r < 7 and 0 <= s < 6]
        total = sum(int(x[0, c, r, s]) + 20 for r, s in valid)
        divisor = (r1 - r0) * (c1 - c0) if include_pad else len(valid)
        assert y[0, c, i, j] == sat(round_half_away(Fraction(total, divisor)) - 20)


def test_max_pool2d_int8_matches_loops():
    xq = qp(0.05, 100)
    x = codes(1, 2, 7, 6)
    attrs = dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], dilation=[1, 2], ceil_mode=True)
    _, y = int_op("max_pool2d", [(x, xq)], out=xq, **attrs)
    for c, i, j in itertools.product(range(2), range(y.shape[2]), range(y.shape[3])):
        vals = [int(x[0, c, r, s]) for r in range(i * 2 - 1, i * 2 + 2) for s in range(j * 2 - 1, j * 2 + 4, 2)
                if 0 <= r < 7 and 0 <= s < 6]
        assert y[0, c, i, j] == max(vals)


def test_mean_int8_matches_loops():
    xq, oq = qp(0.05, -20), qp(0.02, 5)
    x = codes(2, 3, 4, 5)
    _, y = int_op("mean", [(x, xq)], out=oq, axes=[1, 3], keepdim=True)
    for n, h in itertools.product(range(2), range(4)):
        total = sum(int(x[n, c, h, w]) + 20 for c in range(3) for w in range(5))
        assert y[n, 0, h, 0] == sat(ref_requant(total, xq.scale[0] / (15 * oq.scale[0])) + 5)


def test_cat_requantizes_inputs_with_other_scales():
    aq, bq = qp(0.05, -20), qp(0.02, 7)
    a, b = codes(1, 2, 3), codes(1, 3, 3)
    _, y = int_op("cat", [(a, aq), (b, bq)], out=aq, axis=1)
    assert y[:, :2].tolist() == a.tolist()                      # same quant: copied
    for j, k in itertools.product(range(3), range(3)):
        assert y[0, 2 + j, k] == sat(ref_requant(int(b[0, j, k]) - 7, 0.02 / quant.f32(0.05)) - 20)


def test_softmax_int8_matches_loops():
    xq = qp(0.07, 3)
    x = codes(3, 9)
    x[1] = 5                                                     # a flat row
    x[2, 4] = 127                                                # one dominant element
    x[2, 5:] = -128
    table = quant.softmax_exp_table(xq)
    _, y = int_op("softmax", [(x, xq)], [(table, "i32", None)], quant.SOFTMAX_OUT, axis=1)
    for i in range(3):
        e = [int(table[int(max(x[i])) - int(v)]) for v in x[i]]
        assert y[i].tolist() == [sat(round_half_away(Fraction(256 * v, sum(e))) - 128) for v in e]
    real = np.exp(quant.dequantize(x, xq).astype(np.float64))
    real /= real.sum(axis=1, keepdims=True)
    assert np.abs(quant.dequantize(y, quant.SOFTMAX_OUT) - real).max() <= 1 / 256


def test_lut_pad_quantize_dequantize():
    xq, oq = qp(0.05, -20), qp(0.03, 1)
    x = codes(2, 3)
    table = codes(256)
    _, y = int_op("lut", [(x, xq)], [(table, "i8", None)], oq)
    assert y.tolist() == [[int(table[int(v) + 128]) for v in row] for row in x]
    _, y = int_op("pad", [(x, xq)], out=xq, pads=[0, 1, 0, 0], value=0.5)
    assert y[:, 0].tolist() == [round_half_away(Fraction(0.5) / Fraction(quant.f32(0.05))) - 20] * 2
    assert y[:, 1:].tolist() == x.tolist() and y.shape == (2, 4)
    _, y = int_op("dequantize", [(x, xq)])
    assert y.dtype == np.float32 and y.tolist() == [[(int(v) + 20) * np.float32(quant.f32(0.05)) for v in r]
                                                     for r in x]
    f = Value("f", TensorType((4,), "f32"))
    g = Graph("t", [f], [Value("q", TensorType((4,), "i8", oq))])
    g.ops = [Op("quantize", [f], g.outputs[0])]
    verify(g)
    assert run(g, [np.array([0.0, 0.015, -0.015, 9.0], np.float32)])[0].tolist() == [1, 2, 0, 127]


def test_accumulator_overflow_is_an_error():
    xq = qp(1.0, -128)
    wq = QuantParams((1.0,), (0,), axis=0)
    x = np.full((1, 1), 127, np.int8)
    with pytest.raises(TinycError, match="int32 accumulator overflows"):
        int_op("linear", [(x, xq)], [(np.full((1, 1), 127, np.int8), "i8", wq),
                                      (np.array([2 ** 31 - 100], np.int32), "i32", quant.bias_params(xq, wq))], qp(1.0, 0))


# ---- op table and verifier checks for the integer forms -----------------------------------------

def test_integer_form_checks():
    xq, wq = qp(0.1, 0), QuantParams((0.1, 0.2), (0, 0), axis=0)
    x, x_raw = TensorType((1, 4), "i8", xq), TensorType((1, 4), "i8")
    w = TensorType((2, 4), "i8", wq)
    ok_bias = TensorType((2,), "i32", quant.bias_params(xq, wq))
    assert infer_type("linear", [x, w, ok_bias], {}).dtype == "i8"
    bad = [
        ([x, TensorType((2, 4), "i8", QuantParams((0.1, 0.2), (0, 1), axis=0))], "per output channel"),
        ([x, w, TensorType((2,), "f32")], "bias must be i32"),
        ([x, w, TensorType((2,), "i32", QuantParams((0.5, 0.5), (0, 0), axis=0))], "input scale x weight"),
    ]
    for operands, msg in bad:
        with pytest.raises(Exception, match=msg):
            infer_type("linear", operands, {})
    with pytest.raises(Exception, match="operand 1 must be i8 with per-tensor quant"):
        infer_type("add", [x, x_raw], {})
    with pytest.raises(Exception, match="batch_norm has no integer form"):
        infer_type("batch_norm", [TensorType((1, 2, 3), "i8", xq)] + [TensorType((2,))] * 4, dict(eps=1e-5))
    with pytest.raises(Exception, match="int8 softmax takes 2 operands"):
        infer_type("softmax", [x], dict(axis=1))
    with pytest.raises(Exception, match="quantize takes an f32 input"):
        infer_type("quantize", [x], {})
    with pytest.raises(Exception, match="result quant differs"):
        check_result_quant("reshape", [x], TensorType((4,), "i8", qp(0.2, 0)))
    with pytest.raises(Exception, match="scale 1/256"):
        check_result_quant("softmax", [x, TensorType((256,), "i32")], TensorType((1, 4), "i8", xq))
    with pytest.raises(Exception, match="result must be i8 with per-tensor quant"):
        check_result_quant("add", [x, x], TensorType((1, 4), "i8"))


def test_verifier_catches_a_stale_bias_scale():
    g = quantized("mlp").copy()
    linear = next(op for op in g.ops if op.kind == "linear")
    linear.operands[0].type = TensorType(linear.operands[0].type.shape, "i8", qp(0.5, 0))
    with pytest.raises(VerifyError, match="bias scales are not input scale x weight scales"):
        verify(g)


# ---- the pass on every zoo model ------------------------------------------------------------------

CALIB_ROWS, EVAL_ROWS = 32, 16


@functools.lru_cache(maxsize=None)
def quantized(name: str, pipeline: str = "quantize-int8") -> Graph:
    """The fused zoo model quantized with CALIB_ROWS random calibration inputs (cached: copy to mutate)."""
    ctx = PassContext(calib=zoo_inputs(name, CALIB_ROWS, seed=1))
    return PassManager(pipeline).run(fused_graph(name).copy(), ctx)


def outputs(graph: Graph, rows: np.ndarray) -> list[np.ndarray]:
    """Per graph output, the stacked results over the rows (float64)."""
    per_row = [run(graph, [r[None]]) for r in rows]
    return [np.concatenate([r[i] for r in per_row]).astype(np.float64) for i in range(len(graph.outputs))]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


@pytest.mark.parametrize("name", zoo_names())
def test_quantized_zoo_model_is_int8_and_round_trips(name):
    g = quantized(name)
    verify(g)
    for op in g.compute_ops():
        check_result_quant(op.kind, [v.type for v in op.operands], op.result.type)
        if op.kind != "dequantize":
            assert op.result.type.dtype == "i8" and op.result.type.quant is not None, op
    assert all(v.type.dtype == "f32" for v in g.outputs)
    assert all(v.type.dtype == ("i32" if zoo.ZOO[name].vocab else "f32") for v in g.inputs)
    assert {op.kind for op in g.compute_ops()}.isdisjoint({"batch_norm", "relu", "sigmoid", "tanh", "hardswish"})
    text = print_graph(g)
    again = parse(text)
    assert print_graph(again) == text
    x = zoo_inputs(name, 1, seed=3)
    for a, b in zip(run(g, [x]), run(again, [x])):
        assert a.tobytes() == b.tobytes()
    float_bytes = graph_stats(fused_graph(name)).weight_bytes
    assert graph_stats(g).weight_bytes < 0.3 * float_bytes + 2048 * len(g.outputs) + 1024


def compared(graph: Graph, env: dict, v: Value) -> np.ndarray:
    """What to compare for output v: the output itself, or for a softmax its logits minus their
    row mean (int8 softmax has a fixed 1/256 step, and softmax ignores a common offset)."""
    producer = {op.result.name: op for op in graph.ops}
    op = producer.get(v.name)
    if op is not None and op.kind == "dequantize":
        op = producer[op.operands[0].name]
    if op is None or op.kind != "softmax":
        return env[v.name].astype(np.float64)
    logits = op.operands[0]
    a = env[logits.name] if logits.type.quant is None else quant.dequantize(env[logits.name], logits.type.quant)
    return a - a.astype(np.float64).mean(axis=-1, keepdims=True)


# Measured SQNR (dB) per output, 32 random calibration rows, 16 other random rows: mlp 38.5,
# cnn_bn 32.6, ds_cnn 31.8, resnet8 34.5, mobilenet_v1_025 13.3, fc_autoencoder 15.8, conv1d 32.1,
# kitchen_sink 34.2 / 36.1. The two low ones are deep stacks of random layers, each adding about
# 1.5 dB of int8 noise; float fake-quantization on the same grid scores the same (see below).
# The bars sit 3 dB below the measurements.
MIN_SQNR = {"mlp": 35, "cnn_bn": 29, "ds_cnn": 28, "resnet8": 31, "mobilenet_v1_025": 10, "fc_autoencoder": 12.5,
            "conv1d": 29, "kitchen_sink": 31, "gru_kws": 33, "lstm_imu": 37, "transformer_encoder": 30,
            "unet_small": 24, "shufflenet_v2_block": 27.5, "mobilevit_block": 32, "token_classifier": 33}


@pytest.mark.parametrize("name", zoo_names())
def test_quantized_zoo_model_is_close_to_float(name):
    g, q = fused_graph(name), quantized(name)
    rows = zoo_inputs(name, EVAL_ROWS, seed=2)
    envs = [(run_all(g, [r[None]]), run_all(q, [r[None]])) for r in rows]
    for vf, vq in zip(g.outputs, q.outputs):
        ref = np.concatenate([compared(g, ef, vf) for ef, _ in envs])
        got = np.concatenate([compared(q, eq, vq) for _, eq in envs])
        assert sqnr_db(ref, got) >= MIN_SQNR[name], (name, vf.name, sqnr_db(ref, got))
        if vf.type.rank == 4:   # a segmentation map: the class of each pixel (axis 1)
            agree = [np.mean(ef[vf.name].argmax(1) == eq[vq.name].argmax(1)) for ef, eq in envs]
        else:
            agree = [np.array_equal(ef[vf.name].argmax(-1), eq[vq.name].argmax(-1)) for ef, eq in envs]
        assert np.mean(agree) >= 0.75


def fake_quant_run(g: Graph, q: Graph, x: np.ndarray) -> np.ndarray:
    """The float graph with each weight and activation rounded to the int8 graph's grid (by name)."""
    types = {op.result.name: op for op in q.ops}
    ((xq,),) = [op.operands for op in q.ops if op.kind == "quantize"]
    fake = lambda a, t: quant.dequantize(quant.quantize(a, t.quant), t.quant)
    env = {g.inputs[0].name: fake(x, types[q.inputs[0].name + ".q"].result.type)}
    for op in g.ops:
        mirror = types.get(op.result.name)
        if op.is_const:
            weight = mirror is not None and mirror.result.type.dtype == "i8" and mirror.result.type.quant.per_channel
            env[op.result.name] = fake(op.attrs["value"], mirror.result.type) if weight else op.attrs["value"]
        else:
            y = run_op(op, *(env[v.name] for v in op.operands))
            env[op.result.name] = fake(y, mirror.result.type) if mirror.result.type.quant else y
    return env[g.outputs[0].name]


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "fc_autoencoder", "ds_cnn"])
def test_int8_inference_matches_float_on_the_int8_grid(name):
    """The integer arithmetic adds (almost) nothing to the grid's rounding: int8 output vs float
    fake-quantization is far closer than either is to float (>= 30 dB; measured 32-45)."""
    g, q = fused_graph(name), quantized(name)
    rows = zoo_inputs(name, 4, seed=2)
    sim = np.concatenate([fake_quant_run(g, q, r[None]) for r in rows]).astype(np.float64)
    assert sqnr_db(sim, outputs(q, rows)[0]) >= 30


def test_unfused_batch_norm_becomes_a_depthwise_conv():
    """A batch norm with no layer to fold into (on the graph input, after a residual add) becomes a
    1x1 depthwise conv in int8, and computes what the float graph did."""
    import torch
    from tinyc.frontend import from_torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn_in, self.conv, self.bn_add = torch.nn.BatchNorm1d(3), torch.nn.Conv1d(3, 3, 3, padding=1), \
                torch.nn.BatchNorm1d(3)
            for bn in (self.bn_in, self.bn_add):
                bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)

        def forward(self, x):
            x = self.bn_in(x)
            return self.bn_add(x + self.conv(x))

    torch.manual_seed(0)
    g = PassManager("fuse").run(from_torch(Net().eval(), (torch.randn(1, 3, 16),), name="bn"))
    assert sum(op.kind == "batch_norm" for op in g.ops) == 2
    calib = rng.standard_normal((CALIB_ROWS, 3, 16)).astype(np.float32)
    q = PassManager("quantize-int8").run(g.copy(), PassContext(calib=calib))
    convs = [op for op in q.ops if op.kind == "conv2d" and op.attrs["groups"] > 1]
    assert len(convs) == 2 and all(op.operands[1].type.shape[1:] == (1, 1, 1) for op in convs)
    rows = rng.standard_normal((8, 3, 16)).astype(np.float32)
    assert sqnr_db(outputs(g, rows)[0], outputs(q, rows)[0]) > 30


def test_division_by_an_activation_is_integer():
    x = Value("x", TensorType((1, 8), "f32"))
    g = Graph("d", [x], [])
    d = g.add_const("d", np.full((1, 8), 0.5, np.float32))
    den = Value("den", TensorType((1, 8), "f32"))
    y = Value("y", TensorType((1, 8), "f32"))
    g.ops += [Op("add", [x, d], den), Op("div", [x, den], y)]
    g.outputs = [y]
    calib = rng.uniform(1, 3, (32, 1, 8)).astype(np.float32)
    q = PassManager("quantize-int8").run(g, PassContext(calib=calib))
    assert [op.kind for op in q.compute_ops()] == ["quantize", "add", "div", "dequantize"]
    rows = rng.uniform(1, 3, (8, 8)).astype(np.float32)
    assert sqnr_db(outputs(g, rows)[0], outputs(q, rows)[0]) > 30


# ---- options and errors ---------------------------------------------------------------------------

def test_keep_float_leaves_ops_in_float():
    g = quantized("kitchen_sink", "quantize-int8{keep-float=softmax,linear}")
    ops = {op.result.name: op for op in g.ops}
    for name in ("softmax", "linear"):
        assert ops[name].result.type.dtype == "f32" and ops[name].kind == name
    assert ops["softmax"].operands[0].name == "div.dq" and ops["div.dq"].kind == "dequantize"
    assert ops["linear"].operands[1].type.dtype == "f32"                  # float weights stay
    assert ops["linear.q"].kind == "quantize"                             # relu and softmax_1 read it
    rows = zoo_inputs("kitchen_sink", 4, seed=2)
    ref, got = outputs(fused_graph("kitchen_sink"), rows), outputs(g, rows)
    assert all(sqnr_db(r, q) > 30 for r, q in zip(ref, got))


def test_observers_choose_different_ranges():
    x = Value("x", TensorType((1, 25000), "f32"))
    y = Value("y", TensorType((1, 25000), "f32"))
    g = Graph("o", [x], [y], [Op("clamp", [x], y, dict(min=-np.inf, max=np.inf))])
    heavy = rng.laplace(size=(4, 1, 25000)).astype(np.float32)
    heavy[0, 0, :2] = [40.0, -30.0]                                       # rare outliers
    ranges = {o: observe_ranges(g, [[d] for d in heavy], o, 99.9)["y"] for o in ("minmax", "percentile", "mse")}
    assert ranges["minmax"] == (-30.0, 40.0)
    assert -8 < ranges["percentile"][0] < -5 and 5 < ranges["percentile"][1] < 8   # Laplace 99.9%: 6.2
    # mse: the range whose int8 grid really gives the least squared error on the data
    error = {o: float(((quant.dequantize(quant.quantize(heavy, quant.range_params(*r)), quant.range_params(*r))
                        - heavy) ** 2).sum()) for o, r in ranges.items()}
    assert error["mse"] < min(error["minmax"], error["percentile"]) and ranges["mse"][1] < 40
    flat = rng.uniform(-1, 1, (4, 1, 25000)).astype(np.float32)
    lo, hi = observe_ranges(g, [[d] for d in flat], "mse")["y"]
    assert lo < -0.95 and hi > 0.95                                       # nothing worth clipping


@pytest.mark.parametrize("observer", ["percentile", "mse"])
def test_clipping_observers_give_finer_scales(observer):
    base, clipped = quantized("ds_cnn"), quantized("ds_cnn", f"quantize-int8{{observer={observer}}}")
    scales = lambda g: {op.result.name: op.result.type.quant.scale[0] for op in g.compute_ops()
                        if op.result.type.quant is not None and op.kind == "conv2d"}
    a, b = scales(base), scales(clipped)
    assert all(b[n] <= a[n] * (1 + 1e-6) for n in a) and any(b[n] < a[n] * 0.95 for n in a)


def test_missing_calibration_is_an_error():
    with pytest.raises(PassError, match="calibration data") as e:
        PassManager("quantize-int8").run(fused_graph("mlp").copy(), PassContext())
    assert "--calib X.npy" in str(e.value)


def test_calibration_shapes():
    g = fused_graph("cnn_bn")
    for calib in (rng.random((5, 1, 8, 8)), rng.random((5, 1, 1, 8, 8)), [rng.random((5, 1, 8, 8))],
                  rng.random((1, 1, 8, 8))):
        PassManager("quantize-int8").run(g.copy(), PassContext(calib=np.asarray(calib, np.float32)
                                                                if not isinstance(calib, list) else calib))
    with pytest.raises(PassError, match=r"shape \[5, 8, 8\]; expected N x \[1, 1, 8, 8\]"):
        PassManager("quantize-int8").run(g.copy(), PassContext(calib=rng.random((5, 8, 8))))
    with pytest.raises(PassError, match="2 arrays for 1 graph inputs"):
        PassManager("quantize-int8").run(g.copy(), PassContext(calib=[rng.random((5, 1, 8, 8))] * 2))


def test_quantizing_twice_is_an_error():
    with pytest.raises(PassError, match="already quantized"):
        PassManager("quantize-int8").run(quantized("mlp").copy(), PassContext(calib=zoo_inputs("mlp", 4)))


def test_unknown_keep_float_name_is_an_error():
    with pytest.raises(PassError, match="keep-float names no op result: nope"):
        PassManager("quantize-int8{keep-float=nope}").run(fused_graph("mlp").copy(),
                                                           PassContext(calib=zoo_inputs("mlp", 4)))


def test_pipeline_spelling_round_trips():
    passes = parse_pipeline("quantize-int8{observer=percentile percentile=99.9 keep-float=a,b}")
    assert passes[0].keep_float == ("a", "b") and passes[0].observer == "percentile"
    assert print_pipeline(passes) == "quantize-int8{observer=percentile percentile=99.9 keep-float=a,b}"
    with pytest.raises(TinycError):
        parse_pipeline("quantize-int8{observer=avg}")


def test_pass_records_statistics():
    ctx = PassContext(calib=zoo_inputs("cnn_bn", 4))
    PassManager("fuse,quantize-int8").run(fused_graph("cnn_bn").copy(), ctx)
    stats = ctx.stats["quantize-int8"]
    assert stats["calibration_samples"] == 4 and stats["float_ops"] == 0 and stats["int8_ops"] >= 4
