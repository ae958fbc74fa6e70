"""Attention heads for prune-channels: find multi-head attention whose heads can be removed whole
(nn.MultiheadAttention, F.scaled_dot_product_attention and hand-written q/k/v attention as the
importer lowers them), and remove them.

An attention *region*: linears producing q, k and v (one packed in-projection or several), the
reshapes/transposes/slices that split their features into heads, scores = q @ k^T, a chain of
per-row ops (elementwise with constants that do not vary across heads, softmax or masked_softmax
over the last axis), out = p @ v, the views merging the heads back, and the output projection
(a linear over the merged features). Which features belong to which head is not read from
attributes: every element of the q/k/v linears' outputs gets a unique id, the ids go through the
view ops (their integer references), and the matmuls' batch positions give the heads: head h is
the set of (linear, feature) that q, k and v take at batch positions of head h, and its columns
of the output projection are the merged positions its outputs land on. A region qualifies when
each q/k/v operand takes, at every batch position, the same features for every token, heads take
disjoint features, and no value of the region is read outside it.

Removing head h removes its rows of the q/k/v linears, its columns of the output projection and
shrinks every view in between (reshape shapes and slice bounds follow the kept elements). The
result must equal the original graph with those columns of the output projection zeroed (which is
exactly the original minus the head): `remove_heads` checks that on random inputs and, if it does
not hold, leaves the heads alone with a note (never a silent wrong result).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinyc.interpreter import random_inputs, run
from tinyc.ir import Graph, Op, Value
from tinyc.ops import OPS
from tinyc.rewrite import reinfer

MOVES = ("regroup", "permute", "sub_range")          # channel rules of pure data movement (views)
ROW_OPS = ("along_axis", "masked_axis")             # softmax-like: independent rows of the last axis
CHECK_RTOL = 1e-4                                   # the equivalence check, relative to the output scale


@dataclass(eq=False)
class HeadRegion:
    key: str                                 # "<first q/k/v linear>.heads"
    heads: int
    linears: list[Op]                        # the q/k/v linears, graph order
    out: Op                                  # the output projection
    features: list[dict[int, np.ndarray]]    # per head: id(linear) -> its feature indices
    columns: list[np.ndarray]                # per head: output projection columns
    views: list[Op]                          # view ops between the linears and the first matmuls
    merges: list[Op]                         # view ops between the second matmul and the output projection
    core: list[Op]                           # matmuls and the per-row chain between them
    head_of_batch: np.ndarray                # the head of each batch position of the matmuls


@dataclass
class Found:
    regions: list[HeadRegion] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # attention-looking structures left alone, and why


def _rule(op: Op | None) -> str | None:
    return None if op is None else OPS[op.kind].channels


class _NoRegion(Exception):
    pass


def find_heads(graph: Graph, min_heads: int = 2) -> Found:
    """Every attention region of `graph` (of at least `min_heads` heads) whose heads can be pruned,
    and the reasons others cannot."""
    producer = {id(op.result): op for op in graph.ops}
    users = graph.users()
    consts = {id(op.result) for op in graph.const_ops()}
    outputs = {id(v) for v in graph.outputs}
    order = {id(op): i for i, op in enumerate(graph.ops)}
    found, seen = Found(), set()
    for m2 in graph.ops:
        if _rule(m2) != "contract" or id(m2) in seen:
            continue
        chain = _score_chain(m2, producer, consts)
        if chain is None:
            continue
        try:
            region = _region(m2, chain, producer, users, consts, outputs, order, min_heads)
        except _NoRegion as e:
            found.skipped.append(f"attention at %{m2.result.name}: {e}")
            continue
        if any(id(op) in seen for op in region.linears + [region.out]):
            found.skipped.append(f"attention at %{m2.result.name}: its projections serve another attention")
            continue
        seen.update(id(op) for op in region.linears + [region.out] + region.core)
        found.regions.append(region)
    return found


def _score_chain(m2: Op, producer, consts) -> list[Op] | None:
    """The ops from the scores matmul to m2's operand 0 (scores matmul first), if they are per-row
    ops (one softmax-like over the last axis, elementwise with constants); else None."""
    chain, v, rows = [], m2.operands[0], 0
    while True:
        op = producer.get(id(v))
        rule = _rule(op)
        if rule == "contract":
            return [op] + chain[::-1] if rows == 1 else None
        if rule in ROW_OPS and op.attrs.get("axis") == op.result.type.rank - 1:
            rows += 1
            if len(op.operands) > 1 and any(id(o) not in consts for o in op.operands[1:]):
                return None
        elif rule == "broadcast":
            live = [o for o in op.operands if id(o) not in consts]
            if len(live) != 1 or live[0].type.shape != op.result.type.shape:
                return None
        else:
            return None
        chain.append(op)
        v = next(o for o in op.operands if id(o) not in consts)


def _trace_back(v: Value, producer, consts) -> tuple[Op, list[Op]]:
    """The linear computing `v` through view ops, and those views (nearest the linear first)."""
    views = []
    while True:
        op = producer.get(id(v))
        rule = _rule(op)
        if rule == "features" and all(id(w) in consts for w in op.operands[1:]):
            return op, views[::-1]
        if rule not in MOVES:
            raise _NoRegion(f"%{v.name} does not come from a linear through views only")
        views.append(op)
        v = op.operands[0]


def _region(m2: Op, chain: list[Op], producer, users, consts, outputs, order, min_heads: int) -> HeadRegion:
    m1 = chain[0]
    a, b = m1.operands
    p, v = m2.operands
    ra = a.type.rank
    if ra < 3 or not (a.type.rank == b.type.rank == p.type.rank == v.type.rank) or \
            a.type.shape[:-2] != b.type.shape[:-2] or p.type.shape[:-2] != v.type.shape[:-2] or \
            a.type.shape[:-2] != p.type.shape[:-2]:
        raise _NoRegion("the matmuls broadcast or have no batch axes to hold heads")
    batch = a.type.shape[:-2]
    for op in chain[1:]:
        for o in op.operands:
            if id(o) in consts:
                s = (1,) * (op.result.type.rank - o.type.rank) + tuple(o.type.shape)
                if any(n != 1 for n in s[:ra - 2]):
                    raise _NoRegion(f"%{op.result.name} = {op.kind} has a constant that varies across heads")
    # the q/k/v linears and their views
    traced = {}
    for role, x in (("q", a), ("k", b), ("v", v)):
        traced[role] = _trace_back(x, producer, consts)
    linears = sorted({id(t[0]): t[0] for t in traced.values()}.values(), key=lambda op: order[id(op)])
    views = sorted({id(op): op for t in traced.values() for op in t[1]}.values(), key=lambda op: order[id(op)])
    # the merge views and the output projection
    merges, x = [], m2.result
    while True:
        us = users.get(id(x), [])
        if id(x) in outputs or len(us) != 1:
            raise _NoRegion(f"%{x.name} is read by {len(us)} ops or is a graph output")
        u = us[0]
        if _rule(u) == "features" and u.operands[0] is x and all(id(w) in consts for w in u.operands[1:]):
            out = u
            break
        if _rule(u) not in MOVES:
            raise _NoRegion(f"%{x.name} reaches %{u.result.name} = {u.kind}, not an output projection")
        merges.append(u)
        x = u.result
    # nothing outside the region reads its values
    inside = {id(op) for op in views + chain + [m2]}
    for op in linears + views:
        if id(op.result) in outputs or any(id(u) not in inside for u in users.get(id(op.result), [])):
            raise _NoRegion(f"%{op.result.name} is read outside the attention")
    for op in chain:
        if any(id(u) not in inside for u in users.get(id(op.result), [])):
            raise _NoRegion(f"%{op.result.name} is read outside the attention")
    # element ids through the views
    ids, base = {}, {}
    off = 0
    for lin in linears:
        n = lin.result.type.numel
        ids[id(lin.result)] = np.arange(off, off + n, dtype=np.int64).reshape(lin.result.type.shape)
        base[id(lin)] = off
        off += n
    for op in views:
        ids[id(op.result)] = _apply(op, ids[id(op.operands[0])])
    starts = np.array([base[id(lin)] for lin in linears])
    feats = np.array([lin.result.type.shape[-1] for lin in linears])

    def feature_key(arr):       # (linear index, feature) as one int: linear index * 2^32 + feature
        li = np.searchsorted(starts, arr, side="right") - 1
        return li * (1 << 32) + (arr - starts[li]) % feats[li]

    nb = int(np.prod(batch))
    ka = feature_key(ids[id(a)]).reshape(nb, *a.type.shape[-2:])        # [b, t, d]
    kb = feature_key(ids[id(b)]).reshape(nb, *b.type.shape[-2:])        # [b, d, s]
    kv = feature_key(ids[id(v)]).reshape(nb, *v.type.shape[-2:])        # [b, s, e]
    if not ((ka == ka[:, :1, :]).all() and (kb == kb[:, :, :1]).all() and (kv == kv[:, :1, :]).all()):
        raise _NoRegion("q, k or v take different features at different tokens")
    ga, gb, gv = ka[:, 0, :], kb[:, :, 0], kv[:, 0, :]
    triples, head_of = {}, np.zeros(nb, np.int64)
    for i in range(nb):
        t = (tuple(sorted(set(ga[i].tolist()))), tuple(sorted(set(gb[i].tolist()))), tuple(sorted(set(gv[i].tolist()))))
        head_of[i] = triples.setdefault(t, len(triples))
    heads = len(triples)
    if heads < min_heads:
        raise _NoRegion("a single head")
    for role in range(3):
        sets = [set(t[role]) for t in triples]
        if sum(len(s) for s in sets) != len(set().union(*sets)):
            raise _NoRegion("heads share features")
    features = []
    for t in triples:
        per = {}
        for lin_i, lin in enumerate(linears):
            fs = sorted({k & 0xFFFFFFFF for role in t for k in role if k >> 32 == lin_i})
            per[id(lin)] = np.array(fs, np.int64)
        features.append(per)
    # output columns: where each head's outputs land on the projection's input
    e_len = m2.result.type.shape[-1]
    out_ids = {id(m2.result): np.arange(m2.result.type.numel, dtype=np.int64).reshape(m2.result.type.shape)}
    for op in merges:
        out_ids[id(op.result)] = _apply(op, out_ids[id(op.operands[0])])
    xin = out_ids[id(out.operands[0])]
    hx = head_of[xin // (m2.result.type.shape[-2] * e_len)]
    cols = hx.reshape(-1, hx.shape[-1])
    if not (cols == cols[:1]).all():
        raise _NoRegion(f"%{out.result.name} mixes heads within a column")
    columns = [np.flatnonzero(cols[0] == h) for h in range(heads)]
    if xin.size != m2.result.type.numel or any(len(c) == 0 for c in columns):
        raise _NoRegion(f"%{out.result.name} does not read every head's output once")
    core = [m2] + chain
    return HeadRegion(f"{linears[0].result.name}.heads", heads, linears, out, features, columns, views, merges,
                      core, head_of)


def _apply(op: Op, arr: np.ndarray) -> np.ndarray:
    d = OPS[op.kind]
    return np.asarray((d.ref_int or d.ref)(op, arr))


def head_norms(graph: Graph, region: HeadRegion, criterion: str) -> np.ndarray:
    """Per head: the summed l1 or l2 norms of its q/k/v rows and its output-projection columns."""
    consts = {id(op.result): op.attrs["value"] for op in graph.const_ops()}
    norm = (lambda w: np.abs(w).sum(axis=-1)) if criterion == "l1" else (lambda w: np.sqrt((w * w).sum(axis=-1)))
    out = np.zeros(region.heads)
    wo = consts[id(region.out.operands[1])].astype(np.float64)
    for h in range(region.heads):
        for lin in region.linears:
            w = consts[id(lin.operands[1])].astype(np.float64)
            out[h] += norm(w[region.features[h][id(lin)]]).sum()
        out[h] += norm(wo[:, region.columns[h]].T).sum()
    return out


def remove_heads(graph: Graph, keep: dict[str, np.ndarray], seed: int = 0) -> tuple[Graph, list[str]]:
    """A copy of `graph` keeping, per region key, only the listed heads; and notes (a region whose
    pruned form does not compute what the original minus those heads did is left whole)."""
    out, notes = graph, []
    for key, kept in keep.items():
        kept = np.sort(np.asarray(kept, np.int64))
        trial = out.copy()
        regions = {r.key: r for r in find_heads(trial).regions}
        region = regions.get(key)
        if region is None or len(kept) >= region.heads:
            continue
        reference = out.copy()
        ref_region = {r.key: r for r in find_heads(reference).regions}[key]
        _zero_columns(reference, ref_region, kept)
        try:
            _rewrite(trial, region, kept)
            problem = _differs(trial, reference, seed)
        except ValueError as e:
            problem = str(e)
        if problem:
            notes.append(f"prune-channels: left the heads of {key} whole: {problem}")
            continue
        out = trial
    return out, notes


def _zero_columns(graph: Graph, region: HeadRegion, kept: np.ndarray) -> None:
    w = region.out.operands[1]
    op = next(o for o in graph.const_ops() if o.result is w)
    drop = np.concatenate([region.columns[h] for h in range(region.heads) if h not in set(kept.tolist())])
    value = op.attrs["value"].copy()
    value[:, drop] = 0.0
    op.attrs["value"] = value


def _differs(graph: Graph, reference: Graph, seed: int) -> str | None:
    try:
        from tinyc.verifier import verify
        verify(graph)
        xs = random_inputs(reference, np.random.default_rng(seed))
        got, want = run(graph, xs), run(reference, xs)
    except Exception as e:   # noqa: BLE001  (any failure means the rewrite is not the head removal)
        return f"the pruned graph does not run ({type(e).__name__}: {e})"
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return f"an output changed shape {w.shape} -> {g.shape}"
        scale = float(np.abs(w).max()) if w.size else 0.0
        if float(np.abs(g.astype(np.float64) - w).max(initial=0.0)) > CHECK_RTOL * scale + 1e-6:
            return "the pruned graph does not compute what the original minus those heads does"
    return None


def _rewrite(graph: Graph, region: HeadRegion, kept: np.ndarray) -> None:
    consts = {id(op.result): op for op in graph.const_ops()}
    keep_h = np.zeros(region.heads, bool)
    keep_h[kept] = True
    users = graph.users()

    def set_const(op: Op, i: int, array: np.ndarray) -> None:
        from tinyc.rewrite import Builder
        v = op.operands[i]
        array = np.ascontiguousarray(array)
        if len(users.get(id(v), [])) == 1:
            consts[id(v)].attrs["value"] = array
            v.type = v.type.with_shape(array.shape)
        else:
            op.operands[i] = Builder.before(graph, op).const(v.name, array)

    # kept masks of every region value, from the element ids (before any change)
    masks, ids = {}, {}
    for lin in region.linears:
        n = lin.result.type.shape[-1]
        drop = np.concatenate([region.features[h][id(lin)] for h in range(region.heads) if not keep_h[h]])
        feat_keep = ~np.isin(np.arange(n), drop)
        ids[id(lin.result)] = np.broadcast_to(feat_keep, lin.result.type.shape)
        masks[id(lin.result)] = ids[id(lin.result)]
    for op in region.views:
        masks[id(op.result)] = _apply(op, masks[id(op.operands[0])])
    bshape = region.core[0].result.type.shape[:-2]
    hk = keep_h[region.head_of_batch].reshape(bshape)
    for op in region.core:
        masks[id(op.result)] = np.broadcast_to(hk[..., None, None], op.result.type.shape)
    m2 = region.core[0]
    masks_m = {id(m2.result): masks[id(m2.result)]}
    for op in region.merges:
        masks_m[id(op.result)] = _apply(op, masks_m[id(op.operands[0])])
    masks.update(masks_m)
    positions = {k: _axes(m) for k, m in masks.items()}
    if any(p is None for p in positions.values()):
        raise ValueError("a view mixes the kept heads' elements with the removed ones along one axis")
    # rewrite: linears' rows, views' attributes, the projection's columns
    for lin in region.linears:
        rows = positions[id(lin.result)][-1]
        set_const(lin, 1, consts[id(lin.operands[1])].attrs["value"][rows])
        if len(lin.operands) > 2:
            set_const(lin, 2, consts[id(lin.operands[2])].attrs["value"][rows])
    for op in region.views + region.merges:
        rule = _rule(op)
        if rule == "regroup":
            op.attrs["shape"] = [int(len(p)) for p in positions[id(op.result)]]
        elif rule == "sub_range":
            pos = positions[id(op.operands[0])][op.attrs["axis"]]
            if op.attrs["step"] != 1 and len(pos) != op.operands[0].type.shape[op.attrs["axis"]]:
                raise ValueError(f"%{op.result.name} slices with a step along the heads")
            op.attrs["start"] = int(np.count_nonzero(pos < op.attrs["start"]))
            op.attrs["stop"] = int(np.count_nonzero(pos < op.attrs["stop"]))
    cols = positions[id(region.out.operands[0])][-1]
    set_const(region.out, 1, consts[id(region.out.operands[1])].attrs["value"][:, cols])
    for op in graph.ops:
        if not op.is_const:
            reinfer(op)
    graph.remove_dead()


def _axes(mask: np.ndarray) -> list[np.ndarray] | None:
    """Per axis, the kept positions, if the kept elements are their product (a box); else None."""
    mask = np.asarray(mask, bool)
    pos = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        pos.append(np.flatnonzero(mask.any(axis=other) if other else mask))
    box = np.zeros(mask.shape, bool)
    box[np.ix_(*pos)] = True
    return pos if np.array_equal(box, mask) else None
