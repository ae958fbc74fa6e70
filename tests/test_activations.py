"""gelu (erf and tanh forms), silu and hardsigmoid end to end: imported from PyTorch as registry
ops, fused into their producers by `fuse` (float C applies them in the layer's epilogue), split
back into 256-entry tables by quantize-int8, and run by the C kernels on the host and on QEMU
Cortex-M4: float to rounding, int8 bit-exact with the interpreter."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.frontend import from_torch
from tinyc.interpreter import run
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager
from tinyc.text import parse, print_graph


class GatedMLP(nn.Module):
    """A transformer-style MLP head: each layer ends in one of the new activations."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 8)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        y = F.gelu(self.fc1(x))
        y = F.silu(self.fc2(y)) + F.gelu(y, approximate="tanh")
        z = F.hardsigmoid(self.conv(x.reshape(1, 1, 4, 4))).mean(dim=1).reshape(1, 16)
        return self.fc3(y) + z.mean(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GatedMLP().eval()
    x = np.random.default_rng(0).standard_normal((24, 16)).astype(np.float32)
    return m, from_torch(m, (torch.from_numpy(x[:1]),)), x


def _c(graph, rows: np.ndarray, out, target: str = "host") -> np.ndarray:
    emit_bundle(graph, out, target_name=target)
    write_target_files(out, target, "model")
    return run_model(out, target, "model", rows, sanitize=target == "host")


def _interpret(graph, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([run(graph, [r[None]])[0] for r in rows])


def test_fuse_attaches_them_to_their_producers(model):
    _, g, _ = model
    fused = PassManager("fuse").run(g.copy())
    acts = sorted((op.kind, op.attrs.get("act"), op.attrs.get("act_approximate")) for op in fused.compute_ops()
                  if "act" in op.attrs)
    assert acts == [("conv2d", "hardsigmoid", None), ("linear", "gelu", "none"), ("linear", "silu", None)]
    assert print_graph(parse(print_graph(fused))) == print_graph(fused)


def test_float_c_matches_pytorch(model, tmp_path):
    m, g, x = model
    fused = PassManager("fuse").run(g.copy())
    got = _c(fused, x, tmp_path)
    want = np.concatenate([m(torch.from_numpy(r[None])).detach().numpy() for r in x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, _interpret(fused, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["host", pytest.param("cortex-m4", marks=pytest.mark.qemu)])
def test_int8_is_bit_exact_and_close_to_pytorch(model, target, tmp_path):
    m, g, x = model
    q = PassManager("fuse,quantize-int8").run(g.copy(), PassContext(calib=x[:, None]))
    assert not any("act" in op.attrs and op.attrs["act"] in ("gelu", "silu", "hardsigmoid") for op in q.ops)
    assert sum(op.kind == "lut" for op in q.compute_ops()) == 4
    want = _interpret(q, x)
    assert np.array_equal(_c(q, x, tmp_path, target), want)
    ref = np.concatenate([m(torch.from_numpy(r[None])).detach().numpy() for r in x])
    assert np.abs(want - ref).max() < 0.05 * np.abs(ref).max()
