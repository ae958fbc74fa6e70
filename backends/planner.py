"""Static memory planner: every intermediate tensor gets a fixed offset in one arena.

Lifetimes are in compute-op indices (consts excluded): a tensor is live from the op
defining it to the last op reading it, both included, so an op's operands and its
result never share memory unless the op is allowed to work in place.

Before placement, tensors are merged into *buffers* that share storage:
- a view (reshape) always shares its operand's buffer;
- an in-place op (elementwise, activation) may take over an operand's buffer when
  that buffer dies at this op and has exactly the result's size;
- an op whose kernel reads each part of an operand before it writes over it (int8 1x1
  and depthwise convs, c_ops_int8) may declare an *overlap*: its result may start
  `offset` bytes after that operand's start (negative: before it) when the operand's
  buffer dies at this op. The buffer then spans both (its members at offsets within it).
Buffers are then placed greedy-by-size, first-fit, as TFLM's GreedyMemoryPlanner:
largest first, each at the lowest aligned offset that does not overlap a placed
buffer whose lifetime intersects its own. A buffer built from overlaps is placed as
the rigid group of its members (each its own bytes and lifetime), so another tensor
may use the bytes of the group's members that are not live yet or no longer.

In a graph, inputs and consts are *external*: they stay in the caller's input
buffer / in flash. Views of them stay there too, and nothing is written over
them in place. A buffer holding a graph output lives in the caller's output
buffer; an output that cannot (external, or a second output of one buffer) is
copied there at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    overlap_of: tuple[tuple[str, int], ...] = ()   # (tensor, offset): may start at its start + offset
                                                   # if it dies at `first` (tried after inplace_of)


@dataclass(frozen=True)
class Overlap:
    """An in-place rule's answer beside plain operand indices: the result may start `offset`
    bytes after operand `operand`'s start (negative: before it) and overlap it, because the
    kernel has read every byte of the operand it overwrites by the time it writes there."""

    operand: int
    offset: int


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
    offsets: dict[str, int] = field(default_factory=dict)   # member -> byte offset in the buffer (0 if absent)
    spans: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # member -> (size, first, last)
    shifts: dict[str, int] = field(default_factory=dict)    # overlap member -> its offset minus the overwritten one's

    @property
    def root(self) -> str:
        return self.members[0]


def merge_buffers(tensors: Sequence[Tensor]) -> list[Buffer]:
    """Resolve views and in-place reuse, in definition order (tensors are given in it)."""
    buffers: list[Buffer] = []
    owner: dict[str, Buffer] = {}
    sizes: dict[str, int] = {}
    for t in tensors:
        sizes[t.name] = t.size
        if t.view_of is not None:
            buf, prev, shift = owner[t.view_of], t.view_of, 0
        else:
            buf, prev, shift = _inplace_target(t, owner, sizes)
        if buf is None:
            buf = Buffer([t.name], t.size, t.first, t.last, t.external)
            buffers.append(buf)
            buf.spans[t.name] = (t.size, t.first, t.last)
        else:
            buf.spans[t.name] = (t.size, t.first, t.last)
            at = buf.offsets.get(prev, 0) + shift
            if at < 0:                      # the buffer grows at the front: move every member up
                buf.offsets = {m: buf.offsets.get(m, 0) - at for m in buf.members}
                buf.size -= at
                at = 0
            if at:
                buf.offsets[t.name] = at
            buf.size = max(buf.size, at + t.size)
            if t.view_of is not None:
                buf.views[t.name] = t.view_of
            else:
                buf.handoffs[t.name] = prev
                if shift:
                    buf.shifts[t.name] = shift
            buf.members.append(t.name)
            buf.last = max(buf.last, t.last)
        owner[t.name] = buf
    return buffers


def _inplace_target(t: Tensor, owner: dict[str, Buffer],
                    sizes: dict[str, int]) -> tuple[Buffer | None, str | None, int]:
    """(buffer, the tensor overwritten, result offset minus its offset), or (None, None, 0)."""
    for name in t.inplace_of:
        buf = owner.get(name)
        if buf is not None and not buf.external and buf.last == t.first and sizes[name] == t.size:
            return buf, name, 0
    for name, shift in t.overlap_of:
        buf = owner.get(name)
        if buf is not None and not buf.external and buf.last == t.first:
            return buf, name, shift
    return None, None, 0


def place(buffers: Sequence[Buffer], align: int = ALIGN) -> tuple[dict[str, int], int]:
    """Greedy by size, first fit. Returns (root name -> byte offset, arena size).
    With overlap groups (see _parts) also first fit in order of first use, and the smaller
    arena wins: a group is one big block placed first by size, which can shut out the
    tensors live just before its largest member."""
    best = _place(sorted(buffers, key=lambda b: (-b.size, b.first, b.root)), align)
    if any(len(_parts(b)) > 1 for b in buffers):
        other = _place(sorted(buffers, key=lambda b: (b.first, -b.size, b.root)), align)
        if other[1] < best[1]:
            best = other
    return best


def _place(order: Sequence[Buffer], align: int) -> tuple[dict[str, int], int]:
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[str, int] = {}
    for buf in order:
        offset = _first_fit(buf, placed, align)
        offsets[buf.root] = offset
        placed.append((offset, buf))
    arena = max((align_up(o + b.size, align) for o, b in placed), default=0)
    return offsets, arena


def _parts(buf: Buffer) -> list[tuple[int, int, int, int]]:
    """(offset, size, first, last) of the members: the bytes each needs, and when."""
    if not buf.offsets and all(size == buf.size for size, _, _ in buf.spans.values()):   # one block
        return [(0, buf.size, buf.first, buf.last)]
    return [(buf.offsets.get(m, 0), *buf.spans[m]) for m in buf.members]


def _first_fit(buf: Buffer, placed: list[tuple[int, Buffer]], align: int) -> int:
    """Lowest aligned offset where no part of buf meets a part of a placed buffer live at once."""
    mine = _parts(buf)
    banned: list[tuple[int, int]] = []    # open intervals of offsets where a part collides
    for o, b in placed:
        if not _overlap(b, buf):
            continue
        for po, ps, pf, pl in _parts(b):
            for qo, qs, qf, ql in mine:
                if pf <= ql and qf <= pl:
                    banned.append((o + po - qo - qs, o + po + ps - qo))
    for offset in sorted({0, *(align_up(hi, align) for _, hi in banned if hi > 0)}):
        if not any(lo < offset < hi for lo, hi in banned):
            return offset
    raise AssertionError("unreachable: past every placed buffer is free")


def _overlap(a: Buffer, b: Buffer) -> bool:
    return a.first <= b.last and b.first <= a.last


def lower_bound(buffers: Iterable[Buffer], align: int = ALIGN) -> int:
    """Max over ops of the total (aligned) size of the bytes live at that op: whole buffers,
    and of an overlap group the union of its members live then (an operand and the result
    written over it count once). No placement of these buffers can use a smaller arena."""
    events: dict[int, int] = {}
    groups = []
    for b in buffers:
        parts = _parts(b)
        if len(parts) == 1:
            events[b.first] = events.get(b.first, 0) + align_up(b.size, align)
            events[b.last + 1] = events.get(b.last + 1, 0) - align_up(b.size, align)
        else:
            groups.append(parts)
    steps = sorted(set(events) | {f for parts in groups for _, _, f, _ in parts})
    peak = live = 0
    for t in steps:
        live += events.get(t, 0)
        peak = max(peak, live + sum(_union(parts, t, align) for parts in groups))
    return peak


def _union(parts: list[tuple[int, int, int, int]], t: int, align: int) -> int:
    """Bytes covered by the parts live at op t (aligned)."""
    spans = sorted((o, o + s) for o, s, f, l in parts if f <= t <= l)
    total, end = 0, None
    for lo, hi in spans:
        if end is None or lo >= end:
            total += hi - lo
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return align_up(total, align)


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
    offsets = {m: roots[b.root] + b.offsets.get(m, 0) for b in arena for m in b.members}
    return Allocation(offsets, size, lower_bound(arena, align), tuple(buffers))


def check_no_overlap(tensors: Sequence[Tensor], offsets: dict[str, int], buffers: Sequence[Buffer]) -> None:
    """Raise BackendError if two tensors live at one op share bytes, unless they are
    views of one storage, or one was written in place over the other at the op
    where the other dies: at the same offset (same-size in place), or at exactly the
    offset its overlap declared (Tensor.overlap_of)."""
    storage: dict[str, str] = {}     # tensor -> the tensor whose result fills its bytes
    overwrote: dict[str, tuple[str, int]] = {}   # in-place result -> (storage it overwrote, offset from it)
    for b in buffers:
        for m in b.members:
            storage[m] = storage[b.views[m]] if m in b.views else m
        overwrote.update((m, (prev, b.shifts.get(m, 0))) for m, prev in b.handoffs.items())
    placed = [t for t in tensors if t.name in offsets]
    for i, a in enumerate(placed):
        for b in placed[i + 1:]:
            live_together = a.first <= b.last and b.first <= a.last
            lo, hi = offsets[a.name], offsets[b.name]
            share = lo < hi + b.size and hi < lo + a.size
            if not (live_together and share) or storage[a.name] == storage[b.name]:
                continue
            if not (_handoff(a, b, storage, overwrote, offsets) or _handoff(b, a, storage, overwrote, offsets)):
                raise BackendError(f"memory plan overlaps live tensors %{a.name} and %{b.name}")


def _handoff(old: Tensor, new: Tensor, storage: dict[str, str], overwrote: dict[str, tuple[str, int]],
             offsets: dict[str, int]) -> bool:
    """new was written over old's storage at the op where old dies, at the offset it declared."""
    prev, shift = overwrote.get(new.name, (None, 0))
    return (prev is not None and storage[prev] == storage[old.name] and old.last == new.first
            and offsets[new.name] - offsets[old.name] == shift)


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

    def arena_tensors(self) -> list[dict]:
        """The tensors placed in the arena, in definition order, for report.json and the bench
        pictures: name, byte offset, size, and the ops it is live over [first, last] (compute-op
        indices; an output copied out at the end lives to len(ops)). Scratch buffers are named
        `result#scratch`. align_up(max(offset + size)) is the arena size."""
        return [{"name": t.name, "offset": self.locations[t.name].offset, "size": t.size,
                 "first": t.first, "last": t.last}
                for t in self.tensors if self.locations[t.name].space == "arena"]


InplaceRule = Callable[[Op], Sequence["int | Overlap"]]
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
    may overwrite with its result (same size, same offset) and Overlap(operand, offset)
    declarations; `is_view(op)` says the result shares operand 0's storage (default: the
    `reshape` ops); `scratch(op)` asks for that many bytes of arena, live only during op,
    located under scratch_name(op).

    Overlaps are used only when they lower the arena: the graph is planned with and without
    them and the smaller arena wins (a tie keeps separate buffers). A graph output never
    takes part in an overlap (its bytes are the caller's output buffer)."""
    tensors = graph_tensors(graph, inplace_operands, is_view, scratch)
    plain = [replace(t, overlap_of=()) if t.overlap_of else t for t in tensors]
    best = _plan_graph(graph, plain, align)
    if len(plain) and any(t.overlap_of for t in tensors):
        overlapped = _plan_graph(graph, tensors, align)
        if overlapped.arena_size < best.arena_size:
            best = overlapped
    return best


def _plan_graph(graph: Graph, tensors: list[Tensor], align: int) -> Plan:
    buffers = merge_buffers(tensors)
    out_size = {v.name: v.type.nbytes for v in graph.outputs}
    tied = {m for b in buffers if any(n in out_size and (b.size != out_size[n] or b.offsets.get(n, 0))
                                      for n in b.members) for m in b.members}
    if tied:   # a buffer holding an output must be exactly the output's bytes: no overlaps in it
        tensors = [replace(t, overlap_of=()) if t.name in tied else t for t in tensors]
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
    outputs = {v.name for v in graph.outputs}
    tensors = [Tensor(v.name, v.type.nbytes, -1, last.get(v.name, -1), external=True) for v in graph.inputs]
    tensors += [Tensor(op.result.name, op.result.type.nbytes, -1, last.get(op.result.name, -1), external=True)
                for op in graph.const_ops()]
    for i, op in enumerate(ops):
        name = op.result.name
        view_of = op.operands[0].name if is_view(op) else None
        rule = tuple(inplace_operands(op)) if view_of is None else ()
        inplace = tuple(op.operands[j].name for j in rule if not isinstance(j, Overlap))
        overlap = tuple((op.operands[j.operand].name, j.offset) for j in rule
                        if isinstance(j, Overlap) and name not in outputs)
        tensors.append(Tensor(name, op.result.type.nbytes, i, last.get(name, i), view_of, inplace,
                              overlap_of=overlap))
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
    return {m: replace(base[b.root], offset=base[b.root].offset + b.offsets.get(m, 0)) if b.offsets.get(m, 0)
            else base[b.root] for b in buffers for m in b.members}
