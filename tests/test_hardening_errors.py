"""Issue 13, items 3 and 5: every user error through the real CLI is a tinyc error (what, where, what to do),
exits non-zero, prints no traceback and leaves nothing half-written; anything unexpected is an
"internal error in tinyc" whose traceback only --debug / TINYC_DEBUG=1 shows."""
import contextlib
import io
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from tinyc.cli import main

MLP_IR = """graph @m(%x: tensor<1x3xf32>) -> (tensor<1x2xf32>) {
  %w = const : tensor<2x3xf32>
  %y = linear(%x, %w) : tensor<1x2xf32> loc("net.py:7 in forward")
  return %y
}

{-#
  resources: {
    w: "0x0000803F000000000000000000000000000080BF00000000"
  }
#-}
"""


def tinyc(*args, env=None):
    """The real command line, in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "TINYC_DEBUG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=300)


def tinyc_main(*args) -> tuple[int, str, str]:
    """main() in-process (for faults that need monkeypatching)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def assert_user_error(result, *words):
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.startswith("tinyc: error:"), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for w in words:
        assert w in result.stderr, result.stderr


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("mlp") / "mlp.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 4),)), str(path))
    return path


@pytest.fixture(scope="module")
def bundle(mlp, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    result = tinyc("compile", mlp, "-o", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def ir(tmp_path):
    path = tmp_path / "m.tir"
    path.write_text(MLP_IR)
    return path


# ---------------------------------------------------------------- model files


def test_unreadable_model_file(mlp, tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(mlp) else real_access(p, mode))
    code, _, err = tinyc_main("compile", mlp, "-o", tmp_path / "out")
    assert code == 1 and "cannot read model file" in err and "permission" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_model_file_for_real(mlp, tmp_path):
    path = tmp_path / "locked.pt2"
    path.write_bytes(mlp.read_bytes())
    path.chmod(0)
    assert_user_error(tinyc("opt", path), "locked.pt2", "permission")


def test_fifo_is_refused_instead_of_blocking(tmp_path, mlp):
    fifo = tmp_path / "model.pt2"
    os.mkfifo(fifo)
    assert_user_error(tinyc("opt", fifo), "not a regular file", "FIFO")
    os.mkfifo(tmp_path / "calib.npy")
    assert_user_error(tinyc("compile", mlp, "--calib", tmp_path / "calib.npy", "-o", tmp_path / "out"),
                      "calibration file", "not a regular file")


def test_fifo_is_refused_by_load_model(tmp_path):
    from tinyc.errors import FrontendError
    from tinyc.frontend import load_model
    fifo = tmp_path / "model.pt2"
    os.mkfifo(fifo)
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(FrontendError, load_model, fifo)))
    t.start()
    t.join(30)
    assert done and "not a regular file" in str(done[0].value)


def test_zero_size_layer(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(0, 4)).eval()
    path = tmp_path / "zero.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 0),)), str(path))
    assert_user_error(tinyc("compile", path, "-o", tmp_path / "out"), "no elements", "%input: [1, 0]", "zero-size")
    assert not (tmp_path / "out").exists()


def test_text_file_that_is_not_ir_gets_the_parser_position(tmp_path):
    path = tmp_path / "model.tir"
    path.write_text("graph @m(%x: tensor<1xf32>) -> (tensor<1xf32>) {\n  return %x,\n}\n")
    assert_user_error(tinyc("opt", path), f"{path}:3:1", "syntax error")
    notes = tmp_path / "notes.txt"
    notes.write_text("just some notes\n")
    result = tinyc("compile", notes, "-o", tmp_path / "out")
    assert_user_error(result, f"{notes}:1:1", "syntax error")
    assert "not a PyTorch model" not in result.stderr


def test_tir_with_binary_garbage_is_reported_by_the_ir_reader(tmp_path):
    path = tmp_path / "model.tir"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert_user_error(tinyc("opt", path), "cannot read IR file", str(path))


def test_misspelled_op_in_user_ir_is_not_blamed_on_tinyc(ir):
    ir.write_text(MLP_IR.replace("linear(", "linaer("))
    result = tinyc("opt", ir)
    assert_user_error(result, "does not verify", "linaer", str(ir))
    assert "bug in tinyc" not in result.stderr


def test_pass_output_that_does_not_verify_is_blamed_on_tinyc():
    from tinyc.errors import TinycError
    from tinyc.ir import Op
    from tinyc.passes import Pass
    from tinyc.passmanager import PassManager
    from tinyc.text import parse

    class Breaks(Pass):
        """Renames an op kind to nonsense."""
        name = "breaks"

        def apply(self, graph, ctx):
            op = graph.ops[-1]
            graph.ops[-1] = Op("linaer", op.operands, op.result, op.attrs, op.loc)
            return graph

    with pytest.raises(TinycError) as info:
        PassManager([Breaks()]).run(parse(MLP_IR))
    assert "after pass 'breaks'" in info.value.what and "bug in tinyc" in info.value.hint
    g = parse(MLP_IR)
    g.ops[-1] = Op("linaer", g.ops[-1].operands, g.ops[-1].result, g.ops[-1].attrs, None)
    with pytest.raises(TinycError) as info:
        PassManager([]).run(g)
    assert "input IR" in info.value.what and "bug in tinyc" not in (info.value.hint or "")


def test_lone_surrogate_in_loc_is_a_parse_error(ir, tmp_path):
    ir.write_text(MLP_IR.replace('loc("net.py:7', 'loc("net\\ud800.py:7'))
    assert_user_error(tinyc("opt", ir), "lone surrogate", f"{ir}:3:")
    assert_user_error(tinyc("compile", ir, "-o", tmp_path / "out"), "lone surrogate")
    assert not (tmp_path / "out").exists()
    ir.write_text(MLP_IR.replace('loc("net.py:7', 'loc("net\\ud83d\\ude00.py:7'))  # a proper pair is fine
    assert tinyc("opt", ir).returncode == 0


# ---------------------------------------------------------------- verifier: constant values


def test_sub_byte_codes_out_of_range(tmp_path):
    path = tmp_path / "codes.tir"
    path.write_text('graph @m(%x: tensor<1xf32>) -> (tensor<1xf32>) {\n  %c = const : tensor<2xi4>\n'
                    '  return %x\n}\n\n{-#\n  resources: {\n    c: "0x0709"\n  }\n#-}\n')
    assert_user_error(tinyc("opt", path), "i4 codes must lie in [-8, 7]", "holds 9")
    path.write_text(path.read_text().replace("0x0709", "0x07F8"))
    assert tinyc("opt", path).returncode == 0  # 7 and -8 are i4 codes


@pytest.mark.parametrize("dtype,bad,ok", [("u2", "04", "03"), ("i2", "02", "FE"), ("u1", "02", "01"),
                                          ("i1", "01", "FF"), ("u4", "10", "0F")])
def test_code_ranges_of_every_sub_byte_dtype(dtype, bad, ok):
    from tinyc.errors import VerifyError
    from tinyc.text import parse
    from tinyc.verifier import verify
    text = (f'graph @m(%x: tensor<1xf32>) -> (tensor<1xf32>) {{\n  %c = const : tensor<1x{dtype}>\n'
            f'  return %x\n}}\n\n{{-#\n  resources: {{\n    c: "0x{{}}"\n  }}\n#-}}\n')
    verify(parse(text.replace("{}", ok)))
    with pytest.raises(VerifyError, match=f"{dtype} codes must lie"):
        verify(parse(text.replace("{}", bad)))


DECODE_IR = """graph @m(%x: tensor<1x3xf32>) -> (tensor<1x2xf32>) {
  %idx = const : tensor<2x3xu2>
  %cb = const : tensor<3xf32>
  %w = decode(%idx, %cb) : tensor<2x3xf32>
  %y = linear(%x, %w) : tensor<1x2xf32>
  return %y
}

{-#
  resources: {
    idx: "0x0001020001IDX",
    cb: "0x0000803F000000000000803F"
  }
#-}
"""


def test_decode_index_outside_the_codebook(tmp_path):
    path = tmp_path / "decode.tir"
    path.write_text(DECODE_IR.replace("IDX", "03"))
    assert_user_error(tinyc("opt", path), "decode index 3 is outside the codebook's 3 entries")
    path.write_text(DECODE_IR.replace("IDX", "02"))
    assert tinyc("opt", path).returncode == 0


# ---------------------------------------------------------------- pipelines and options


def test_duplicate_pass_option_is_refused(ir):
    assert_user_error(tinyc("opt", ir, "-p", "prune-weights{sparsity=0.5 sparsity=0.9}"),
                      "option 'sparsity' is given twice", "prune-weights")


def test_dump_ir_naming_an_existing_file(ir, tmp_path):
    existing = tmp_path / "dumps"
    existing.write_text("keep me")
    assert_user_error(tinyc("opt", ir, "--dump-ir", existing), "--dump-ir", "not a directory")
    assert existing.read_text() == "keep me"


# ---------------------------------------------------------------- data files


def _savez(path, **arrays):
    with open(path, "wb") as f:  # a file object: numpy.savez would add .npz to a path
        np.savez(f, **arrays)


@pytest.mark.parametrize("make,words", [
    (lambda p: np.save(p, np.zeros((0, 1, 4), np.float32)), ["empty", "shape [0, 1, 4]"]),
    (lambda p: np.save(p, np.array([["a", "b", "c", "d"]])), ["not numbers", "<U1"]),
    (lambda p: _savez(p, x=np.zeros((2, 1, 4))), [".npz archive", "arrays: x"]),
    (lambda p: np.save(p, np.ones((2, 1, 4), np.complex64)), ["complex"]),
    (lambda p: np.save(p, np.full((2, 1, 4), np.nan, np.float32)), ["8 NaN or infinite"]),
    (lambda p: p.write_text("1,2,3,4\n"), ["cannot read calibration file", "numpy.save"]),
])
def test_bad_calibration_data(mlp, tmp_path, make, words):
    calib = tmp_path / "calib.npy"
    make(calib)
    out = tmp_path / "out"
    assert_user_error(tinyc("compile", mlp, "--calib", calib, "-o", out), "calibration", *words)
    assert not out.exists()


@pytest.mark.parametrize("make,words", [
    (lambda: np.array([["x", "y", "z", "w"]]), ["not numbers"]),
    (lambda: np.zeros((0, 4), np.float32), ["empty"]),
    (lambda: np.ones((1, 4), np.complex128), ["complex"]),
])
def test_bad_run_input(bundle, tmp_path, make, words):
    np.save(tmp_path / "x.npy", make())
    assert_user_error(tinyc("run", bundle, "--input", tmp_path / "x.npy"), "input file", *words)


@pytest.mark.parametrize("damage,words", [
    (lambda r: "{not json", ["manifest", "damaged"]),
    (lambda r: json.dumps({k: v for k, v in r.items() if k != "outputs"}), ["missing field 'outputs'"]),
    (lambda r: json.dumps({**r, "inputs": [{"shape": "1x4"}]}), ["bad inputs entry"]),
    (lambda r: json.dumps([1, 2]), ["not a JSON object"]),
    (lambda r: "\xff\xfe", ["damaged"]),
])
def test_corrupt_or_incomplete_manifest(bundle, tmp_path, damage, words):
    import shutil
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    report = json.loads((copy / "report.json").read_text())
    (copy / "report.json").write_text(damage(report), encoding="latin-1")
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    assert_user_error(tinyc("run", copy, "--input", tmp_path / "x.npy"), str(copy / "report.json"),
                      "tinyc compile", *words)
    assert_user_error(tinyc("bench", copy), "manifest")


def test_run_output_into_a_missing_directory(bundle, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 1, 4), np.float32))
    out = tmp_path / "new" / "dir" / "y.npy"
    result = tinyc("run", bundle, "--input", tmp_path / "x.npy", "-o", out)
    assert result.returncode == 0, result.stderr
    assert np.load(out).shape == (2, 3)
    assert not [p for p in out.parent.iterdir() if p.name != "y.npy"]  # no temporary left behind


def test_run_output_onto_a_directory(bundle, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    assert_user_error(tinyc("run", bundle, "--input", tmp_path / "x.npy", "-o", tmp_path), "is a directory")


# ---------------------------------------------------------------- output paths


def test_opt_output_is_a_directory(ir, tmp_path):
    (tmp_path / "d").mkdir()
    assert_user_error(tinyc("opt", ir, "-o", tmp_path / "d"), "-o", "is a directory")
    assert list((tmp_path / "d").iterdir()) == []


@pytest.mark.parametrize("command", ["compile", "opt"])
def test_output_in_a_read_only_directory(ir, tmp_path, monkeypatch, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(ro) else real_access(p, mode))
    out = ro / ("bundle" if command == "compile" else "out.tir")
    args = ("compile", ir, "-o", out) if command == "compile" else ("opt", ir, "-o", out)
    code, _, err = tinyc_main(*args)
    assert code == 1 and "not writable" in err and str(ro) in err and "Traceback" not in err
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.parametrize("command", ["compile", "opt"])
def test_output_in_a_read_only_directory_for_real(ir, tmp_path, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    out = ro / "out"
    assert_user_error(tinyc(command, ir, "-o", out), "not writable")


def test_opt_write_failure_leaves_nothing(ir, tmp_path, monkeypatch):
    """An OSError while writing (disk full, ...) is reported and the temporary file removed."""
    import tinyc.commands as commands
    real_replace = os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(commands.os, "replace", full)
    code, _, err = tinyc_main("opt", ir, "-o", tmp_path / "out.tir")
    monkeypatch.setattr(commands.os, "replace", real_replace)
    assert code == 1 and "cannot write" in err and "No space left" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["m.tir"]


def test_opt_output_gets_the_umask_permissions(ir, tmp_path):
    old = os.umask(0o022)
    try:
        assert tinyc("opt", ir, "-o", tmp_path / "out.tir").returncode == 0
    finally:
        os.umask(old)
    assert (tmp_path / "out.tir").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- the last line of defence


def _explode(args):
    raise RuntimeError("something tinyc did not expect")


def test_unexpected_exception_is_an_internal_error_without_traceback(monkeypatch):
    import tinyc.commands as commands
    monkeypatch.delenv("TINYC_DEBUG", raising=False)
    monkeypatch.setattr(commands, "cmd_passes", _explode)
    code, _, err = tinyc_main("passes")
    assert code != 0
    assert err.startswith("tinyc: internal error in tinyc: RuntimeError: something tinyc did not expect")
    assert "please report" in err and "--debug" in err and "Traceback" not in err


@pytest.mark.parametrize("how", ["flag-before", "flag-after", "env"])
def test_debug_shows_the_traceback(monkeypatch, how):
    import tinyc.commands as commands
    monkeypatch.setattr(commands, "cmd_passes", _explode)
    monkeypatch.delenv("TINYC_DEBUG", raising=False)
    if how == "env":
        monkeypatch.setenv("TINYC_DEBUG", "1")
    args = {"flag-before": ("--debug", "passes"), "flag-after": ("passes", "--debug"), "env": ("passes",)}[how]
    code, _, err = tinyc_main(*args)
    assert code != 0 and "internal error in tinyc" in err and "Traceback" in err and "_explode" in err


def test_unanticipated_os_error_is_a_user_error(monkeypatch):
    import tinyc.commands as commands

    def denied(args):
        raise PermissionError(13, "Permission denied", "/some/file")
    monkeypatch.setattr(commands, "cmd_passes", denied)
    code, _, err = tinyc_main("passes")
    assert code == 1 and "cannot access /some/file: Permission denied" in err and "hint:" in err
    assert "internal error" not in err and "Traceback" not in err


def test_real_cli_debug_flag_traces_user_errors(tmp_path):
    result = tinyc("--debug", "opt", tmp_path / "missing.tir")
    assert result.returncode == 1 and "no such file" in result.stderr and "Traceback" in result.stderr
    result = tinyc("opt", tmp_path / "missing.tir")
    assert_user_error(result, "no such file")


def test_control_characters_in_strings_are_refused(ir, tmp_path):
    ir.write_text(MLP_IR.replace('loc("net.py:7', 'loc("net\\u0000.py:7'))
    assert_user_error(tinyc("compile", ir, "-o", tmp_path / "out"), "control character U+0000", str(ir))
    assert not (tmp_path / "out").exists()


def test_nan_attribute_is_refused(tmp_path):
    path = tmp_path / "clamp.tir"
    path.write_text('graph @m(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n'
                    '  %y = clamp(%x) {max = 1.0, min = nan} : tensor<2xf32>\n  return %y\n}\n')
    result = tinyc("compile", path, "-o", tmp_path / "out")
    assert_user_error(result, "attribute min is NaN")
    assert "bug in tinyc" not in result.stderr


def test_bench_json_onto_a_directory_is_refused_before_running(bundle, tmp_path):
    assert_user_error(tinyc("bench", bundle, "--json", tmp_path), "--json", "is a directory")


def test_closed_stdout_is_not_a_traceback(monkeypatch):
    """`tinyc opt big.tir | head -1`: the reader leaving early is no reason for a traceback."""
    import tinyc.commands as commands

    def reader_left(args):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(commands, "cmd_opt", reader_left)
    code, out, err = tinyc_main("opt", "whatever.tir")
    assert code == 1 and err == "" and out == ""
