"""Importing PyTorch pt2e-quantized models (torchao's prepare_pt2e / prepare_qat_pt2e, convert_pt2e):
the model's own scales and zero points become tinyc's quantization (fake_quant ops in the float IR,
quantize-int8{qparams=model}), no re-calibration.

- the float IR (with fake_quant) computes what the quantized PyTorch model computes;
- the int8 IR carries exactly the model's activation scales / zero points and weight scales, and
  compiles to the same int8 kernels as tinyc's own quantize-int8 output;
- int8 C on the host (and QEMU Cortex-M4) is bit-exact with the interpreter, and within one output
  quantization step of PyTorch's quantized model;
- what tinyc's int8 scheme cannot honour is an error naming the value.
"""
from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

logging.getLogger("torchao").setLevel(logging.ERROR)   # its CUDA extensions do not load on CPU (unused)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
        from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    except ImportError as e:   # pragma: no cover - the dev extras install torchao
        pytest.skip(f"torchao (PyTorch's pt2e quantization) is not importable: {e}; pip install -e '.[pt2e]'",
                    allow_module_level=True)

from tinyc import frontend
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.errors import PassError
from tinyc.interpreter import run, run_all
from tinyc.ir import Op, QuantParams
from tinyc.ops import OPS
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager
from tinyc.text import parse, print_graph
from tinyc.verifier import verify


# ---- models, written as a third party would ------------------------------------------------------

class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        x = x + F.relu(self.conv2(x))          # a residual add
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(x, 1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))

    def forward(self, x):
        return self.net(x)


class QatNet(nn.Module):
    """(No BatchNorm: with one the QAT flow works the same, but torchao's conv-bn QAT folding makes
    convert_pt2e take some 20 s, too slow for this file; the post-training conv net folds one.)"""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)
        self.fc1 = nn.Linear(6 * 6 * 6, 24)
        self.fc2 = nn.Linear(24, 4)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


SHAPES = {"convnet": (1, 3, 12, 12), "mlp": (1, 32), "qat": (1, 1, 14, 14)}
MODELS = list(SHAPES)


def _quantizer():
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _rand(rng, n, shape):
    return [torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) for _ in range(n)]


@functools.lru_cache(maxsize=None)
def pt2e_model(name: str):
    """(float model, converted pt2e model): post-training (calibrated on 16 inputs) or QAT (a few SGD
    steps on a random regression task, then converted)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shape = SHAPES[name]
    example = (torch.zeros(shape),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "qat":
            model = QatNet().train()
            prepared = prepare_qat_pt2e(torch.export.export(model, example).module(),
                                        XNNPACKQuantizer().set_global(
                                            get_symmetric_quantization_config(is_per_channel=True, is_qat=True)))
            opt = torch.optim.SGD(prepared.parameters(), lr=0.01)
            for x in _rand(rng, 16, shape):
                loss = (prepared(x) - x.mean(dim=(1, 2, 3))[:, None]).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            converted = convert_pt2e(prepared)
            move_exported_model_to_eval(converted)
            model.eval()
        else:
            model = {"convnet": ConvNet, "mlp": MLP}[name]()
            with torch.no_grad():   # non-trivial batch-norm statistics
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.2, 0.2)
                        m.running_var.uniform_(0.5, 1.5)
            model.eval()
            prepared = prepare_pt2e(torch.export.export(model, example).module(), _quantizer())
            for x in _rand(rng, 16, shape):
                prepared(x)
            converted = convert_pt2e(prepared)
    return model, converted


@functools.lru_cache(maxsize=None)
def imported(name: str):
    """(float IR with fake_quant, fused, int8 with the model's parameters, pass context)."""
    _, converted = pt2e_model(name)
    g = frontend.from_torch(converted, (torch.zeros(SHAPES[name]),), name=name)
    verify(g)
    fused = PassManager("fuse").run(g.copy(), PassContext())
    ctx = PassContext()
    q = PassManager("quantize-int8").run(fused.copy(), ctx)
    verify(q)
    return g, fused, q, ctx


def inputs(name: str, n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPES[name]).astype(np.float32) for _ in range(n)]


def torch_out(name: str, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return pt2e_model(name)[1](torch.from_numpy(x)).numpy()


def fake_quants(g):
    return [op for op in g.compute_ops() if OPS[op.kind].int8 == "model_quant"]


def output_scale(g) -> float:
    """The model's quantization step of the graph output (its last fake_quant)."""
    (out,) = g.outputs
    (fq,) = [op for op in fake_quants(g) if op.result is out]
    return fq.attrs["scale"][0]


# ---- the float IR is the quantized PyTorch model ----------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_float_ir_computes_the_quantized_pytorch_model(name):
    g, fused, _, _ = imported(name)
    assert fake_quants(g), "the quantize/dequantize pairs import as fake_quant ops"
    for x in inputs(name, 16):
        want = torch_out(name, x)
        np.testing.assert_allclose(run(g, [x])[0], want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(run(fused, [x])[0], want, rtol=1e-4, atol=1e-6)


def test_the_model_differs_from_its_float_original():
    """(so the test above is about quantization: the fake_quant ops do change the result)"""
    model, _ = pt2e_model("convnet")
    g = imported("convnet")[0]
    x = inputs("convnet", 1)[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(run(g, [x])[0] - ref).max() > 1e-3


# ---- int8: the model's parameters, tinyc's kernels --------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_int8_values_carry_the_models_scales_and_zero_points(name):
    _, fused, q, ctx = imported(name)
    assert ctx.stats["quantize-int8"]["qparams"] == "model"
    assert ctx.stats["quantize-int8"]["calibration_samples"] == 0
    assert ctx.stats["quantize-int8"]["float_ops"] == 0
    assert not fake_quants(q)
    types = {v.name: v.type for v in q.inputs}
    types.update({op.result.name: op.result.type for op in q.ops})
    checked = 0
    for fq in fake_quants(fused):
        a = fq.attrs
        if "axis" in a:   # a weight: the layer reading it has the model's codes and scales
            (layer,) = [op for op in fused.compute_ops() if fq.result in op.operands]
            (qlayer,) = [op for op in q.compute_ops() if op.result.name == layer.result.name]
            wq = qlayer.operands[1].type.quant
            assert wq == QuantParams(tuple(a["scale"]), (0,) * len(a["scale"]), axis=0)
            codes = q.const_value(qlayer.operands[1]).astype(np.float32)
            w = fused.const_value(fq.operands[0])
            scales = np.asarray(a["scale"], np.float32)[:, None]
            assert np.array_equal((codes.reshape(len(codes), -1) * scales).reshape(w.shape), w)
        else:             # an activation: the value it quantizes (or its own result) has the model's
            want = QuantParams((a["scale"][0],), (a["zero_point"][0],))
            x, y = fq.operands[0].name, fq.result.name
            got = [types[n].quant for n in (x, y, x + ".q") if n in types and types[n].dtype == "i8"]
            assert got and all(t == want for t in got), (fq.result.name, got, want)
        checked += 1
    assert checked == len(fake_quants(fused))


@pytest.mark.parametrize("name", MODELS)
def test_same_int8_kernels_as_tinycs_own_quantization(name):
    """The original float model, fused and calibrated by tinyc, lowers to the same int8 ops."""
    model, _ = pt2e_model(name)
    own = frontend.from_torch(model.eval(), (torch.zeros(SHAPES[name]),), name=name)
    calib = np.stack(inputs(name, 8, seed=3))
    own8 = PassManager("fuse,quantize-int8").run(own, PassContext(calib=calib))
    q = imported(name)[2]
    kinds = lambda g: [(op.kind, op.attrs.get("act")) for op in g.compute_ops()]   # noqa: E731
    assert kinds(q) == kinds(own8)


def _c_host(graph, xs, out):
    emit_bundle(graph, out, target_name="host")
    write_target_files(out, "host", "model")
    return run_model(out, "host", "model", np.stack([x.ravel() for x in xs]), sanitize=True)


@pytest.mark.parametrize("name", MODELS)
def test_int8_c_on_the_host_is_bit_exact_with_the_interpreter(name, tmp_path):
    q = imported(name)[2]
    xs = inputs(name, 4, seed=5)
    got = _c_host(q, xs, tmp_path)
    want = np.stack([run(q, [x])[0].ravel() for x in xs])
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# Outputs of tinyc's int8 model vs PyTorch's quantized model (same scales): at most one output step
# apart (measured over 64 inputs; the one-step differences come from tinyc's fixed-point
# requantization rounding where PyTorch rounds a float32 product, and from ties).
ONE_STEP_FRACTION = {"convnet": 0.05, "mlp": 0.05, "qat": 0.05}


@pytest.mark.parametrize("name", MODELS)
def test_int8_agrees_with_the_quantized_pytorch_model(name):
    g, _, q, _ = imported(name)
    step = output_scale(g)
    diffs = np.concatenate([np.abs(run(q, [x])[0] - torch_out(name, x)).ravel() / step for x in inputs(name, 64)])
    off = np.round(diffs, 3)
    print(f"{name}: {diffs.size} outputs, {int((off > 1).sum())} more than one step apart, "
          f"{int((off == 1).sum())} one step apart, max {diffs.max():.3f} steps")
    assert (off <= 1).all(), f"{int((off > 1).sum())} outputs more than one quantization step from PyTorch"
    assert (off == 1).mean() <= ONE_STEP_FRACTION[name]


@pytest.mark.parametrize("name", MODELS)
def test_ir_text_round_trips(name):
    g, _, q, _ = imported(name)
    for graph in (g, q):
        text = print_graph(graph)
        again = parse(text)
        verify(again)
        assert print_graph(again) == text
    x = inputs(name, 1)[0]
    assert np.array_equal(run(parse(print_graph(g)), [x])[0], run(g, [x])[0])


@pytest.mark.qemu
def test_int8_on_qemu_cortex_m4_is_bit_exact(tmp_path):
    q = imported("convnet")[2]
    xs = inputs("convnet", 2, seed=9)
    emit_bundle(q, tmp_path, target_name="cortex-m4")
    write_target_files(tmp_path, "cortex-m4", "model")
    got = run_model(tmp_path, "cortex-m4", "model", np.stack([x.ravel() for x in xs]))
    want = np.stack([run(q, [x])[0].ravel() for x in xs])
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# ---- the saved form, float C, the other modes -----------------------------------------------------

def test_saved_pt2_file_imports_the_same(tmp_path):
    _, converted = pt2e_model("mlp")
    path = tmp_path / "mlp.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(converted, (torch.zeros(SHAPES["mlp"]),)), path)
    g = frontend.load_model(path, name="mlp")
    assert print_graph(g) == print_graph(imported("mlp")[0])


def test_float_c_computes_fake_quant_bit_exactly(tmp_path):
    """fake_quant per tensor is in the op registry's conformance samples; here per channel (the
    weights' form) and the whole float model."""
    g = parse("""graph @fq(%x: tensor<2x3x4xf32>) -> (tensor<2x3x4xf32>) {
  %y = fake_quant(%x) {axis = 1, qmax = 127, qmin = -127, scale = [0.01, 0.05, 0.2], zero_point = [0, 0, 0]} : tensor<2x3x4xf32>
  return %y
}""")
    xs = [np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32) * 8]
    assert np.array_equal(_c_host(g, xs, tmp_path / "pc")[0], run(g, xs)[0].ravel())
    fused = imported("mlp")[1]
    xs = inputs("mlp", 2)
    np.testing.assert_allclose(_c_host(fused, xs, tmp_path / "mlp"), np.stack([run(fused, [x])[0].ravel() for x in xs]),
                               rtol=1e-5, atol=1e-6)


def test_unfused_relu_leaves_the_conv_in_float_as_pytorch_computes_it():
    """Without fuse, conv -> relu -> fake_quant: the conv's result has no parameters in the model
    (PyTorch computes it in float), so the conv and relu stay float and say so."""
    g = imported("qat")[0]
    ctx = PassContext()
    q = PassManager("quantize-int8").run(g.copy(), ctx)
    assert any("kept in float" in n for n in ctx.notes)
    assert ctx.stats["quantize-int8"]["float_ops"] > 0
    step = output_scale(g)
    for x in inputs("qat", 8):
        assert np.abs(run(q, [x])[0] - torch_out("qat", x)).max() <= step * 1.001


def test_qparams_calibrate_ignores_the_models_parameters():
    _, fused, q_model, _ = imported("mlp")
    ctx = PassContext(calib=np.stack(inputs("mlp", 16, seed=4)))
    q = PassManager("quantize-int8{qparams=calibrate}").run(fused.copy(), ctx)
    assert ctx.stats["quantize-int8"]["qparams"] == "calibrate" and not fake_quants(q)
    model_q = {op.result.name: op.result.type.quant for op in q_model.compute_ops()}
    own_q = {op.result.name: op.result.type.quant for op in q.compute_ops()}
    assert any(model_q[n] != own_q[n] for n in model_q.keys() & own_q.keys())


# ---- what tinyc's int8 scheme cannot honour: errors naming the value -------------------------------

W = np.array([[1.0, -1.0, 0.5, -0.5], [0.25, -0.25, 0.5, 0.125]], np.float32)


def _graph(fq_x: str, fq_w: str):
    """x -> fake_quant -> linear(weight fake_quant(W)) -> fake_quant, from IR text (the attributes)."""
    g = parse(f"""graph @m(%x: tensor<1x4xf32>, %w: tensor<2x4xf32>) -> (tensor<1x2xf32>) {{
  %xq = fake_quant(%x) {{{fq_x}}} : tensor<1x4xf32>
  %wq = fake_quant(%w) {{{fq_w}}} : tensor<2x4xf32>
  %y = linear(%xq, %wq) : tensor<1x2xf32>
  %yq = fake_quant(%y) {{qmax = 127, qmin = -128, scale = [0.05], zero_point = [0]}} : tensor<1x2xf32>
  return %yq
}}""")
    w = g.inputs.pop()   # the weight: a constant
    g.ops.insert(0, Op("const", [], w, {"value": W}))
    verify(g)
    return g


GOOD_X = "qmax = 127, qmin = -128, scale = [0.02], zero_point = [3]"
GOOD_W = "axis = 0, qmax = 127, qmin = -127, scale = [0.0078125, 0.0078125], zero_point = [0, 0]"


def test_error_cases_name_the_value():
    ok = PassManager("quantize-int8").run((_graph(GOOD_X, GOOD_W)), PassContext())
    assert [op.kind for op in ok.compute_ops()] == ["quantize", "linear", "dequantize"]
    cases = {
        "asymmetric weights": (GOOD_X, GOOD_W.replace("zero_point = [0, 0]", "zero_point = [0, 5]"),
                               "zero points"),
        "per-channel activations": ("axis = 1, qmax = 127, qmin = -128, scale = [0.1, 0.1, 0.1, 0.1], "
                                    "zero_point = [0, 0, 0, 0]", GOOD_W, "per channel"),
        "int16 activations": ("qmax = 32767, qmin = -32768, scale = [0.001], zero_point = [0]", GOOD_W,
                              "wider than tinyc's int8"),
        "weight code -128": (GOOD_X, GOOD_W.replace("qmin = -127", "qmin = -128"), "-127"),
    }
    for label, (fx, fw, words) in cases.items():
        with pytest.raises(PassError, match=words) as e:
            PassManager("quantize-int8").run((_graph(fx, fw)), PassContext())
        assert "%" in str(e.value) and "keep-float" in str(e.value.hint), label
    with pytest.raises(PassError, match="weight-bits"):
        PassManager("quantize-int8{weight-bits=4}").run((_graph(GOOD_X, GOOD_W)), PassContext())


def test_uint8_codes_and_a_narrower_range_are_honoured_exactly():
    """uint8 codes [0, 255] are int8 codes shifted by 128 (the same real values: the same int8
    graph); a range narrower than int8's is enforced by a lut clamping the codes."""
    rng = np.random.default_rng(0)
    xs = [(rng.standard_normal((1, 4)) * 3).astype(np.float32) for _ in range(16)]
    int8 = PassManager("quantize-int8").run(_graph(GOOD_X, GOOD_W), PassContext())
    u8 = PassManager("quantize-int8").run(_graph(GOOD_X.replace("qmax = 127, qmin = -128", "qmax = 255, qmin = 0")
                                                 .replace("zero_point = [3]", "zero_point = [131]"), GOOD_W),
                                          PassContext())
    assert print_graph(u8) == print_graph(int8)
    narrow = _graph(GOOD_X.replace("qmax = 127, qmin = -128", "qmax = 20, qmin = -20"), GOOD_W)
    q = PassManager("quantize-int8").run(narrow.copy(), PassContext())
    (lut,) = [op for op in q.compute_ops() if op.kind == "lut"]
    for x in xs:
        codes = run_all(q, [x])[lut.result.name]
        assert codes.min() >= -20 and codes.max() <= 20
        assert np.abs(run(q, [x])[0] - run(narrow, [x])[0]).max() <= 0.05 * 1.001
