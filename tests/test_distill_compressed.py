"""Training through compressed forms (issue 11 item 6): binarized graphs convert to PyTorch and compute
what the interpreter computes (sign and the binary layers' float forms); distill trains binary layers
with straight-through estimators (latent sign weights, written back as u1 bits) and, before
quantize-int8, with quantization-aware training (to_torch.FakeQuantModule rounds as quantize-int8 will)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyc import quant
from tinyc.errors import TinycError
from tinyc.evaluate import as_samples, run_batch
from tinyc.interpreter import run
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.ops import infer_type
from tinyc.passes import PassContext
from tinyc.passes.distill import canonical_binary, qat_plan
from tinyc.passmanager import PassManager
from tinyc.to_torch import FakeQuantModule, fake_quant_weight, latent_weight, to_torch, update_graph
from tinyc.verifier import verify

rng = np.random.default_rng(0)


def conv_mlp_graph(seed: int = 0) -> Graph:
    """x [1, 2, 6, 6] -> conv0 relu -> conv1 (asymmetric padding, stride 2, leaky_relu) -> conv2 (groups 2,
    relu) -> flatten -> fc3 relu -> fc4: conv1, conv2 and fc3 are what binarize{layers=...} turns binary."""
    r = np.random.default_rng(seed)
    x = Value("x", TensorType((1, 2, 6, 6)))
    g = Graph("cm", [x], [])
    prev = x

    def layer(kind, name, w_shape, attrs):
        nonlocal prev
        w = g.add_const(name + ".w", (r.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32))
        b = g.add_const(name + ".b", (0.1 * r.standard_normal(w_shape[0])).astype(np.float32))
        y = Value(name, infer_type(kind, [prev.type, w.type, b.type], attrs))
        g.ops.append(Op(kind, [prev, w, b], y, attrs))
        prev = y

    conv = lambda pad, stride=1, groups=1, **act: dict(stride=[stride, stride], padding=pad, dilation=[1, 1],
                                                       groups=groups, **act)
    layer("conv2d", "conv0", (4, 2, 3, 3), conv([1, 1, 1, 1], act="relu"))
    layer("conv2d", "conv1", (6, 4, 3, 3), conv([1, 0, 0, 1], stride=2, act="leaky_relu", act_alpha=0.1))
    layer("conv2d", "conv2", (6, 3, 3, 3), conv([1, 1, 1, 1], groups=2, act="relu"))
    flat = Value("flat", infer_type("reshape", [prev.type], {"shape": [1, 54]}))
    g.ops.append(Op("reshape", [prev], flat, {"shape": [1, 54]}))
    prev = flat
    layer("linear", "fc3", (16, 54), {"act": "relu"})
    layer("linear", "fc4", (5, 16), {})
    g.outputs = [prev]
    verify(g)
    return g


def binarized(activations: str, threshold: str = "mean"):
    calib = rng.standard_normal((64, 1, 2, 6, 6)).astype(np.float32)
    spec = f"binarize{{layers=conv1,conv2,fc3 activations={activations} threshold={threshold}}}"
    return PassManager(spec).run(conv_mlp_graph(), PassContext(calib=calib)), calib


# ---- (a) the float forms equal the interpreter --------------------------------------------------

@pytest.mark.parametrize("activations,threshold", [("float", "mean"), ("binary", "mean"), ("binary", "zero")])
def test_binarized_graph_to_torch_equals_interpreter(activations, threshold):
    g, _ = binarized(activations, threshold)
    kinds = [op.kind for op in g.compute_ops()]
    assert kinds.count("bin_conv2d") == 2 and kinds.count("bin_linear") == 1
    assert kinds.count("sign") == (3 if activations == "binary" else 0)
    xs = np.random.default_rng(1).standard_normal((40, 1, 2, 6, 6)).astype(np.float32)
    names = [op.result.name for op in g.compute_ops()]
    for module in (to_torch(g), to_torch(g, trainable=False)):
        with torch.no_grad():
            got = [t.numpy() for t in module(torch.from_numpy(xs), names=names)]
        want = run_batch(g, as_samples(g, xs), names)
        for name, a, b in zip(names, got, want):
            b = b.reshape(a.shape).astype(np.float32)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    # the sign values are exactly the interpreter's bits, as float 0/1
    for op in g.compute_ops():
        if op.kind == "sign":
            i = names.index(op.result.name)
            assert set(np.unique(got[i])) <= {0.0, 1.0}
            np.testing.assert_array_equal(got[i], want[i].reshape(got[i].shape))


def test_latent_weights_initialise_from_bits_and_alpha_and_write_back_as_bits():
    g, _ = binarized("binary")
    module = to_torch(g)
    layers = [op for op in g.compute_ops() if op.kind in ("bin_conv2d", "bin_linear")]
    for op in layers:
        bits, alpha = g.const_value(op.operands[1]), g.const_value(op.operands[2])
        latent = module.const(op.operands[1].name)
        assert isinstance(latent, torch.nn.Parameter) and latent.dtype == torch.float32
        want = (2 * bits.astype(np.float32) - 1) * alpha.reshape((-1,) + (1,) * (bits.ndim - 1))
        np.testing.assert_array_equal(latent.detach().numpy(), want)
        # alpha and bias train too
        assert {op.operands[2].name, op.operands[3].name} <= set(module.parameter_names())
    assert not to_torch(g, trainable=False).parameter_names()
    # the round trip is exact; a latent pushed across zero flips exactly those bits
    same = update_graph(g, module)
    for op in layers:
        np.testing.assert_array_equal(same.const_value(next(v for v in same.ops if v.result.name == op.operands[1].name).result),
                                      g.const_value(op.operands[1]))
    w = layers[0].operands[1]
    with torch.no_grad():
        module.const(w.name)[0].neg_()
    new = update_graph(g, module)
    verify(new)
    nv = next(o for o in new.const_ops() if o.result.name == w.name)
    assert nv.result.type.dtype == "u1" and nv.attrs["value"].dtype == np.uint8
    flipped = nv.attrs["value"] != g.const_value(w)
    assert flipped[0].all() and not flipped[1:].any()
    # an alpha of 0 keeps the sign (latent +-1)
    np.testing.assert_array_equal(latent_weight(np.array([[1, 0]], np.uint8), np.array([0.0], np.float32)), [[1, -1]])


def test_straight_through_gradients():
    g, _ = binarized("binary")
    module = to_torch(g)
    sign = next(op for op in g.compute_ops() if op.kind == "sign")
    t = module.const(sign.operands[1].name)
    x = torch.linspace(-3, 3, 4 * 3 * 3 * 97)[:4 * 3 * 3].reshape(1, 4, 3, 3).requires_grad_(True)
    from tinyc.to_torch import run_op
    y = run_op(sign, x, t)
    y.sum().backward()
    d = (x - t.reshape(1, -1, 1, 1)).detach()
    np.testing.assert_array_equal(y.detach().numpy(), (d >= 0).float().numpy())
    np.testing.assert_array_equal(x.grad.numpy(), np.where(d.abs().numpy() <= 1, 0.5, 0.0).astype(np.float32))
    # every latent weight, alpha and bias gets a gradient through the whole graph
    xs = torch.from_numpy(np.random.default_rng(2).standard_normal((16, 1, 2, 6, 6)).astype(np.float32))
    module(xs).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_int8_binary_layers_are_still_refused():
    g, calib = binarized("binary")
    q = PassManager("quantize-int8").run(g.copy(), PassContext(calib=calib[:, 0]))
    with pytest.raises(TinycError, match="only float graphs convert"):
        to_torch(q)


def test_canonical_binary_turns_negative_alphas_positive_without_changing_outputs():
    g, _ = binarized("float")
    layer = next(op for op in g.compute_ops() if op.kind == "bin_linear")
    a_op = next(op for op in g.const_ops() if op.result is layer.operands[2])
    a_op.attrs["value"] = a_op.attrs["value"] * np.where(np.arange(16) % 3 == 0, -1, 1).astype(np.float32)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    want = run(g, [x])[0]
    bits = g.const_value(layer.operands[1]).copy()
    assert canonical_binary(g) == 6
    assert (g.const_value(layer.operands[2]) > 0).all()
    assert (g.const_value(layer.operands[1])[::3] != bits[::3]).all()
    np.testing.assert_allclose(run(g, [x])[0], want, rtol=1e-5, atol=1e-5)


# ---- (b) distill recovers a binarized digits CNN -------------------------------------------------

def test_distill_trains_binary_layers_and_recovers_accuracy():
    from bench.compression_eval import accuracy, compile_digits, context, trained
    binary, _ = compile_digits("cnn", "fuse,binarize{activations=binary}")
    ctx = context("cnn")
    out = PassManager("distill{epochs=5}", evaluate=ctx.evaluate).run(binary.copy(), ctx)
    s = ctx.stats["distill"]
    before, after = accuracy(binary, "cnn"), accuracy(out, "cnn")
    print(f"\ndigits CNN: float {ctx.baseline:.2f}, binarized (binary activations) {before:.2f}, "
          f"distilled {after:.2f}; {s['sign_bits_changed']} sign bits flipped")
    # measured on this project's machine: 86.67 -> 98.33 (float 99.17); training moves the figure
    # from CPU to CPU, so the margin asked is 5 points of the 11.7 measured
    assert after >= before + 5 and not s["kept_weights"] and s["qat"] is False
    assert s["score_before"] == pytest.approx(before) and s["score_after"] == pytest.approx(after)
    layer = next(op for op in out.compute_ops() if op.kind == "bin_conv2d")
    old_layer = next(op for op in binary.compute_ops() if op.kind == "bin_conv2d")
    bits, old = out.const_value(layer.operands[1]), binary.const_value(old_layer.operands[1])
    assert layer.operands[1].type.dtype == "u1" and bits.dtype == np.uint8 and set(np.unique(bits)) <= {0, 1}
    changed = int((bits != old).sum())
    assert changed == s["sign_bits_changed"] and 0 < changed < bits.size // 4
    assert (out.const_value(layer.operands[2]) > 0).all()
    assert any("sign bits of binary layers flipped" in n for n in ctx.notes)
    verify(out)


# ---- (c) quantization-aware training -------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 4, 2])
def test_fake_quant_forward_is_the_int8_graph(bits):
    """An untrained FakeQuantModule rounds the weights exactly as quantize-int8 stores them, and its
    outputs are the int8 graph's within one output step: both use the same weight codes and the
    same activation grids (calibration and QAT ranges on the same inputs); they differ only where the
    int8 graph requantizes an exact integer accumulator with a rounded i32 bias and fixed-point
    multiplier while the fake-quant forward sums in float32, which moves a value that lands within
    a rounding error of a half step to the neighbouring code (one step, measured at most 1.0)."""
    from bench.compression_eval import trained
    g0, (x_train, _, x_test, _) = trained("mlp")
    g = PassManager("fuse").run(g0.copy())
    calib = x_train[:256]
    plan = qat_plan(g, as_samples(g, calib), bits)
    q = PassManager(f"quantize-int8{{weight-bits={bits}}}").run(g.copy(), PassContext(calib=calib))
    qconsts = {op.result.name: op for op in q.const_ops()}
    assert len(plan.weights) == 3
    for name, b in plan.weights.items():
        assert b == bits
        w = next(op.attrs["value"] for op in g.const_ops() if op.result.name == name)
        c = qconsts[name]
        np.testing.assert_array_equal(fake_quant_weight(torch.from_numpy(w), bits).numpy(),
                                      quant.dequantize(c.attrs["value"], c.result.type.quant))
    for name, qp in plan.acts.items():
        op = next((o for o in q.compute_ops() if o.result.name == name), None)
        if op is not None and op.result.type.quant is not None:
            assert op.result.type.quant == qp, name
    module = FakeQuantModule(g, plan.acts, plan.weights)
    with torch.no_grad():
        got = module(torch.from_numpy(x_test)).numpy()
    (want,) = run_batch(q, as_samples(q, x_test))
    step = plan.acts[g.outputs[0].name].scale[0]
    diff = np.abs(got - want.reshape(got.shape)) / step
    print(f"\n{bits}-bit weights: fake-quant vs int8 graph, max {diff.max():.3f} steps, "
          f"{(diff > 0.5).mean() * 100:.2f} % of outputs differ")
    assert diff.max() <= 1.01 and (diff > 0.5).mean() <= 0.05
    assert (got.argmax(-1) == want.reshape(got.shape).argmax(-1)).mean() >= 0.99
    # gradients pass straight through the rounding
    x = torch.from_numpy(x_test[:8])
    module(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_qat_auto_is_on_when_quantize_int8_follows():
    from bench.compression_eval import context, trained
    g = PassManager("fuse").run(trained("mlp")[0].copy())
    ctx = context("mlp")
    for spec, want in [("distill{epochs=1}", False), ("distill{epochs=1},quantize-int8", True),
                       ("distill{epochs=1 qat=off},quantize-int8", False), ("distill{epochs=1 qat=on}", True),
                       ("distill{epochs=1},quantize-int8{weight-bits=4}", True)]:
        ctx.stats.clear()
        ctx.notes.clear()
        PassManager(spec).run(g.copy(), ctx)
        assert ctx.stats["distill"]["qat"] is want, spec
        assert ("quantization-aware" in ctx.notes[0]) is want, spec
        if want:
            assert ctx.stats["distill"]["qat_weight_bits"] == (4 if "weight-bits=4" in spec else 8)


@pytest.mark.parametrize("bits,margin", [(2, 3.0), (8, -1.5)])
def test_qat_helps_where_quantization_costs_accuracy(bits, margin):
    """digits MLP pruned to 90 % sparsity, distilled, quantized. Measured (epochs=5), qat=off -> on:
    2-bit weights 78.61 -> 87.22 (the weights' rounding costs 10 points without QAT); int8 89.17 ->
    88.89. Asked: 2 bits at least 3 points better; int8 no more than 1.5 points (5 of 360 images)
    worse, so training noise from CPU to CPU does not fail it."""
    from bench.compression_eval import accuracy, compile_digits
    scores = {}
    for qat in ("off", "on"):
        g, ctx = compile_digits("mlp", f"fuse,prune-weights{{sparsity=0.9}},distill{{epochs=5 qat={qat}}},"
                                       f"quantize-int8{{weight-bits={bits}}}")
        assert ctx.stats["distill"]["qat"] is (qat == "on")
        scores[qat] = accuracy(g, "mlp")
    print(f"\n{bits}-bit: qat off {scores['off']:.2f}, on {scores['on']:.2f}")
    assert scores["on"] >= scores["off"] + margin


# ---- (d) binarize, distill, quantize-int8 ---------------------------------------------------------

def test_binarize_distill_quantize_int8_compiles():
    from bench.compression_eval import accuracy, compile_digits, trained
    g, ctx = compile_digits("mlp", "fuse,binarize,distill{epochs=3},quantize-int8")
    assert ctx.stats["distill"]["qat"] is True
    verify(g)
    layer = next(op for op in g.compute_ops() if op.kind == "bin_linear")
    assert layer.result.type.dtype == "i8" and layer.operands[1].type.dtype == "u1"
    assert layer.operands[3].type.dtype == "i32"
    x = trained("mlp")[1][2][:32]
    (y,) = run_batch(g, as_samples(g, x), [layer.result.name])
    (out,) = run_batch(g, as_samples(g, x))
    assert np.isfinite(out).all() and np.unique(y).size > 8      # an i8 layer that is not saturated flat
    assert accuracy(g, "mlp") >= ctx.baseline - 3
