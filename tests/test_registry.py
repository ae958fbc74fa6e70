"""The op registry (tinyc.ops): every op is defined in one place, and being registered is what gets
it tested.

- Conformance: every op kind with samples (its definition's `samples` facet) runs them through type
  inference (= the numpy reference's shape), numpy against torch (float), and the C kernels on the
  host against the interpreter: float to rounding, int8 bit-exact after quantize-int8. A new op is
  covered by registering it, without editing this file.
- The ops without samples are the int8 boundary, tables and compressed forms (covered by
  test_quantize, test_share_weights, test_binarize and their backend tests): a trait or facet says so.
- No module outside compiler/ops/ (compiler, passes, backends) keeps a table or set of op names (passes
  and backends key their rules by a facet's value: int8=, channels=, c=), and every op kind a module
  compares `.kind` with is registered (a typo is a test failure, not a silent miss).
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyc.interpreter import run
from tinyc.ir import Graph
from tinyc.ops import OPS, Trait
from tinyc.ops.core import sample_graph, sample_inputs
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager
from tinyc.to_torch import run_op as torch_op
from tinyc.verifier import verify

ROOT = Path(__file__).resolve().parents[1]
SAMPLED = sorted(k for k, d in OPS.items() if d.samples is not None)
CASES = [(k, i) for k in SAMPLED for i in range(len(OPS[k].samples(np.random.default_rng(0))))]


def build(kind: str, index: int) -> tuple[Graph, list[np.ndarray]]:
    """A one-op graph of sample `index` of `kind`, and random inputs for it."""
    rng = np.random.default_rng(index)
    s = OPS[kind].samples(rng)[index]
    g = sample_graph(kind, s, f"{kind}_{index}")
    verify(g)
    return g, sample_inputs(s, rng)


def calibration(kind: str, index: int):
    """16 random inputs per graph input of sample `index` (an array for a one-input graph)."""
    s = OPS[kind].samples(np.random.default_rng(index))[index]
    calib = sample_inputs(s, np.random.default_rng(1), count=16)
    return calib if len(calib) > 1 else calib[0]


def test_every_op_is_sampled_or_an_int8_or_compressed_form():
    unsampled = {k for k, d in OPS.items() if d.samples is None}
    assert all(d.has(Trait.INT_ONLY) or d.ref_exact is not None for k, d in OPS.items() if k in unsampled), unsampled


@pytest.mark.parametrize("kind,index", CASES)
def test_type_inference_numpy_and_torch_agree(kind, index):
    g, xs = build(kind, index)
    (got,) = run(g, xs)
    assert got.shape == g.outputs[0].type.shape and got.dtype == np.float32
    env = {v.name: torch.from_numpy(x) for v, x in zip(g.inputs, xs)}
    env.update({op.result.name: torch.from_numpy(op.attrs["value"]) for op in g.const_ops()})
    op = next(g.compute_ops())
    with torch.no_grad():
        want = torch_op(op, *(env[v.name] for v in op.operands)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _c_host(graph: Graph, xs: list[np.ndarray], out: Path) -> np.ndarray:
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.backends.run import run_model
    from tinyc.backends.target_files import write_target_files
    emit_bundle(graph, out, target_name="host")
    write_target_files(out, "host", "model")
    return run_model(out, "host", "model", np.concatenate([x.reshape(1, -1) for x in xs], axis=1), sanitize=True)


@pytest.mark.parametrize("kind,index", CASES)
def test_c_kernels_agree_with_the_interpreter(kind, index, tmp_path):
    """Float within rounding; int8 (quantize-int8 calibrated on 16 random inputs) bit-exact."""
    g, xs = build(kind, index)
    (want,) = run(g, xs)
    np.testing.assert_allclose(_c_host(g, xs, tmp_path / "f32")[0], want.ravel(), rtol=1e-5,
                               atol=1e-5 * max(1.0, float(np.abs(want).max())))
    q = PassManager("quantize-int8").run(g.copy(), PassContext(calib=calibration(kind, index)))
    (want8,) = run(q, xs)
    assert np.array_equal(_c_host(q, xs, tmp_path / "i8")[0], want8.ravel())


# ---- one place per op ----------------------------------------------------------------------------

SOURCES = [p for d in ("compiler", "passes", "backends") for p in sorted((ROOT / d).rglob("*.py"))
           if (ROOT / "compiler" / "ops") not in p.parents]
# Tables of names that are not tinyc ops: the names of Python's operator module that a .pt2 may use;
# the packed weight formats' value kinds (a "lut" value kind is a codebook, not the lut op).
NOT_OP_TABLES = {("compiler/frontend.py", "_PY_OPERATORS"), ("backends/c_ops_packed.py", "VALUE_CODES")}


def _op_tables(path: Path) -> list[int]:
    """Lines of dict literals keyed by an op kind and of set/list/tuple literals naming two or more."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and (str(path.relative_to(ROOT)), t.id)
                                                in NOT_OP_TABLES for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
    lines = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if any(k in OPS for k in keys):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Set, ast.List, ast.Tuple)):
            if sum(isinstance(e, ast.Constant) and e.value in OPS for e in node.elts) >= 2:
                lines.append(node.lineno)
    return lines


def test_no_module_outside_the_registry_keeps_a_table_of_op_names():
    found = {str(p.relative_to(ROOT)): _op_tables(p) for p in SOURCES}
    offenders = {p: lines for p, lines in found.items() if lines}
    assert not offenders, f"op-name tables outside compiler/ops/ (use a trait or a facet): {offenders}"


def _kind_literals(path: Path) -> list[tuple[int, str]]:
    """(line, string) of every constant compared with `.kind` (==, !=, in, not in)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        # `.kind` of anything but numpy's `x.dtype.kind`
        if not any(isinstance(s, ast.Attribute) and s.attr == "kind"
                   and not (isinstance(s.value, ast.Attribute) and s.value.attr == "dtype") for s in sides):
            continue
        for s in sides:
            elts = s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set)) else [s]
            out += [(node.lineno, e.value) for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return out


def test_every_op_kind_a_module_compares_with_is_registered():
    # `.kind` is also a field of other records: prune-layers' removals (block, layer), the int8 conv
    # plans (dw, gemm), the packed weight encodings' value kinds (f32, i8).
    other_kinds = {"block", "layer", "dw", "gemm", "f32", "i8"}
    unknown = [(str(p.relative_to(ROOT)), line, s) for p in SOURCES for line, s in _kind_literals(p)
               if s not in OPS and s not in other_kinds]
    assert not unknown, f"comparisons with unregistered op kinds: {unknown}"


def test_readme_lists_every_aten_op_the_frontend_lowers():
    from tinyc.frontend import supported_ops
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in supported_ops() if f"`{n.replace('aten.', '')}`" not in readme]
    assert not missing, f"README.md does not list {missing}"


@pytest.mark.parametrize("kind,index", CASES)
def test_text_form_round_trips_float_and_int8(kind, index):
    """Every sample prints and parses back to the same text, as float IR and after quantize-int8."""
    from tinyc.text import parse, print_graph
    g, _ = build(kind, index)
    q = PassManager("quantize-int8").run(g.copy(), PassContext(calib=calibration(kind, index)))
    for graph in (g, q):
        text = print_graph(graph)
        again = parse(text)
        verify(again)
        assert print_graph(again) == text
