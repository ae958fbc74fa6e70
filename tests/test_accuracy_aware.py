"""Issue 5's accuracy-aware acceptance case: on the digits CNN, prune-channels{ratio=auto} within a
1-point budget cuts MACs at least 2x, measured on held-out images the choice never saw, and the
emitted C runs on QEMU with correspondingly fewer instructions."""
import numpy as np
import pytest

from tinyc.backends import toolchain
from tinyc.backends.c_emitter import emit_bundle
from tinyc.compression_eval import trained
from tinyc.evaluate import make_context, make_evaluator
from tinyc.passmanager import PassManager
from tinyc.stats import graph_stats

PIPELINE = "fuse,prune-channels{ratio=auto recover=20}"


@pytest.fixture(scope="module")
def pruned():
    graph, (x_train, _, x_test, y_test) = trained("cnn")
    half = len(x_test) // 2    # choose on the first half, judge on the second
    ctx = make_context(graph, eval_inputs=x_test[:half], eval_labels=y_test[:half], train=x_train,
                       max_accuracy_drop=1.0)
    fused = PassManager("fuse").run(graph.copy())
    out = PassManager(PIPELINE).run(graph.copy(), ctx)
    held_out, _ = make_evaluator(graph, x_test[half:], y_test[half:])
    return fused, out, held_out, x_test[half:]


def test_macs_cut_at_least_2x_within_one_point_on_held_out_data(pruned):
    fused, out, held_out, _ = pruned
    assert graph_stats(fused).macs >= 2 * graph_stats(out).macs
    assert held_out(fused) - held_out(out) <= 1.0


@pytest.mark.qemu
def test_pruned_firmware_runs_on_qemu_with_fewer_instructions(pruned, tmp_path):
    fused, out, _, x = pruned
    counts = {}
    for tag, graph in (("dense", fused), ("pruned", out)):
        emit_bundle(graph, tmp_path / tag, target_name="cortex-m4")
        toolchain.write_target_files(tmp_path / tag, "cortex-m4", "model")
        got = toolchain.run(tmp_path / tag, "cortex-m4", "model", x[:4].reshape(4, -1))
        from tinyc.interpreter import run
        want = np.concatenate([run(graph, [x[i:i + 1]])[0] for i in range(4)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        counts[tag] = toolchain.bench(tmp_path / tag, "cortex-m4", "model", profile=False).instructions
    assert counts["pruned"] * 2 <= counts["dense"], counts


def test_recover_needs_training_inputs():
    from tinyc.errors import PassError
    graph, (_, _, x_test, y_test) = trained("cnn")
    ctx = make_context(graph, eval_inputs=x_test[:20], eval_labels=y_test[:20], max_accuracy_drop=1.0)
    with pytest.raises(PassError, match="--train"):
        PassManager(PIPELINE).run(graph.copy(), ctx)


@pytest.mark.qemu
def test_svd_on_the_trained_autoencoder_lowers_params_and_instructions_and_reports_its_error(tmp_path):
    """Issue 5: svd on a linear-heavy model lowers params and instructions; the report shows the error."""
    import json
    import subprocess
    import sys

    import torch
    from tinyc.anomaly import train_autoencoder
    module, (_, x_test) = train_autoencoder()
    torch.export.save(torch.export.export(module, (torch.from_numpy(x_test[:1]),)), str(tmp_path / "ae.pt2"))
    np.save(tmp_path / "x.npy", x_test[:64])
    figures = {}
    for tag, pipeline in (("dense", "fuse"), ("svd", "fuse,svd{energy=0.9}")):
        cmd = [sys.executable, "-m", "tinyc", "compile", str(tmp_path / "ae.pt2"), "--target", "cortex-m4",
               "-p", pipeline, "--eval", str(tmp_path / "x.npy"), "-o", str(tmp_path / tag)]
        assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
        report = json.loads((tmp_path / tag / "report.json").read_text())
        bench = toolchain.bench(tmp_path / tag, "cortex-m4", "model", profile=False)
        figures[tag] = (report, bench.instructions)
    (dense, dense_instr), (svd, svd_instr) = figures["dense"], figures["svd"]
    assert svd["params"] < dense["params"] and svd_instr < dense_instr
    step = svd["passes"][-1]
    assert step["name"] == "svd" and step["accuracy"] is not None  # SQNR vs the uncompressed model
    layers = step["extra"]["layers"]
    assert layers and all(0 < layer["error"] < 1 for layer in layers.values())
