"""Test helpers: zoo models built, imported and fused once per process; tolerance checks."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


def binomial_margin(percent: float, n: int, z: float = 2.576) -> float:
    """Half-width, in points, of the two-sided 99 % (z = 2.576) normal-approximation confidence
    interval of an accuracy of `percent` measured on `n` samples, floored at one sample.

    Figures that come out of training (distillation, accuracy-aware searches, retrained models)
    move from CPU to CPU because float32 training is not bit-reproducible. A result measured on
    one machine is one draw; another machine's run is judged against it with this margin, never
    with a window narrower than the test split can resolve (one sample of 360 is 0.28 points)."""
    p = min(max(percent / 100.0, 0.0), 1.0)
    return max(100.0 * z * (p * (1.0 - p) / n) ** 0.5, 100.0 / n)


def paired_drop_margin(before_correct: np.ndarray, after_correct: np.ndarray, z: float = 1.645) -> float:
    """One-sided 95 % (z = 1.645) margin, in points, on the accuracy drop between two models
    scored on the same `n` samples (McNemar's normal approximation: the drop's standard error is
    sqrt(discordant pairs) / n), floored at one sample."""
    n = len(before_correct)
    discordant = int(np.sum(before_correct != after_correct))
    return max(100.0 * z * discordant ** 0.5 / n, 100.0 / n)


@functools.lru_cache(maxsize=None)
def zoo_model(name: str):
    """(module, example_input) for a zoo model, built once."""
    from bench import zoo
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
    """Random inputs (rows x the model's input shape without batch): float32 standard normal, or
    int32 token ids uniform in [0, vocab) for token models."""
    from bench import zoo
    _, example = zoo_model(name)
    rng = np.random.default_rng(seed)
    vocab = zoo.ZOO[name].vocab
    if vocab is not None:
        return rng.integers(0, vocab, (rows, *example.shape[1:])).astype(np.int32)
    return rng.standard_normal((rows, *example.shape[1:])).astype(np.float32)


def torch_outputs(name: str, inputs: np.ndarray) -> list[np.ndarray]:
    """PyTorch's outputs for each input row: one array per model output, rows stacked."""
    import torch
    module, _ = zoo_model(name)
    per_row = []
    with torch.no_grad():
        for row in inputs:
            x = torch.from_numpy(row[None])
            out = module(x.long() if row.dtype.kind == "i" else x)
            per_row.append([o.numpy()[0] for o in (out if isinstance(out, (tuple, list)) else (out,))])
    return [np.stack(outs) for outs in zip(*per_row)]



def assert_close(got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    """Elementwise |got - want| <= rtol * max|want| (relative to the output's scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} x output scale {scale:.3g}"


# ---- per-layer comparison through the TINYC_LAYER_OUTPUT hook -----------------------------------

RECORDER = r"""
#include <stdio.h>
void tinyc_record_layer(int layer, const void *data, unsigned long bytes)
{
    FILE *f = fopen("layers.bin", "ab");
    int header[2];
    header[0] = layer;
    header[1] = (int)bytes;
    fwrite(header, sizeof header, 1, f);
    fwrite(data, 1, bytes, f);
    fclose(f);
}
"""


def record_layers(bundle, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Build the host bundle (ASan/UBSan) with the TINYC_LAYER_OUTPUT hook recording every layer,
    run it on one input and return (layer index, raw bytes) in the order the layers ran."""
    import subprocess
    from pathlib import Path

    from tinyc.backends.build import build
    bundle = Path(bundle)
    (bundle / "recorder.c").write_text(RECORDER)
    exe = build(bundle, "host", "model", "run", sanitize=True,
                extra_cflags=["-DTINYC_LAYER_OUTPUT_HOOK=tinyc_record_layer"])
    run_dir = bundle / "run"
    run_dir.mkdir()
    x = np.asarray(x)
    x.astype(np.int32 if x.dtype.kind == "i" else np.float32).tofile(run_dir / "input.bin")
    subprocess.run([str(exe)], cwd=run_dir, check=True, capture_output=True)
    data = (run_dir / "layers.bin").read_bytes()
    layers, pos = [], 0
    while pos < len(data):
        layer, size = np.frombuffer(data[pos:pos + 8], np.int32)
        layers.append((int(layer), np.frombuffer(data[pos + 8:pos + 8 + size], np.uint8)))
        pos += 8 + size
    return layers


def layer_tensor(raw: np.ndarray, value, shape, info) -> np.ndarray:
    """A recorded f32 or int8 layer result in logical (interpreter) order: int8 tensors are
    gathered back through the bundle's compile-time layout."""
    if value.type.dtype == "f32":
        return raw.view(np.float32).reshape(shape)
    return raw.view(np.int8)[info.int8_layouts[value.name]]
