"""tinyc.rewrite: the Builder (insertion points, inferred types, names) and the Rewriter with its
worklist pattern driver (uses, erasure, fixed point, determinism)."""
import numpy as np
import pytest

from helpers import zoo_graph
from tinyc.errors import PassError
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.ops import OpError, Trait
from tinyc.passes import fuse
from tinyc.rewrite import Builder, Pattern, Rewriter, apply_patterns, pattern, reinfer
from tinyc.verifier import verify


def graph_relu_chain(n: int = 2) -> Graph:
    """x -> relu -> relu ... (n ops), each located at model.py:<i>."""
    x = Value("x", TensorType((1, 4)))
    g = Graph("g", [x], [])
    v = x
    for i in range(n):
        r = Value(f"r{i}", TensorType((1, 4)))
        g.ops.append(Op("relu", [v], r, {}, f"model.py:{i}"))
        v = r
    g.outputs = [v]
    return g


def names(g: Graph) -> list[str]:
    return [op.result.name for op in g.ops]


# ---- Builder ------------------------------------------------------------------------------------

def test_builder_before_inserts_in_creation_order():
    g = graph_relu_chain(2)
    b = Builder.before(g, g.ops[1])
    c = b.const("c", np.zeros((1, 4), np.float32))
    b.create("add", [g.ops[0].result, c], name="a")
    b.create("sigmoid", [g.ops[0].result], name="n")
    assert names(g) == ["r0", "c", "a", "n", "r1"]
    assert [op.result.name for op in b.created] == ["c", "a", "n"]
    verify(g)


def test_builder_after_moves_past_each_new_op():
    g = graph_relu_chain(2)
    b = Builder.after(g, g.ops[0])
    v1 = b.create("sigmoid", [g.ops[0].result], name="n1")
    b.create("sigmoid", [v1], name="n2")
    assert names(g) == ["r0", "n1", "n2", "r1"]
    verify(g)


def test_builder_at_end_and_start_of_an_empty_graph():
    x = Value("x", TensorType((2, 3)))
    g = Graph("g", [x], [])
    b = Builder.at_end(g)
    y = b.create("relu", [x])
    z = b.create("sigmoid", [y], name="z")
    g.outputs = [z]
    assert names(g) == ["relu", "z"]
    verify(g)


def test_builder_locations_names_and_consts():
    g = graph_relu_chain(2)
    b = Builder.before(g, g.ops[1])
    c = b.const("r0", np.ones(4, np.float32))               # taken name: made fresh
    v = b.create("relu", [g.ops[0].result], name="r1")       # taken: fresh
    w = b.create("relu", [v], name="keep", loc="other.py:9")
    assert (c.name, v.name, w.name) == ("r0_1", "r1_1", "keep")
    by_name = {op.result.name: op for op in g.ops}
    assert by_name["r0_1"].loc is None                       # consts carry no location
    assert by_name["r1_1"].loc == "model.py:1"               # the anchor op's location by default
    assert by_name["keep"].loc == "other.py:9"
    same = b.create("relu", [v], name="r1", fresh=False)     # a value about to replace r1
    assert same.name == "r1"


def test_builder_infers_result_types():
    x = Value("x", TensorType((1, 3, 8, 8)))
    g = Graph("g", [x], [])
    b = Builder.at_end(g)
    w = b.const("w", np.zeros((6, 3, 3, 3), np.float32))
    y = b.create("conv2d", [x, w], {"stride": [2, 2], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1})
    assert y.type == TensorType((1, 6, 4, 4), "f32")
    f = b.create("reshape", [y], {"shape": [1, 96]})
    assert f.type.shape == (1, 96)
    lw = b.const("lw", np.zeros((10, 96), np.float32))
    out = b.create("linear", [f, lw], name="out")
    assert out.type == TensorType((1, 10))
    q = QuantParams((0.5, 0.25), (0, 0), axis=0)
    idx = b.const("idx", np.zeros((2, 2), np.uint8), dtype="u2")
    book = b.const("book", np.arange(4, dtype=np.int8), dtype="i8")
    d = b.create("decode", [idx, book], quant=q)
    assert d.type == TensorType((2, 2), "i8", q)
    assert b.const("s", np.float32(2.0) * np.ones((), np.float32)).type.shape == ()   # 0-d stays 0-d
    with pytest.raises(OpError):
        b.create("linear", [x, lw])        # 4-D input, 96 features expected
    g.outputs = [out]
    verify(g)


def test_reinfer_follows_changed_attributes():
    x = Value("x", TensorType((1, 12)))
    g = Graph("g", [x], [])
    b = Builder.at_end(g)
    y = b.create("reshape", [x], {"shape": [1, 3, 4]})
    op = g.ops[-1]
    op.attrs["shape"] = [1, 2, 6]
    reinfer(op)
    assert y.type.shape == (1, 2, 6)
    op.attrs["shape"] = [1, 5]
    with pytest.raises(PassError, match="no longer type-checks"):
        reinfer(op)


# ---- Rewriter -----------------------------------------------------------------------------------

def test_replace_all_uses_reaches_operands_and_graph_outputs():
    g = graph_relu_chain(3)
    r0, r1, r2 = (op.result for op in g.ops)
    g.outputs = [r1, r2]
    rw = Rewriter(g)
    rw.replace_all_uses(r1, r0)
    assert g.ops[2].operands == [r0] and g.outputs == [r0, r2]
    assert rw.users(r1) == [] and not rw.is_output(r1)
    assert rw.users(r0) == [g.ops[1], g.ops[2]]


def test_replace_all_uses_can_exclude_the_new_user():
    g = graph_relu_chain(1)
    r0 = g.ops[0].result
    rw = Rewriter(g)
    y = rw.after(g.ops[0]).create("sigmoid", [r0], name="y")
    rw.replace_all_uses(r0, y, exclude=[rw.producer(y)])
    assert g.outputs == [y] and g.ops[1].operands == [r0]
    verify(g)


def test_erase_refuses_a_used_result_and_accepts_an_unused_one():
    g = graph_relu_chain(3)
    rw = Rewriter(g)
    with pytest.raises(ValueError, match="still used by %r1"):
        rw.erase(g.ops[0])
    with pytest.raises(ValueError, match="graph outputs"):
        rw.erase(g.ops[2])
    dead = rw.after(g.ops[2]).create("sigmoid", [g.ops[2].result], name="dead")
    rw.erase(rw.producer(dead))
    assert names(g) == ["r0", "r1", "r2"]
    rw.erase(g.ops[2], safe=False)                   # the caller takes care of the dangling output
    assert names(g) == ["r0", "r1"]


def test_replace_op_moves_uses_then_erases():
    g = graph_relu_chain(3)
    rw = Rewriter(g)
    middle = g.ops[1]
    rw.replace_op(middle, g.ops[0].result)
    assert names(g) == ["r0", "r2"] and g.ops[1].operands == [g.ops[0].result]
    verify(g)


def test_replace_const_operand_in_place_or_new_when_shared():
    x = Value("x", TensorType((1, 4)))
    g = Graph("g", [x], [])
    b = Builder.at_end(g)
    w = b.const("w", np.ones((2, 4), np.float32))
    y1 = b.create("linear", [x, w], name="y1")
    y2 = b.create("linear", [x, w], name="y2")
    g.outputs = [y1, y2]
    rw = Rewriter(g)
    new = rw.replace_const_operand(g.ops[1], 1, np.zeros((3, 4), np.float32))   # shared: a new const
    assert new is not w and new.name == "w_1" and names(g) == ["w", "w_1", "y1", "y2"]
    assert rw.const(w).shape == (2, 4)
    same = rw.replace_const_operand(g.ops[3], 1, np.zeros((5, 4), np.float32))  # now its only user
    assert same is w and w.type.shape == (5, 4)


# ---- the driver ---------------------------------------------------------------------------------

@pattern(lambda d: d.identity is not None)
def drop_add_zero(rw: Rewriter, op: Op) -> bool:
    c = rw.const(op.operands[1]) if op.kind == "add" else None
    if c is None or np.any(c != 0) or rw.is_output(op.result):
        return False
    rw.replace_op(op, op.operands[0])
    return True


@pattern(lambda d: d.has(Trait.ACTIVATION))
def relu_of_relu(rw: Rewriter, op: Op) -> bool:
    inner = rw.producer(op.operands[0])
    if op.kind != "relu" or inner is None or inner.kind != "relu":
        return False
    rw.set_operands(op, inner.operands)
    return True


collapse_views = fuse.collapse_views   # fuse's own pattern: view of a view


def relu_add_relu() -> Graph:
    """r1 = relu(x); a = r1 + 0; r2 = relu(a): relu_of_relu matches r2 only after a goes."""
    x = Value("x", TensorType((1, 4)))
    g = Graph("g", [x], [])
    b = Builder.at_end(g)
    r1 = b.create("relu", [x], name="r1")
    z = b.const("zero", np.zeros(4, np.float32))
    a = b.create("add", [r1, z], name="a")
    g.outputs = [b.create("relu", [a], name="r2")]
    return g


def test_driver_revisits_the_users_of_a_change_to_a_fixed_point():
    g = relu_add_relu()
    assert apply_patterns(g, [drop_add_zero, relu_of_relu]) == 2
    g.remove_dead()
    assert [(op.kind, [v.name for v in op.operands]) for op in g.compute_ops()] == [("relu", ["x"])]
    assert g.outputs[0].name == "r2"
    verify(g)
    assert apply_patterns(g, [drop_add_zero, relu_of_relu]) == 0      # already at the fixed point


def test_driver_picks_patterns_by_trait_and_collapses_chains():
    x = Value("x", TensorType((2, 6)))
    g = Graph("g", [x], [])
    b = Builder.at_end(g)
    v = x
    for i, shape in enumerate([[12], [3, 4], [4, 3], [6, 2], [2, 6]]):
        v = b.create("reshape", [v], {"shape": shape}, f"v{i}")
    g.outputs = [v]
    # relu_of_relu never applies to a view; collapse_views walks the chain back to x
    assert apply_patterns(g, [relu_of_relu, collapse_views]) == 4
    g.remove_dead()
    assert [(op.result.name, [o.name for o in op.operands]) for op in g.ops] == [("v4", ["x"])]


def test_driver_is_deterministic():
    def run():
        g = relu_add_relu()
        apply_patterns(g, [relu_of_relu, drop_add_zero])
        return [(op.kind, op.result.name, [v.name for v in op.operands]) for op in g.ops]
    assert run() == run() == run()


def test_driver_stops_a_pattern_that_never_settles():
    flip = Pattern("flip", lambda d: d.has(Trait.ACTIVATION), lambda rw, op: rw.changed(op) or True)
    with pytest.raises(PassError, match="fixed point"):
        apply_patterns(graph_relu_chain(2), [flip], max_rewrites=50)


def test_driver_refuses_a_pattern_that_edits_but_reports_no_change():
    def sneaky(rw, op):
        rw.changed(op)
        return False
    with pytest.raises(AssertionError, match="sneaky"):
        apply_patterns(graph_relu_chain(1), [Pattern("sneaky", lambda d: True, sneaky)])


def restart_scan(graph: Graph, patterns) -> None:
    """The reference driver: after each change, rescan from the first op."""
    from tinyc.ops import OPS
    changed = True
    while changed:
        changed = False
        for op in list(graph.ops):
            if any(p.rewrite(Rewriter(graph), op) for p in patterns if p.applies(OPS[op.kind])):
                changed = True
                break


@pytest.mark.parametrize("name", ["cnn_bn", "resnet8", "kitchen_sink"])
def test_worklist_matches_the_restart_scan_on_fuse(name):
    from tinyc.passes.fuse import PATTERNS
    from tinyc.text import print_graph
    a, b = zoo_graph(name).copy(), zoo_graph(name).copy()
    apply_patterns(a, PATTERNS)
    restart_scan(b, PATTERNS)
    a.remove_dead()
    b.remove_dead()
    assert print_graph(a) == print_graph(b)
