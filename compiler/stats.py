"""Model statistics: op count, parameters, weight bytes and MACs, for the whole graph and per layer."""
from __future__ import annotations

from dataclasses import dataclass

from tinyc.ir import Graph
from tinyc.ops import macs


@dataclass(frozen=True)
class GraphStats:
    ops: int            # non-const ops
    params: int         # elements of all consts
    weight_bytes: int   # packed bytes of all consts
    macs: int


@dataclass(frozen=True)
class LayerStats:
    name: str
    kind: str
    shape: tuple[int, ...]
    macs: int
    params: int         # elements of the op's const operands
    weight_bytes: int


def graph_stats(graph: Graph) -> GraphStats:
    consts = [op.result.type for op in graph.const_ops()]
    compute = list(graph.compute_ops())
    return GraphStats(len(compute), sum(t.numel for t in consts), sum(t.nbytes for t in consts),
                      sum(macs(op) for op in compute))


def layer_table(graph: Graph) -> list[LayerStats]:
    """One row per compute op, in graph order."""
    is_const = {id(op.result) for op in graph.const_ops()}
    rows = []
    for op in graph.compute_ops():
        # An op using one const twice (mul(w, w)) still stores it once.
        weights = list({id(v): v.type for v in op.operands if id(v) in is_const}.values())
        rows.append(LayerStats(op.result.name, op.kind, op.result.type.shape, macs(op),
                               sum(t.numel for t in weights), sum(t.nbytes for t in weights)))
    return rows
