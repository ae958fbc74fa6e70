"""The accuracy budget as a contract on what ships (tinyc/contract.py, issue 11 items 1 and 4):
choices are scored after the later fixed passes, the final graph is confirmed on a split no choice
saw, a broken confirmation backs off or fails naming the step, and steps that wreck a model warn."""
import json
import subprocess
import sys

import numpy as np
import pytest

from bench.compression_eval import pretrained, trained
from tinyc import contract
from tinyc.contract import Scorer, run_pipeline, split_indices, wilson
from tinyc.errors import TinycError
from tinyc.evaluate import as_samples, make_context, run_batch, top1
from tinyc.passmanager import PassManager, PassManagerOptions, later_passes
from tinyc.passes import parse_pipeline


def tinyc(*args):
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True)


def test_wilson_interval_and_split():
    lo, hi = wilson(95, 100)
    assert 88 < lo < 95 < hi < 98.5
    assert wilson(0, 50)[0] == 0.0 and wilson(50, 50)[1] == pytest.approx(100.0) and wilson(50, 50)[0] > 92
    sel, conf = split_indices(200)
    assert len(conf) == 60 and len(sel) == 140 and not set(sel) & set(conf)
    assert (split_indices(200)[1] == conf).all()                 # seeded: the same split every time
    assert len(split_indices(40)[1]) == 0                        # 12 would be too few to confirm on


def test_later_fixed_passes_and_the_following_recovery_replay_but_not_auto_ones():
    passes = parse_pipeline("fuse,prune-weights{sparsity=auto},distill,svd{rank=auto},distill,share-weights,"
                            "quantize-int8")
    # the distill right after the choice replays (its recovery); the one after svd's own choice does not
    assert [p.name for p in later_passes(passes, 2)] == ["distill", "share-weights", "quantize-int8"]
    assert [p.name for p in later_passes(passes, 4)] == ["distill", "share-weights", "quantize-int8"]
    assert [p.accuracy_aware for p in passes] == [False, True, False, True, False, False, False]


@pytest.fixture(scope="module")
def digits_cnn():
    graph, (x_train, y_train, x_test, y_test) = trained("cnn")
    return graph, x_train, x_test, y_test


def _pm(pipeline, ctx):
    pm = PassManager(pipeline, PassManagerOptions(check_steps=True))
    pm.evaluate = ctx.evaluate
    return pm


def test_auto_choice_is_scored_on_the_int8_graph(digits_cnn):
    """While sparsity=auto searches, every graph it scores has been through quantize-int8."""
    graph, x_train, x_test, y_test = digits_cnn
    ctx = make_context(graph, calib=x_train[:32], eval_inputs=x_test, eval_labels=y_test, max_accuracy_drop=1.0)
    seen = []
    score = ctx.evaluate

    def spy(g):
        seen.append(any(op.kind == "quantize" for op in g.ops))
        return score(g)
    ctx.evaluate = spy
    _pm("fuse,prune-weights{sparsity=auto},quantize-int8", ctx).run(graph.copy(), ctx)
    assert len(seen) > 3 and all(seen[1:-1])      # the step records score the step's own graph


def test_final_graph_is_confirmed_and_reported(digits_cnn):
    graph, x_train, x_test, y_test = digits_cnn
    ctx = make_context(graph, calib=x_train[:32], eval_inputs=x_test, eval_labels=y_test, max_accuracy_drop=1.0)
    assert ctx.confirmation.samples == 108 and ctx.selection.samples == 252
    out = run_pipeline(lambda: _pm("fuse,prune-weights{sparsity=auto},quantize-int8", ctx), graph, ctx)
    (attempt,) = out.attempts
    assert attempt["selection_drop"] <= 1.0 and attempt["confirmation_drop"] <= 1.0
    step = out.pm.history[2]
    assert step.scores["labelled"] == 252 and step.scores["accuracy_ci"][0] < step.scores["accuracy"]
    assert step.extra["sparsity"] > 0.3


def test_sparsity_auto_accounts_for_the_distill_that_follows(digits_cnn):
    """sparsity=auto before a distill scores its candidates after that distill: it keeps more
    sparsity than the same search without recovery, and the result holds the budget."""
    graph, x_train, x_test, y_test = digits_cnn
    chosen = {}
    for pipeline in ("fuse,prune-weights{sparsity=auto},quantize-int8",
                     "fuse,prune-weights{sparsity=auto},distill{epochs=5},quantize-int8"):
        ctx = make_context(graph, calib=x_train[:32], eval_inputs=x_test, eval_labels=y_test, train=x_train,
                           max_accuracy_drop=1.0)
        pm = _pm(pipeline, ctx)
        out = pm.run(graph.copy(), ctx)
        chosen[pipeline] = pm.history[2].extra["sparsity"]
        assert ctx.baseline - ctx.evaluate(out) <= 1.0 + 1e-9
    plain, recovered = chosen.values()
    assert recovered > plain + 0.05, chosen


def test_a_broken_confirmation_backs_off_and_says_so(digits_cnn):
    """A confirmation split that (by construction here) punishes sparsity above 30 %: the first
    choice breaks it, the re-runs with a smaller budget for sparsity=auto end within it."""
    graph, x_train, x_test, y_test = digits_cnn
    ctx = make_context(graph, calib=x_train[:32], eval_inputs=x_test, eval_labels=y_test, max_accuracy_drop=1.0)

    def sparsity(g):
        w = np.concatenate([op.attrs["value"].ravel() for op in g.const_ops() if op.attrs["value"].ndim > 1])
        return float(np.mean(w == 0))
    strict = lambda g: 100.0 - (5.0 if sparsity(g) > 0.3 else 0.0)
    ctx.confirmation = Scorer("test", 100.0, strict, lambda g: {"score": strict(g)}, 10, 10)
    out = run_pipeline(lambda: _pm("fuse,prune-weights{sparsity=auto}", ctx), graph, ctx)
    assert len(out.attempts) > 1 and out.attempts[0]["confirmation_drop"] == 5.0
    assert out.attempts[-1]["confirmation_drop"] == 0.0 and out.attempts[-1]["budget_factor"] < 1.0
    assert sparsity(out.graph) <= 0.3
    assert any("re-run" in n for n in ctx.notes)


def test_fixed_passes_that_break_the_budget_fail_naming_the_step(digits_cnn):
    graph, x_train, x_test, y_test = digits_cnn
    ctx = make_context(graph, calib=x_train[:32], eval_inputs=x_test, eval_labels=y_test, max_accuracy_drop=1.0)
    with pytest.raises(TinycError) as e:
        run_pipeline(lambda: _pm("fuse,prune-weights{sparsity=0.97},quantize-int8", ctx), graph, ctx)
    assert "budget (--max-accuracy-drop) is 1" in e.value.what
    assert "prune-weights{sparsity=0.97}" in e.value.hint


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    import torch
    root = tmp_path_factory.mktemp("contract")
    module, (x_train, y_train, x_test, y_test) = pretrained("mlp")
    torch.export.save(torch.export.export(module.eval(), (torch.from_numpy(x_test[:1]),)), str(root / "mlp.pt2"))
    np.save(root / "calib.npy", x_train[:64])
    np.save(root / "x.npy", x_test)
    np.save(root / "y.npy", y_test)
    return root


def test_cli_reports_the_contract_and_refuses_a_broken_one(digits_files, tmp_path):
    d = digits_files
    common = ["--calib", d / "calib.npy", "--eval", d / "x.npy", d / "y.npy", "--max-accuracy-drop", "1"]
    ok = tinyc("compile", d / "mlp.pt2", *common, "-o", tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert "budget contract:" in ok.stdout and "confirmation samples" in ok.stdout
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    c = report["contract"]
    assert c["budget"] == 1 and c["confirmation"]["samples"] == 108 and c["confirmation"]["drop"] <= 1
    assert all(step["scores"] is not None for step in report["passes"])
    bad = tinyc("compile", d / "mlp.pt2", *common, "-p", "fuse,prune-weights{sparsity=0.99},quantize-int8",
                "-o", tmp_path / "bad")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "budget (--max-accuracy-drop) is 1" in bad.stderr and "prune-weights{sparsity=0.99}" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_a_default_that_wrecks_the_model_warns_with_the_figure(digits_files, tmp_path):
    """Without evaluation data: prune-weights' default 90 % global sparsity on the digits MLP
    falls under the SQNR floor and says so (stderr and report.json); quantize-int8 does not."""
    d = digits_files
    r = tinyc("compile", d / "mlp.pt2", "--calib", d / "calib.npy", "-p", "fuse,prune-weights,quantize-int8",
              "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    warnings = json.loads((tmp_path / "out" / "report.json").read_text())["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("pass 'prune-weights' changed the model's outputs a lot")
    assert f"floor {contract.SQNR_FLOOR_DB:g} dB" in warnings[0] and "tinyc: warning: pass 'prune-weights'" in r.stderr
    steps = json.loads((tmp_path / "out" / "report.json").read_text())["passes"]
    assert steps[2]["sqnr_db"] < contract.SQNR_FLOOR_DB <= steps[3]["sqnr_db"]
