"""Interpreter kernels and shape inference against torch.nn.functional; MAC counts and statistics."""
from __future__ import annotations

import time
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyc.errors import TinycError
from tinyc.interpreter import run, run_all
from tinyc.ir import Graph, Op, TensorType, Value, dtype_of
from tinyc.ops import OPS, OpError, infer_type, macs
from tinyc.stats import graph_stats, layer_table
from tinyc.verifier import verify

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    """Same data for a test however xdist orders the tests."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def rand(*shape, scale=1.0) -> np.ndarray:
    return np.asarray(rng.standard_normal(shape) * scale, np.float32)


def one_op_graph(kind: str, inputs: list[np.ndarray], consts: list[np.ndarray] = (), **attrs) -> Graph:
    """Graph computing `kind(inputs..., consts...)`; the result type comes from infer_type."""
    xs = [Value(f"x{i}", TensorType(a.shape, dtype_of(a))) for i, a in enumerate(inputs)]
    g = Graph("t", xs, [])
    operands = xs + [g.add_const(f"c{i}", c) for i, c in enumerate(consts)]
    out = Value("y", infer_type(kind, [v.type for v in operands], attrs))
    g.ops.append(Op(kind, operands, out, attrs))
    g.outputs = [out]
    verify(g)
    return g


def run_op(kind, inputs, consts=(), **attrs) -> np.ndarray:
    (y,) = run(one_op_graph(kind, inputs, consts, **attrs), inputs)
    assert y.dtype == np.float32
    return y


def close(ours: np.ndarray, ref: torch.Tensor, magnitude: torch.Tensor | None = None) -> None:
    """rtol 1e-5, plus an atol of 1e-6 x the largest |value| the op computed before any
    activation clipped it (`magnitude`, default the reference itself): float32 rounding error
    scales with the accumulated values, and clamp does not shrink the error of kept values."""
    ref = ref.detach().numpy()
    assert ours.shape == ref.shape
    scale_of = (magnitude.detach().numpy() if magnitude is not None else ref)
    finite = scale_of[np.isfinite(scale_of)]
    atol = 1e-6 * max(1.0, float(np.abs(finite).max()) if finite.size else 1.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=atol)


T = torch.from_numpy


# ---- conv2d -------------------------------------------------------------------------

CONV_CASES = [
    # C, O, k, stride, padding [t, l, b, r], dilation, groups, bias
    (3, 8, 3, 1, [1, 1, 1, 1], 1, 1, True),
    (3, 8, 3, 2, [1, 1, 1, 1], 1, 1, False),
    (4, 6, 3, 1, [0, 1, 2, 0], 1, 1, True),       # asymmetric
    (4, 6, (5, 3), (2, 1), [2, 0, 1, 1], 1, 1, True),
    (4, 4, 3, 1, [2, 2, 2, 2], 2, 1, True),       # dilation
    (4, 6, 3, 1, [1, 1, 1, 1], 1, 2, True),       # groups
    (8, 8, 3, 2, [1, 1, 1, 1], 1, 8, True),       # depthwise
    (4, 8, 3, 1, [0, 0, 1, 1], (2, 1), 4, False),  # depthwise multiplier 2, asymmetric, dilation
    (5, 7, 1, 1, [0, 0, 0, 0], 1, 1, True),       # pointwise
]


@pytest.mark.parametrize("c,o,k,stride,padding,dilation,groups,bias", CONV_CASES)
@pytest.mark.parametrize("act", [None, "relu", "clamp", "leaky_relu"])
def test_conv2d(c, o, k, stride, padding, dilation, groups, bias, act):
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]
    kh, kw = pair(k)
    x, w = rand(2, c, 11, 10), rand(o, c // groups, kh, kw)
    consts = [w, rand(o)] if bias else [w]
    attrs = dict(stride=pair(stride), padding=padding, dilation=pair(dilation), groups=groups)
    attrs.update({None: {}, "relu": dict(act="relu"), "clamp": dict(act="clamp", act_min=-0.5, act_max=1.0),
                  "leaky_relu": dict(act="leaky_relu", act_alpha=0.1)}[act])
    ours = run_op("conv2d", [x], consts, **attrs)
    t, l, b, r = padding
    ref = F.conv2d(F.pad(T(x), (l, r, t, b)), T(w), T(consts[1]) if bias else None,
                   pair(stride), 0, pair(dilation), groups)
    pre_act = ref
    ref = {None: ref, "relu": F.relu(ref), "clamp": torch.clamp(ref, -0.5, 1.0),
           "leaky_relu": F.leaky_relu(ref, 0.1)}[act]
    close(ours, ref, magnitude=pre_act)


# ---- linear, matmul, batch_norm --------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 12), (2, 5, 12), (12,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(shape, bias):
    x, w, b = rand(*shape), rand(7, 12), rand(7)
    ours = run_op("linear", [x], [w, b] if bias else [w])
    close(ours, F.linear(T(x), T(w), T(b) if bias else None))


@pytest.mark.parametrize("a,b", [((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((6, 3, 4), (4, 2)),
                                 ((1, 3, 4), (2, 4, 5))])
def test_matmul(a, b):
    x, y = rand(*a), rand(*b)
    close(run_op("matmul", [x, y], act="relu"), F.relu(torch.matmul(T(x), T(y))))


@pytest.mark.parametrize("shape", [(2, 6, 5, 4), (3, 6)])
def test_batch_norm(shape):
    x = rand(*shape)
    mean, var, w, b = rand(6), np.abs(rand(6)) + 0.1, rand(6), rand(6)
    ours = run_op("batch_norm", [x], [mean, var, w, b], eps=1e-3)
    close(ours, F.batch_norm(T(x), T(mean), T(var), T(w), T(b), training=False, eps=1e-3))


# ---- elementwise --------------------------------------------------------------------------

ACTIVATIONS = [
    ("relu", {}, F.relu),
    ("sigmoid", {}, torch.sigmoid),
    ("tanh", {}, torch.tanh),
    ("hardswish", {}, F.hardswish),
    ("clamp", dict(min=0.0, max=6.0), F.relu6),
    ("clamp", dict(min=-1.0, max=float("inf")), lambda t: torch.clamp(t, min=-1.0)),
    ("leaky_relu", dict(alpha=0.2), lambda t: F.leaky_relu(t, 0.2)),
]


@pytest.mark.parametrize("kind,attrs,ref", ACTIVATIONS, ids=lambda v: v if isinstance(v, str) else "")
def test_activation(kind, attrs, ref):
    edges = np.float32([-200.0, -4, -3, -1e-3, 0, 1e-3, 3, 4, 200])
    x = np.concatenate([rand(3, 40, scale=4.0), np.tile(edges, (3, 1))], axis=1)
    close(run_op(kind, [x], **attrs), ref(T(x)))


BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}


@pytest.mark.parametrize("kind", BINARY)
@pytest.mark.parametrize("a,b", [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (3, 1, 1)), ((2, 3, 4, 5), (5,)),
                                 ((4, 1), (1, 3)), ((2, 3), ()), ((), (2, 3)), ((2, 3), (1,))])
def test_binary(kind, a, b):
    x = rand(*a)
    y = rand(*b)
    if kind == "div":   # keep divisors away from zero
        y = np.asarray(np.where(y < 0, y - 0.5, y + 0.5), np.float32)
    close(run_op(kind, [x], [y]), BINARY[kind](T(x), T(y)))


@pytest.mark.parametrize("kind", ["add", "sub", "mul"])
def test_binary_fused_act(kind):
    x, y = rand(2, 8), rand(8)
    ours = run_op(kind, [x, y], act="clamp", act_min=-0.25, act_max=0.5)
    close(ours, torch.clamp(BINARY[kind](T(x), T(y)), -0.25, 0.5))


# ---- pools -----------------------------------------------------------------------------------

POOL_CASES = [
    # H, W, kernel, stride, pad, ceil_mode
    (8, 8, 2, 2, 0, False),
    (7, 9, 2, 2, 0, True),
    (5, 5, 2, 2, 1, True),      # ceil window that would start in the padding is dropped
    (7, 7, 3, 2, 1, False),
    (7, 7, 3, 2, 1, True),
    (10, 6, (3, 2), (3, 1), (1, 0), True),
    (6, 6, 3, 3, 0, True),
]


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


@pytest.mark.parametrize("h,w,k,s,p,ceil", POOL_CASES)
@pytest.mark.parametrize("dilation", [1, 2])
def test_max_pool2d(h, w, k, s, p, ceil, dilation):
    x = rand(2, 3, h + 2 * dilation, w + 2 * dilation)
    ph, pw = _pair(p)
    ours = run_op("max_pool2d", [x], kernel=_pair(k), stride=_pair(s), padding=[ph, pw, ph, pw],
                  dilation=[dilation, dilation], ceil_mode=ceil)
    close(ours, F.max_pool2d(T(x), _pair(k), _pair(s), _pair(p), dilation, ceil_mode=ceil))


@pytest.mark.parametrize("h,w,k,s,p,ceil", POOL_CASES)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool2d(h, w, k, s, p, ceil, include_pad):
    x = rand(2, 3, h, w)
    ph, pw = _pair(p)
    ours = run_op("avg_pool2d", [x], kernel=_pair(k), stride=_pair(s), padding=[ph, pw, ph, pw],
                  ceil_mode=ceil, count_include_pad=include_pad)
    close(ours, F.avg_pool2d(T(x), _pair(k), _pair(s), _pair(p), ceil_mode=ceil, count_include_pad=include_pad))


def test_pools_asymmetric_padding():
    x = rand(1, 2, 7, 8)
    pads = [0, 1, 1, 0]   # top, left, bottom, right
    tp = (pads[1], pads[3], pads[0], pads[2])
    common = dict(kernel=[2, 2], stride=[2, 2], padding=pads, ceil_mode=False)
    ours = run_op("max_pool2d", [x], dilation=[1, 1], **common)
    close(ours, F.max_pool2d(F.pad(T(x), tp, value=-np.inf), 2, 2))
    ours = run_op("avg_pool2d", [x], count_include_pad=True, **common)
    close(ours, F.avg_pool2d(F.pad(T(x), tp), 2, 2))


def test_max_pool_padding_never_wins():
    x = -np.abs(rand(1, 1, 4, 4)) - 1.0
    ours = run_op("max_pool2d", [x], kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1],
                  ceil_mode=False)
    assert ours.max() < 0


# ---- reductions and data movement -------------------------------------------------------------

@pytest.mark.parametrize("axes", [[1], [2, 3], [0, 1, 2, 3], [0, 2]])
@pytest.mark.parametrize("keepdim", [True, False])
def test_mean(axes, keepdim):
    x = rand(2, 3, 4, 5)
    close(run_op("mean", [x], axes=axes, keepdim=keepdim), torch.mean(T(x), dim=axes, keepdim=keepdim))


@pytest.mark.parametrize("shape", [[2, 60], [2, 3, 20], [1, 2, 1, 3, 1, 20], [120]])
def test_reshape(shape):
    x = rand(2, 3, 4, 5)
    close(run_op("reshape", [x], shape=shape), T(x).reshape(shape))


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [3, 2, 1, 0], [0, 1, 2, 3], [1, 0, 2, 3]])
def test_transpose(perm):
    x = rand(2, 3, 4, 5)
    close(run_op("transpose", [x], perm=perm), T(x).permute(perm))


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_cat(axis):
    shapes = [[2, 3, 4, 5] for _ in range(3)]
    for i, s in enumerate(shapes):
        s[axis] += i
    xs = [rand(*s) for s in shapes]
    close(run_op("cat", xs, axis=axis), torch.cat([T(x) for x in xs], dim=axis))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax(axis):
    x = rand(3, 4, 5, scale=30.0) + 500.0     # large logits: needs the max subtraction
    close(run_op("softmax", [x], axis=axis), F.softmax(T(x), dim=axis))


@pytest.mark.parametrize("pads,value", [([0, 0, 1, 2, 0, 0, 3, 0], 0.0), ([0, 1, 0, 0, 0, 2, 1, 1], -1.5),
                                        ([0, 0, -1, 1, 0, 0, 2, -2], 0.5)])
def test_pad(pads, value):
    x = rand(2, 3, 4, 5)
    r = x.ndim
    torch_pads = [p for d in reversed(range(r)) for p in (pads[d], pads[r + d])]
    close(run_op("pad", [x], pads=pads, value=value), F.pad(T(x), torch_pads, value=value))


# ---- shape inference sweeps against torch ---------------------------------------------------------

def test_pool_shapes_match_torch():
    for h in range(1, 11):
        for k in (1, 2, 3):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    for d in (1, 2):
                        for ceil in (False, True):
                            if h + 2 * p < d * (k - 1) + 1:
                                continue
                            ref = F.max_pool2d(torch.zeros(1, 1, h, h), k, s, p, d, ceil_mode=ceil).shape
                            attrs = dict(kernel=[k, k], stride=[s, s], padding=[p] * 4, dilation=[d, d],
                                         ceil_mode=ceil)
                            got = infer_type("max_pool2d", [TensorType((1, 1, h, h))], attrs).shape
                            assert got == tuple(ref), (h, k, s, p, d, ceil)


def test_conv_shapes_match_torch():
    for h in range(3, 9):
        for k in (1, 3):
            for s in (1, 2, 3):
                for p in (0, 1, 2):
                    for d in (1, 2):
                        if h + 2 * p < d * (k - 1) + 1:
                            continue
                        ref = F.conv2d(torch.zeros(1, 2, h, h), torch.zeros(4, 2, k, k), None, s, p, d).shape
                        attrs = dict(stride=[s, s], padding=[p] * 4, dilation=[d, d], groups=1)
                        got = infer_type("conv2d", [TensorType((1, 2, h, h)), TensorType((4, 2, k, k))], attrs)
                        assert got.shape == tuple(ref), (h, k, s, p, d)


def test_infer_keeps_first_operand_dtype():
    t = infer_type("max_pool2d", [TensorType((1, 4, 8, 8), "i8")],
                   dict(kernel=[2, 2], stride=[2, 2], padding=[0] * 4, dilation=[1, 1], ceil_mode=False))
    assert t == TensorType((1, 4, 4, 4), "i8")


@pytest.mark.parametrize("kind,types,attrs,msg", [
    ("conv2d", [(1, 4, 8, 8), (8, 3, 3, 3)], dict(stride=[1, 1], padding=[0] * 4, dilation=[1, 1], groups=1),
     "input channels per group"),
    ("conv2d", [(1, 3, 2, 2), (8, 3, 3, 3)], dict(stride=[1, 1], padding=[0] * 4, dilation=[1, 1], groups=1),
     "larger than the padded input"),
    ("add", [(2, 3), (4,)], {}, "do not broadcast"),
    ("reshape", [(2, 3)], dict(shape=[5]), "cannot reshape"),
    ("mean", [(2, 3)], dict(axes=[1, 0], keepdim=False), "sorted"),
    ("transpose", [(2, 3)], dict(perm=[0, 0]), "permutation"),
    ("linear", [(2, 5)], {}, "operands"),
    ("relu", [(2,)], dict(act="relu"), "unknown attribute 'act'"),
])
def test_infer_errors(kind, types, attrs, msg):
    with pytest.raises(OpError, match=msg):
        infer_type(kind, [TensorType(s) for s in types], attrs)


def test_every_op_has_a_reference():
    assert all(d.ref or d.ref_int or d.ref_exact for d in OPS.values())


# ---- MACs, statistics, whole graphs ---------------------------------------------------------------

def test_macs():
    conv = one_op_graph("conv2d", [rand(1, 3, 32, 32)], [rand(16, 3, 3, 3), rand(16)],
                        stride=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1)
    assert macs(conv.ops[-1]) == 16 * 32 * 32 * 3 * 3 * 3
    dw = one_op_graph("conv2d", [rand(1, 8, 16, 16)], [rand(8, 1, 3, 3)],
                      stride=[2, 2], padding=[1, 1, 1, 1], dilation=[1, 1], groups=8)
    assert macs(dw.ops[-1]) == 8 * 8 * 8 * 9
    assert macs(one_op_graph("linear", [rand(2, 5, 10)], [rand(4, 10)]).ops[-1]) == 2 * 5 * 4 * 10
    assert macs(one_op_graph("matmul", [rand(3, 2, 6), rand(6, 4)]).ops[-1]) == 3 * 2 * 4 * 6
    assert macs(one_op_graph("relu", [rand(3, 4)]).ops[-1]) == 0


def _resnet8_block(g: Graph, x: Value, c: int, stride: int) -> Value:
    """conv-relu-conv + shortcut, as a hand-built ResNet-8 stage."""
    def conv(v, cin, cout, k, s, act):
        w, b = g.add_const("w", rand(cout, cin, k, k, scale=0.2)), g.add_const("b", rand(cout))
        attrs = dict(stride=[s, s], padding=[k // 2] * 4, dilation=[1, 1], groups=1, **act)
        out = Value(g.fresh_name("conv"), infer_type("conv2d", [v.type, w.type, b.type], attrs))
        g.ops.append(Op("conv2d", [v, w, b], out, attrs))
        return out
    cin = x.type.shape[1]
    y = conv(conv(x, cin, c, 3, stride, dict(act="relu")), c, c, 3, 1, {})
    short = x if stride == 1 and cin == c else conv(x, cin, c, 1, stride, {})
    out = Value(g.fresh_name("add"), y.type)
    g.ops.append(Op("add", [y, short], out, dict(act="relu")))
    return out


def test_resnet8_runs_fast_and_stats_add_up():
    x = Value("x", TensorType((1, 3, 32, 32)))
    g = Graph("resnet8", [x], [])
    w0 = g.add_const("stem.w", rand(16, 3, 3, 3))
    attrs = dict(stride=[1, 1], padding=[1] * 4, dilation=[1, 1], groups=1, act="relu")
    h = Value("stem", infer_type("conv2d", [x.type, w0.type], attrs))
    g.ops.append(Op("conv2d", [x, w0], h, attrs))
    for c, s in ((16, 1), (32, 2), (64, 2)):
        h = _resnet8_block(g, h, c, s)
    pooled = Value("pool", TensorType((1, 64)))
    g.ops.append(Op("mean", [h], Value("gap", TensorType((1, 64, 1, 1))), dict(axes=[2, 3], keepdim=True)))
    g.ops.append(Op("reshape", [g.ops[-1].result], pooled, dict(shape=[1, 64])))
    g.outputs = [pooled]
    verify(g)

    inp = rand(1, 3, 32, 32)
    run(g, [inp])   # warm up BLAS
    t0 = time.perf_counter()
    (out,) = run(g, [inp])
    assert time.perf_counter() - t0 < 0.5
    assert out.shape == (1, 64) and out.dtype == np.float32

    s, rows = graph_stats(g), layer_table(g)
    assert s.ops == len(rows) == len(list(g.compute_ops()))
    assert s.macs == sum(r.macs for r in rows) > 0
    assert s.params == sum(r.params for r in rows) == sum(op.attrs["value"].size for op in g.const_ops())
    assert s.weight_bytes == 4 * s.params
    assert rows[0].name == "stem" and rows[0].shape == (1, 16, 32, 32) and rows[0].params == 16 * 27
    assert set(run_all(g, [inp])) == g.value_names()


def test_stats_packed_and_shared_consts():
    x = Value("x", TensorType((2, 8)))
    g = Graph("t", [x], [])
    w = g.add_const("w", np.ones((4, 8), np.int8), dtype="i4")
    y = Value("y", TensorType((2, 4)))
    g.ops.append(Op("linear", [x, w], y))
    z = Value("z", TensorType((2, 4)))
    k = g.add_const("k", np.ones((4,), np.float32))
    g.ops.append(Op("mul", [y, k], z))
    g.outputs = [z]
    s = graph_stats(g)
    assert (s.ops, s.params, s.weight_bytes, s.macs) == (2, 36, 16 + 16, 2 * 4 * 8)
    assert [(r.params, r.weight_bytes) for r in layer_table(g)] == [(32, 16), (4, 16)]


def test_input_checks():
    g = one_op_graph("relu", [rand(2, 3)])
    with pytest.raises(TinycError, match=r"shape \[3, 2\].*expects \[2, 3\]"):
        run(g, [rand(3, 2)])
    with pytest.raises(TinycError, match="takes 1 inputs"):
        run(g, [])
    with pytest.raises(TinycError, match="dtype"):
        run(one_op_graph("relu", [np.zeros((2, 3), np.int8)]), [rand(2, 3)])
    assert run(g, [rand(2, 3).astype(np.float64)])[0].dtype == np.float32
