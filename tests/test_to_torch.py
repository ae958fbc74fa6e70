"""tinyc.to_torch: the IR as a trainable torch module matches the interpreter (every zoo model,
fused and not, one sample and stacks; every op's corner cases), and update_graph writes back."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers import assert_close, fused_graph, zoo_graph, zoo_inputs
from tinyc.errors import TinycError
from tinyc.interpreter import run
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.ops import infer_type
from tinyc.text import print_graph
from tinyc.to_torch import to_torch, update_graph
from tinyc.verifier import verify
from bench.zoo import names as zoo_names

GRAPHS = {"imported": zoo_graph, "fused": fused_graph}


def outputs(module, *xs):
    with torch.no_grad():
        out = module(*(torch.from_numpy(x) for x in xs))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("form", GRAPHS)
@pytest.mark.parametrize("name", zoo_names())
def test_zoo_matches_interpreter(name, form):
    graph = GRAPHS[form](name)
    module = to_torch(graph)
    x = zoo_inputs(name, rows=3, seed=1)
    # one sample of the graph's own shape
    for got, want in zip(outputs(module, x[:1]), run(graph, [x[:1]])):
        assert got.shape == want.shape
        assert_close(got, want, rtol=1e-5)
    # a stack of samples without the batch-1 dimension: [N, *shape[1:]] -> [N, *out_shape[1:]]
    stacked = outputs(module, x)
    for i in range(len(x)):
        for got, want in zip(stacked, run(graph, [x[i:i + 1]])):
            assert_close(got[i], want[0], rtol=1e-5)


def test_stack_with_batch_dimension():
    graph = fused_graph("cnn_bn")
    module = to_torch(graph)
    x = zoo_inputs("cnn_bn", rows=4)[:, None]              # [4, 1, 1, 8, 8]
    (got,) = outputs(module, x)
    assert got.shape == (4, 1, 10)
    for i in range(4):
        assert_close(got[i], run(graph, [x[i]])[0], rtol=1e-5)
    with pytest.raises(TinycError, match="shapes"):
        module(torch.zeros(2, 3, 8, 8))


# ---- single ops: the corner cases of docs/ir.md ------------------------------------------

def one_op(kind, x_shape, attrs=None, consts=(), extra_inputs=()):
    """graph(x[, y...]) -> kind(x, [inputs...], consts...) with random consts."""
    rng = np.random.default_rng(0)
    attrs = dict(attrs or {})
    x = Value("x", TensorType(tuple(x_shape)))
    inputs = [x] + [Value(f"in{i}", TensorType(tuple(s))) for i, s in enumerate(extra_inputs)]
    ops, operands = [], list(inputs)
    for i, c in enumerate(consts):
        arr = c if isinstance(c, np.ndarray) else rng.standard_normal(c).astype(np.float32)
        v = Value(f"c{i}.w", TensorType(arr.shape))
        ops.append(Op("const", [], v, {"value": arr}))
        operands.append(v)
    y = Value("y", infer_type(kind, [v.type for v in operands], attrs))
    ops.append(Op(kind, operands, y, attrs))
    g = Graph(kind, inputs, [y], ops)
    verify(g)
    return g


WIN = dict(stride=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1])
POOL = dict(kernel=[3, 3], stride=[2, 2], padding=[0, 0, 0, 0], ceil_mode=False)
CASES = {
    "conv_asymmetric_pad": ("conv2d", (1, 4, 9, 8), {**WIN, "padding": [0, 1, 2, 1], "stride": [2, 1], "groups": 2},
                            [(6, 2, 3, 3), (6,)]),
    "conv_dilated_clamp": ("conv2d", (1, 3, 9, 9), {**WIN, "dilation": [2, 3], "padding": [2, 3, 2, 3], "groups": 1,
                                                   "act": "clamp", "act_min": -0.5, "act_max": 0.7}, [(4, 3, 3, 3)]),
    "linear_leaky": ("linear", (2, 3, 5), {"act": "leaky_relu", "act_alpha": 0.1}, [(4, 5), (4,)]),
    "matmul_broadcast_relu": ("matmul", (2, 1, 3, 4), {"act": "relu"}, [(5, 4, 6)]),
    "batch_norm_rank3": ("batch_norm", (2, 3, 5), {"eps": 1e-3},
                         [(3,), np.array([0.5, 1.0, 2.0], np.float32), (3,), (3,)]),
    "max_pool_ceil_asym": ("max_pool2d", (1, 2, 7, 8), {**POOL, "padding": [1, 0, 0, 1], "dilation": [1, 1],
                                                        "ceil_mode": True}, []),
    "max_pool_dilated": ("max_pool2d", (1, 2, 9, 9), {**POOL, "stride": [1, 2], "dilation": [2, 2],
                                                      "padding": [1, 1, 1, 1], "ceil_mode": True}, []),
    "avg_pool_ceil_exclude": ("avg_pool2d", (1, 2, 7, 8), {**POOL, "padding": [1, 1, 0, 1], "ceil_mode": True,
                                                           "count_include_pad": False}, []),
    "avg_pool_ceil_include": ("avg_pool2d", (1, 2, 7, 8), {**POOL, "padding": [1, 0, 1, 1], "ceil_mode": True,
                                                           "count_include_pad": True}, []),
    "avg_pool_floor": ("avg_pool2d", (1, 2, 6, 6), {**POOL, "kernel": [2, 3], "stride": [2, 1],
                                                    "count_include_pad": True}, []),
    "mean_keepdim": ("mean", (1, 3, 4, 5), {"axes": [2, 3], "keepdim": True}, []),
    "mean_drop": ("mean", (1, 3, 4, 5), {"axes": [1, 3], "keepdim": False}, []),
    "pad_crop": ("pad", (1, 3, 4, 5), {"pads": [0, 1, -1, 2, 0, -1, 2, 0], "value": 0.5}, []),
    "transpose": ("transpose", (1, 3, 4, 5), {"perm": [0, 3, 1, 2]}, []),
    "reshape": ("reshape", (1, 3, 4, 5), {"shape": [1, 12, 5]}, []),
    "softmax": ("softmax", (1, 3, 4), {"axis": 1}, []),
    "hardswish": ("hardswish", (1, 40), {}, []),
    "sigmoid": ("sigmoid", (1, 40), {}, []),
    "tanh": ("tanh", (1, 40), {}, []),
    "clamp_inverted": ("clamp", (1, 40), {"min": 0.5, "max": -0.5}, []),
    "leaky_relu": ("leaky_relu", (1, 40), {"alpha": 0.3}, []),
    "add_relu": ("add", (1, 3, 4), {"act": "relu"}, [(3, 1)]),
    "sub": ("sub", (1, 3, 4), {}, [(4,)]),
    "mul_leaky": ("mul", (1, 3, 4), {"act": "leaky_relu", "act_alpha": 0.2}, [(1, 3, 1)]),
    "div": ("div", (1, 3, 4), {}, [np.array([2.0, -4.0, 0.5, 8.0], np.float32)]),
}


@pytest.mark.parametrize("case", CASES)
def test_op_matches_interpreter(case):
    kind, shape, attrs, consts = CASES[case]
    graph = one_op(kind, shape, attrs, consts)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    want = run(graph, [x])[0]
    module = to_torch(graph).double()    # float64 like the interpreter: only the op's semantics differ
    got = module(torch.from_numpy(x.astype(np.float64))).detach().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_cat_with_two_inputs():
    graph = one_op("cat", (1, 2, 3), {"axis": 2}, extra_inputs=[(1, 2, 4)])
    x, y = np.ones((1, 2, 3), np.float32), np.zeros((1, 2, 4), np.float32)
    (got,) = outputs(to_torch(graph), x, y)
    np.testing.assert_array_equal(got, run(graph, [x, y])[0])
    xs, ys = np.ones((5, 2, 3), np.float32), np.zeros((5, 2, 4), np.float32)   # stacks of samples
    assert outputs(to_torch(graph), xs, ys)[0].shape == (5, 2, 7)


def test_every_float_op_kind_has_a_torch_form():
    from tinyc.ops import OPS
    assert all(d.torch is not None for d in OPS.values() if d.ref is not None)


# ---- parameters, gradients, write back ---------------------------------------------------------

def test_weights_are_parameters_other_consts_buffers():
    module = to_torch(zoo_graph("cnn_bn"))
    params = set(module.parameter_names())
    kinds = {}
    for op in zoo_graph("cnn_bn").compute_ops():
        for i, v in enumerate(op.operands):
            kinds.setdefault(v.name, set()).add((op.kind, i))
    for name, tensor in module.named_consts():
        trainable = bool(kinds[name] & {("conv2d", 1), ("conv2d", 2), ("linear", 1), ("linear", 2),
                                        ("batch_norm", 3), ("batch_norm", 4)})
        assert (name in params) == trainable, name
        assert isinstance(tensor, nn.Parameter) == trainable
    assert "block1.1.running_mean" in module.consts and "block1.1.running_mean" not in params
    assert len(dict(module.named_buffers())) == sum(not isinstance(t, nn.Parameter) for _, t in module.named_consts())
    # kitchen_sink's scale (a bare nn.Parameter of the model, used by mul) is a buffer here
    assert to_torch(zoo_graph("kitchen_sink")).parameter_names() == [
        "dilated.weight", "dilated.bias", "grouped.weight", "fc.weight", "fc.bias"]


def test_gradients_reach_every_parameter():
    graph = fused_graph("cnn_bn")
    module = to_torch(graph)
    x = torch.from_numpy(zoo_inputs("cnn_bn", rows=4))
    module(x).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not to_torch(graph, trainable=False).parameter_names()


def test_update_graph_round_trip_is_exact():
    for name in ("cnn_bn", "kitchen_sink"):
        graph = zoo_graph(name)
        assert print_graph(update_graph(graph, to_torch(graph))) == print_graph(graph)


def test_update_graph_writes_trained_weights_into_a_copy():
    graph = fused_graph("mlp")
    before = print_graph(graph)
    module = to_torch(graph)
    x = torch.from_numpy(zoo_inputs("mlp", rows=8))
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        module(x).square().mean().backward()
        opt.step()
    new = update_graph(graph, module)
    verify(new)
    assert print_graph(graph) == before                      # the input graph is untouched
    assert print_graph(new) != before
    for op in new.const_ops():
        assert op.attrs["value"].dtype == np.float32
        np.testing.assert_array_equal(op.attrs["value"], module.const(op.result.name).detach().numpy())
    xs = zoo_inputs("mlp", rows=2, seed=5)
    assert_close(outputs(module, xs)[0][1], run(new, [xs[1:]])[0][0], rtol=1e-5)


def test_update_graph_refuses_a_module_of_another_graph():
    with pytest.raises(TinycError, match="no const"):
        update_graph(fused_graph("mlp"), to_torch(fused_graph("cnn_bn")))


def test_int8_graph_is_refused():
    from tinyc.passes import PassContext
    from tinyc.passmanager import PassManager
    q = PassManager("quantize-int8").run(fused_graph("mlp").copy(), PassContext(calib=zoo_inputs("mlp", 8)))
    with pytest.raises(TinycError, match="only float graphs"):
        to_torch(q)


@pytest.mark.skipif("decode" not in __import__("tinyc.ops").ops.OPS, reason="no decode op (shared weights) yet")
@pytest.mark.parametrize("per_channel", [False, True])
def test_shared_weights_train_their_codebook(per_channel):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 16, (4, 6)).astype(np.uint8)
    book = rng.standard_normal((4, 16) if per_channel else (16,)).astype(np.float32)
    x = Value("x", TensorType((1, 6)))
    iv, bv = Value("w.idx", TensorType(idx.shape, "u4")), Value("w.codebook", TensorType(book.shape))
    w = Value("w", infer_type("decode", [iv.type, bv.type], {}))
    y = Value("y", infer_type("linear", [x.type, w.type], {}))
    graph = Graph("shared", [x], [y], [Op("const", [], iv, {"value": idx}), Op("const", [], bv, {"value": book}),
                                       Op("decode", [iv, bv], w), Op("linear", [x, w], y)])
    verify(graph)
    module = to_torch(graph)
    assert module.parameter_names() == ["w.codebook"]
    xs = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    (got,) = outputs(module, xs)
    for i in range(3):
        assert_close(got[i], run(graph, [xs[i:i + 1]])[0][0], rtol=1e-5)
    module(torch.from_numpy(xs)).sum().backward()
    assert module.const("w.codebook").grad.abs().sum() > 0
    with torch.no_grad():
        module.const("w.codebook").add_(1.0)
    new = update_graph(graph, module)
    verify(new)
    assert new.ops[0].result.type.dtype == "u4" and np.array_equal(new.ops[0].attrs["value"], idx)
    np.testing.assert_array_equal(new.ops[1].attrs["value"], book + 1)
