"""bench.mobile_zoo: the third-party mobile nets of issue 12's 2.0 instr/MAC goal.

Every model builds deterministically with non-trivial batch-norm statistics, fits 2 MB of flash with
int8 weights and imports into tinyc (torch.export included); the re-typed architectures have the
parameter counts their reference implementations publish at full size; two small ones with
squeeze-excite and hardswish / SiLU compile float and int8 to host C, float matching PyTorch and int8
matching the interpreter bit for bit; bench.mobile_nets' layer classes add up.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import mobile_zoo as mz
from helpers import assert_close
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.frontend import from_torch
from tinyc.interpreter import run as interpret
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager

SMALL = ["mobilenet_v3_small_050_96", "tinynet_e_106"]   # SE + hardswish / hardsigmoid; SE + SiLU / sigmoid


CALIB_ROWS = 8


@pytest.fixture(scope="module")
def imported():
    cache = {}

    def get(name):
        if name not in cache:
            module, x = mz.get(name)
            cache[name] = (module, x, from_torch(module, (x,), name=name))
        return cache[name]
    return get


@pytest.fixture(scope="module")
def int8(imported):
    cache = {}

    def get(name):
        if name not in cache:
            _, x, graph = imported(name)
            calib = _rows(x, CALIB_ROWS, 0)
            cache[name] = PassManager("fuse,quantize-int8").run(graph.copy(), PassContext(calib=calib))
        return cache[name]
    return get


def test_models_are_deterministic_leave_the_rng_alone_and_fit_2mb():
    for name, entry in mz.MOBILE.items():
        torch.manual_seed(123)
        before = torch.rand(4)
        torch.manual_seed(123)
        a, xa = mz.get(name)
        after = torch.rand(4)
        assert torch.equal(before, after), name                   # the caller's RNG is untouched
        b, xb = mz.get(name)
        assert torch.equal(xa, xb)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert not a.training
        bns = [m for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in bns:   # calibrated statistics, not the 0 / 1 defaults
            assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)), name
        assert bns or name.startswith("squeezenet"), name        # SqueezeNet has no batch norm
        with torch.no_grad():
            y = a(xa)
        assert y.shape == (1, entry.classes) and torch.isfinite(y).all(), name
        # int8 weights (one byte per parameter, BN folded) leave room under 2 MB for kernels
        assert mz.params_of(a) < 0.95 * mz.FLASH_BUDGET, name


@pytest.mark.parametrize("ctor,published", [
    (lambda: mz.MobileNetV2(1.0), 3_504_872),            # torchvision mobilenet_v2
    (lambda: mz.MobileNetV3Small(1.0), 2_542_856),       # torchvision mobilenet_v3_small
    (lambda: mz.MnasNetB1(0.5), 2_218_512),              # torchvision mnasnet0_5
    (lambda: mz.MnasNetB1(1.0), 4_383_312),              # torchvision mnasnet1_0
    (lambda: mz.SqueezeNet11(), 1_235_496),              # torchvision squeezenet1_1
])
def test_torchvision_architectures_have_the_published_parameter_count(ctor, published):
    assert sum(p.numel() for p in ctor().parameters()) == published


@pytest.mark.parametrize("ctor,published_m", [
    (lambda: mz.PPLCNet(0.5), 1.88),                     # timm lcnet_050
    (lambda: mz.tinynet(), 2.04),                        # timm tinynet_e
    (lambda: mz.GhostNet(0.5), 2.59),                    # timm ghostnet_050
    (lambda: mz.GhostNet(1.0), 5.18),                    # timm ghostnet_100
    (lambda: mz.MobileNetV4ConvSmall(1.0), 3.77),        # timm mobilenetv4_conv_small
    (lambda: mz.mnasnet_a1(1.0), 3.89),                  # timm mnasnet_a1 (semnasnet_100)
])
def test_timm_architectures_have_the_published_parameter_count(ctor, published_m):
    """timm's model cards give millions to two decimals: the count must round to it."""
    assert round(sum(p.numel() for p in ctor().parameters()) / 1e6, 2) == published_m


def test_make_divisible_rounds_like_the_reference():
    assert [mz._make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 1280, 96 * 0.75, 8.16)] == [16, 8, 1280, 72, 8]
    assert mz._make_divisible(0.51 * 40) == 24     # never more than 10 % down: 20.4 -> 24, not 16


@pytest.mark.parametrize("name", mz.names())
def test_tinyc_imports_every_model_with_its_macs(name, imported):
    from tinyc.stats import graph_stats
    module, x, graph = imported(name)
    assert graph_stats(graph).macs == mz.macs_of(module, x.shape) > 1_000_000
    assert graph.inputs[0].type.shape == mz.MOBILE[name].input_shape


def test_the_blocks_import_as_their_ops(imported):
    """SE gates import as a broadcast multiply, hardswish / SiLU / hardsigmoid as activations, GhostNet's
    ghost modules as concatenations: the shapes issue 12's kernels are for."""
    def kinds(name):
        return {op.kind for op in imported(name)[2].compute_ops()}
    mnv3 = kinds(SMALL[0])
    assert {"hardswish", "hardsigmoid", "mul", "mean", "add"} <= mnv3
    assert {"silu", "sigmoid", "mul"} <= kinds("tinynet_e_106")
    assert "cat" in kinds("ghostnet_050_96")
    dw5 = [op for op in imported(SMALL[0])[2].compute_ops()
           if op.kind == "conv2d" and op.attrs.get("groups", 1) > 1 and op.operands[1].type.shape[-1] == 5]
    assert dw5 and {op.attrs["stride"][0] for op in dw5} == {1, 2}


def _rows(x: torch.Tensor, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *x.shape[1:])).astype(np.float32)


def test_small_model_compiles_float_to_host_c_matching_pytorch(imported, tmp_path):
    module, x, graph = imported(SMALL[0])
    xs = _rows(x, 2, 5)
    with torch.no_grad():
        want = np.stack([module(torch.from_numpy(r[None])).numpy().ravel() for r in xs])
    emit_bundle(PassManager("fuse").run(graph.copy()), tmp_path, target_name="host")
    got = run_model(tmp_path, "host", "model", xs.reshape(len(xs), -1))
    assert_close(got, want, 1e-4)


@pytest.mark.parametrize("name", SMALL)
def test_small_models_int8_host_c_is_bit_exact_with_the_interpreter(name, imported, int8, tmp_path):
    module, x, _ = imported(name)
    q = int8(name)
    assert {"quantize", "dequantize"} <= {op.kind for op in q.compute_ops()}
    xs = _rows(x, 2, 5)
    ref = np.stack([np.concatenate([o.ravel() for o in interpret(q, [r[None]])]) for r in xs])
    emit_bundle(q, tmp_path, target_name="host")
    got = run_model(tmp_path, "host", "model", xs.reshape(len(xs), -1))
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    # int8 still tracks the float model (random weights, 8 random calibration rows): the output
    # correlates with PyTorch's on every seeded input
    with torch.no_grad():
        want = np.stack([module(torch.from_numpy(r[None])).numpy().ravel() for r in xs])
    assert min(np.corrcoef(a, b)[0, 1] for a, b in zip(got, want)) > 0.9


def test_layer_classes_split_the_kernels(imported):
    from bench.mobile_nets import layer_class
    _, _, graph = imported(SMALL[0])
    fused = PassManager("fuse").run(graph.copy())
    classes = {layer_class(op, fused)[0] for op in fused.compute_ops()}
    assert "first conv 3x3 s2, 3 in" in classes
    assert {"depthwise 5x5 s1", "depthwise 5x5 s2"} <= classes
    assert any(c.startswith("1x1 conv on a 1x1 map") for c in classes)       # the SE FCs
    assert "mul broadcast" in classes and "fully connected" in classes


def test_report_judges_each_model_against_the_goal():
    from bench.mobile_nets import GOAL, LayerClass, Result, render
    classes = [LayerClass("depthwise 5x5 s1", 3, 1000, 7000, "240 ch @ 6x6, 7.00 instr/MAC", 3000)]
    over = Result("a", macs=1000, instructions=int(1000 * (GOAL + 0.5)), flash_model=1000, arena=10, static_ram=1,
                  stack=1, exact="yes", classes=classes)
    under = Result("b", macs=1000, instructions=int(1000 * (GOAL - 0.5)), flash_model=1000, arena=10, static_ram=1,
                   stack=1, exact="yes", classes=classes)
    big = Result("c", macs=1000, instructions=1000, flash_model=mz.FLASH_BUDGET + 1, arena=10, static_ram=1,
                 stack=1, exact="yes", classes=classes)
    failed = Result("d", macs=1000, error="import + fuse,quantize-int8: FrontendError: no mapping for aten.foo")
    text = render([over, under, big, failed])
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ") and " | " in line}
    assert "| **no** |" in rows["a"] and f"| {GOAL + 0.5:.2f} |" in rows["a"]
    assert "| yes |" in rows["b"] and "**no**" not in rows["b"]
    assert "**no**" in rows["c"]                                         # does not fit 2 MB
    assert "FrontendError: no mapping for aten.foo" in rows["d"]
    assert "**1 of 2** measured models that fit" in text                 # c does not fit, d failed
    assert "depthwise 5x5 s1" in text and f"| {2 * 7000 - GOAL * 2 * 1000:,.0f} |" in text   # a + b over the goal


@pytest.mark.qemu
def test_int8_mobilenet_v3_small_on_cortex_m4_is_bit_exact(imported, int8, tmp_path):
    """One QEMU run: SE, hardswish and hardsigmoid on the M4 equal the interpreter bit for bit."""
    from tinyc.backends.target_files import write_target_files
    _, x, _ = imported(SMALL[0])
    q = int8(SMALL[0])
    xs = _rows(x, 1, 9)
    ref = np.stack([np.concatenate([o.ravel() for o in interpret(q, [r[None]])]) for r in xs])
    emit_bundle(q, tmp_path, target_name="cortex-m4")
    write_target_files(tmp_path, "cortex-m4", "model")
    got = run_model(tmp_path, "cortex-m4", "model", xs.reshape(len(xs), -1))
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
