"""In-place int8 convolutions (issue 12, memory): a conv's result (1x1, depthwise, k x k) may overlap
its dying operand where the kernel has read those bytes for good (planner.Overlap, checked byte
by byte in c_ops_int8); the planner keeps an overlap only when the arena shrinks. Outputs stay
bit-exact with the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from test_int8_backend import assert_exact, quantize, w, zoo_int8
from test_planner import Builder
from tinyc.backends import c_ops_int8, int8_layout
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.planner import (ALIGN, Tensor, check_no_overlap, lower_bound, merge_buffers, plan_tensors)
from tinyc.errors import BackendError


# ---- planner: the overlap rule ------------------------------------------------------------------

def _expanding():
    """a (64 B) dies at op 1, where b (96 B) may start 32 B before it; c is unrelated."""
    return [Tensor("a", 64, 0, 1), Tensor("b", 96, 1, 2, overlap_of=(("a", -32),)), Tensor("c", 40, 2, 3)]


def test_declared_overlap_is_planned_and_accepted():
    tensors = _expanding()
    alloc = plan_tensors(tensors)
    assert alloc.offsets["b"] - alloc.offsets["a"] == -32
    assert alloc.arena_size == 96 + 40            # a inside b's bytes, c beside b
    assert alloc.lower_bound == 136
    check_no_overlap(tensors, alloc.offsets, alloc.buffers)


def test_graph_outputs_never_overlap():
    """An output lives in the caller's buffer: a declared overlap onto it is dropped."""
    from test_planner import Builder as B
    from tinyc.backends.planner import Overlap, plan_graph
    b = B()
    x = b.input("x", (1, 16))
    h = b.op("relu", x, name="h")
    y = b.op("relu", h, name="y")
    g = b.graph(y)
    p = plan_graph(g, lambda op: (Overlap(0, -8),) if op.result.name == "y" else ())
    p.check()
    assert p.locations["y"].space == "output" and p.locations["h"].space == "arena"
    assert not any(bf.shifts for bf in p.buffers)


def test_other_overlaps_are_rejected():
    tensors = _expanding()
    alloc = plan_tensors(tensors)
    shifted = dict(alloc.offsets, b=alloc.offsets["a"] - 24)     # not the declared offset
    with pytest.raises(BackendError, match="overlaps live tensors %a and %b"):
        check_no_overlap(tensors, shifted, alloc.buffers)
    # an operand that lives on past the op is never overlapped, and the checker says so
    alive = [Tensor("a", 64, 0, 2), Tensor("b", 96, 1, 2, overlap_of=(("a", -32),))]
    alloc = plan_tensors(alive)
    assert alloc.arena_size == 64 + 96
    with pytest.raises(BackendError, match="overlaps"):
        check_no_overlap(alive, {"a": 32, "b": 0}, merge_buffers(alive))


def test_shrinking_overlap_and_group_lower_bound():
    """b (32 B) written over the start of a (96 B); d (64 B) arrives when a is dead and reuses
    its tail: the group is placed member by member, and the bound counts live bytes once."""
    tensors = [Tensor("a", 96, 0, 1), Tensor("b", 32, 1, 3, overlap_of=(("a", 0),)), Tensor("d", 64, 2, 3)]
    alloc = plan_tensors(tensors)
    check_no_overlap(tensors, alloc.offsets, alloc.buffers)
    assert alloc.offsets["a"] == alloc.offsets["b"]
    assert alloc.arena_size == 96 == alloc.lower_bound
    assert lower_bound([b for b in alloc.buffers]) == 96


# ---- the kernels' order of work ------------------------------------------------------------------

def _steps(graph, name, inplace_depthwise):
    low8 = c_ops_int8.Int8Lowering(int8_layout.assign(graph, inplace_depthwise))
    op = next(o for o in graph.compute_ops() if o.result.name == name)
    p = low8.plan(op)
    return c_ops_int8._conv_steps(low8, op, p), op


def test_overlap_safety_follows_the_layouts():
    """Channels-last in and out: a same-size 1x1 conv may write over its operand; into the
    channels-first layout a depthwise consumer wants by default it may not."""
    g = _graph(lambda b, rng, h: _pw(b, rng, h, 16, 16, "t"), then_dw=True)
    (tx, yo, ty), _ = _steps(g, "t", True)
    assert c_ops_int8.overlap_is_safe(tx, yo, ty, 0)
    (tx, yo, ty), _ = _steps(g, "t", False)
    assert not c_ops_int8.overlap_is_safe(tx, yo, ty, 0)
    assert c_ops_int8.overlap_is_safe(tx, yo, ty, -len(yo))


# ---- small graphs, exact ------------------------------------------------------------------------------

def _conv(b, rng, x, cin, cout, k, name, groups=1, stride=1, pad=0):
    return b.op("conv2d", x, b.const(name + ".w", w(rng, cout, cin // groups, k, k, scale=0.4)),
                b.const(name + ".b", w(rng, cout, scale=0.1)), name=name, stride=[stride, stride],
                dilation=[1, 1], groups=groups, padding=[pad] * 4, act="relu")


def _pw(b, rng, h, cin, cout, name):
    return _conv(b, rng, h, cin, cout, 1, name)


def _graph(body, cin=16, then_dw=False, seed=3):
    """x -> 1x1 conv (4 -> cin) -> body -> 1x1 conv -> output: the op under test is internal."""
    b = Builder()
    rng = np.random.default_rng(seed)
    x = b.input("x", (1, 4, 9, 7))
    h = _conv(b, rng, x, 4, cin, 1, "head")
    t = body(b, rng, h)
    c = t.type.shape[1]
    if then_dw:
        t = _conv(b, rng, t, c, c, 3, "dw_after", groups=c, pad=1)
    return quantize(b.graph(_conv(b, rng, t, c, 4, 1, "tail")), seed=seed)


CASES = {
    "pointwise_same": (16, lambda b, rng, h: _pw(b, rng, h, 16, 16, "t")),
    "pointwise_expanding": (8, lambda b, rng, h: _pw(b, rng, h, 8, 32, "t")),
    "pointwise_shrinking": (32, lambda b, rng, h: _pw(b, rng, h, 32, 8, "t")),
    "dw3x3_s1": (16, lambda b, rng, h: _conv(b, rng, h, 16, 16, 3, "t", groups=16, pad=1)),
    "dw5x5_s1": (16, lambda b, rng, h: _conv(b, rng, h, 16, 16, 5, "t", groups=16, pad=2)),
    "dw3x3_s2": (16, lambda b, rng, h: _conv(b, rng, h, 16, 16, 3, "t", groups=16, stride=2, pad=1)),
    # dense k x k convs too: the result starts about a row of pixels before the operand
    "conv3x3_s1": (16, lambda b, rng, h: _conv(b, rng, h, 16, 16, 3, "t", pad=1)),
    "conv3x3_s2_expanding": (8, lambda b, rng, h: _conv(b, rng, h, 8, 32, 3, "t", stride=2, pad=1)),
}


def _overlapped(info, name):
    """True if %name was planned over its operand (shares an overlap group with it)."""
    buf = next(b for b in info.plan.buffers if name in b.members)
    return name in buf.handoffs and (name in buf.shifts or len(buf.members) > 1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_inplace_conv_exact_on_host(case, tmp_path):
    cin, body = CASES[case]
    graph = _graph(body, cin)
    info = assert_exact(graph, tmp_path, rows=2, sanitize=True)
    info.plan.check()
    assert _overlapped(info, "t"), f"{case}: the conv was not planned in place"
    assert info.lower_bound <= info.arena_size


@pytest.mark.qemu
def test_inplace_convs_exact_on_cortex_m4(tmp_path):
    """One QEMU run: padded stride-2 depthwise, then expanding and same-size 1x1, in place."""
    def body(b, rng, h):
        t = _conv(b, rng, h, 16, 16, 3, "t", groups=16, stride=2, pad=1)
        t = _pw(b, rng, t, 16, 32, "t2")
        return _pw(b, rng, t, 32, 32, "t3")
    graph = _graph(body, 16, then_dw=True)
    info = assert_exact(graph, tmp_path, "cortex-m4", rows=2)
    assert _overlapped(info, "t") and _overlapped(info, "t3")


# ---- the zoo -------------------------------------------------------------------------------------------

def test_ds_cnn_arena_shrinks(tmp_path, monkeypatch):
    graph = zoo_int8("ds_cnn")
    after = emit_bundle(graph, tmp_path / "after")
    with monkeypatch.context() as m:
        m.setattr(c_ops_int8, "_OVERLAPS", {})
        m.setattr(int8_layout, "has_depthwise", lambda g: False)
        before = emit_bundle(graph, tmp_path / "before")
    print(f"ds_cnn int8 arena: {before.arena_size} B separate buffers, {after.arena_size} B in place "
          f"(lower bound {after.lower_bound} B)")
    assert after.arena_size <= 9000 < before.arena_size      # measured: 8,576 vs 16,576
    assert after.arena_size <= before.arena_size * 0.6
    assert after.lower_bound <= after.arena_size
    # every depthwise and pointwise conv after the first runs over its operand's bytes
    convs = [op.result.name for op in graph.compute_ops() if op.kind == "conv2d"][1:]
    assert all(_overlapped(after, n) for n in convs)
    assert ALIGN == 8


def test_only_the_depthwise_convs_that_lower_the_arena_read_channels_last(tmp_path):
    """The big depthwise conv at the peak runs in place over a channels-last operand; the small
    one after a 2x2 pool is not needed for the arena and keeps its faster channels-first
    operand."""
    def body(b, rng, h):
        t = _conv(b, rng, h, 16, 16, 3, "dw_big", groups=16, pad=1)
        t = b.op("avg_pool2d", t, name="pool", kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 0],
                 ceil_mode=False, count_include_pad=True)
        return _conv(b, rng, t, 16, 16, 3, "dw_small", groups=16, pad=1)
    graph = _graph(body, 16)
    info = assert_exact(graph, tmp_path, rows=1)
    cl = int8_layout.perm_offsets((1, 16, 9, 7), (0, 2, 3, 1))
    assert np.array_equal(info.int8_layouts["head"], cl)                  # dw_big's operand
    assert int8_layout.is_row_major(info.int8_layouts["pool"])            # dw_small's operand
    assert _overlapped(info, "dw_big")
    assert info.arena_size == info.lower_bound


@pytest.mark.parametrize("seed", range(4))
def test_random_conv_geometries_in_place_exact_on_host(seed, tmp_path):
    """Seeded random convs (kernel 1-5, stride 1-2, dilation 1-2, padding, channel counts not
    multiples of 4, depthwise or dense) between two 1x1 convs: exact whether or not in place."""
    rng = np.random.default_rng(100 + seed)
    cin = int(rng.choice([3, 6, 8, 12]))
    dw = bool(rng.integers(2))
    cout = cin if dw else int(rng.choice([2, 5, 8, 16]))
    k, stride, dil = int(rng.integers(1, 6)), int(rng.integers(1, 3)), int(rng.integers(1, 3)) if not dw else 1
    pad = int(rng.integers(0, k))

    def body(b, r, h):
        return b.op("conv2d", h, b.const("t.w", w(r, cout, 1 if dw else cin, k, k, scale=0.4)),
                    b.const("t.b", w(r, cout, scale=0.1)), name="t", stride=[stride, stride], dilation=[dil, dil],
                    groups=cin if dw else 1, padding=[pad, pad, pad // 2, pad // 2], act="relu")
    graph = _graph(body, cin, seed=seed)
    info = assert_exact(graph, tmp_path, rows=2, sanitize=True)
    info.plan.check()
    print(f"cin {cin} cout {cout} k {k} s {stride} d {dil} pad {pad} dw {dw}: in place {_overlapped(info, 't')}")
