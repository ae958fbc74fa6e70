"""bench.kernel_shapes (issue 12): the per-shape int8 kernel table. Three shape classes are measured
on QEMU (Cortex-M4): their MACs are the analytic count of the layer, their instr/MAC is a real
figure above the SMLAD ceiling, the int8 boundary is left out, the counts repeat exactly, and the
C they compile to is bit-exact with tinyc's interpreter on the M4."""
from __future__ import annotations

import math

import pytest

from bench import kernel_shapes as ks
from test_int8_backend import assert_exact

# odd channel count (not a multiple of 4, < 16), stride-2 depthwise, fully connected at batch 1
MEASURED = ("pw_6_10", "dw3_s2", "fc_640_128")


def _classes():
    return {c.name: c for c in ks.shape_classes()}


def analytic_macs(cls: ks.ShapeClass) -> int:
    """MACs of the class's conv / linear modules, from their attributes and the output shapes
    PyTorch computes (independent of tinyc's op registry)."""
    import torch
    torch.manual_seed(0)
    module = cls.build().eval()
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            total += out.numel() * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features
    handles = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        module(torch.zeros(cls.input_shape))
    for h in handles:
        h.remove()
    return total


def test_classes_cover_the_issue_and_state_analytic_macs():
    classes = ks.shape_classes()
    names = [c.name for c in classes]
    assert len(names) == len(set(names))
    kernels = {c.kernel for c in classes}
    for want in ("1x1 conv", "3x3 dense conv", "depthwise 3x3 s1", "depthwise 3x3 s2", "depthwise 5x5 s1",
                 "depthwise 5x5 s2", "fully connected, batch 1", "squeeze-excite", "1x1 conv + hardswish",
                 "1x1 conv + residual add", "first layer, 1 input channel", "first layer, 3 input channels"):
        assert want in kernels, want
    for c in classes:
        assert c.macs == analytic_macs(c), c.name


def test_unknown_class_is_refused(capsys):
    with pytest.raises(SystemExit):
        ks.main(["--classes", "pw_6_10,no_such_class"])
    assert "no_such_class" in capsys.readouterr().err


@pytest.fixture(scope="module")
def rows():
    classes = _classes()
    return ks.measure_all([classes[n] for n in MEASURED])


@pytest.mark.qemu
def test_rows_count_the_layer_macs_at_a_sane_rate(rows):
    for r in rows:
        assert r.macs == analytic_macs(r.cls) == r.cls.macs, r.cls.name
        # one kernel layer: the quantize / dequantize edges are counted apart, not in the row
        assert len(r.layers) == 1 and r.layers[0].macs == r.macs
        assert r.boundary_instructions > 0
        assert math.isfinite(r.per_mac) and 0.5 < r.per_mac < 20, (r.cls.name, r.per_mac)
        assert r.cycles is not None and r.cycles >= r.instructions     # no M4 instruction under a cycle
        assert r.cycles_per_mac >= r.per_mac


@pytest.mark.qemu
def test_markdown_section_lists_each_row(rows):
    text = ks.markdown_section(rows)
    lines = text.splitlines()
    assert lines[0] == "## Per-shape kernel table"
    body = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| kernel class")]
    assert len(body) == len(rows)
    for r, line in zip(rows, body):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == r.cls.kernel and cells[3] == f"{r.macs:,}" and cells[4] == f"{r.instructions:,}"
        assert cells[5] == f"{r.per_mac:.2f}"
        assert cells[9].startswith(f"{r.per_mac - ks.GOAL:+.2f}")


@pytest.mark.qemu
def test_counts_repeat_exactly(rows):
    again = ks.measure_all([_classes()["fc_640_128"]])[0]
    first = next(r for r in rows if r.cls.name == "fc_640_128")
    assert (again.instructions, again.cycles, again.boundary_instructions) == \
           (first.instructions, first.cycles, first.boundary_instructions)


@pytest.mark.qemu
@pytest.mark.parametrize("name", MEASURED)
def test_int8_c_is_bit_exact_with_the_interpreter_on_m4(name, tmp_path):
    graph = ks.graph_of(_classes()[name])
    assert any(op.result.type.dtype == "i8" for op in graph.compute_ops())
    assert_exact(graph, tmp_path / name, target="cortex-m4", rows=2)


def test_graph_is_int8_between_the_edges():
    """The kernel layers of a class run in int8; only the edges convert."""
    graph = ks.graph_of(_classes()["pw_6_10"])
    ops = list(graph.compute_ops())
    assert ks._is_boundary(ops[0]) and ks._is_boundary(ops[-1])
    assert not any(ks._is_boundary(op) for op in ops[1:-1])
    assert all(op.result.type.dtype == "i8" for op in ops[1:-1])
