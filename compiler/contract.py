"""The accuracy budget as a contract on what ships (docs/compression.md, "The budget contract").

With `--max-accuracy-drop B` and evaluation data, compilation promises that the compiled graph,
with the integer semantics the C computes, scores at most B points below the imported model.
How it is kept:

- **Two splits.** The evaluation samples are split once (seeded) into a *selection* split, which
  every accuracy-aware choice is scored on, and a *confirmation* split no choice ever sees.
  `--train` inputs are not used for selection: the model has fitted them, so compression changes
  its predictions there far less than on new data (measured on the digits CNN after
  prune-weights{sparsity=auto},share-weights,quantize-int8: 0.0-0.4 % of predictions changed on
  training images against 1.7-2.8 % on test images); agreement on them would promise too much.
- **A selection score with statistical power.** For classifiers the score is built from top-1
  agreement with the imported model on every selection input, labelled or not: agreement needs
  no labels and varies only where predictions change. Without labels the score is the agreement
  in % (baseline 100: a drop of D points = D % of predictions changed, which bounds the accuracy
  drop). With labels the estimated accuracy drop is `disagreement rate x q`, where q is the net
  share of labelled disagreements that turned a right answer wrong,
  `q = (lost - won + A) / (disagreements + A)` with a prior of A = 2 disagreements counted as
  losses (q -> 1, the agreement bound, when few labelled disagreements are seen). The score is
  the baseline accuracy minus that drop. Other models keep the SQNR metric.
- **Choices see what ships.** While a pass runs, every score it asks for is taken after the
  later fixed passes of the pipeline (quantize-int8, share-weights, ...) and the distill that
  follows it: an `auto` choice is judged recovered and with the integer semantics it will ship
  with (passmanager.later_passes).
- **Confirmation and back-off.** After the pipeline, the final graph is scored on the
  confirmation split with the same estimator. If it breaks the budget, the pipeline runs again
  with the budget of the accuracy-aware passes halved (then quartered, then zero); the report
  says so. If no setting of the `auto` passes keeps the budget (the fixed passes alone break it),
  compilation fails naming the step that lost most.
- **The report** gives per step the selection score with its 95 % interval, and the final
  confirmation figures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tinyc.errors import TinycError
from tinyc.ir import Graph

CONFIRM_FRACTION = 0.3       # of the evaluation samples, kept for the confirmation
MIN_CONFIRM = 20             # fewer confirmation samples than this: no split (stated in a note)
PRIOR_LOSSES = 2.0           # A: labelled disagreements assumed lost before any is seen
Z95 = 1.959964
Z95_ONE_SIDED = 1.644854     # the upper bound --auto judges candidates on (a one-sided 95 % bound)
BOUND_SLACK = 0.5            # --auto: the 95 % upper bound of a candidate's drop may reach (1 + this) x the budget
BACKOFF = (0.5, 0.25, 0.0)   # budget factors of the accuracy-aware passes on a broken confirmation
SQNR_FLOOR_DB = 12.0         # without evaluation data: a step whose output SQNR against its input
#                              falls below this warns (about 25 % relative noise amplitude)


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion, in % (0..100)."""
    if n <= 0:
        return (0.0, 100.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


def bound_limit(budget: float) -> float:
    """The most a candidate's one-sided 95 % upper bound of the drop may reach under `budget`."""
    return budget * (1.0 + BOUND_SLACK)


def zero_change_bound(samples: int) -> float:
    """The one-sided 95 % upper bound of the drop when not one of `samples` predictions changed:
    the best any candidate can show on that many samples."""
    return wilson(0, samples, Z95_ONE_SIDED)[1]


def samples_for_bound(budget: float) -> int:
    """The fewest selection samples on which an unchanged model's upper bound is within
    bound_limit(budget) (z^2 / (n + z^2) <= limit)."""
    limit = bound_limit(budget) / 100.0
    return math.inf if limit <= 0 else math.ceil(Z95_ONE_SIDED ** 2 * (1.0 / limit - 1.0))


def split_indices(n: int, fraction: float = CONFIRM_FRACTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(selection, confirmation) sample indices: a seeded permutation, the confirmation part
    `fraction` of n (empty when that would hold fewer than MIN_CONFIRM samples)."""
    k = int(round(n * fraction))
    if k < MIN_CONFIRM or n - k < MIN_CONFIRM:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


@dataclass
class Scorer:
    """Scores graphs against the reference on one split: `score(graph)` (higher is better, points
    of `metric`), `baseline` (the reference's score) and `describe(graph)` (figures with 95 %
    intervals for the report)."""

    metric: str
    baseline: float
    score: Callable[[Graph], float]
    describe: Callable[[Graph], dict]
    samples: int = 0
    labelled: int = 0


def classifier_scorer(reference: Graph, pool: list[np.ndarray], labels: np.ndarray | None, run) -> Scorer:
    """The agreement-based score on `pool` (the first len(labels) samples labelled, if any).
    `run(graph, samples) -> first output [N, ...]`."""
    from tinyc.evaluate import top1
    n = len(pool[0])
    ref = top1(run(reference, pool))     # one prediction per sample (and per row of a sequence output)
    nl = 0 if labels is None else len(labels)
    ref_right = None if labels is None else (ref[:nl] == labels)

    def figures(graph: Graph) -> dict:
        pred = top1(run(graph, pool))
        dis = pred != ref
        f = {"inputs": int(dis.size), "disagree": int(dis.sum())}
        f["agreement"] = f["score"] = 100.0 * (1 - dis.mean())
        f["agreement_ci"] = wilson(dis.size - dis.sum(), dis.size)
        if labels is not None:
            right = pred[:nl] == labels
            lost = int(np.sum(ref_right & ~right))
            won = int(np.sum(~ref_right & right))
            d_lab = int(np.sum(dis[:nl]))
            q = (lost - won + PRIOR_LOSSES) / (d_lab + PRIOR_LOSSES)
            rate, (lo, hi) = dis.mean(), wilson(dis.sum(), dis.size)
            f.update(labelled=nl, accuracy=100.0 * right.mean(), accuracy_ci=wilson(right.sum(), nl),
                     lost=lost, won=won, q=q, estimated_drop=100.0 * rate * q,
                     estimated_drop_ci=tuple(sorted((lo * q, hi * q))))
            f["score"] = base - f["estimated_drop"]
            f["drop_upper"] = max(0.0, q) * wilson(dis.sum(), dis.size, Z95_ONE_SIDED)[1]
        else:
            f["drop_upper"] = wilson(dis.sum(), dis.size, Z95_ONE_SIDED)[1]
        return f

    if labels is None:
        return Scorer("top-1 agreement %", 100.0, lambda g: figures(g)["score"], figures, n, 0)
    base = 100.0 * float(np.mean(ref_right))
    return Scorer("accuracy % (estimated from agreement)", base, lambda g: figures(g)["score"], figures, n, nl)


def sqnr_scorer(reference: Graph, pool: list[np.ndarray], run) -> Scorer:
    from tinyc.evaluate import SQNR_CAP, sqnr_db
    want = run(reference, pool)

    def figures(graph: Graph) -> dict:
        value = sqnr_db(run(graph, pool), want)
        return {"inputs": len(pool[0]), "sqnr_db": value, "score": value}
    return Scorer("SQNR dB", SQNR_CAP, lambda g: figures(g)["score"], figures, len(pool[0]), 0)


class BudgetError(TinycError):
    """The compiled model breaks the accuracy budget and no back-off keeps it."""


# ---- the pipeline under the contract ---------------------------------------------------------------

@dataclass
class Outcome:
    graph: Graph
    pm: object
    ctx: object
    attempts: list[dict] = field(default_factory=list)


def confirm(ctx, graph: Graph) -> dict | None:
    """The confirmation figures of `graph` (None without a confirmation split)."""
    if ctx.confirmation is None:
        return None
    c = ctx.confirmation
    score = c.score(graph)
    return {"metric": c.metric, "baseline": c.baseline, "score": score, "drop": c.baseline - score,
            "samples": c.samples, "figures": c.describe(graph)}


def run_pipeline(make_pm: Callable[[], object], graph: Graph, ctx, backoff: bool = True) -> Outcome:
    """Run the pass manager; under a budget with a confirmation split, confirm the final graph and
    back off (halving the budget of the accuracy-aware passes) while it breaks the budget
    (`backoff` False: no second attempt, a broken budget is a BudgetError)."""
    budget = ctx.max_accuracy_drop
    pm = make_pm()
    if budget is None or ctx.evaluate is None:
        return Outcome(pm.run(graph.copy(), ctx), pm, ctx)
    attempts = []
    base_notes = list(ctx.notes)
    for factor in (1.0,) + (BACKOFF if backoff else ()):
        ctx.notes, ctx.stats = list(base_notes), {}
        ctx.max_accuracy_drop = budget * factor
        pm = make_pm()
        try:
            out = pm.run(graph.copy(), ctx)
        finally:
            ctx.max_accuracy_drop = budget
        selection_drop = ctx.baseline - ctx.evaluate(out)
        conf = confirm(ctx, out)
        attempt = {"budget_factor": factor, "selection_drop": selection_drop,
                   "confirmation_drop": conf["drop"] if conf else None}
        attempts.append(attempt)
        worst = max(selection_drop, conf["drop"] if conf else -math.inf)
        if worst <= budget + 1e-9:
            if factor < 1.0:
                ctx.notes.append(f"budget contract: the first choice broke the {budget:g}-point budget on the "
                                 f"confirmation data ({attempts[0]['confirmation_drop']:.2f} points); the "
                                 f"accuracy-aware passes were re-run with {factor:g} x the budget, which holds it")
            return Outcome(out, pm, ctx, attempts)
        if not any(p.accuracy_aware for p in pm.passes):
            break
    step = _worst_step(pm)
    where = "confirmation" if conf and conf["drop"] > budget else "selection"
    raise BudgetError(
        f"the compiled model loses {worst:.2f} points of {ctx.metric} on the {where} data; the budget "
        f"(--max-accuracy-drop) is {budget:g}" + (f" (backing off the accuracy-aware passes did not help)"
                                                  if backoff and any(p.accuracy_aware for p in pm.passes) else ""),
        hint=(f"the step that lost most: {step}; " if step else "")
        + "weaken or remove that pass (or add distill with --train after it), or raise --max-accuracy-drop")


def _worst_step(pm) -> str | None:
    hist = [s for s in pm.history if s.accuracy is not None]
    if len(hist) < 2:
        return None
    drops = [(a.accuracy - b.accuracy, b.spec) for a, b in zip(hist, hist[1:])]
    drop, spec = max(drops)
    return f"'{spec}' ({drop:.2f} points)"
