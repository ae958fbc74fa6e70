"""Calibration for quantize-int8: run the float graph over the calibration set and pick each
activation's clipping range with an observer (minmax, percentile or mse)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from tinyc.interpreter import run_all
from tinyc.ir import Graph, Value
from tinyc.ops import fmt_shape
from tinyc.passes.base import check

BINS = 2048          # histogram resolution of the percentile and mse observers
MSE_GRID = 128       # candidate clipping points per side for the mse observer
CALIB_HINT = "pass --calib X.npy: an array of N inputs (N x the input shape, batch dimension optional)"


def calibration_samples(graph: Graph, calib) -> list[list[np.ndarray]]:
    """Per sample, one array per graph input. `calib` is an array (single-input graph) or a
    list of arrays, one per input; each N x the input's shape, or N x the shape without a
    leading batch dimension of 1."""
    check(calib is not None, "quantize-int8 needs calibration data to choose activation ranges", CALIB_HINT)
    arrays = [calib] if isinstance(calib, np.ndarray) else list(calib)
    check(len(arrays) == len(graph.inputs), f"calibration data has {len(arrays)} arrays for "
          f"{len(graph.inputs)} graph inputs", "give a list with one array per input")
    per_input = [_samples(v, _typed(v, a)) for v, a in zip(graph.inputs, arrays)]
    counts = {len(s) for s in per_input}
    check(len(counts) == 1 and counts != {0}, f"calibration arrays hold different or zero sample counts: "
          f"{sorted(len(s) for s in per_input)}", CALIB_HINT)
    return [list(sample) for sample in zip(*per_input)]


def _typed(v: Value, a) -> np.ndarray:
    """Calibration data as the input's dtype: float32, or int32 for i32 (token id) inputs, whose data
    must be whole numbers in int32's range."""
    if v.type.dtype != "i32":
        return np.asarray(a, np.float32)
    a = np.asarray(a)
    whole = a.dtype.kind in "biu" or (a.dtype.kind == "f" and bool(np.all(np.floor(a) == a)))
    check(whole and (a.size == 0 or (a.min() >= -2 ** 31 and a.max() <= 2 ** 31 - 1)),
          f"calibration data for input %{v.name} must hold integer token ids (int32 range), got {a.dtype} values"
          + ("" if whole else " with fractions"), "save the token ids as an integer array (numpy int64 or int32)")
    return a.astype(np.int32)


def _samples(v: Value, a: np.ndarray) -> np.ndarray:
    shape = v.type.shape
    if a.shape[1:] == shape:
        return a
    if a.shape == shape:
        return a[None]
    if shape[:1] == (1,) and a.shape[1:] == shape[1:]:
        return a[:, None]
    check(False, f"calibration data for input %{v.name} has shape {fmt_shape(a.shape)}; expected "
          f"N x {fmt_shape(shape)}", CALIB_HINT)


def _activations(graph: Graph) -> list[str]:
    """Names of the float values calibration observes: inputs and non-const op results."""
    return [v.name for v in graph.inputs if v.type.dtype == "f32"] + \
        [op.result.name for op in graph.compute_ops() if op.result.type.dtype == "f32"]


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).ravel()
    return a[np.isfinite(a)]


def _observe(graph: Graph, samples, names: list[str], update: Callable[[str, np.ndarray], None]) -> None:
    for sample in samples:
        env = run_all(graph, sample)
        for name in names:
            update(name, _finite(env[name]))


def observe_ranges(graph: Graph, samples, observer: str = "minmax",
                   percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """name -> (lo, hi) clipping range of every float activation over the calibration samples."""
    names = _activations(graph)
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)

    def minmax(name, a):
        if a.size:
            lo[name], hi[name] = min(lo[name], a.min()), max(hi[name], a.max())

    _observe(graph, samples, names, minmax)
    ranges = {n: (float(lo[n]), float(hi[n])) if lo[n] <= hi[n] else (0.0, 0.0) for n in names}
    if observer == "minmax":
        return ranges
    hists = {n: np.zeros(BINS) for n in names}

    def histogram(name, a):
        if a.size and ranges[name][0] < ranges[name][1]:
            hists[name] += np.histogram(a, BINS, ranges[name])[0]

    _observe(graph, samples, names, histogram)
    choose = {"percentile": lambda h, r: percentile_range(h, r, percentile), "mse": mse_range}[observer]
    return {n: choose(hists[n], r) if r[0] < r[1] else r for n, r in ranges.items()}


def _centers(edges: tuple[float, float], bins: int) -> np.ndarray:
    e = np.linspace(edges[0], edges[1], bins + 1)
    return (e[:-1] + e[1:]) / 2


def percentile_range(hist: np.ndarray, edges: tuple[float, float], p: float) -> tuple[float, float]:
    """The (100 - p)th and pth percentiles, to bin resolution (outer bin edges)."""
    e = np.linspace(edges[0], edges[1], len(hist) + 1)
    cdf = np.cumsum(hist) / hist.sum()
    lo = e[np.searchsorted(cdf, 1 - p / 100, side="right")]
    hi = e[min(np.searchsorted(cdf, p / 100) + 1, len(hist))]
    return float(min(lo, hi)), float(hi)


def mse_range(hist: np.ndarray, edges: tuple[float, float]) -> tuple[float, float]:
    """The clipping range minimising the expected squared quantization error of the histogram:
    clipped values cost their distance to the range, the rest uniform rounding noise step^2/12.
    Candidates shrink each end towards zero on a grid."""
    c, n = _centers(edges, len(hist)), hist
    t = np.arange(1, MSE_GRID + 1) / MSE_GRID
    los, his = min(edges[0], 0.0) * t, max(edges[1], 0.0) * t
    below = (n * np.maximum(los[:, None] - c, 0) ** 2).sum(axis=1)      # clipping error per lo
    above = (n * np.maximum(c - his[:, None], 0) ** 2).sum(axis=1)      # per hi
    n_in = n.sum() - (n * (c < los[:, None])).sum(axis=1)[:, None] - (n * (c > his[:, None])).sum(axis=1)[None, :]
    step = (his[None, :] - los[:, None]) / 255
    err = below[:, None] + above[None, :] + n_in * step ** 2 / 12
    i, j = np.unravel_index(np.argmin(err), err.shape)
    return float(los[i]), float(his[j])
