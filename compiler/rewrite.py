"""Building and rewriting graphs: `Builder` (where new ops go, with inferred types) and
`Rewriter` plus `apply_patterns` (a worklist-driven pattern-rewrite driver).

After xDSL's builder.py and pattern_rewriter.py, for tinyc's straight-line graphs:

    b = Builder.before(graph, op)                      # or .after(graph, op), .at_end(graph)
    w = b.const("conv.weight", array)                  # a const op, fresh name, no location
    y = b.create("conv2d", [x, w], {"stride": ...}, name="y")   # type from tinyc.ops.infer_type

    rw = Rewriter(graph)
    rw.replace_all_uses(old, new)                      # operands and graph outputs
    rw.replace_op(op, new_value)                       # uses of op's result -> new_value, erase op
    rw.erase(op)                                       # refused while its result is still used

    apply_patterns(graph, [Pattern("fold", lambda d: d.has(Trait.X), fold), ...])

A `Pattern` says which ops it is tried on by a predicate over the op's definition (a trait or a
facet of its `OpDef`, never a list of op names) and rewrites through the Rewriter it is given,
returning True when it changed the graph. The driver tries the earliest pending op in graph
order and, after a change, revisits what the change touched (the changed and created ops, the
producers and users of their operands and results) until nothing applies: the result is the
one a restart-from-the-top scan would reach, in the same order, deterministically.

This module is IR core: it imports tinyc.ir, tinyc.ops and tinyc.errors only.
"""
from __future__ import annotations

import heapq

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from tinyc.errors import PassError
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value, dtype_of
from tinyc.ops import OPS, OpDef, OpError, infer_type


# ---- insertion points and the builder -----------------------------------------------------------

@dataclass(frozen=True)
class InsertPoint:
    """Where a Builder puts the next op: before `op`, after `op`, or at the end of the graph
    (`op` None). Resolved when an op is inserted, so earlier edits of the op list don't stale it."""

    op: Op | None = None
    after: bool = False

    @staticmethod
    def before(op: Op) -> "InsertPoint":
        return InsertPoint(op, False)

    @staticmethod
    def after_op(op: Op) -> "InsertPoint":
        return InsertPoint(op, True)

    @staticmethod
    def at_end() -> "InsertPoint":
        return InsertPoint(None, False)


class Builder:
    """Creates ops at an insertion point of `graph`.

    Successive ops land in creation order: before an op, each new op goes right before it (so
    after the previous new one); after an op, the point moves past each new op. Results get
    fresh names from `name` (`fresh=False` keeps the name as given: for a value that replaces
    one of that name). Compute ops carry `loc` (by default the location of the op the point is
    relative to); consts carry none, as the importer writes them."""

    def __init__(self, graph: Graph, point: InsertPoint | None = None, loc: str | None = None):
        self.graph = graph
        self.point = point or InsertPoint.at_end()
        self.loc = loc if loc is not None else (self.point.op.loc if self.point.op is not None else None)
        self.created: list[Op] = []    # every op this builder inserted, in order

    @classmethod
    def before(cls, graph: Graph, op: Op, loc: str | None = None) -> "Builder":
        return cls(graph, InsertPoint.before(op), loc)

    @classmethod
    def after(cls, graph: Graph, op: Op, loc: str | None = None) -> "Builder":
        return cls(graph, InsertPoint.after_op(op), loc)

    @classmethod
    def at_end(cls, graph: Graph, loc: str | None = None) -> "Builder":
        return cls(graph, InsertPoint.at_end(), loc)

    def insert(self, op: Op) -> Op:
        """Insert `op` (already built) at the insertion point."""
        p, ops = self.point, self.graph.ops
        if p.op is None:
            ops.append(op)
        elif p.after:
            ops.insert(ops.index(p.op) + 1, op)
            self.point = InsertPoint.after_op(op)
        else:
            ops.insert(ops.index(p.op), op)
        self.created.append(op)
        return op

    def name(self, base: str, fresh: bool = True) -> str:
        return self.graph.fresh_name(base) if fresh else base

    def create(self, kind: str, operands: list[Value], attrs: dict[str, Any] | None = None, name: str | None = None,
               loc: str | None = None, *, fresh: bool = True, quant: QuantParams | None = None) -> Value:
        """Insert `kind(operands) {attrs}` and return its result, typed by tinyc.ops.infer_type
        (plus `quant`, which type inference leaves to the caller). `name` defaults to the kind."""
        attrs = {} if attrs is None else attrs
        t = infer_type(kind, [v.type for v in operands], attrs)
        if quant is not None:
            t = TensorType(t.shape, t.dtype, quant)
        result = Value(self.name(name or kind, fresh), t)
        self.insert(Op(kind, list(operands), result, attrs, loc if loc is not None else self.loc))
        return result

    def const(self, name: str, array: np.ndarray, *, dtype: str | None = None,
              quant: QuantParams | None = None, fresh: bool = True) -> Value:
        """Insert a const op holding `array` (C-contiguous; a 0-d array stays 0-d); `dtype`
        overrides the array's own (sub-byte types stored unpacked: u1, i4, ...)."""
        array = np.require(array, requirements="C")
        v = Value(self.name(name, fresh), TensorType(tuple(array.shape), dtype or dtype_of(array), quant))
        self.insert(Op("const", [], v, {"value": array}))
        return v


def reinfer(op: Op) -> None:
    """Recompute the result shape of `op` after its operands or attributes changed (dtype and
    quant kept). A failure is a pass's bug, reported as an internal error naming the op."""
    try:
        shape = infer_type(op.kind, [v.type for v in op.operands], op.attrs).shape
    except OpError as e:
        raise PassError(f"internal error: %{op.result.name} = {op.kind} no longer type-checks: {e}",
                        hint="this is a bug in tinyc; please report it with the model") from None
    op.result.type = op.result.type.with_shape(shape)


# ---- the rewriter ---------------------------------------------------------------------------------

class Rewriter:
    """Edits `graph` and answers def/use questions about it. The def/use maps are rebuilt after
    any edit made through the rewriter (graphs are small). Change operands through
    `set_operands`/`replace_all_uses`; after editing an op's attributes, kind or result type in
    place, call `changed(op)` so the driver revisits it and its neighbours. Every op edited or
    created is recorded in `touched`, every op erased in `erased`."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.touched: dict[int, Op] = {}   # id -> op, kept alive so ids stay unique
        self.erased: dict[int, Op] = {}
        self._maps: tuple | None = None

    # -- queries
    def _index(self) -> tuple:
        if self._maps is None:
            g = self.graph
            self._maps = (g.producers(), g.users(), {id(v) for v in g.outputs}, {id(v) for v in g.inputs})
        return self._maps

    def producer(self, v: Value) -> Op | None:
        """The op defining `v` (None for a graph input)."""
        return self._index()[0].get(id(v))

    def users(self, v: Value) -> list[Op]:
        """The ops using `v`, in graph order (an op using it twice is listed twice)."""
        return self._index()[1].get(id(v), [])

    def is_output(self, v: Value) -> bool:
        return id(v) in self._index()[2]

    def is_input(self, v: Value) -> bool:
        return id(v) in self._index()[3]

    def has_uses(self, v: Value) -> bool:
        return bool(self.users(v)) or self.is_output(v)

    def const(self, v: Value) -> np.ndarray | None:
        """The array behind `v` if a const op defines it."""
        op = self.producer(v)
        return op.attrs["value"] if op is not None and op.is_const else None

    def sole_user(self, v: Value) -> Op | None:
        """The one op using `v`, if `v` has exactly one use and is not a graph output."""
        users = self.users(v)
        return users[0] if len(users) == 1 and not self.is_output(v) else None

    # -- building
    def before(self, op: Op, loc: str | None = None) -> Builder:
        """A Builder inserting before `op`; what it creates is recorded as touched."""
        return _TrackingBuilder(self, InsertPoint.before(op), loc)

    def after(self, op: Op, loc: str | None = None) -> Builder:
        return _TrackingBuilder(self, InsertPoint.after_op(op), loc)

    # -- edits
    def changed(self, op: Op) -> None:
        """Note that `op` was edited in place (operands, attributes, kind or result type)."""
        self.touched[id(op)] = op
        self._maps = None

    def set_operands(self, op: Op, operands: Iterable[Value]) -> None:
        for v in op.operands:          # the old operands' producers and users are touched too
            self._touch_value(v)
        op.operands = list(operands)
        self.changed(op)

    def set_operand(self, op: Op, i: int, v: Value) -> None:
        operands = list(op.operands)
        operands[i] = v
        self.set_operands(op, operands)

    def replace_all_uses(self, old: Value, new: Value, *, exclude: Iterable[Op] = ()) -> None:
        """Point every use of `old` at `new`: operands of every op (but those in `exclude`) and
        the graph outputs."""
        skip = {id(op) for op in exclude}
        for op in self.graph.ops:
            if id(op) not in skip and any(v is old for v in op.operands):
                op.operands = [new if v is old else v for v in op.operands]
                self.touched[id(op)] = op
        self.graph.outputs = [new if v is old else v for v in self.graph.outputs]
        self._touch_value(old)
        self._touch_value(new)
        self._maps = None

    def erase(self, op: Op, *, safe: bool = True) -> None:
        """Remove `op` from the graph. With `safe` (the default) its result must be unused: a
        use left behind would dangle, so it is refused (ValueError)."""
        if safe and self.has_uses(op.result):
            users = ", ".join("%" + u.result.name for u in self.users(op.result)) or "the graph outputs"
            raise ValueError(f"cannot erase %{op.result.name} = {op.kind}: still used by {users}")
        for v in op.operands:
            self._touch_value(v)
        self.graph.ops.remove(op)
        self.touched.pop(id(op), None)
        self.erased[id(op)] = op
        self._maps = None

    def replace_op(self, op: Op, new: Value) -> None:
        """Replace `op` by `new`: every use of its result goes to `new`, then `op` is erased."""
        self.replace_all_uses(op.result, new)
        self.erase(op)

    def replace_const_operand(self, op: Op, i: int, array: np.ndarray, *, dtype: str | None = None) -> Value:
        """Operand `i` of `op`, a const, is to hold `array`: the const is rewritten in place (its
        type's shape follows) when `op` is its only user, else a new const named after it is
        inserted before `op`. Returns the operand's value."""
        v = op.operands[i]
        producer = self.producer(v)
        if producer is not None and producer.is_const and len(self.users(v)) == 1 and not self.is_output(v):
            producer.attrs["value"] = array
            v.type = v.type.with_shape(array.shape)
            self.changed(producer)
            return v
        new = self.before(op).const(v.name, array, dtype=dtype)
        self.set_operand(op, i, new)
        return new

    def _touch_value(self, v: Value) -> None:
        """Record the producer and the users of `v`: their patterns may match differently now."""
        p = self.producer(v)
        if p is not None:
            self.touched[id(p)] = p
        for u in self.users(v):
            self.touched[id(u)] = u


class _TrackingBuilder(Builder):
    """A Builder that reports what it inserts to its Rewriter."""

    def __init__(self, rw: Rewriter, point: InsertPoint, loc: str | None):
        super().__init__(rw.graph, point, loc)
        self.rw = rw

    def insert(self, op: Op) -> Op:
        super().insert(op)
        for v in op.operands:
            self.rw._touch_value(v)
        self.rw.changed(op)
        return op


# ---- patterns and the driver -------------------------------------------------------------------------

@dataclass(frozen=True)
class Pattern:
    """A rewrite tried at ops whose definition satisfies `applies` (a trait or facet test).
    `rewrite(rw, op)` edits through the Rewriter and returns True when it changed the graph
    (False: it did not match, and it must then have left the graph alone)."""

    name: str
    applies: Callable[[OpDef], bool]
    rewrite: Callable[[Rewriter, Op], bool]


def pattern(applies: Callable[[OpDef], bool]) -> Callable[[Callable[[Rewriter, Op], bool]], Pattern]:
    """Decorator: `@pattern(lambda d: d.has(Trait.VIEW))` over a `rewrite(rw, op) -> bool`."""
    def wrap(fn: Callable[[Rewriter, Op], bool]) -> Pattern:
        return Pattern(fn.__name__, applies, fn)
    return wrap


def apply_patterns(graph: Graph, patterns: Iterable[Pattern], *, max_rewrites: int = 100_000) -> int:
    """Rewrite `graph` in place with `patterns` to a fixed point; returns the rewrites applied.

    Worklist: every op starts pending. The earliest pending op in graph order is taken and the
    patterns that apply to its kind are tried in the order given; the first that changes the
    graph wins. Then every op the change touched (edited, created, and the producers and users
    of their operands and results, including uses moved by replace_all_uses) becomes pending
    again, with the producers and users of those ops' operands and results. An op whose
    neighbourhood is untouched is not retried. Dead ops are left for the caller
    (Graph.remove_dead)."""
    patterns = list(patterns)
    by_kind: dict[str, list[Pattern]] = {}

    def for_kind(kind: str) -> list[Pattern]:
        if kind not in by_kind:
            d = OPS[kind]
            by_kind[kind] = [p for p in patterns if p.applies(d)]
        return by_kind[kind]

    pending: dict[int, Op] = {id(op): op for op in graph.ops}
    applied = 0
    # The earliest pending op comes from a heap of graph positions, and the def/use maps are
    # shared by the attempts between two changes: both are rebuilt only after a rewrite, so a
    # pass over a graph where nothing matches costs O(n log n), not O(n^2).
    heap: list[tuple[int, int]] = []
    position: dict[int, int] = {}
    maps = None

    def reorder() -> None:
        position.clear()
        position.update((id(o), i) for i, o in enumerate(graph.ops))
        heap[:] = [(position[k], k) for k in pending if k in position]
        heapq.heapify(heap)

    reorder()
    while heap:
        i, key = heapq.heappop(heap)
        if key not in pending or position.get(key) != i:
            continue
        op = pending.pop(key)                                    # earliest in graph order
        for p in for_kind(op.kind):
            rw = Rewriter(graph)
            rw._maps = maps
            if not p.rewrite(rw, op):
                if rw.touched or rw.erased:
                    raise AssertionError(f"pattern {p.name} edited the graph but reported no change")
                maps = rw._maps
                continue
            applied += 1
            if applied > max_rewrites:
                raise PassError(f"internal error: rewriting @{graph.name} did not reach a fixed point "
                                f"after {max_rewrites} rewrites (last: {p.name})",
                                hint="this is a bug in tinyc; please report it with the model")
            for e in rw.erased:
                pending.pop(e, None)
            fresh = Rewriter(graph)
            _requeue(fresh, rw.touched.values(), rw.erased, pending)
            maps = fresh._maps
            reorder()
            break
    return applied


def _requeue(rw: Rewriter, touched: Iterable[Op], erased: dict[int, Op], pending: dict[int, Op]) -> None:
    """Make the touched ops pending, and the producers and users of their operands and results."""
    live = {id(op) for op in rw.graph.ops}
    for op in touched:
        if id(op) in erased or id(op) not in live:
            continue
        pending[id(op)] = op
        for v in [*op.operands, op.result]:
            p = rw.producer(v)
            if p is not None:
                pending[id(p)] = p
            for u in rw.users(v):
                pending[id(u)] = u
