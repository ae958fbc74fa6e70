"""`tinyc bench --html`: the page's bars are the measured figures, its memory timeline is the
bundle's arena plan, it is byte-identical across runs, and bad input fails cleanly."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyc.backends import html_report
from tinyc.backends.planner import align_up
from tinyc.errors import BackendError

HAVE_QEMU = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_toolchain = pytest.mark.skipif(not HAVE_QEMU, reason="arm-none-eabi-gcc or qemu-system-arm not installed")


def tinyc(*args):
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def bundle(zoo_archive, tmp_path_factory):
    """cnn_bn (two convs, max pool, flatten, linear) compiled to int8 for cortex-m4."""
    from helpers import zoo_inputs
    root = tmp_path_factory.mktemp("html")
    np.save(root / "calib.npy", zoo_inputs("cnn_bn", rows=8))
    out = root / "out"
    result = tinyc("compile", zoo_archive("cnn_bn"), "--target", "cortex-m4", "--calib", root / "calib.npy",
                   "-o", out)
    assert result.returncode == 0, result.stderr
    return out


def rects(page: str, cls: str) -> list[dict]:
    """The attributes of every <rect class="cls" ...> of the page."""
    found = []
    for m in re.finditer(rf'<rect class="{cls}" ([^>]*)>', page):
        found.append(dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1))))
    return found


def test_live_bytes_count_overlapping_tensors_once():
    tensors = [{"name": "a", "offset": 0, "size": 100, "first": 0, "last": 1},
               {"name": "b", "offset": 40, "size": 100, "first": 1, "last": 2},     # over a's tail at step 1
               {"name": "b#scratch", "offset": 200, "size": 8, "first": 2, "last": 2}]
    assert html_report.live_bytes(tensors, 4) == [100, 140, 108, 0]
    assert html_report.peak_offset(tensors) == 208


@pytest.mark.qemu
@needs_toolchain
def test_bench_html_has_the_measured_bars_and_the_arena_timeline(bundle, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "sub" / "b.html"
    result = tinyc("bench", bundle, "--json", tmp_path / "bench.json", "--html", a)
    assert result.returncode == 0, result.stderr
    assert tinyc("bench", bundle, "--html", b).returncode == 0
    assert a.read_bytes() == b.read_bytes()          # same measurement, same bytes
    page = a.read_text()
    figures = json.loads((tmp_path / "bench.json").read_text())
    report = json.loads((bundle / "report.json").read_text())
    layers = figures["layers"]
    assert len(layers) == len(report["layers"]) >= 6
    assert "<script" not in page and "src=" not in page and "href=" not in page   # self-contained

    # one instruction bar per layer, carrying the measured count; estimated cycles behind it
    bars = rects(page, "instr")
    assert [(int(r["data-layer"]), int(r["data-value"])) for r in bars] == \
        [(row["index"], row["instructions"]) for row in layers]
    assert all(row["instructions"] > 0 for row in layers)
    under = rects(page, "instr-under")
    assert [int(r["data-value"]) for r in under] == [row["cycles"] for row in layers]
    # bar lengths follow the counts: the longest bar is the layer with the most instructions
    widths = [float(r["width"]) for r in bars]
    assert widths.index(max(widths)) == max(range(len(layers)), key=lambda i: layers[i]["instructions"])

    # instr/MAC bars for the layers with MACs only, with the 0.75 reference line
    ratio = rects(page, "ratio")
    with_macs = [row for row in layers if row["macs"]]
    assert len(ratio) == len(with_macs) >= 3
    for r, row in zip(ratio, with_macs):
        assert float(r["data-value"]) == pytest.approx(row["instructions"] / row["macs"], abs=1e-4)
    assert page.count('<line class="reference"') == 1 and ">0.75</text>" in page

    # weight bytes per layer with weights
    weights = rects(page, "weights")
    assert [int(r["data-value"]) for r in weights] == [row["weight_bytes"] for row in layers if row["weight_bytes"]]

    # the timeline: every arena tensor of the plan, its peak the bundle's arena size
    m = re.search(r'<svg class="timeline" [^>]*data-arena="(\d+)" data-lower-bound="(\d+)" data-peak="(\d+)"', page)
    arena, bound, peak = map(int, m.groups())
    assert arena == report["arena_size"] and bound == report["arena_lower_bound"]
    assert align_up(peak) == report["arena_size"] > 0
    tensors = rects(page, "tensor")
    planned = [t for t in report["arena_tensors"] if t["size"]]
    assert [(r["data-name"], int(r["data-offset"]), int(r["data-size"])) for r in tensors] == \
        [(t["name"], t["offset"], t["size"]) for t in planned]
    assert any(t["name"].endswith("#scratch") for t in planned)       # the convs' im2col scratch

    # arena bytes live per layer: at least each tensor live then, at most their sum and the lower bound
    live = [int(r["data-value"]) for r in rects(page, "live")]
    assert len(live) == len(layers)
    for i, value in enumerate(live):
        sizes = [t["size"] for t in planned if t["first"] <= i <= t["last"]]
        assert max(sizes, default=0) <= value <= sum(sizes)
    assert max(live) <= report["arena_lower_bound"]


@needs_toolchain
def test_bad_input_fails_cleanly_before_measuring(bundle, tmp_path):
    # an unwritable path: refused before the measurement, no traceback
    (tmp_path / "file").write_text("x")
    result = tinyc("bench", bundle, "--html", tmp_path / "file" / "page.html")
    assert result.returncode != 0 and "is not a directory" in result.stderr and "Traceback" not in result.stderr
    result = tinyc("bench", bundle, "--html", tmp_path)
    assert result.returncode != 0 and "is a directory" in result.stderr and "Traceback" not in result.stderr

    # a bundle whose report.json has no arena plan (an older tinyc): told to compile again, nothing written
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    report = json.loads((old / "report.json").read_text())
    del report["arena_tensors"]
    (old / "report.json").write_text(json.dumps(report))
    page = tmp_path / "page.html"
    result = tinyc("bench", old, "--html", page)
    assert result.returncode != 0 and "arena plan" in result.stderr and "compile the bundle again" in result.stderr
    assert "Traceback" not in result.stderr and not page.exists()


@needs_toolchain
def test_measurement_without_layer_counts_is_refused(bundle):
    report = json.loads((bundle / "report.json").read_text())
    layers = [{**{k: lay[k] for k in ("index", "name", "kind", "macs", "weight_bytes")},
               "instructions": None, "cycles": None} for lay in report["layers"]]
    figures = {"target": "cortex-m4", "layers": layers, "notes": []}
    with pytest.raises(BackendError, match="no per-layer instruction counts"):
        html_report.render(report, figures)
    with pytest.raises(BackendError, match="no per-layer figures"):
        html_report.render(report, {**figures, "layers": []})
    with pytest.raises(BackendError, match=f"figures for 2 layers, the bundle has {len(layers)}"):
        html_report.render(report, {**figures, "layers": layers[:2]})


@needs_toolchain
def test_page_without_estimated_cycles(bundle):
    """A core the cost model has no timings for: instruction bars only, the summary says why."""
    report = json.loads((bundle / "report.json").read_text())
    layers = [{**{k: lay[k] for k in ("index", "name", "kind", "macs", "weight_bytes")},
               "instructions": 100 + 7 * lay["index"], "cycles": None} for lay in report["layers"]]
    figures = {"target": "cortex-m3", "method": "plugin", "instructions": 5000, "instructions_per_mac": None,
               "macs": 0, "cycles": None, "cycle_model": "unavailable: no cortex-m3 timings", "flash": 1,
               "ram": 10, "arena": 4, "static_ram": 2, "stack": 4, "layers": layers, "notes": ["a note"]}
    page = html_report.render(report, figures)
    assert [int(r["data-value"]) for r in rects(page, "instr")] == [row["instructions"] for row in layers]
    assert not rects(page, "instr-under") and "unavailable: no cortex-m3 timings" in page and "a note" in page
