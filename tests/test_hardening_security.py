"""Issue 13, items 1 and 2: no code from a model file runs without --trust-pickle; corrupt archives
and NaN/Inf weights are refused.

Every malicious archive here is a real torch.export archive with one member swapped for a payload
that creates a marker file when run. `test_payloads_are_live` shows plain torch.export.load does run
each payload, so the other tests would notice if tinyc let one through.
"""
import io
import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from tinyc.errors import FrontendError
from tinyc.frontend import _unpickling_disabled, load_model


def tinyc(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True,
                          env=env)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def payload(marker) -> bytes:
    return pickle.dumps(_Payload(marker), protocol=2)


@pytest.fixture(scope="module")
def clean_archive(tmp_path_factory):
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("pt2") / "clean.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 4),)), str(path))
    return path


def rewrite(src, edit) -> bytes:
    """The archive with `edit(members)` applied (members: relative name -> bytes, root 'archive/')."""
    with zipfile.ZipFile(src) as z:
        members = {i.filename.split("/", 1)[1]: z.read(i) for i in z.infolist()}
    edit(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr("archive/" + name, data)
    return out.getvalue()


WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"


def _config_edit(config_name, key, entry, member, blob):
    def edit(m):
        config = json.loads(m[config_name])
        config["config"][key] = {**config["config"].get(key, {}), **entry}
        m[config_name] = json.dumps(config).encode()
        m[member] = blob
    return edit


def attacks(marker):
    """name -> (edit of the archive's members, words the refusal must contain)."""
    evil = payload(marker)
    expr = f"__import__('builtins').exec(\"open({str(marker)!r}, 'w').write('x')\")"

    def sympy_expr(m):
        text = m["models/model.json"].decode()
        m["models/model.json"] = text.replace(
            '{"as_int": 4}', json.dumps({"as_expr": {"expr_str": expr, "hint": {"as_int": 4}}}), 1).encode()

    def node_target(m):
        text = m["models/model.json"].decode()
        m["models/model.json"] = text.replace('"torch.ops.aten.relu.default"', '"torch.os.system"').encode()

    def aoti(m):
        m["data/aotinductor/model/model.so"] = b"\x7fELF not really"

    def legacy_weights(m):
        del m[WEIGHTS]
        m["data/weights/model.pt"] = evil

    return {
        "pickled-weight": (_config_edit(WEIGHTS, "0.weight", {"use_pickle": True}, "data/weights/weight_0", evil),
                           ["weight '0.weight'", "pickle"]),
        "pickled-constant": (_config_edit(CONSTANTS, "c", {"path_name": "tensor_0", "is_param": False,
                                                           "use_pickle": True, "tensor_meta": None},
                                          "data/constants/tensor_0", evil), ["constant 'c'", "pickle"]),
        "opaque-object": (_config_edit(CONSTANTS, "c", {"path_name": "opaque_obj_0", "is_param": False,
                                                        "use_pickle": True, "tensor_meta": None},
                                       "data/constants/opaque_obj_0", evil), ["opaque_obj_0"]),
        "custom-object": (_config_edit(CONSTANTS, "c", {"path_name": "custom_obj_0", "is_param": False,
                                                        "use_pickle": True, "tensor_meta": None},
                                       "data/constants/custom_obj_0", evil), ["custom_obj_0"]),
        "legacy-weights": (legacy_weights, ["data/weights/model.pt", "unsafe unpickler"]),
        "sympy-expression": (sympy_expr, ["symbolic shape expression"]),
        "node-target": (node_target, ["torch.os.system", "not a PyTorch operator"]),
        "aotinductor": (aoti, ["AOTInductor"]),
    }


ATTACKS = sorted(attacks("x"))
LIVE = ["pickled-weight", "pickled-constant", "opaque-object", "legacy-weights", "sympy-expression"]


@pytest.mark.parametrize("name", LIVE)
def test_payloads_are_live(clean_archive, tmp_path, name):
    """Without tinyc's checks torch.export.load runs these payloads (so the tests below mean something)."""
    marker = tmp_path / "marker"
    edit, _ = attacks(marker)[name]
    path = tmp_path / "evil.pt2"
    path.write_bytes(rewrite(clean_archive, edit))
    code = (f"import torch\ntry:\n    torch.export.load({str(path)!r})\nexcept Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize("command", ["compile", "opt"])
@pytest.mark.parametrize("name", ATTACKS)
def test_malicious_archive_is_refused_and_runs_nothing(clean_archive, tmp_path, name, command):
    marker = tmp_path / "marker"
    edit, words = attacks(marker)[name]
    path = tmp_path / "model.pt2"
    path.write_bytes(rewrite(clean_archive, edit))
    out = tmp_path / "out"
    args = ["compile", path, "-o", out] if command == "compile" else ["opt", path, "-o", tmp_path / "o.tir"]
    result = tinyc(*args)
    assert result.returncode == 1, result.stderr
    assert not marker.exists()
    assert "Traceback" not in result.stderr and result.stderr.startswith("tinyc: error:")
    assert "--trust-pickle" in result.stderr and "runs code" in result.stderr
    for w in words:
        assert w in result.stderr
    assert "another PyTorch version" not in result.stderr
    assert not out.exists() and not (tmp_path / "o.tir").exists()


@pytest.mark.parametrize("name", ATTACKS)
def test_load_model_refuses_malicious_archive(clean_archive, tmp_path, name):
    marker = tmp_path / "marker"
    edit, words = attacks(marker)[name]
    path = tmp_path / "model.pt2"
    path.write_bytes(rewrite(clean_archive, edit))
    with pytest.raises(FrontendError) as info:
        load_model(path)
    assert not marker.exists()
    assert all(w in str(info.value) for w in words)


def test_sample_inputs_are_never_unpickled(clean_archive, tmp_path):
    """torch falls back to the unsafe unpickler for sample inputs; tinyc never hands them over."""
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt2"
    path.write_bytes(rewrite(clean_archive, lambda m: m.update({"data/sample_inputs/model.pt": payload(marker)})))
    result = tinyc("compile", path, "-o", tmp_path / "out")
    assert not marker.exists()
    assert result.returncode == 0, result.stderr  # the model itself is fine: tinyc does not need sample inputs
    assert load_model(path).name == "model"
    assert not marker.exists()


def test_legacy_layout_with_pickled_state_dict_is_refused(tmp_path):
    """The PyTorch 2.7 layout loads serialized_*.pt weights-only, falling back to the full unpickler."""
    marker = tmp_path / "marker"
    path = tmp_path / "old.pt2"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {"version": b"8.0", "serialized_exported_program.json": b"{}",
                           "serialized_state_dict.pt": payload(marker), "serialized_constants.pt": b"",
                           "serialized_example_inputs.pt": payload(marker)}.items():
            z.writestr("old/" + name, data)
    result = tinyc("compile", path, "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "serialized_state_dict.pt" in result.stderr and "--trust-pickle" in result.stderr
    assert not marker.exists()


def test_unpickling_guard_stops_torch_even_without_the_checks(clean_archive, tmp_path):
    """The second line of defence alone: torch.export.load on an unchecked archive cannot unpickle."""
    marker = tmp_path / "marker"
    for name in ("pickled-weight", "opaque-object"):
        edit, _ = attacks(marker)[name]
        data = rewrite(clean_archive, edit)
        with pytest.raises(Exception), _unpickling_disabled():
            torch.export.load(io.BytesIO(data))
        assert not marker.exists()
    data = rewrite(clean_archive, lambda m: m.update({"data/sample_inputs/model.pt": payload(marker)}))
    with pytest.raises(Exception), _unpickling_disabled():
        torch.export.load(io.BytesIO(data))
    assert not marker.exists()
    buf = io.BytesIO()
    torch.save({"k": [1]}, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False) == {"k": [1]}  # restored afterwards


def test_trusted_archive_still_loads(clean_archive, tmp_path):
    result = tinyc("compile", clean_archive, "--trust-pickle", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert load_model(clean_archive, trust_pickle=True).name == "clean"


# ---------------------------------------------------------------- integrity


def test_overwritten_weight_bytes_fail_the_crc(clean_archive, tmp_path):
    data = bytearray(clean_archive.read_bytes())
    with zipfile.ZipFile(clean_archive) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/weights/weight_0"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 8:start + 24] = b"\xff" * 16  # 16 bytes inside the stored weight: NaNs, sizes unchanged
    path = tmp_path / "corrupt.pt2"
    path.write_bytes(bytes(data))
    result = tinyc("compile", path, "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "CRC" in result.stderr and "weight_0" in result.stderr and "damaged" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cut", [100, 3000, -200])
def test_truncated_archive_prints_one_clean_error(clean_archive, tmp_path, cut):
    data = clean_archive.read_bytes()
    path = tmp_path / "cut.pt2"
    path.write_bytes(data[:cut])
    result = tinyc("opt", path)
    assert result.returncode == 1
    assert result.stderr.startswith("tinyc: error:") and "Traceback" not in result.stderr
    assert "damaged" in result.stderr
    assert len(result.stderr.splitlines()) <= 3  # no torch log lines before tinyc's message


def test_torch_loggers_are_silenced_for_bad_archives(clean_archive, tmp_path):
    """An archive torch.export.load fails on (it logs a warning with a traceback) gives tinyc's message only."""
    path = tmp_path / "bad.pt2"
    path.write_bytes(rewrite(clean_archive, lambda m: m.update({"models/model.json": b'{"graph_module": 7}'})))
    result = tinyc("compile", path, "-o", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("tinyc: error: could not load the torch.export archive")
    assert "Traceback" not in result.stderr and "W1" not in result.stderr


def test_duplicate_member_names_are_refused(clean_archive, tmp_path):
    data = rewrite(clean_archive, lambda m: None)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as z, zipfile.ZipFile(out, "w") as w:
        for info in z.infolist():
            w.writestr(info.filename, z.read(info))
        with pytest.warns(UserWarning):
            w.writestr("archive/" + WEIGHTS, z.read("archive/" + WEIGHTS))
    path = tmp_path / "dup.pt2"
    path.write_bytes(out.getvalue())
    result = tinyc("compile", path, "-o", tmp_path / "out")
    assert result.returncode == 1 and "twice" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def nan_archive(tmp_path_factory):
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    with torch.no_grad():
        m[0].weight[0, 0] = float("nan")
        m[0].bias[1] = float("inf")
    path = tmp_path_factory.mktemp("nan") / "nan.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 4),)), str(path))
    return path


def test_nan_weights_are_refused_with_the_tensor_name(nan_archive, tmp_path):
    result = tinyc("compile", nan_archive, "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "%0.weight: 1 NaN" in result.stderr and "%0.bias: 1 infinite" in result.stderr
    assert "--allow-nonfinite" in result.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(FrontendError, match="NaN"):
        load_model(nan_archive)
    assert load_model(nan_archive, allow_nonfinite=True).name == "nan"


def test_allow_nonfinite_warns_and_compiles(nan_archive, tmp_path):
    result = tinyc("compile", nan_archive, "--allow-nonfinite", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "%0.weight" in result.stderr


def test_nan_weights_with_calib_fail_cleanly(nan_archive, tmp_path):
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((8, 1, 4), dtype=np.float32))
    result = tinyc("compile", nan_archive, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "out")
    assert result.returncode == 1 and "NaN" in result.stderr and "Traceback" not in result.stderr
    result = tinyc("compile", nan_archive, "--allow-nonfinite", "--calib", tmp_path / "calib.npy",
                   "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "quantize-int8" in result.stderr and "NaN or infinite" in result.stderr
    assert not (tmp_path / "out").exists()


NAN_IR = """graph @m(%x: tensor<1x2xf32>) -> (tensor<1x2xf32>) {
  %w = const : tensor<2xf32> loc("net.py:3 in forward")
  %y = add(%x, %w) : tensor<1x2xf32>
  return %y
}

{-#
  resources: {
    w: "0x0000C07F0000803F"
  }
#-}
"""


def test_nan_constant_in_ir_text_is_refused(tmp_path):
    path = tmp_path / "nan.tir"
    path.write_text(NAN_IR)
    result = tinyc("opt", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "%w (net.py:3 in forward): 1 NaN of 2 values" in result.stderr
    result = tinyc("opt", path, "--allow-nonfinite")
    assert result.returncode == 0 and "warning" in result.stderr


def test_archive_declaring_too_much_content_is_refused_before_reading(clean_archive, monkeypatch):
    """A zip bomb (or a model far beyond a microcontroller) is refused from its central directory."""
    import tinyc.frontend as frontend
    monkeypatch.setattr(frontend, "_MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(FrontendError, match="declares .* bytes of content"):
        load_model(clean_archive)
