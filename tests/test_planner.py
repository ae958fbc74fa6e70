"""The static memory planner: synthetic lifetimes, then small graphs."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc.backends import c_ops
from tinyc.backends.planner import (ALIGN, Location, Tensor, align_up, check_no_overlap, lower_bound, merge_buffers,
                                    plan_graph, plan_tensors)
from tinyc.errors import BackendError
from tinyc.ir import Graph, Op, TensorType, Value
from tinyc.ops import infer_type


def chain(sizes, inplace=False):
    """t0 -> t1 -> ... each read only by the next (the last one by an extra op)."""
    return [Tensor(f"t{i}", s, i, i + 1, inplace_of=(f"t{i - 1}",) if inplace and i else ())
            for i, s in enumerate(sizes)]


def random_tensors(seed: int, n: int = 40) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = int(rng.integers(1, 5000))
        last = i + int(rng.integers(0, 8))
        reuse = tuple(f"t{j}" for j in rng.choice(i, size=min(i, 2), replace=False)) if i else ()
        out.append(Tensor(f"t{i}", size, i, last, inplace_of=reuse))
    return out


# ---- synthetic lifetimes ------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_live_tensors_never_overlap(seed):
    tensors = random_tensors(seed)
    alloc = plan_tensors(tensors)
    check_no_overlap(tensors, alloc.offsets, alloc.buffers)
    assert alloc.arena_size >= alloc.lower_bound > 0
    assert all(off % ALIGN == 0 for off in alloc.offsets.values())
    assert all(alloc.offsets[t.name] + t.size <= alloc.arena_size for t in tensors)


def test_checker_catches_an_overlap():
    tensors = [Tensor("a", 64, 0, 2), Tensor("b", 64, 1, 3)]
    alloc = plan_tensors(tensors)
    check_no_overlap(tensors, alloc.offsets, alloc.buffers)
    with pytest.raises(BackendError, match="overlaps live tensors %a and %b"):
        check_no_overlap(tensors, {"a": 0, "b": 32}, alloc.buffers)


def test_chain_reaches_the_lower_bound():
    sizes = [1000, 40, 4000, 8, 4000, 1000, 16]
    alloc = plan_tensors(chain(sizes))
    assert alloc.arena_size == alloc.lower_bound == max(align_up(a) + align_up(b) for a, b in zip(sizes, sizes[1:]))


def test_lower_bound_is_peak_of_live_sizes():
    tensors = [Tensor("a", 100, 0, 3), Tensor("b", 50, 1, 1), Tensor("c", 30, 2, 4), Tensor("d", 10, 4, 5)]
    buffers = merge_buffers(tensors)
    # op 2: a and c live (b died at op 1); op 1: a and b
    assert lower_bound(buffers) == align_up(100) + max(align_up(50), align_up(30))


def test_inplace_takes_over_a_dying_operand():
    alloc = plan_tensors(chain([256, 256, 256], inplace=True))
    assert len({alloc.offsets[n] for n in ("t0", "t1", "t2")}) == 1
    assert alloc.arena_size == alloc.lower_bound == 256


def test_inplace_needs_the_operand_to_die_and_match_in_size():
    lives_on = [Tensor("a", 256, 0, 2), Tensor("b", 256, 1, 2, inplace_of=("a",))]
    smaller = [Tensor("a", 128, 0, 1), Tensor("b", 256, 1, 2, inplace_of=("a",))]
    for tensors in (lives_on, smaller):
        alloc = plan_tensors(tensors)
        assert alloc.offsets["a"] != alloc.offsets["b"]
        check_no_overlap(tensors, alloc.offsets, alloc.buffers)


def test_views_share_storage_even_while_the_operand_lives():
    tensors = [Tensor("x", 256, 0, 3), Tensor("v", 256, 1, 4, view_of="x"), Tensor("y", 64, 2, 4)]
    alloc = plan_tensors(tensors)
    assert alloc.offsets["x"] == alloc.offsets["v"]
    assert [b.last for b in alloc.buffers if "x" in b.members] == [4]
    check_no_overlap(tensors, alloc.offsets, alloc.buffers)


def test_inplace_over_a_view_waits_for_the_whole_buffer():
    # y may overwrite v only because x (same storage) died before
    tensors = [Tensor("x", 64, 0, 1), Tensor("v", 64, 1, 2, view_of="x"), Tensor("y", 64, 2, 3, inplace_of=("v",))]
    alloc = plan_tensors(tensors)
    assert alloc.offsets["y"] == alloc.offsets["x"]
    tensors[0] = Tensor("x", 64, 0, 3)
    alloc = plan_tensors(tensors)
    assert alloc.offsets["y"] != alloc.offsets["x"]


def test_external_tensors_are_not_placed_nor_overwritten():
    tensors = [Tensor("in", 64, -1, 0, external=True), Tensor("v", 64, 0, 1, view_of="in"),
               Tensor("y", 64, 1, 2, inplace_of=("v",))]
    alloc = plan_tensors(tensors)
    assert set(alloc.offsets) == {"y"}


def test_deterministic():
    tensors = random_tensors(7)
    first = plan_tensors(tensors)
    assert all(plan_tensors(list(tensors)).offsets == first.offsets for _ in range(3))


def test_greedy_by_size_first_fit():
    # the biggest goes first at 0; the small one fits in the gap next to it
    tensors = [Tensor("small", 16, 0, 1), Tensor("big", 1024, 1, 2), Tensor("mid", 512, 0, 0)]
    alloc = plan_tensors(tensors)
    assert alloc.offsets == {"big": 0, "mid": 0, "small": 1024}


# ---- graphs -----------------------------------------------------------------------

class Builder:
    def __init__(self):
        self.inputs, self.ops = [], []

    def input(self, name, shape):
        v = Value(name, TensorType(tuple(shape)))
        self.inputs.append(v)
        return v

    def const(self, name, array):
        return self.op("const", name=name, value=np.asarray(array, np.float32))

    def op(self, kind, *operands, name, **attrs):
        t = infer_type(kind, [v.type for v in operands], attrs)
        op = Op(kind, list(operands), Value(name, t), attrs)
        self.ops.append(op)
        return op.result

    def graph(self, *outputs):
        return Graph("g", self.inputs, list(outputs), self.ops)


def plan(g):
    p = plan_graph(g, c_ops.inplace_operands)
    p.check()
    return p


def test_graph_chain_runs_in_place_into_the_output():
    b = Builder()
    x = b.input("x", [1, 64])
    y = b.op("sigmoid", b.op("relu", b.op("tanh", x, name="t"), name="r"), name="s")
    p = plan(b.graph(y))
    # the input is never written; everything else is the output slot itself
    assert p.locations["x"].space == "input"
    assert {p.locations[n].space for n in "trs"} == {"output"}
    assert p.arena_size == p.lower_bound == 0 and not p.output_copies


def test_graph_output_also_read_later_stays_in_the_output():
    b = Builder()
    x = b.input("x", [1, 16])
    r = b.op("relu", x, name="r")
    s = b.op("sigmoid", r, name="s")      # may not overwrite r: r is an output
    p = plan(b.graph(r, s))
    assert p.locations["r"] == Location("output", 0)
    assert p.locations["s"].space == "output" and p.locations["s"].offset == 64


def test_graph_outputs_that_need_copies():
    b = Builder()
    x = b.input("x", [2, 8])
    v = b.op("reshape", x, name="v", shape=[16])
    r = b.op("relu", x, name="r")
    w = b.op("reshape", r, name="w", shape=[16])
    p = plan(b.graph(v, r, w, r))
    # v is the input itself, w shares r's slot, the second r is a duplicate
    assert [c.index for c in p.output_copies] == [0, 2, 3]
    assert p.locations["v"].space == "input" and p.locations["w"] == p.locations["r"]


def test_graph_binary_inplace_only_onto_a_full_size_operand():
    b = Builder()
    x = b.input("x", [1, 4, 8])
    a = b.op("tanh", x, name="a")
    c = b.op("mean", a, name="c", axes=[2], keepdim=True)       # [1, 4, 1]
    d = b.op("sigmoid", x, name="d")
    s = b.op("sub", c, d, name="s")        # c is broadcast: only d may be overwritten
    y = b.op("softmax", s, name="y", axis=2)
    p = plan(b.graph(y))
    assert p.locations["s"] == p.locations["d"] != p.locations["c"]
