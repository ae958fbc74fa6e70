"""--auto judges candidates on the 95 % upper bound of their drop (issue 11: the budget must hold on
data the search never saw), and warns when the evaluation data are too few for that bound."""
import numpy as np
import pytest

from tinyc import auto
from tinyc.contract import (Z95_ONE_SIDED, bound_limit, classifier_scorer, samples_for_bound, wilson,
                            zero_change_bound)


def test_zero_change_bound_is_the_rule_of_three_shape():
    # no change among n samples: the one-sided bound is z^2 / (n + z^2)
    for n in (50, 210, 1000):
        assert zero_change_bound(n) == pytest.approx(100 * Z95_ONE_SIDED ** 2 / (n + Z95_ONE_SIDED ** 2))
    need = samples_for_bound(1.0)
    assert zero_change_bound(need) <= bound_limit(1.0) < zero_change_bound(need - 1)
    assert samples_for_bound(0.0) == float("inf")


def test_scorer_reports_the_upper_bound_of_the_drop():
    ref = np.array([0, 1, 2, 3] * 50)                     # 200 samples, reference predictions
    changed = ref.copy()
    changed[:4] = (changed[:4] + 1) % 4                   # 4 predictions changed, all were right
    outputs = {"ref": np.eye(4)[ref], "new": np.eye(4)[changed]}
    scorer = classifier_scorer("ref", [np.zeros(200)], ref.copy(), lambda g, pool: outputs[g])
    f = scorer.describe("new")
    assert f["disagree"] == 4 and f["estimated_drop"] == pytest.approx(2.0)
    assert f["drop_upper"] == pytest.approx(wilson(4, 200, Z95_ONE_SIDED)[1])
    assert f["estimated_drop"] < f["drop_upper"] < f["estimated_drop_ci"][1]
    unlabelled = classifier_scorer("ref", [np.zeros(200)], None, lambda g, pool: outputs[g]).describe("new")
    assert unlabelled["drop_upper"] == pytest.approx(wilson(4, 200, Z95_ONE_SIDED)[1])


def rows(samples, *drops):
    return [auto.Measured(f"p{i}", flash=1000 - i, ram=1, instructions=1, drop=d, drop_upper=u, samples=samples)
            for i, (d, u) in enumerate(drops)]


def test_a_candidate_within_the_point_budget_but_not_the_bound_is_infeasible():
    budgets = auto.Budgets(1.0)
    safe, lucky = rows(600, (0.3, 0.9), (0.8, 1.9))
    assert auto.bound_possible(1.0, [safe, lucky])
    assert budgets.violations(safe, True) == []
    assert budgets.violations(lucky, True) == ["accuracy bound"]
    assert budgets.violations(lucky, False) == []           # the point estimate alone would take it
    assert budgets.violations(rows(600, (1.2, 1.4))[0], True) == ["accuracy"]
    assert auto.bound_warning([safe, lucky], 1.0) is None


def test_too_few_samples_warn_with_the_figures():
    few = rows(126, (0.0, zero_change_bound(126)), (0.8, 3.5))
    assert not auto.bound_possible(1.0, few)
    text = auto.bound_warning(few, 1.0)
    assert "126 selection samples" in text and f"{zero_change_bound(126):.2f}" in text
    assert f"{samples_for_bound(1.0):,} selection samples" in text and "point estimate alone" in text
    assert "its 1-point budget" in text
    assert auto.bound_warning(few, 0.0) is None           # a 0 budget asks for no change: nothing to bound
    # SQNR-scored models (no classifier) have no bound and no warning
    sqnr = [auto.Measured("p", drop=0.5, samples=100)]
    assert not auto.bound_possible(1.0, sqnr) and auto.bound_warning(sqnr, 1.0) is None


def test_only_ram_over_budget_tries_the_best_candidate_patch_by_patch(monkeypatch):
    """When RAM alone keeps candidates out, --auto measures the best of them again with the patch pass
    (patches=2, 3, 4) and can ship one; with no RAM budget, or nothing over it alone, it does not."""
    from test_planner import Builder
    b, rng = Builder(), np.random.default_rng(0)
    x = b.input("x", (1, 3, 16, 16))
    graph = b.graph(b.op("conv2d", x, b.const("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
                         name="c", stride=[1, 1], dilation=[1, 1], groups=1, padding=[1, 1, 1, 1]))

    def fake(job):          # the arena shrinks with patches; accuracy is unchanged (the pass is exact)
        n = int(job.pipeline.split("patches=")[1].rstrip("}")) if "patch{" in job.pipeline else 1
        flash = 5000 - (600 if "prune-weights" in job.pipeline else 0) + 300 * n
        return auto.Measured(job.pipeline, flash=flash, ram=40000 // n, instructions=10 ** 6, drop=0.0,
                             drop_upper=0.1, samples=1000)
    monkeypatch.setattr(auto, "measure", fake)
    search = auto.Search(graph, {}, auto.Budgets(1.0, ram=15000), "cortex-m4", runner=auto.Runner(1))
    ranked = search.run()
    patched = [m.pipeline for m in search.tried if "patch{" in m.pipeline]
    assert len(patched) == 3 and all(p.startswith(patched[0].split(",patch")[0]) for p in patched)
    assert ranked and ranked[0].pipeline.endswith(",patch{patches=3}")      # 13,333 B: the least flash that fits
    assert all("patch{" in m.pipeline for m in ranked)
    for budgets in (auto.Budgets(1.0), auto.Budgets(1.0, ram=15000, flash=100)):
        search = auto.Search(graph, {}, budgets, "cortex-m4", runner=auto.Runner(1))
        search.run()
        assert not any("patch{" in m.pipeline for m in search.tried)



def test_latency_objective_spends_the_flash_headroom_on_wide_weights(monkeypatch):
    """--auto --objective latency passes the flash the chosen candidate leaves under the budget (less a
    margin for the wide kernel's code) as the --wide-weights allowance; a bundle that then overflows is
    written again without it; --objective flash and an explicit --wide-weights are left alone."""
    from types import SimpleNamespace
    from tinyc import compile as comp

    assert comp.wide_allowance("latency", 100_000, 60_000) == 100_000 - 60_000 - comp.WIDE_MARGIN
    assert comp.wide_allowance("latency", 60_000, 59_000) == 0
    assert comp.wide_allowance("flash", 100_000, 60_000) == 0
    assert comp.wide_allowance("latency", None, 60_000) == 0

    calls = []

    def fake_write(graph, out, name, target, board, pm, wide=0, min_gain=0.0, grow=0):
        calls.append(wide)
        return {"flash": 60_000 + (grow if wide else 0), "layers": [{"name": "conv2d", "wide_weights": bool(wide)}]}

    section = {"objective": "latency", "budgets": {"flash": 100_000}, "chosen": "p",
               "candidates": [{"pipeline": "p", "flash": 60_000}]}
    args = SimpleNamespace(wide_weights=None, output="o", name="model")
    monkeypatch.setattr(comp, "write_bundle", lambda *a: fake_write(*a, grow=30_000))
    assert comp._write_with_wide_weights(args, None, None, None, None, section)["flash"] == 90_000
    assert calls == [100_000 - 60_000 - comp.WIDE_MARGIN]
    calls.clear()
    monkeypatch.setattr(comp, "write_bundle", lambda *a: fake_write(*a, grow=50_000))     # over the budget
    assert comp._write_with_wide_weights(args, None, None, None, None, section)["flash"] == 60_000
    assert calls == [100_000 - 60_000 - comp.WIDE_MARGIN, 0]
    calls.clear()
    args.wide_weights = 0                                   # explicit: no allowance, even under --auto
    comp._write_with_wide_weights(args, None, None, None, None, section)
    assert calls == [0]


def test_default_allowance_is_balanced_and_dropped_over_the_board(monkeypatch):
    """Without --wide-weights (and without --auto) compile spends the balanced allowance (half the int8 weight
    bytes, min_gain 8 instructions per byte); a bundle that then overflows --board's flash is written again
    without it; --wide-weights 0 is the smallest build."""
    from types import SimpleNamespace
    from tinyc import compile as comp
    from tinyc.backends import c_emitter

    calls = []

    def fake_write(graph, out, name, target, board, pm, wide=0, min_gain=0.0, grow=0):
        calls.append((wide, min_gain))
        return {"flash": 60_000 + (grow if wide else 0), "layers": [{"name": "conv2d", "wide_weights": bool(wide)}]}

    monkeypatch.setattr(c_emitter, "balanced_allowance", lambda graph: 12_000)
    args = SimpleNamespace(wide_weights=None, output="o", name="model")
    board = SimpleNamespace(flash_bytes=70_000)
    monkeypatch.setattr(comp, "write_bundle", lambda *a: fake_write(*a, grow=5_000))
    assert comp._write_with_wide_weights(args, None, None, board, None, None)["flash"] == 65_000
    assert calls == [(12_000, c_emitter.BALANCED_GAIN)]
    calls.clear()
    monkeypatch.setattr(comp, "write_bundle", lambda *a: fake_write(*a, grow=20_000))     # over the board
    assert comp._write_with_wide_weights(args, None, None, board, None, None)["flash"] == 60_000
    assert calls == [(12_000, c_emitter.BALANCED_GAIN), (0, 0.0)]
    calls.clear()
    args.wide_weights = 0
    comp._write_with_wide_weights(args, None, None, board, None, None)
    assert calls == [(0, 0.0)]
