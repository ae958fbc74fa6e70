"""`share-weights`: weight sharing (Deep Compression's trained quantization, post-training):
k-means clustering of each weight matrix into 2^bits shared values: the weight matrices the
registry names (OpDef.weights: a conv2d / linear weight; a gru / lstm's w_ih and w_hh, each on
its own; attention's projections are linear ops).

Storage: the C backend stores a conv2d / linear codebook weight as indices + codebook where that
is smaller (docs/compression_formats.md). Weights whose kernels read dense arrays
(WeightOperand.dense: gru / lstm) are decoded at compile time and stored dense in the weight's
dtype (int8 after quantize-int8): the values are shared but the bytes are not fewer. The pass
statistics say so per matrix (`storage`, `stored_bytes` against the IR's `ir_bytes`) and a note
names them.

The weight operand becomes `decode(%W.idx, %W.codebook)`
(docs/compression_formats.md): `W.idx` a const of unsigned indices (u1/u2/u4/u8: the smallest
holding `bits` bits) with the weight's shape, `W.codebook` a const of 2^bits values, `[K]` per
layer or `[O, K]` per output channel (per-channel=true).

- Float graphs: the codebook is f32, the centroids of the float weights.
- Integer graphs (after quantize-int8, also low-bit i4/i2): the codes are clustered (per layer or
  per channel) and the centroids rounded to codes, so the codebook has the weight's dtype and
  `decode` yields a valid per-channel quantized weight with the weight's own quant (scales
  unchanged, so the bias stays valid).

Exact zeros (prune-weights) stay exact zeros: a layer (channel) with zeros reserves a codebook
entry 0.0 for them, and only its non-zero weights are clustered (into the other 2^bits - 1
entries; an integer centroid of a cluster straddling zero may round to 0). Codebooks list the
centroids in ascending order; entries beyond the distinct values a layer needs are 0 and
unused. Deterministic: k-means++ draws from a generator seeded with `seed` and the layer's
position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tinyc import quant
from tinyc.ir import Graph, Op, Value
from tinyc.ops import WEIGHT_DTYPES
from tinyc.passes.base import Pass, PassContext, check, option, register
from tinyc.passes.prune_weights import WeightRef, weight_refs
from tinyc.rewrite import Rewriter

INDEX_DTYPE = {1: "u1", 2: "u2", 3: "u4", 4: "u4", 5: "u8", 6: "u8", 7: "u8", 8: "u8"}


def code_range(dtype: str) -> int:
    """Largest |code| of a symmetric weight dtype (i8: 127, i4: 7, i2: 1, i1: 0 unused)."""
    return {"i8": quant.WEIGHT_MAX, "i4": 7, "i2": 1, "i1": 1}[dtype]


# ---- 1-D k-means ---------------------------------------------------------------------------------

def _assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted `centroids` for every value (ties to the lower one)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mids, values, side="left")


def _init(values: np.ndarray, counts: np.ndarray, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    lo, hi = values[0], values[-1]
    if init == "linear":
        return np.linspace(lo, hi, k)
    if init == "density":
        cdf = np.cumsum(counts) / counts.sum()
        return values[np.minimum(np.searchsorted(cdf, (np.arange(k) + 0.5) / k), len(values) - 1)]
    # kmeans++: the first centre by weight, then by weight * squared distance to the nearest centre.
    centres = [values[rng.choice(len(values), p=counts / counts.sum())]]
    for _ in range(k - 1):
        d2 = np.min((values[:, None] - np.array(centres)[None, :]) ** 2, axis=1) * counts
        if d2.sum() == 0:
            break
        centres.append(values[rng.choice(len(values), p=d2 / d2.sum())])
    c = np.array(centres)
    return np.concatenate([c, np.full(k - len(c), c[-1])])


def kmeans_1d(x: np.ndarray, k: int, init: str, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted centroids (at most k, distinct) of the values x (float64) by Lloyd's algorithm on
    the distinct values weighted by their counts. With k or fewer distinct values, those values."""
    values, counts = np.unique(x, return_counts=True)
    counts = counts.astype(np.float64)
    if len(values) <= k:
        return values
    c = np.sort(_init(values, counts, k, init, rng))
    for _ in range(iters):
        a = _assign(values, c)
        sums = np.bincount(a, values * counts, k)
        n = np.bincount(a, counts, k)
        new = np.where(n > 0, sums / np.where(n > 0, n, 1), c)
        new = np.sort(new)
        if np.array_equal(new, c):
            break
        c = new
    return np.unique(c)


def share(x: np.ndarray, k: int, init: str, iters: int, rng: np.random.Generator,
          qmax: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(codebook [k], indices like x) sharing the values of x. `qmax`: integer codes in
    [-qmax, qmax] (centroids rounded), else float32 centroids. Zeros in x keep a 0.0 entry of
    their own; non-zero values cluster into the remaining entries."""
    flat = x.ravel().astype(np.float64)
    zero = flat == 0
    has_zero = bool(zero.any())
    nonzero = flat[~zero]
    cents = kmeans_1d(nonzero, k - has_zero, init, iters, rng) if nonzero.size else np.zeros(0)
    if qmax is not None:
        cents = np.unique(np.clip(quant.round_half_away(cents), -qmax, qmax))
    else:
        cents = np.unique(cents.astype(np.float32).astype(np.float64))
    idx = np.zeros(flat.size, np.int64)
    if cents.size:
        idx[~zero] = _assign(nonzero, cents)
    book = cents
    if has_zero:
        # 0.0 joins the sorted entries (a rounded centroid may already be 0); zeros point at it.
        book = np.unique(np.concatenate([cents, [0.0]]))
        idx[~zero] = np.searchsorted(book, cents[idx[~zero]]) if cents.size else 0
        idx[zero] = int(np.searchsorted(book, 0.0))
    padded = np.zeros(k, np.float64)
    padded[:book.size] = book
    return padded, idx.reshape(x.shape)


@register
@dataclass(frozen=True)
class ShareWeights(Pass):
    """Weight sharing: per weight matrix (or per output channel) k-means of the conv2d / linear
    weights and gru / lstm w_ih, w_hh into 2^bits shared values; the weight becomes
    decode(indices, codebook) with bits-bit indices. Exact zeros (prune-weights) stay zero. Float
    graphs (f32 codebook) or after quantize-int8 (integer codebook of codes, the weight's quant
    kept). gru / lstm kernels read dense weights: theirs are stored decoded, no smaller (reported)."""

    name = "share-weights"
    bits: int = option(4, "index bits N (1 to 8): 2^N shared values per layer (or per channel)")
    per_channel: bool = option(False, "one codebook per output channel instead of per layer")
    init: Literal["linear", "kmeans++", "density"] = option(
        "linear", "centroid initialisation: linear (min to max), kmeans++ (seeded), density (quantiles)")
    iters: int = option(30, "k-means (Lloyd) iterations at most")
    seed: int = option(0, "random seed (kmeans++ init)")
    layers: tuple[str, ...] = option((), "result names of the ops to share (conv2d, linear, gru, lstm; default: all "
                                         "with constant weights)")

    def __post_init__(self):
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in [1, 8], got {self.bits}")
        if self.iters < 0:
            raise ValueError(f"iters must be >= 0, got {self.iters}")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        graph = graph.copy()
        check(not any(op.kind == "decode" for op in graph.compute_ops()), "share-weights: the graph already "
              "has shared weights (decode ops)", "run share-weights once")
        layers, skipped = weight_refs(graph, self.layers, self.name, skip_scalar=False)
        k, idx_dtype = 2 ** self.bits, INDEX_DTYPE[self.bits]
        stats: dict = {"bits": self.bits, "index_dtype": idx_dtype, "per_channel": self.per_channel,
                       "skipped": skipped, "layers": {}}
        rw = Rewriter(graph)
        done: dict[int, Value] = {}
        dense: dict[int, bool] = {}     # a weight shared by two ops is stored dense if either kernel reads it dense
        for ref in layers:
            dense[id(ref.value)] = dense.get(id(ref.value), False) or ref.operand.dense
        for i, ref in enumerate(layers):
            w = ref.value
            if id(w) not in done:
                done[id(w)] = self._share(rw, ref, k, idx_dtype, np.random.default_rng([self.seed, i]), stats,
                                          dense[id(w)])
            rw.set_operand(ref.op, ref.operand.slot, done[id(w)])
        graph.remove_dead()
        stored_dense = {key: v["stored_bytes"] for key, v in stats["layers"].items() if "stored_bytes" in v}
        stats["stored_dense"] = stored_dense    # matrix -> bytes the C backend stores for it (dense)
        ctx.stats[self.name] = stats
        if stored_dense:
            ctx.notes.append(f"share-weights: {', '.join(stored_dense)}: their kernels read dense weights, so the C "
                             "backend stores them decoded, dense in the weight's dtype (int8 after quantize-int8): "
                             "shared values, no fewer bytes")
        return graph

    def _share(self, rw: Rewriter, ref: WeightRef, k: int, idx_dtype: str, rng, stats: dict, dense: bool) -> Value:
        op = ref.op
        c = ref.const(rw.graph)
        w, t = c.attrs["value"], c.result.type
        check(t.dtype == "f32" or t.dtype in WEIGHT_DTYPES, f"share-weights: %{ref.key}: weight dtype "
              f"{t.dtype} cannot be shared")
        qmax = None if t.dtype == "f32" else code_range(t.dtype)
        if self.per_channel:
            parts = [share(row, k, self.init, self.iters, rng, qmax) for row in w]
            book = np.stack([p[0] for p in parts])
            idx = np.stack([p[1] for p in parts])
        else:
            book, idx = share(w, k, self.init, self.iters, rng, qmax)
        storage = np.float32 if qmax is None else np.int8
        book = book.astype(storage)
        b = rw.before(op)
        idx_v = b.const(w_name(c) + ".idx", idx.astype(np.uint8), dtype=idx_dtype)
        book_v = b.const(w_name(c) + ".codebook", book, dtype=t.dtype)
        result = b.create("decode", [idx_v, book_v], {}, w_name(c) + ".shared", quant=t.quant)
        assert result.type == t, (result.type, t)   # decode yields the weight's type
        decoded = book[idx] if book.ndim == 1 else np.take_along_axis(book, idx.reshape(len(idx), -1), 1).reshape(w.shape)
        distinct = [len(np.unique(r)) for r in decoded] if self.per_channel else [len(np.unique(decoded))]
        stats["layers"][ref.key] = {
            "weights": int(w.size), "codebook": list(book.shape), "max_distinct": max(distinct),
            "zeros_before": int(np.count_nonzero(w == 0)), "zeros_after": int(np.count_nonzero(decoded == 0)),
            "rel_mse": float(np.sum((decoded.astype(np.float64) - w) ** 2) / max(np.sum(w.astype(np.float64) ** 2), 1e-300)),
            "ir_bytes": idx_v.type.nbytes + book_v.type.nbytes,     # indices + codebook in the IR
            # what the C backend stores: indices + codebook where smaller than the dense array (its
            # choice, docs/compression_formats.md), or, for kernels that read dense weights, the
            # decoded dense array (f32 until quantize-int8, then 1 byte a weight)
            "storage": f"dense {t.dtype}, decoded at compile time ({op.kind} kernels read dense weights)" if dense
                       else "indices + codebook where smaller than dense (the backend's choice)",
        }
        if dense:
            stats["layers"][ref.key]["stored_bytes"] = t.nbytes
        return result


def w_name(c: Op) -> str:
    return c.result.name
