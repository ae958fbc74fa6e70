"""Test helpers: zoo models built, imported and fused once per process; tolerance checks."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=None)
def zoo_model(name: str):
    """(module, example_input) for a zoo model, built once."""
    from tinyc import zoo
    return zoo.get(name)


@functools.lru_cache(maxsize=None)
def zoo_graph(name: str):
    """The imported (unfused) IR graph of a zoo model. Callers must not mutate it: copy() first."""
    from tinyc.frontend import from_torch
    module, example = zoo_model(name)
    return from_torch(module, (example,), name=name)


@functools.lru_cache(maxsize=None)
def fused_graph(name: str):
    from tinyc.passmanager import PassManager
    return PassManager("fuse").run(zoo_graph(name).copy())


def zoo_inputs(name: str, rows: int = 2, seed: int = 0) -> np.ndarray:
    """Random float32 inputs (rows x the model's input shape without batch)."""
    _, example = zoo_model(name)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, *example.shape[1:])).astype(np.float32)


def torch_outputs(name: str, inputs: np.ndarray) -> list[np.ndarray]:
    """PyTorch's outputs for each input row: one array per model output, rows stacked."""
    import torch
    module, _ = zoo_model(name)
    per_row = []
    with torch.no_grad():
        for row in inputs:
            out = module(torch.from_numpy(row[None]))
            per_row.append([o.numpy()[0] for o in (out if isinstance(out, (tuple, list)) else (out,))])
    return [np.stack(outs) for outs in zip(*per_row)]



def assert_close(got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    """Elementwise |got - want| <= rtol * max|want| (relative to the output's scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} x output scale {scale:.3g}"
