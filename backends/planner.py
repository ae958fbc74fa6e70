"""Static memory planner: every intermediate tensor gets a fixed offset in one arena.

Lifetimes are in compute-op indices (consts excluded): a tensor is live from the op
defining it to the last op reading it, both included, so an op's operands and its
result never share memory unless the op is allowed to work in place.

Before placement, tensors are merged into *buffers* that share storage:
- a view (reshape) always shares its operand's buffer;
- an in-place op (elementwise, activation) may take over an operand's buffer when
  that buffer dies at this op and has exactly the result's size.
Buffers are then placed greedy-by-size, first-fit, as TFLM's GreedyMemoryPlanner:
largest first, each at the lowest aligned offset that does not overlap a placed
buffer whose lifetime intersects its own.

In a graph, inputs and consts are *external*: they stay in the caller's input
buffer / in flash. Views of them stay there too, and nothing is written over
them in place. A buffer holding a graph output lives in the caller's output
buffer; an output that cannot (external, or a second output of one buffer) is
copied there at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from tinyc.errors import BackendError
from tinyc.ir import Graph, Op

ALIGN = 8  # bytes: any element type, and LDRD/VLDR doubleword loads on Cortex-M


def align_up(n: int, align: int = ALIGN) -> int:
    return -(-n // align) * align


@dataclass(frozen=True)
class Tensor:
    """A planning request: `size` bytes live over ops [first, last]."""

    name: str
    size: int
    first: int
    last: int
    view_of: str | None = None          # shares this tensor's storage unconditionally
    inplace_of: tuple[str, ...] = ()    # may take over one of these if it dies at `first`
    external: bool = False              # lives outside the arena (graph input, const)


@dataclass
class Buffer:
    """Tensors sharing one storage; `members` in definition order, the first is the root."""

    members: list[str]
    size: int
    first: int
    last: int
    external: bool
    views: dict[str, str] = field(default_factory=dict)   # member -> tensor it is a view of
    handoffs: dict[str, str] = field(default_factory=dict)  # member -> tensor it overwrote in place

    @property
    def root(self) -> str:
        return self.members[0]


def merge_buffers(tensors: Sequence[Tensor]) -> list[Buffer]:
    """Resolve views and in-place reuse, in definition order (tensors are given in it)."""
    buffers: list[Buffer] = []
    owner: dict[str, Buffer] = {}
    for t in tensors:
        buf = owner[t.view_of] if t.view_of is not None else _inplace_target(t, owner)
        if buf is None:
            buf = Buffer([t.name], t.size, t.first, t.last, t.external)
            buffers.append(buf)
        else:
            if t.view_of is not None:
                buf.views[t.name] = t.view_of
            else:
                buf.handoffs[t.name] = next(n for n in t.inplace_of if owner.get(n) is buf)
            buf.members.append(t.name)
            buf.last = max(buf.last, t.last)
        owner[t.name] = buf
    return buffers


def _inplace_target(t: Tensor, owner: dict[str, Buffer]) -> Buffer | None:
    for name in t.inplace_of:
        buf = owner.get(name)
        if buf is not None and not buf.external and buf.last == t.first and buf.size == t.size:
            return buf
    return None


def place(buffers: Sequence[Buffer], align: int = ALIGN) -> tuple[dict[str, int], int]:
    """Greedy by size, first fit. Returns (root name -> byte offset, arena size)."""
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.root))
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[str, int] = {}
    for buf in order:
        offset = _first_fit(buf, placed, align)
        offsets[buf.root] = offset
        placed.append((offset, buf))
    arena = max((align_up(o + b.size, align) for o, b in placed), default=0)
    return offsets, arena


def _first_fit(buf: Buffer, placed: list[tuple[int, Buffer]], align: int) -> int:
    live = sorted(((o, b) for o, b in placed if _overlap(b, buf)), key=lambda ob: ob[0])
    offset = 0
    for o, b in live:
        if offset + buf.size <= o:
            break
        offset = max(offset, align_up(o + b.size, align))
    return offset


def _overlap(a: Buffer, b: Buffer) -> bool:
    return a.first <= b.last and b.first <= a.last


def lower_bound(buffers: Iterable[Buffer], align: int = ALIGN) -> int:
    """Max over ops of the total (aligned) size of the buffers live at that op:
    no placement of these buffers can use a smaller arena."""
    events: dict[int, int] = {}
    for b in buffers:
        events[b.first] = events.get(b.first, 0) + align_up(b.size, align)
        events[b.last + 1] = events.get(b.last + 1, 0) - align_up(b.size, align)
    peak = live = 0
    for t in sorted(events):
        live += events[t]
        peak = max(peak, live)
    return peak


@dataclass(frozen=True)
class Allocation:
    """Result of planning synthetic tensors: byte offset of every arena tensor."""

    offsets: dict[str, int]
    arena_size: int
    lower_bound: int
    buffers: tuple[Buffer, ...]


def plan_tensors(tensors: Sequence[Tensor], align: int = ALIGN) -> Allocation:
    """Plan tensors given in definition order; external ones get no offset."""
    buffers = merge_buffers(tensors)
    arena = [b for b in buffers if not b.external]
    roots, size = place(arena, align)
    offsets = {m: roots[b.root] for b in arena for m in b.members}
    return Allocation(offsets, size, lower_bound(arena, align), tuple(buffers))


def check_no_overlap(tensors: Sequence[Tensor], offsets: dict[str, int], buffers: Sequence[Buffer]) -> None:
    """Raise BackendError if two tensors live at one op share bytes, unless they are
    views of one storage, or one was written in place over the other at the op
    where the other dies."""
    storage: dict[str, str] = {}     # tensor -> the tensor whose result fills its bytes
    overwrote: dict[str, str] = {}   # in-place result -> storage it overwrote
    for b in buffers:
        for m in b.members:
            storage[m] = storage[b.views[m]] if m in b.views else m
        overwrote.update(b.handoffs)
    placed = [t for t in tensors if t.name in offsets]
    for i, a in enumerate(placed):
        for b in placed[i + 1:]:
            live_together = a.first <= b.last and b.first <= a.last
            lo, hi = offsets[a.name], offsets[b.name]
            share = lo < hi + b.size and hi < lo + a.size
            if not (live_together and share) or storage[a.name] == storage[b.name]:
                continue
            if not (_handoff(a, b, storage, overwrote) or _handoff(b, a, storage, overwrote)):
                raise BackendError(f"memory plan overlaps live tensors %{a.name} and %{b.name}")


def _handoff(old: Tensor, new: Tensor, storage: dict[str, str], overwrote: dict[str, str]) -> bool:
    prev = overwrote.get(new.name)
    return prev is not None and storage[prev] == storage[old.name] and old.last == new.first


# ---- graphs ---------------------------------------------------------------

@dataclass(frozen=True)
class Location:
    """Where a value lives: `space` is "arena", "input", "output" or "const";
    `offset` is in bytes from the start of that space (for "const": 0 within the
    array of const value `const`)."""

    space: str
    offset: int
    const: str | None = None


@dataclass(frozen=True)
class OutputCopy:
    """Copy value `source` into output slot `index` after the last op."""

    index: int
    source: str


@dataclass(frozen=True)
class Plan:
    locations: dict[str, Location]
    arena_size: int
    lower_bound: int
    output_copies: tuple[OutputCopy, ...]
    tensors: tuple[Tensor, ...]
    buffers: tuple[Buffer, ...]

    def check(self) -> None:
        """No two simultaneously-live tensors overlap in any space."""
        for space in ("arena", "output"):
            offsets = {n: loc.offset for n, loc in self.locations.items() if loc.space == space}
            check_no_overlap(self.tensors, offsets, self.buffers)
        for t in self.tensors:
            loc = self.locations[t.name]
            if loc.space == "arena" and loc.offset + t.size > self.arena_size:
                raise BackendError(f"memory plan places %{t.name} past the end of the arena")


InplaceRule = Callable[[Op], Sequence[int]]
ViewRule = Callable[[Op], bool]
ScratchRule = Callable[[Op], int]
SCRATCH_SUFFIX = "#scratch"   # a value name never contains '#'


def scratch_name(op: Op) -> str:
    """The planned name of op's scratch buffer (bytes only it uses, while it runs)."""
    return op.result.name + SCRATCH_SUFFIX


def _is_reshape(op: Op) -> bool:
    return op.kind == "reshape"


def plan_graph(graph: Graph, inplace_operands: InplaceRule, align: int = ALIGN, *,
               is_view: ViewRule = _is_reshape, scratch: ScratchRule | None = None) -> Plan:
    """Plan a graph. `inplace_operands(op)` lists operand indices the op's kernel
    may overwrite with its result; `is_view(op)` says the result shares operand 0's
    storage (default: the `reshape` ops); `scratch(op)` asks for that many bytes of
    arena, live only during op, located under scratch_name(op)."""
    tensors = graph_tensors(graph, inplace_operands, is_view, scratch)
    buffers = merge_buffers(tensors)
    owner = {m: b for b in buffers for m in b.members}
    slots = _output_slots(graph)
    pinned: dict[str, int] = {}   # buffer root -> output slot byte offset
    copies = []
    for index, v in enumerate(graph.outputs):
        buf = owner[v.name]
        if buf.external or buf.root in pinned:
            copies.append(OutputCopy(index, v.name))
        else:
            pinned[buf.root] = slots[index]
    arena = [b for b in buffers if not b.external and b.root not in pinned]
    roots, size = place(arena, align)
    locations = _locations(graph, buffers, roots, pinned)
    return Plan(locations, size, lower_bound(arena, align), tuple(copies), tuple(tensors), tuple(buffers))


def graph_tensors(graph: Graph, inplace_operands: InplaceRule, is_view: ViewRule = _is_reshape,
                  scratch: ScratchRule | None = None) -> list[Tensor]:
    ops = list(graph.compute_ops())
    end = len(ops)
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        for v in op.operands:
            last[v.name] = i
    for v in graph.outputs:
        last[v.name] = end
    tensors = [Tensor(v.name, v.type.nbytes, -1, last.get(v.name, -1), external=True) for v in graph.inputs]
    tensors += [Tensor(op.result.name, op.result.type.nbytes, -1, last.get(op.result.name, -1), external=True)
                for op in graph.const_ops()]
    for i, op in enumerate(ops):
        name = op.result.name
        view_of = op.operands[0].name if is_view(op) else None
        inplace = tuple(op.operands[j].name for j in inplace_operands(op))
        tensors.append(Tensor(name, op.result.type.nbytes, i, last.get(name, i), view_of, inplace))
        extra = scratch(op) if scratch is not None else 0
        if extra:
            tensors.append(Tensor(scratch_name(op), extra, i, i))
    return tensors


def _output_slots(graph: Graph) -> list[int]:
    slots, offset = [], 0
    for v in graph.outputs:
        slots.append(offset)
        offset += v.type.nbytes
    return slots


def _locations(graph: Graph, buffers: list[Buffer], roots: dict[str, int],
               pinned: dict[str, int]) -> dict[str, Location]:
    base: dict[str, Location] = {}
    offset = 0
    for v in graph.inputs:
        base[v.name] = Location("input", offset)
        offset += v.type.nbytes
    for op in graph.const_ops():
        base[op.result.name] = Location("const", 0, op.result.name)
    for b in buffers:
        if b.root in pinned:
            base[b.root] = Location("output", pinned[b.root])
        elif not b.external:
            base[b.root] = Location("arena", roots[b.root])
    return {m: base[b.root] for b in buffers for m in b.members}
