"""`tinyc compile / run / bench` through the real command line: reports, budgets, errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_close, torch_outputs, zoo_inputs


def tinyc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_compile_writes_bundle_report_and_is_deterministic(zoo_archive, tmp_path):
    model = zoo_archive("cnn_bn")
    for out in ("a", "b"):
        result = tinyc("compile", model, "--target", "host", "-o", tmp_path / out)
        assert result.returncode == 0, result.stderr
    assert "--calib" in result.stderr  # the int8 hint
    for f in ("model.c", "model.h", "tinyc_kernels_f32.c", "Makefile"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["pipeline"] == "fuse" and report["target"] == "host"
    assert report["arena_size"] >= report["arena_lower_bound"] > 0
    assert [s["name"] for s in report["passes"]] == ["import", "fuse"]
    assert f"#define model_ARENA_SIZE {report['arena_size']}\n" in (tmp_path / "a" / "model.h").read_text()


def test_run_command_matches_pytorch_on_host(zoo_archive, tmp_path):
    assert tinyc("compile", zoo_archive("mlp"), "-o", tmp_path / "out").returncode == 0
    x = zoo_inputs("mlp", rows=3)
    np.save(tmp_path / "x.npy", x)
    result = tinyc("run", tmp_path / "out", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    assert_close(np.load(tmp_path / "y.npy"), torch_outputs("mlp", x)[0], 1e-4)


def test_run_timeout_option_and_default_that_scales_with_rows(zoo_archive, tmp_path):
    from tinyc.backends.run import default_timeout
    assert default_timeout(1000, True) >= 60 + 1000 * 0.2 and default_timeout(1, True) >= 60
    assert default_timeout(1000, True) > default_timeout(10, True) > default_timeout(10, False)
    assert tinyc("compile", zoo_archive("mlp"), "-o", tmp_path / "out").returncode == 0
    np.save(tmp_path / "x.npy", zoo_inputs("mlp", rows=2))
    result = tinyc("run", tmp_path / "out", "--input", tmp_path / "x.npy", "--timeout", "1e-6")
    assert result.returncode != 0 and "did not finish within 1e-06 s" in result.stderr
    assert "Traceback" not in result.stderr
    result = tinyc("run", tmp_path / "out", "--input", tmp_path / "x.npy", "--timeout", "0")
    assert result.returncode != 0 and "timeout must be a positive" in result.stderr
    assert tinyc("run", tmp_path / "out", "--input", tmp_path / "x.npy", "--timeout", "30").returncode == 0


@pytest.mark.qemu
def test_bench_command_prints_figures_and_layers(zoo_archive, tmp_path):
    assert tinyc("compile", zoo_archive("mlp"), "--target", "cortex-m4", "-o", tmp_path / "out").returncode == 0
    result = tinyc("bench", tmp_path / "out", "--json", tmp_path / "bench.json")
    assert result.returncode == 0, result.stderr
    assert "instructions / inference" in result.stdout and "per MAC" in result.stdout
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["instructions"] > figures["macs"] > 0
    assert figures["ram"] == figures["arena"] + figures["static_ram"] + figures["stack"]
    assert all(row["instructions"] is not None for row in figures["layers"])


@pytest.mark.qemu
def test_board_budget_overrun_fails_cleanly(zoo_archive, tmp_path):
    out = tmp_path / "out"
    result = tinyc("compile", zoo_archive("resnet8"), "--board", "nucleo-l432kc", "-o", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nucleo-l432kc" in result.stderr and "RAM" in result.stderr
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["compile", "{model}", "--target", "cortex-m9", "-o", "{tmp}/o"], "cortex-m4"),
    (["compile", "{model}", "--board", "nosuchboard", "-o", "{tmp}/o"], "nucleo-f446re"),
    (["compile", "{model}", "-p", "fuse,bogus", "-o", "{tmp}/o"], "unknown pass 'bogus'"),
    (["compile", "{tmp}/missing.pt2", "-o", "{tmp}/o"], "no such file"),
    (["compile", "{model}", "--calib", "{tmp}/missing.npy", "-o", "{tmp}/o"], "calibration file not found"),
    (["run", "{tmp}", "--input", "{tmp}/x.npy"], "not a tinyc bundle"),
])
def test_user_errors(zoo_archive, tmp_path, args, message):
    args = [a.format(model=zoo_archive("mlp"), tmp=tmp_path) for a in args]
    result = tinyc(*args)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_compile_refuses_to_overwrite_a_foreign_directory(zoo_archive, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = tinyc("compile", zoo_archive("mlp"), "-o", tmp_path / "mine")
    assert result.returncode == 1 and "not a tinyc bundle" in result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_run_rejects_wrong_input_shape(zoo_archive, tmp_path):
    assert tinyc("compile", zoo_archive("mlp"), "-o", tmp_path / "out").returncode == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 7), np.float32))
    result = tinyc("run", tmp_path / "out", "--input", tmp_path / "x.npy")
    assert result.returncode == 1 and "the model takes" in result.stderr


def test_pickled_module_needs_trust_flag(tmp_path):
    import torch
    from helpers import zoo_model
    module, _ = zoo_model("mlp")
    torch.save(module, tmp_path / "whole.pt")
    refused = tinyc("compile", tmp_path / "whole.pt", "-o", tmp_path / "o")
    assert refused.returncode == 1 and "arbitrary code" in refused.stderr and "torch.export.save" in refused.stderr
    accepted = tinyc("compile", tmp_path / "whole.pt", "--trust-pickle", "--input-shape", "1,64", "-o", tmp_path / "o")
    assert accepted.returncode == 0, accepted.stderr


def test_calib_compiles_to_int8_bit_exact_with_the_interpreter(zoo_archive, tmp_path):
    from tinyc.interpreter import run
    from tinyc.text import parse_file
    calib = zoo_inputs("cnn_bn", rows=16, seed=1)
    np.save(tmp_path / "calib.npy", calib)
    result = tinyc("compile", zoo_archive("cnn_bn"), "--calib", tmp_path / "calib.npy", "-o", tmp_path / "out",
                   "--dump-ir", tmp_path / "ir")
    assert result.returncode == 0, result.stderr
    assert "--calib" not in result.stderr  # no float hint
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pipeline"] == "fuse,quantize-int8"
    x = zoo_inputs("cnn_bn", rows=3, seed=2)
    np.save(tmp_path / "x.npy", x)
    assert tinyc("run", tmp_path / "out", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy").returncode == 0
    graph = parse_file(tmp_path / "ir" / "02-quantize-int8.tir")
    want = np.concatenate([run(graph, [x[i:i + 1]])[0] for i in range(len(x))])
    assert np.array_equal(np.load(tmp_path / "y.npy"), want)


def test_wide_weights_option(zoo_archive, tmp_path):
    """--wide-weights all: every int8 dense conv flagged in the report (int16 pairs or Winograd), the outputs the
    same bytes as with 0 and with the default (a bounded allowance, a subset of the layers); a bad value is a
    usage error."""
    calib = zoo_inputs("cnn_bn", rows=16, seed=1)
    np.save(tmp_path / "calib.npy", calib)
    x = zoo_inputs("cnn_bn", rows=3, seed=2)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for label, extra in (("plain", ["--wide-weights", "0"]), ("default", []), ("wide", ["--wide-weights", "all"])):
        result = tinyc("compile", zoo_archive("cnn_bn"), "--calib", tmp_path / "calib.npy", "-o", tmp_path / label,
                       *extra)
        assert result.returncode == 0, result.stderr
        run = tinyc("run", tmp_path / label, "--input", tmp_path / "x.npy", "-o", tmp_path / f"{label}.npy")
        assert run.returncode == 0, run.stderr
        outs[label] = json.loads((tmp_path / label / "report.json").read_text())
    wide = [layer["name"] for layer in outs["wide"]["layers"] if layer["wide_weights"]]
    assert wide and not any(layer["wide_weights"] for layer in outs["plain"]["layers"])
    assert np.array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "wide.npy"))
    assert np.array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "default.npy"))
    default = [layer["name"] for layer in outs["default"]["layers"] if layer["wide_weights"]]
    assert set(default) <= set(wide)
    unused = tinyc("compile", zoo_archive("cnn_bn"), "-o", tmp_path / "float", "--wide-weights", "all")
    assert unused.returncode == 0 and "--wide-weights changed nothing" in unused.stderr   # float32: nothing to widen
    bad = tinyc("compile", zoo_archive("cnn_bn"), "-o", tmp_path / "bad", "--wide-weights", "-3")
    assert bad.returncode == 2 and "--wide-weights" in bad.stderr and "Traceback" not in bad.stderr
