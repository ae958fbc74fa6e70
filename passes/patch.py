"""`patch`: patch-based execution of the first stage (MCUNetV2, Lin et al. 2021).

The early layers of a vision net hold the largest feature maps, so the static arena is sized by
them. This pass computes a prefix "stage" of the graph patch by patch: the stage output is cut
into a `patches` x `patches` grid, each patch is computed from the piece of the stage input it
depends on (its receptive field, with the overlapping halo recomputed by each neighbour), and the
pieces are assembled with `cat` (along W per patch row, then the rows along H) before the rest of
the graph runs. While the stage runs only one patch's intermediates are live beside the stage
input and the pieces of the stage output done so far, instead of two whole early feature maps.

**The stage.** A prefix of the graph starting at its (rank-4) input, made of spatially local ops,
decided by registry traits only:
- window layers (`Trait.LAYER | Trait.PADDED_WINDOW`: conv2d with any stride, padding, groups
  including depthwise, dilation, and its fused activation);
- pointwise unary ops: activations (`Trait.ACTIVATION`) and the int8 boundary and table ops
  (`Trait.INT_ONLY` whose result has operand 0's shape and whose other operands are consts: the
  input `quantize`, `lut`, `dequantize`);
- binary elementwise ops (`Trait.ELEMENTWISE`) whose operands are stage values of the result's
  shape (a residual add inside the stage).
Pools are left out (a padded or ceil_mode window would need the -inf / count-exclusion border
rules at patch edges). Every value the stage computes must be used inside it, except the stage
output (the last op's result): the stage is cut where a single tensor crosses.

**The input.** With `input=patched` the input `quantize` of an int8 graph is part of the stage:
each patch crops its receptive field out of the float input (which lives in the caller's buffer,
outside the arena) and quantizes it, so no whole copy of the input is kept; the float crop costs
4 bytes an element while it lives. With `input=whole` the stage starts after the quantize, whose
result stays one tensor live until the last patch. `input=auto` (the default) tries both. A
crop is one `pad` with negative pads on H and W: two `slice`s would make a whole-width strip
in between, as large as a patch row.

**The receptive field.** Rows and columns are independent; along one axis a patch needs output
positions [o0, o1) of a value. For a conv with kernel k, stride s, dilation d, begin padding p
and input length n, that needs input positions [a, b) with a = o0 s - p and
b = (o1 - 1) s - p + d (k - 1) + 1 of the zero-padded input. The part of [a, b) outside [0, n)
is exactly the zero padding at the real image border, so the patch's conv reads the slice
[max(a, 0), min(b, n)) with padding (max(a, 0) - a, b - min(b, n)) -- zero padding only where
the whole tensor has it (b <= n + the original end padding, since o1 <= the output length).
Pointwise and elementwise ops need the region they compute. Walking the stage backwards from the
patch's output box gives each value the bounding box of what its users need; walking forwards,
each op computes its value over that box from its operands' pieces (cropped where a piece is
larger than one user needs), and the stage input's piece is a crop of it.

**What is exact.** Every output element of a patch is computed by the same op, from the same
input elements, weights and zero padding as in the unpatched graph, and the crops (`pad` with
negative pads only) and `cat` only move elements. In an int8 graph every new value keeps the
quant params of the value it is a piece of (pad is SAME_QUANT; the cats join pieces with the
output's own quant params, ratio 1, an exact copy), and integer sums do not depend on their
order, so the int8 result is bit-exact with the unpatched graph by construction. A float graph
computes the same sums of the same products; the tests find the float outputs equal too, but a
BLAS-backed sum's order is not promised, so that is observed, not guaranteed. The cost is the
recomputed halos: more MACs (docs/memory.md has the figures).

**Choosing the stage end.** `layers=N` ends the stage after the graph's first N compute ops
(the input quantize counts); `layers=auto` (the default) tries every end where a single tensor
crosses (with either input mode) and keeps the patched graph with the lowest peak of a live-bytes
model (`live_peak`): the bytes of the non-external tensors live at each op (a tensor is live from
the op defining it to its last reader, both included; graph inputs and consts are external, as the
static planner has them), less the smaller of operand 0 and the result where the op may overwrite
an operand 0 that dies there (elementwise and pointwise ops, int8 1x1 stride-1 and depthwise
convs: the planner's in-place rules). The earlier end wins a tie. The model follows the
planner's lower bound closely, but not its greedy placement or the im2col scratch buffers, so
`layers=auto` is not always the end with the smallest planned arena (docs/memory.md compares
them); the pass does not call the backends.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

from tinyc.errors import PassError
from tinyc.ir import Graph, Op, Value
from tinyc.ops import OPS, Trait
from tinyc.passes.base import Pass, PassContext, check, option, register
from tinyc.rewrite import Builder

Box = tuple[int, int, int, int]   # h0, h1, w0, w1 (half-open)


# ---- which ops may be in a stage (registry traits, never op names) ------------------------------

def _is_window(op: Op) -> bool:
    d = OPS[op.kind]
    return (d.has(Trait.LAYER) and d.has(Trait.PADDED_WINDOW) and op.result.type.rank == 4
            and all(k in op.attrs for k in ("stride", "padding", "dilation")))


def _is_pointwise(op: Op, consts: set[int]) -> bool:
    d = OPS[op.kind]
    if not op.operands or op.operands[0].type.shape != op.result.type.shape or id(op.operands[0]) in consts:
        return False
    if d.has(Trait.ACTIVATION):
        return len(op.operands) == 1
    if d.has(Trait.INT_ONLY):
        return all(id(v) in consts for v in op.operands[1:])
    return False


def _is_elementwise(op: Op, consts: set[int]) -> bool:
    return (OPS[op.kind].has(Trait.ELEMENTWISE)
            and all(id(v) not in consts and v.type.shape == op.result.type.shape for v in op.operands))


def _local(op: Op, consts: set[int]) -> bool:
    return _is_window(op) or _is_pointwise(op, consts) or _is_elementwise(op, consts)


def _dtype_changes(op: Op) -> bool:
    return op.result.type.dtype != op.operands[0].type.dtype


# ---- the receptive field ----------------------------------------------------------------------

def _conv_axis(o0: int, o1: int, n: int, k: int, s: int, d: int, p: int) -> tuple[int, int, int, int]:
    """Input slice [lo, hi) and the (begin, end) zero padding a conv needs for outputs [o0, o1)."""
    a = o0 * s - p
    b = (o1 - 1) * s - p + d * (k - 1) + 1
    lo, hi = max(a, 0), min(b, n)
    return lo, hi, lo - a, b - hi


def _needs(op: Op, box: Box, consts: set[int]) -> list[tuple[Value, Box]]:
    """The region of each non-const operand that computing `box` of op's result reads."""
    if not _is_window(op):
        return [(v, box) for v in op.operands if id(v) not in consts]
    x, w = op.operands[0], op.operands[1]
    (_, _, n_h, n_w), (_, _, kh, kw) = x.type.shape, w.type.shape
    (sh, sw), (dh, dw), (top, left, _, _) = op.attrs["stride"], op.attrs["dilation"], op.attrs["padding"]
    h0, h1, _, _ = _conv_axis(box[0], box[1], n_h, kh, sh, dh, top)
    w0, w1, _, _ = _conv_axis(box[2], box[3], n_w, kw, sw, dw, left)
    return [(x, (h0, h1, w0, w1))]


def _union(a: Box | None, b: Box) -> Box:
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _splits(n: int, parts: int) -> list[tuple[int, int]]:
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


# ---- the stage ---------------------------------------------------------------------------------

@dataclass
class Stage:
    input: Value
    start: int                    # compute ops of the graph before the stage (the whole input quantize)
    ops: list[Op]                 # the longest local prefix, in graph order
    ends: list[int]               # where the stage may end, in compute ops of the graph: after the
    #                               end-th op a single tensor, the result of ops[end - start - 1], crosses

    def prefix(self, end: int) -> list[Op]:
        return self.ops[:end - self.start]


def find_stage(graph: Graph, whole_input: bool) -> Stage:
    consts = {id(op.result) for op in graph.const_ops()}
    inputs = [v for v in graph.inputs if v.type.rank == 4]
    check(len(inputs) >= 1, f"patch: @{graph.name} has no rank-4 (image) input to patch",
          "patch-based execution is for conv nets on NCHW images")
    x = inputs[0]
    compute = list(graph.compute_ops())
    users = graph.users()
    start = 0
    if whole_input and compute and compute[0].operands and compute[0].operands[0] is x \
            and _is_pointwise(compute[0], consts) and _dtype_changes(compute[0]) \
            and len(users.get(id(x), [])) == 1:
        x, start = compute[0].result, 1            # the input quantize stays whole
    inside = {id(x)}
    ops: list[Op] = []
    for op in compute[start:]:
        if not _local(op, consts) or any(id(v) not in inside and id(v) not in consts for v in op.operands):
            break
        ops.append(op)
        inside.add(id(op.result))
    # stage lengths where the only value used after the prefix is its last op's result
    pos = {id(op): i for i, op in enumerate(compute)}
    last_use: dict[int, int] = {}
    for op in compute:
        for v in op.operands:
            last_use[id(v)] = max(last_use.get(id(v), -1), pos[id(op)])
    outputs = {id(v) for v in graph.outputs}
    ends = []
    for k in range(1, len(ops) + 1):
        boundary = pos[id(ops[k - 1])]
        escaping = [op.result for op in ops[:k]
                    if last_use.get(id(op.result), -1) > boundary or id(op.result) in outputs]
        if escaping == [ops[k - 1].result] and any(_is_window(op) for op in ops[:k]) \
                and ops[k - 1].result.type.rank == 4:
            ends.append(start + k)
    return Stage(x, start, ops, ends)


# ---- the rewrite --------------------------------------------------------------------------------

def patch_stage(graph: Graph, stage_input: Value, ops: list[Op], patches: int) -> Graph:
    """A copy of `graph` with `ops` (a stage, from `stage_input`) computed on a patches x patches
    grid of its output. `graph` is left alone."""
    g = graph.copy()
    vmap = {v.name: v for v in [*g.inputs, *(op.result for op in g.ops)]}
    names = {op.result.name for op in ops}
    ops = [op for op in g.ops if op.result.name in names]
    x = vmap[stage_input.name]
    consts = {id(op.result) for op in g.const_ops()}
    out = ops[-1].result
    _, _, oh, ow = out.type.shape
    check(oh >= patches and ow >= patches,
          f"patch: the stage output %{out.name} is {oh}x{ow}, smaller than a {patches}x{patches} grid",
          "use fewer patches, or a shorter stage (layers=N)")
    b = Builder.after(g, ops[-1])
    rows = []
    for r, (h0, h1) in enumerate(_splits(oh, patches)):
        row = []
        for c, (w0, w1) in enumerate(_splits(ow, patches)):
            row.append(_build_patch(b, x, ops, consts, (h0, h1, w0, w1), f"p{r}{c}"))
        rows.append(row[0] if len(row) == 1 else
                    b.create("cat", row, {"axis": 3}, name=f"{out.name}.row{r}", quant=out.type.quant))
    whole = b.create("cat", rows, {"axis": 2}, name=f"{out.name}.patched", quant=out.type.quant)
    g.replace_uses(out, whole)
    g.remove_dead()
    return g


def _build_patch(b: Builder, x: Value, ops: list[Op], consts: set[int], box: Box, tag: str) -> Value:
    need: dict[int, Box] = {id(ops[-1].result): box}
    for op in reversed(ops):                       # receptive field, backwards
        if id(op.result) not in need:
            continue
        for v, region in _needs(op, need[id(op.result)], consts):
            need[id(v)] = _union(need.get(id(v)), region)
    pieces: dict[int, tuple[Value, Box]] = {}
    full = (0, x.type.shape[2], 0, x.type.shape[3])
    pieces[id(x)] = (_crop(b, x, full, need[id(x)], f"{x.name}.{tag}"), need[id(x)])
    for op in ops:                                  # the patch's ops, forwards
        if id(op.result) not in need:
            continue
        region = need[id(op.result)]
        attrs = copy.deepcopy(op.attrs)
        wanted = dict((id(v), r) for v, r in _needs(op, region, consts))
        operands = []
        for v in op.operands:
            if id(v) in consts:
                operands.append(v)                  # weights: the same const values
                continue
            piece, have = pieces[id(v)]
            operands.append(_crop(b, piece, have, wanted[id(v)], f"{v.name}.{tag}"))
        if _is_window(op):
            _, _, n_h, n_w = op.operands[0].type.shape
            _, _, kh, kw = op.operands[1].type.shape
            (sh, sw), (dh, dw), (top, left, _, _) = attrs["stride"], attrs["dilation"], attrs["padding"]
            _, _, pt, pb = _conv_axis(region[0], region[1], n_h, kh, sh, dh, top)
            _, _, pl, pr = _conv_axis(region[2], region[3], n_w, kw, sw, dw, left)
            attrs["padding"] = [pt, pl, pb, pr]
        y = b.create(op.kind, operands, attrs, name=f"{op.result.name}.{tag}", loc=op.loc,
                     quant=op.result.type.quant)
        want = (op.result.type.shape[:2] + (region[1] - region[0], region[3] - region[2]))
        if y.type.shape != want or y.type.dtype != op.result.type.dtype:
            raise PassError(f"internal error: patch {tag} of %{op.result.name} came out "
                            f"{y.type.dtype}{list(y.type.shape)}, not {op.result.type.dtype}{list(want)}",
                            hint="this is a bug in tinyc; please report it with the model")
        pieces[id(op.result)] = (y, region)
    return pieces[id(ops[-1].result)][0]


def _crop(b: Builder, v: Value, have: Box, want: Box, name: str) -> Value:
    """`v` holds region `have` of a tensor; crop it to `want` with one `pad` of negative pads
    (a 2-D crop in one copy: two `slice`s would make a whole-width strip in between)."""
    check(want[0] < want[1] and want[2] < want[3],
          f"patch: piece %{name} would be empty (a patch inside the padding only)", "use fewer patches")
    if have == want:
        return v
    begin = [0, 0, have[0] - want[0], have[2] - want[2]]
    end = [0, 0, want[1] - have[1], want[3] - have[3]]
    return b.create("pad", [v], {"pads": begin + end, "value": 0.0}, name=name, quant=v.type.quant)


def _in_place(op: Op, consts: set[int]) -> bool:
    """Whether the planner may put op's result over its operand 0 when that dies here (the model's
    mirror of the backends' in-place rules): elementwise and same-dtype pointwise ops, and int8 1x1
    stride-1 and depthwise convs (their kernels read what they overwrite first)."""
    x, y = op.operands[0], op.result
    if _is_window(op):
        _, _, kh, kw = op.operands[1].type.shape
        depthwise = op.attrs.get("groups") == x.type.shape[1] == y.type.shape[1]
        pointwise = (kh, kw) == (1, 1) and list(op.attrs["stride"]) == [1, 1]
        return y.type.dtype == "i8" and (depthwise or pointwise)
    return (_is_pointwise(op, consts) and x.type.dtype == y.type.dtype) or _is_elementwise(op, consts)


def live_peak(graph: Graph) -> int:
    """The live-bytes model: max over compute ops of the bytes of the non-external tensors live
    there (a tensor lives from its defining op to its last reader; graph outputs to the end), less
    the smaller of operand 0 and the result where the op may work in place over an operand 0
    that dies there."""
    consts = {id(op.result) for op in graph.const_ops()}
    compute = list(graph.compute_ops())
    pos = {id(op.result): i for i, op in enumerate(compute)}
    last = dict(pos)
    for i, op in enumerate(compute):
        for v in op.operands:
            if id(v) in pos:
                last[id(v)] = i
    for v in graph.outputs:
        if id(v) in pos:
            last[id(v)] = len(compute)
    delta = [0] * (len(compute) + 2)
    for op in compute:
        k = id(op.result)
        delta[pos[k]] += op.result.type.nbytes
        delta[last[k] + 1] -= op.result.type.nbytes
    peak = live = 0
    for i, op in enumerate(compute):
        live += delta[i]
        x = op.operands[0] if op.operands else None
        shared = 0
        if x is not None and id(x) in pos and last[id(x)] == i and _in_place(op, consts):
            shared = min(x.type.nbytes, op.result.type.nbytes)
        peak = max(peak, live - shared)
    return peak


@register
@dataclass(frozen=True)
class Patch(Pass):
    """Patch-based execution of the first stage (MCUNetV2): compute the leading convs (and the
    pointwise/elementwise ops between them) on a patches x patches grid of the stage output, each
    patch from its receptive field of the input (halos recomputed), then assemble the stage output
    with cat. int8 is bit-exact with the unpatched graph (float equal in the tests); lowers the static arena when the early feature maps
    dominate it, at the cost of the halos' extra MACs."""

    name = "patch"
    patches: int = option(2, "the grid side: the stage output is cut into patches x patches pieces (>= 2)")
    layers: int | Literal["auto"] = option("auto", "end the stage after the graph's first N compute ops; "
                                                   "auto: the end with the lowest live-bytes peak")
    input: Literal["auto", "patched", "whole"] = option(
        "auto", "patched: each patch quantizes its crop of the float input; whole: the input quantize stays "
                "one tensor (int8 graphs); auto: the lower live-bytes peak")

    def __post_init__(self):
        if self.patches < 2:
            raise ValueError(f"patches={self.patches} must be >= 2")
        if self.layers != "auto" and (not isinstance(self.layers, int) or self.layers < 1):
            raise ValueError(f"layers={self.layers} must be a positive integer or auto")

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        where = f"@{graph.name}"
        modes = [self.input == "whole"] if self.input != "auto" else [False, True]
        stages = [find_stage(graph, whole) for whole in modes]
        stages = [st for i, st in enumerate(stages) if not any(st.input is o.input for o in stages[:i])]
        check(any(st.ends for st in stages),
              f"patch: {where} has no stage to patch: it does not start with a conv (after pointwise ops "
              f"such as the input quantize) on its image input whose output is a single tensor",
              "patch-based execution is for conv nets on images; leave the patch pass out for this model")
        if self.layers != "auto":
            ok = [st for st in stages if self.layers in st.ends]
            longest = max(stages, key=lambda st: st.start + len(st.ops))
            check(bool(ok), f"patch: layers={self.layers} does not end a stage of {where}: "
                  + (f"the first {longest.start + len(longest.ops)} compute ops are all it may hold"
                     if self.layers > longest.start + len(longest.ops)
                     else f"after its first {self.layers} compute ops more than one tensor crosses, "
                          f"or no conv is among them"),
                  "valid values: " + ", ".join(map(str, sorted({e for st in stages for e in st.ends})))
                  + " (or layers=auto)")
            candidates = [(st, self.layers) for st in ok]
        else:
            candidates = [(st, k) for st in stages for k in st.ends
                          if min(st.prefix(k)[-1].result.type.shape[2:]) >= self.patches]
            check(bool(candidates), f"patch: every stage output of {where} is smaller than a "
                  f"{self.patches}x{self.patches} grid", "use fewer patches")
        best = None
        for st, k in candidates:
            patched = patch_stage(graph, st.input, st.prefix(k), self.patches)
            peak = live_peak(patched) if len(candidates) > 1 else 0
            if best is None or peak < best[0]:
                best = (peak, patched)
        return best[1]
