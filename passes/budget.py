"""The accuracy-budgeted search shared by the `auto` modes of prune-channels, prune-layers and svd:
the budget (baseline score and allowed drop), recovery by distillation before scoring, and the
greedy per-layer plan verified on the combined graph within `ctx.max_accuracy_drop`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tinyc.ir import Graph
from tinyc.passes.base import PassContext, check


def accuracy_budget(graph: Graph, ctx: PassContext, what: str) -> tuple[float, float]:
    """(baseline score, allowed drop) for an `auto` mode; PassError without evaluation data."""
    check(ctx.evaluate is not None, f"{what} needs evaluation data to measure the accuracy it costs",
          "pass --eval data and --max-accuracy-drop POINTS, or give a fixed setting instead of auto")
    check(ctx.max_accuracy_drop is not None, f"{what} needs an accuracy budget",
          "pass --max-accuracy-drop POINTS (the score may fall at most that much below the baseline)")
    baseline = ctx.baseline if ctx.baseline is not None else ctx.evaluate(graph)
    return float(baseline), float(ctx.max_accuracy_drop)


def recovery(ctx: PassContext, epochs: int, what: str) -> Callable[[Graph], Graph]:
    """graph -> the graph after `epochs` of distillation (the distill pass, in a scratch context
    so its notes don't pile up), or the graph itself when epochs is 0. Accuracy-aware passes
    score candidates after recovery, so a choice is judged as it will ship: pruned and retrained."""
    if epochs == 0:
        return lambda graph: graph
    check(ctx.train is not None, f"{what} with recover={epochs} needs training inputs to retrain candidates",
          "pass --train X.npy, or recover=0")
    import dataclasses
    from tinyc.passes.distill import Distill

    retrain = Distill(epochs=epochs)
    return lambda graph: retrain.apply(graph, dataclasses.replace(ctx, notes=[], stats={}))


@dataclass(frozen=True)
class Trial:
    """One layer's setting tried alone: MACs it saves and accuracy points it costs."""

    setting: Any
    saved: int
    drop: float


def greedy_plan(trials: dict[str, list[Trial]], budget: float) -> list[tuple[str, Trial | None, Trial]]:
    """Steps (key, previous trial, new trial): each moves one layer to a more aggressive
    setting, most MACs saved per predicted point lost first, while the summed drops of the
    chosen settings stay within `budget`."""
    current: dict[str, Trial] = {}
    predicted, plan = 0.0, []
    while True:
        best = None
        for key, options in trials.items():
            cur = current.get(key)
            saved0, drop0 = (cur.saved, max(cur.drop, 0.0)) if cur else (0, 0.0)
            for t in options:
                gain, cost = t.saved - saved0, max(t.drop, 0.0) - drop0
                if gain <= 0 or predicted + cost > budget:
                    continue
                rank = (gain / max(cost, 1e-9), gain)
                if best is None or rank > best[0]:
                    best = (rank, key, t, cost)
        if best is None:
            return plan
        _, key, t, cost = best
        plan.append((key, current.get(key), t))
        current[key] = t
        predicted += cost


def budgeted_search(trials: dict[str, list[Trial]], budget: float, baseline: float,
                    build: Callable[[dict[str, Any]], Graph],
                    evaluate: Callable[[Graph], float]) -> tuple[dict[str, Any], Graph, float, int]:
    """Plan greedily, then verify the combined choice with `evaluate`, undoing the last steps
    until it is within budget. Returns (settings, graph, drop, steps undone)."""
    plan = greedy_plan(trials, budget)
    settings = {key: t.setting for key, _, t in plan}
    undone = 0
    while True:
        graph = build(settings)
        drop = baseline - evaluate(graph)
        if drop <= budget or not plan:
            return settings, graph, drop, undone
        key, prev, _ = plan.pop()
        undone += 1
        if prev is None:
            del settings[key]
        else:
            settings[key] = prev.setting
