"""The bundle manifest OUT/bundle.json (issue 9, item 5): written by the emitter, read by run and
bench; a missing, corrupt or incomplete manifest is a clear BackendError (what, where, what to do),
and `tinyc run` reports it without a traceback."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import fused_graph, zoo_inputs
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.manifest import MANIFEST, read_manifest
from tinyc.backends.run import run_model
from tinyc.errors import BackendError
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    graph = PassManager("quantize-int8,share-weights{bits=4}").run(
        fused_graph("mlp").copy(), PassContext(calib=zoo_inputs("mlp", 8, seed=1)))
    return out, emit_bundle(graph, out, name="net", target_name="host")


def header_macros(path) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"#define (\w+) (\d+)$", path.read_text(), re.M)}


def test_manifest_describes_the_bundle(bundle):
    out, info = bundle
    m = read_manifest(out, "net")
    macros = header_macros(out / "net.h")
    assert (m.name, m.target, m.graph) == ("net", "host", "mlp")
    assert m.input_size == macros["net_INPUT_SIZE"] == info.input_size == 64
    assert m.output_size == macros["net_OUTPUT_SIZE"] == info.output_size == 10
    assert m.arena_size == macros["net_ARENA_SIZE"] == info.arena_size
    assert [(t.name, t.shape, t.dtype, t.offset, t.size) for t in m.inputs] == [("x", (1, 64), "f32", 0, 64)]
    assert m.outputs[0].shape == (1, 10) and m.outputs[0].size == macros["net_OUTPUT0_SIZE"]
    assert m.kernels == {"packed": ("S8_FC_DENSE",), "s8": ("DEQUANTIZE", "FC", "QUANTIZE")}
    assert set(m.files) == {p.name for p in info.files} - {MANIFEST}
    assert all((out / f).exists() for f in m.files)
    assert (out / MANIFEST) in info.files


def test_manifest_is_deterministic(bundle, tmp_path):
    out, _ = bundle
    graph = PassManager("quantize-int8,share-weights{bits=4}").run(
        fused_graph("mlp").copy(), PassContext(calib=zoo_inputs("mlp", 8, seed=1)))
    emit_bundle(graph, tmp_path, name="net", target_name="host")
    assert (tmp_path / MANIFEST).read_bytes() == (out / MANIFEST).read_bytes()
    assert str(tmp_path) not in (tmp_path / MANIFEST).read_text()


def break_manifest(out, how: str) -> None:
    path = out / MANIFEST
    data = json.loads(path.read_text()) if how not in ("missing", "not json", "binary", "not an object") else None
    if how == "missing":
        path.unlink()
    elif how == "not json":
        path.write_text(path.read_text()[:40])
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "no outputs key":
        del data["outputs"]
        path.write_text(json.dumps(data))
    elif how == "wrong type":
        data["inputs"][0]["size"] = "64"
        path.write_text(json.dumps(data))
    elif how == "inconsistent":
        data["input_size"] = 65
        path.write_text(json.dumps(data))
    elif how == "not an object":
        path.write_text("[1, 2, 3]")
    elif how == "other version":
        data["version"] = 99
        path.write_text(json.dumps(data))


CASES = {"missing": "has no bundle.json", "not json": "cannot read the bundle manifest",
         "binary": "cannot read the bundle manifest", "no outputs key": "has no 'outputs'",
         "wrong type": "inputs[0].size", "inconsistent": "input_size is 65",
         "not an object": "is not an object", "other version": "version 99"}


@pytest.mark.parametrize("how", sorted(CASES))
def test_bad_manifest_is_a_clear_error(bundle, tmp_path, how):
    src, _ = bundle
    out = tmp_path / "b"
    subprocess.run(["cp", "-r", str(src), str(out)], check=True)
    break_manifest(out, how)
    with pytest.raises(BackendError) as e:
        run_model(out, "host", "net", np.zeros((1, 64), np.float32))
    err = e.value
    assert CASES[how] in err.what, err.what
    assert err.where and str(out) in err.where
    assert "compile the bundle again" in (err.hint or "")


def test_manifest_of_another_model_is_refused(bundle):
    out, _ = bundle
    with pytest.raises(BackendError, match="describes model 'net', not 'model'"):
        read_manifest(out, "model")


def test_tinyc_run_with_a_corrupt_manifest(zoo_archive, tmp_path):
    out = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-m", "tinyc", "compile", str(zoo_archive("mlp")), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    x = tmp_path / "x.npy"
    np.save(x, zoo_inputs("mlp", 1))
    ok = subprocess.run([sys.executable, "-m", "tinyc", "run", str(out), "--input", str(x)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for how in ("no outputs key", "not json", "missing"):
        break_manifest(out, how)
        proc = subprocess.run([sys.executable, "-m", "tinyc", "run", str(out), "--input", str(x)], capture_output=True, text=True)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert CASES[how] in proc.stderr and "compile the bundle again" in proc.stderr, proc.stderr
