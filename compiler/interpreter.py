"""Reference interpreter: runs a graph with numpy. The oracle for every pass and C kernel.

A walker over the op registry (tinyc.ops): each op's definition holds its numpy semantics.
Float kernels (`OpDef.ref`) compute in float64; the walker widens the operands, applies a fused
activation and casts the result to the op's storage dtype, so float32 results match PyTorch to
rounding. The int8 forms (`OpDef.ref_int`, docs/quantization.md) compute on int64 codes with the
arithmetic of tinyc.quant and check that accumulators fit int32: they define, bit for bit, what
the C kernels must produce. Compressed representations and constants (`OpDef.ref_exact`,
docs/compression_formats.md) are exact and run as they are.
"""
from __future__ import annotations

import numpy as np

from tinyc.errors import TinycError
from tinyc.ir import DTYPES, Graph, Op
from tinyc.ops import ACTIVATIONS, OPS, Trait, fmt_shape, is_int_form


def run(graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs for these inputs."""
    env = run_all(graph, inputs)
    return [env[v.name] for v in graph.outputs]


def run_all(graph: Graph, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every value of the graph (inputs, consts, op results) by name, for per-layer comparisons."""
    env = {v.name: a for v, a in zip(graph.inputs, _check_inputs(graph, inputs))}
    for op in graph.ops:
        env[op.result.name] = run_op(op, *(env[v.name] for v in op.operands))
    return env


def run_op(op: Op, *arrays: np.ndarray) -> np.ndarray:
    """One op on numpy arrays: its int8 form, its exact form or its float form (fused act included)."""
    d = OPS.get(op.kind)
    if d is None:
        raise TinycError(f"interpreter: no kernel for op kind '{op.kind}'", where=op.loc)
    if d.ref_exact is not None:
        return d.ref_exact(op, *arrays)
    if d.ref_int is not None and (d.ref is None or is_int_form(op.kind, [v.type for v in op.operands])):
        return d.ref_int(op, *arrays)
    if d.ref is None:
        raise TinycError(f"interpreter: %{op.result.name} = {op.kind} has no float form", where=op.loc)
    return _float(op, d.ref, arrays)


def _float(op: Op, ref, arrays) -> np.ndarray:
    """float64 compute, fused activation, cast to the result's storage dtype."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = ref(op, *(np.asarray(a, np.float64) for a in arrays))
        if "act" in op.attrs and OPS[op.kind].has(Trait.FUSABLE):
            a = ACTIVATIONS[op.attrs["act"]]
            y = a.numpy(y, a.params_of(op.attrs, fused=True))
    return np.asarray(y).astype(DTYPES[op.result.type.dtype], copy=False)


def _check_inputs(graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if len(inputs) != len(graph.inputs):
        raise TinycError(f"graph @{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    out = []
    for v, a in zip(graph.inputs, inputs):
        a = np.asarray(a)
        storage = DTYPES[v.type.dtype]
        if a.shape != v.type.shape:
            raise TinycError(f"input %{v.name} has shape {fmt_shape(a.shape)}, the graph expects "
                             f"{fmt_shape(v.type.shape)}", hint="include the batch dimension the model was traced with")
        if not np.can_cast(a.dtype, storage, "same_kind"):
            raise TinycError(f"input %{v.name} has dtype {a.dtype}, the graph expects {v.type.dtype} ({storage})")
        if np.issubdtype(storage, np.signedinteger) and a.size and a.dtype.kind in "iu" and \
                (a.min() < np.iinfo(storage).min or a.max() > np.iinfo(storage).max):
            raise TinycError(f"input %{v.name} holds values outside {v.type.dtype}'s range "
                             f"[{np.iinfo(storage).min}, {np.iinfo(storage).max}]",
                             hint="token ids are passed as int32 (an int64 id must fit int32)")
        out.append(a.astype(storage, copy=False))
    return out


def id_bound(graph: Graph, value) -> int | None:
    """The exclusive bound of valid ids for integer graph input `value`: the smallest of what the
    ops reading it (directly or through views) accept (an embedding: its table's rows), or None."""
    bounds, frontier = [], [value]
    while frontier:
        v = frontier.pop()
        for op in graph.ops:
            for i, operand in enumerate(op.operands):
                if operand is not v:
                    continue
                d = OPS[op.kind]
                if d.has(Trait.VIEW):
                    frontier.append(op.result)
                elif d.id_bound is not None and (b := d.id_bound(op, i)) is not None:
                    bounds.append(b)
    return min(bounds) if bounds else None


def random_inputs(graph: Graph, rng: np.random.Generator, rows: int | None = None,
                  scale: float = 1.0) -> list[np.ndarray]:
    """Random values for each graph input (a stack of `rows` when given): float inputs
    scale x standard normal; integer inputs (token ids) uniform over the ids the graph accepts
    (id_bound), [0, 64) where nothing bounds them."""
    lead = () if rows is None else (rows,)
    out = []
    for v in graph.inputs:
        shape = lead + tuple(v.type.shape)
        if np.issubdtype(DTYPES[v.type.dtype], np.floating):
            out.append((scale * rng.standard_normal(shape)).astype(np.float32))
        else:
            out.append(rng.integers(0, id_bound(graph, v) or 64, shape).astype(DTYPES[v.type.dtype]))
    return out
