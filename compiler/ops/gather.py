"""Token (integer) inputs: embedding (a gather of table rows by i32 indices) and cast (i32 -> f32).

Graph inputs may be i32 tensors (token ids; the frontend maps int64 and int32 model inputs to
i32). Two ops read them:

- `embedding(weight [V, D], indices i32 [...])` -> `[..., D]`: row `indices[i]` of the table,
  `torch.nn.functional.embedding` in inference (padding_idx only matters for training). An index
  outside [0, V) is an error: the interpreter raises, and the C kernels check every index before
  copying a row and make `NAME_invoke` return TINYC_ERR_INDEX (-2); nothing reads out of bounds.
  int8 form: the table is an i8 tensor quantized per tensor (asymmetric, quantize-int8 picks
  `quant.range_params` of the table's min and max, like an activation), and the result keeps the
  table's quantization: the op copies codes, no arithmetic (Trait.SAME_QUANT).
- `cast(x i32) {dtype = "f32"}` -> f32 of the same shape: `x.float()` on a token tensor. Only
  i32 -> f32 exists. It stays a float op in int8 graphs (its consumer quantizes its result).
"""
from __future__ import annotations

import numpy as np

from tinyc.errors import TinycError
from tinyc.ir import TensorType
from tinyc.ops.core import (F, IntInput, OpDef, Trait, act_q, fmt_shape, keeps_batch_unary, need, rank_is,
                            register, sample)

ERR_INDEX = -2   # NAME_invoke's return value for a token index out of range (TINYC_ERR_INDEX in C)


def _indices(t: TensorType) -> None:
    need(t.dtype == "i32" and t.quant is None, f"indices must be i32 (token ids), got {t.dtype}"
         + (" with quant" if t.quant is not None else ""), "graph inputs holding token ids are i32")


def _embedding_shape(ts, a):
    w, idx = ts
    rank_is(w, 2, "weight")
    _indices(idx)
    need(w.shape[0] >= 1, f"weight {fmt_shape(w.shape)} has no rows")
    return idx.shape + (w.shape[1],)


def _embedding_dtype(ts) -> str:
    need(ts[0].dtype in ("f32", "i8"), f"weight must be f32 (or i8 in the int8 form), got {ts[0].dtype}")
    return ts[0].dtype


def check_indices(op, idx: np.ndarray, vocab: int) -> np.ndarray:
    """The indices as int64, or a TinycError naming the first index outside [0, vocab)."""
    idx = np.asarray(idx)
    if idx.dtype.kind == "f" and not np.array_equal(idx, np.floor(idx)):
        raise TinycError(f"interpreter: %{op.result.name} = embedding: indices are not integers", where=op.loc)
    idx = idx.astype(np.int64)
    bad = (idx < 0) | (idx >= vocab)
    if bad.any():
        first = int(idx[bad].flat[0])
        raise TinycError(f"interpreter: %{op.result.name} = embedding: token index {first} is out of range "
                         f"[0, {vocab})", where=op.loc,
                         hint="token ids must address a row of the embedding table; the C bundle's "
                              f"invoke returns {ERR_INDEX} for such an input")
    return idx


def _embedding(op, w, idx):
    return w[check_indices(op, idx, w.shape[0])]


def _embedding_int_operands(ts, a) -> None:
    act_q(ts[0], "weight (table)")
    _indices(ts[1])


def _embedding_keeps_batch(a, types, flags, result) -> bool:
    return flags[1] and not flags[0]


def _embedding_samples(rng):
    return [sample(rng.standard_normal((10, 4)).astype(np.float32), IntInput((2, 3), 0, 10)),
            sample(rng.standard_normal((7, 5)).astype(np.float32), IntInput((6,), 0, 7)),
            sample(rng.uniform(0.0, 3.0, (20, 8)).astype(np.float32), IntInput((1, 4, 2), 0, 20))]


register(OpDef(
    "embedding", _embedding_shape, 2, 2, traits=Trait.SAME_QUANT, dtype_rule=_embedding_dtype,
    doc="rows of the table weight [V, D] picked by i32 indices [...] -> [..., D]; an index outside [0, V) "
        "is an error",
    ref=_embedding, ref_int=_embedding, torch=lambda op, w, idx: F.embedding(idx.long(), w), trainable=(0,),
    int_operands=_embedding_int_operands, int8="gather_table", c="gather_rows", channels="table_columns",
    id_bound=lambda op, i: op.operands[0].type.shape[0] if i == 1 else None,
    keeps_batch=_embedding_keeps_batch, samples=_embedding_samples))


# ---- cast -------------------------------------------------------------------------------------

CAST_DTYPES = ("f32",)


def _cast_shape(ts, a):
    need(a["dtype"] in CAST_DTYPES, f"dtype must be one of {', '.join(map(repr, CAST_DTYPES))}, got {a['dtype']!r}")
    need(ts[0].dtype == "i32" and ts[0].quant is None, f"cast takes an i32 operand, got {ts[0].dtype}",
         "float tensors need no cast")
    return ts[0].shape


register(OpDef(
    "cast", _cast_shape, 1, 1, {"dtype": str}, dtype_rule=lambda ts: "f32",
    doc="i32 -> f32 (x.float() on a token tensor)", int_form=lambda ts: False,
    ref=lambda op, x: x, torch=lambda op, x: x.float(), int8="float_op", c="int_to_float",
    keeps_batch=keeps_batch_unary,
    samples=lambda rng: [sample(IntInput((2, 5), -100000, 100000), dtype="f32"),
                         sample(IntInput((3,), -2 ** 31, 2 ** 31 - 1), dtype="f32")]))
