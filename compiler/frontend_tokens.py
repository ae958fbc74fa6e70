"""Token (integer) model inputs: embedding lookups and the conversion of token ids to float.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others. int64 and int32 model inputs
arrive as i32 graph inputs (tinyc.frontend); they may be read by

- `aten.embedding` (nn.Embedding, F.embedding), `aten.index_select` along dim 0 and `aten.index`
  with one index tensor (`weight[ids]`): all become the `embedding` op (a 1-D table is read as
  [V, 1] and the result reshaped; an N-D table as [V, rest] likewise);
- `embedding_bag` (nn.EmbeddingBag over equal-length bags): `embedding`, then sum / mean / amax per bag;
- `_to_copy` / `to` (x.float(), x.long(), x.int()): to float32 a `cast`, to int64/int32 nothing;
- reshapes (view, flatten, unsqueeze, ...), which stay i32 views.

Anything else computing with token ids is refused with a FrontendError (TOKENS_HINT). index_select and
x[idx] on float values with a constant index are gathers along an axis (tinyc.frontend_tensor.gather_const).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from tinyc.frontend_ops import TOKENS_HINT, Builder, ConstRef, _axis
from tinyc.ir import Op, TensorType, Value

_INT_TORCH = (torch.int32, torch.int64)


def _indices(b: Builder, x, what: str) -> Value:
    """The i32 operand for token ids: an i32 Value as is; a constant of whole numbers as an i32 const."""
    if isinstance(x, Value):
        if x.type.dtype != "i32":
            b.unsupported(f"{what} that are {x.type.dtype} values, not integer token ids",
                          "index with an integer tensor (a model input of int64 or int32 token ids)")
        return x
    if isinstance(x, ConstRef):
        a = x.array
        if a.dtype.kind not in "iu" or (a.size and (a.min() < -2 ** 31 or a.max() > 2 ** 31 - 1)):
            b.unsupported(f"{what} of dtype {a.dtype}", "indices are integers in int32's range")
        if id(x) not in b.placed:
            v = Value(b.unique(x.name), TensorType(tuple(a.shape), "i32"))
            b.consts.append(Op("const", [], v, {"value": np.require(a.astype(np.int32), requirements="C")}))
            b.placed[id(x)] = (x, v)
        return b.placed[id(x)][1]
    b.unsupported(f"{what} given as a {type(x).__name__}", "index with an integer tensor")


def _table(b: Builder, w) -> Value:
    if isinstance(w, Value) and w.type.dtype != "f32":
        b.unsupported("a lookup in an integer table", TOKENS_HINT)
    return b.value(w, "weight")


def _gather_rows(b: Builder, table, ids) -> Value:
    """table[ids] along dim 0: the embedding op on the table read as [V, rest]."""
    idx = _indices(b, ids, "indices")
    shape = table.array.shape if isinstance(table, ConstRef) else table.type.shape
    if len(shape) == 0:
        b.unsupported("indexing a 0-d tensor")
    rest = tuple(shape[1:])
    if len(shape) != 2:   # a [V] or [V, A, B...] table: gather rows of [V, prod(rest)]
        flat = [shape[0], math.prod(rest)]
        table = ConstRef(table.name, table.array.reshape(flat)) if isinstance(table, ConstRef) else \
            b.reshape(table, flat, tag="table")
    w = _table(b, table)
    y = b.emit("embedding", [w, idx], idx.type.shape + (w.type.shape[1],),
               tag=None if len(shape) == 2 else "rows")
    return y if len(shape) == 2 else b.reshape(y, idx.type.shape + rest)


def embedding(b, a):
    """F.embedding(indices, weight) in inference: padding_idx, scale_grad_by_freq and sparse only
    change the gradient."""
    return _gather_rows(b, a["weight"], a["indices"])


def _float_values(x, idx) -> bool:
    """A gather from float values (an activation) at constant positions: tinyc.frontend_tensor's
    gather_const (slices and a cat), not an embedding lookup."""
    return isinstance(x, Value) and x.type.dtype == "f32" and isinstance(idx, ConstRef)


def index_select(b, a):
    x = a["self"]
    if _float_values(x, a["index"]):
        from tinyc.frontend_tensor import gather_const
        if a["index"].array.ndim > 1:
            b.unsupported("index_select with a multi-dimensional index")
        return gather_const(b, x, _axis(a["dim"], x.type.rank), a["index"])
    rank = x.array.ndim if isinstance(x, ConstRef) else x.type.rank
    if _axis(a["dim"], rank) != 0:
        b.unsupported(f"index_select along dim {a['dim']} (tinyc gathers rows: dim 0)",
                      "index the rows of a [V, D] table, e.g. weight.index_select(0, ids)")
    idx = a["index"]
    if (isinstance(idx, Value) and idx.type.rank > 1) or (isinstance(idx, ConstRef) and idx.array.ndim > 1):
        b.unsupported("index_select with a multi-dimensional index")
    return _gather_rows(b, x, idx)


def index_tensor(b, a):
    """x[ids]: advanced indexing with one index tensor on dim 0."""
    indices = list(a["indices"])
    given = [i for i, t in enumerate(indices) if t is not None]
    if len(given) == 1 and _float_values(a["self"], indices[given[0]]):   # x[:, idx], x[..., mask]
        from tinyc.frontend_tensor import gather_const
        return gather_const(b, a["self"], given[0], indices[given[0]])
    if len(indices) != 1 or indices[0] is None:
        b.unsupported("indexing with several index tensors, or not on the first dim",
                      "index the rows of a table with one tensor of token ids: weight[ids]")
    ids = indices[0]
    if (isinstance(ids, Value) and ids.type.dtype != "i32") or \
            (isinstance(ids, ConstRef) and ids.array.dtype == np.bool_):
        b.unsupported("boolean-mask or float indexing", TOKENS_HINT)
    return _gather_rows(b, a["self"], ids)


_BAG_MODES = {0: "sum", 1: "mean", 2: "amax"}


def embedding_bag(b, a):
    """nn.EmbeddingBag / F.embedding_bag over bags of equal length (a 2-D input: the offsets PyTorch
    builds are evenly spaced constants): the rows (embedding), then sum / mean / max over each bag.
    per_sample_weights (mode sum) multiply the rows first. Bags of different lengths and padding_idx
    (which drops ids from the mean at run time) are not supported."""
    mode = int(a["mode"])
    if mode not in _BAG_MODES:
        b.unsupported(f"embedding_bag mode {mode}")
    pad = a.get("padding_idx")
    if pad is not None and int(pad) >= 0:
        b.unsupported(f"embedding_bag with padding_idx={pad} (ids excluded from the bags at run time)",
                      "drop padding_idx, or use nn.Embedding and reduce the rows yourself")
    ids, offsets = a["indices"], a["offsets"]
    n_ids = ids.type.shape[0] if isinstance(ids, Value) else (ids.array.shape[0] if isinstance(ids, ConstRef) else 0)
    if not isinstance(offsets, ConstRef) or (isinstance(ids, Value) and ids.type.rank != 1):
        b.unsupported("embedding_bag with offsets computed at run time",
                      "use a 2-D input of equal-length bags (N, L), or constant offsets")
    starts = offsets.array.astype(np.int64).ravel()
    if a.get("include_last_offset"):
        if starts.size < 2 or starts[-1] != n_ids:
            b.unsupported("include_last_offset with a last offset other than the number of ids")
        starts = starts[:-1]
    bags = starts.size
    length = n_ids // bags if bags else 0
    if bags == 0 or length == 0 or not np.array_equal(starts, np.arange(bags) * length) or bags * length != n_ids:
        b.unsupported(f"embedding_bag with bags of different lengths (offsets {starts.tolist()[:8]}...)",
                      "use a 2-D input of equal-length bags (N, L)")
    rows = _gather_rows(b, a["weight"], ids)                       # [N * L, D]
    dim = rows.type.shape[1]
    rows = b.reshape(rows, [bags, length, dim], tag="bags")
    weights = a.get("per_sample_weights")
    if weights is not None:
        if mode != 0:
            b.unsupported("per_sample_weights with a mode other than sum")
        w = b.value(ConstRef(weights.name, weights.array.reshape(bags, length, 1)) if isinstance(weights, ConstRef)
                    else b.reshape(b.value(weights), [bags, length, 1], tag="weights"))
        rows = b.emit("mul", [rows, w], [bags, length, dim], tag="weighted")
    y = b.emit(_BAG_MODES[mode], [rows], [bags, dim], {"axes": [1], "keepdim": False})
    return (y,) + (None,) * (len(b.node.meta["val"]) - 1) if isinstance(b.node.meta["val"], (tuple, list)) else y


def token_to_copy(b: Builder, x: Value, dtype) -> Value:
    """x.float() of token ids is a cast; x.long() / x.int() keep the i32 value (the ids must fit int32)."""
    if dtype is None or dtype in _INT_TORCH:
        return x
    if dtype == torch.float32:
        return b.emit("cast", [x], x.type.shape, {"dtype": "f32"})
    b.unsupported(f"conversion of token ids to {dtype}", "convert token ids to float32 (x.float()) or keep them integer")


LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = {
    "aten.embedding.default": embedding,
    "aten.index_select.default": index_select,
    "aten.index.Tensor": index_tensor,
    "aten.embedding_bag.default": embedding_bag,
    "aten.embedding_bag.padding_idx": embedding_bag,
    "aten._embedding_bag.default": embedding_bag,
    "aten._embedding_bag_forward_only.default": embedding_bag,
}
