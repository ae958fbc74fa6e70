"""Token (integer) model inputs: embedding lookups and the conversion of token ids to float.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others. int64 and int32 model inputs
arrive as i32 graph inputs (tinyc.frontend); they may be read by

- `aten.embedding` (nn.Embedding, F.embedding), `aten.index_select` along dim 0 and `aten.index`
  with one index tensor (`weight[ids]`): all become the `embedding` op (a 1-D table is read as
  [V, 1] and the result reshaped; an N-D table as [V, rest] likewise);
- `_to_copy` / `to` (x.float(), x.long(), x.int()): to float32 a `cast`, to int64/int32 nothing;
- reshapes (view, flatten, unsqueeze, ...), which stay i32 views.

Anything else computing with token ids is refused with a FrontendError (TOKENS_HINT).
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


def index_select(b, a):
    x = a["self"]
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
    if len(indices) != 1 or indices[0] is None:
        b.unsupported("indexing with several index tensors, or not on the first dim",
                      "index the rows of a table with one tensor of token ids: weight[ids]")
    ids = indices[0]
    if (isinstance(ids, Value) and ids.type.dtype != "i32") or \
            (isinstance(ids, ConstRef) and ids.array.dtype == np.bool_):
        b.unsupported("boolean-mask or float indexing", TOKENS_HINT)
    return _gather_rows(b, a["self"], ids)


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
}
