"""Runs a pipeline of passes: verifies after each, dumps and prints IR, records statistics."""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from tinyc.errors import TinycError, VerifyError
from tinyc.ir import Graph
from tinyc.passes import Pass, PassContext, parse_pipeline
from tinyc.stats import graph_stats
from tinyc.text import print_graph
from tinyc.verifier import nonfinite_consts, verify


@dataclass
class StepStats:
    """The graph's figures after one step (step 0 is the import)."""

    step: int
    name: str
    spec: str
    params: int
    weight_bytes: int
    macs: int
    seconds: float
    accuracy: float | None = None
    extra: dict = field(default_factory=dict)
    scores: dict | None = None        # under a budget: the selection figures with 95 % intervals
    sqnr_db: float | None = None      # without evaluation data: output SQNR against the step's input
    warning: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PassManagerOptions:
    verify_each: bool = True
    print_ir_after_all: bool = False
    print_ir_after: frozenset[str] = frozenset()
    dump_dir: Path | None = None
    time_passes: bool = False
    elide_weights: bool = False
    out: TextIO = sys.stderr
    check_steps: bool = False   # warn on a step that loses more than the budget / falls under the SQNR floor


def banner(p: Pass | None) -> str:
    what = f"{type(p).title()} ({p.name})" if p else "Import (import)"
    return f"// -----// IR Dump After {what} //----- //"


STEP_SAMPLES = 16   # samples of the SQNR check of a step without evaluation data
STEP_MAX_ELEMENTS = 100_000_000   # values the check may compute (the samples' whole graph); above: skipped


def _steps(spec: str) -> str:
    return f"passes '{spec}' (with their retraining)" if " + " in spec else f"pass '{spec}'"


REPLAY_EPOCHS = 5   # a replayed distill trains at most this long per candidate (cost bound)


def later_passes(passes: list[Pass], i: int) -> list[Pass]:
    """The passes after the i-th (1-based) that replay on a candidate: fixed settings only (an
    accuracy-aware pass later makes its own choice under the same budget), and the retraining
    (distill) up to the next accuracy-aware pass: the recovery that follows a choice is part of
    what it ships with (a sparsity judged before its distill would be judged too harshly)."""
    out, recovering = [], True
    for q in passes[i:]:
        if q.accuracy_aware:
            recovering = False
        elif not q.trains:
            out.append(q)
        elif recovering:    # at most REPLAY_EPOCHS: a candidate is judged with no more recovery than ships
            epochs = getattr(q, "epochs", None)
            out.append(dataclasses.replace(q, epochs=REPLAY_EPOCHS) if epochs and epochs > REPLAY_EPOCHS else q)
    return out


def shipped(evaluate: Callable[[Graph], float], later: list[Pass], ctx: PassContext) -> Callable[[Graph], float]:
    """`evaluate` of a candidate after the later fixed passes (in a scratch context)."""
    if not later:
        return evaluate
    import dataclasses

    def score(graph: Graph) -> float:
        scratch = dataclasses.replace(ctx, notes=[], stats={}, evaluate=None)
        g = graph.copy()
        for q in later:
            g = q.apply(g, scratch)
        return evaluate(g)
    return score


def step_sqnr(before: Graph, after: Graph, ctx: PassContext) -> float | None:
    """Output SQNR (dB) of `after` against `before` on STEP_SAMPLES calibration (else random) inputs."""
    import numpy as np

    from tinyc.evaluate import as_samples, run_batch, sqnr_db
    from tinyc.interpreter import random_inputs
    values = sum(v.type.numel for v in before.inputs) + sum(op.result.type.numel for op in before.ops)
    if STEP_SAMPLES * values > STEP_MAX_ELEMENTS:
        return None     # too large to interpret here: no figure (the report's sqnr_db stays null)
    if ctx.calib is not None:
        samples = as_samples(before, ctx.calib, "calibration", "--calib")
        samples = [s[:STEP_SAMPLES] for s in samples]
    else:
        samples = random_inputs(before, np.random.default_rng(0), rows=STEP_SAMPLES)
    if not before.outputs or [v.type.shape for v in before.outputs] != [v.type.shape for v in after.outputs]:
        return None
    want = run_batch(before, samples)
    got = run_batch(after, samples)
    return min(sqnr_db(g, w) for g, w in zip(got, want))


class PassManager:
    """Runs passes in order. `evaluate`, when given, scores each step's graph (accuracy, in points)."""

    def __init__(self, passes: list[Pass] | str, options: PassManagerOptions | None = None,
                 evaluate: Callable[[Graph], float] | None = None):
        self.passes = parse_pipeline(passes) if isinstance(passes, str) else list(passes)
        self.options = options or PassManagerOptions()
        self.evaluate = evaluate
        self.history: list[StepStats] = []
        self._input_finite = True

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        ctx = ctx or PassContext()
        opts = self.options
        self._check(graph, None)
        self._record(0, None, graph, 0.0, ctx=ctx)
        self._emit(graph, None, 0)
        raw = ctx.evaluate
        span = (0, graph.copy() if opts.check_steps and raw is None else None)   # since the last retraining
        try:
            for i, p in enumerate(self.passes, start=1):
                before = graph.copy() if opts.check_steps and raw is None else None
                if raw is not None:   # every score the pass asks for is taken on what will ship
                    ctx.evaluate = shipped(raw, later_passes(self.passes, i), ctx)
                ctx.later = tuple(self.passes[i:])    # what follows (distill's qat=auto looks)
                t0 = time.perf_counter()
                try:
                    graph = p.apply(graph, ctx)
                except (ValueError, ArithmeticError) as e:
                    if self._input_finite:
                        raise
                    raise TinycError(f"pass '{p.name}' failed on the input's NaN or infinite weights: "
                                     f"{type(e).__name__}: {e}",
                                     hint="fix the weights, or leave this pass out of the pipeline") from None
                finally:
                    ctx.evaluate, ctx.later = raw, ()
                seconds = time.perf_counter() - t0
                if opts.verify_each:
                    self._check(graph, p)
                self._record(i, p, graph, seconds, ctx.stats.get(p.name), ctx)
                if opts.check_steps:
                    if any(q.trains for q in self.passes[i:]):
                        pass        # judged after the retraining that follows, over the whole span
                    elif p.trains:
                        self._check_step(p, span[1], graph, ctx, span[0])
                    else:
                        self._check_step(p, before, graph, ctx, i - 1)
                    if p.trains:
                        span = (i, graph.copy() if raw is None else None)
                self._emit(graph, p, i)
        finally:
            ctx.evaluate = raw
        if opts.time_passes:
            self._print_timing()
        return graph

    def _check_step(self, p: Pass, before: Graph | None, graph: Graph, ctx: PassContext, start: int) -> None:
        """Safe defaults: a step that loses more than the budget, or (without evaluation data) whose
        output SQNR against its input falls under contract.SQNR_FLOOR_DB, warns with the figure.
        A step followed by retraining (distill) is judged with it: from `start` (the history index
        before the span) to the retrained graph."""
        from tinyc import contract
        step = self.history[-1]
        if start < len(self.history) - 2:
            step = dataclasses.replace(step, spec=" + ".join(s.spec for s in self.history[start + 1:]))
            fix = "weaken the compression in these steps (`tinyc passes` lists the options) or retrain longer"
        else:
            fix = f"weaken '{step.spec}' (`tinyc passes` lists its options) or add distill with --train after it"
        if step.accuracy is not None:
            drop = self.history[start].accuracy - step.accuracy
            limit = ctx.max_accuracy_drop
            if limit is not None and drop > limit:
                step.warning = (f"{_steps(step.spec)} lost {drop:.2f} points of {ctx.metric} in one step, more than "
                                f"the whole budget of {limit:g}; {fix}")
        elif before is not None:
            step.sqnr_db = step_sqnr(before, graph, ctx)
            if step.sqnr_db is not None and step.sqnr_db < contract.SQNR_FLOOR_DB:
                step.warning = (f"{_steps(step.spec)} changed the model's outputs a lot: SQNR {step.sqnr_db:.1f} dB "
                                f"against its input on {STEP_SAMPLES} {'calibration' if ctx.calib is not None else 'random'} "
                                f"samples (floor {contract.SQNR_FLOOR_DB:g} dB); {fix}, or pass --eval data and "
                                "--max-accuracy-drop to have it measured")
        if step.warning:
            self.history[-1].warning, self.history[-1].sqnr_db = step.warning, step.sqnr_db
            ctx.notes.append("warning: " + step.warning)
            self.options.out.write(f"tinyc: warning: {step.warning}\n")
        elif step.sqnr_db is not None:
            self.history[-1].sqnr_db = step.sqnr_db

    def _check(self, graph: Graph, p: Pass | None) -> None:
        """Verify the graph. At step 0 it is the caller's input (IR text the user wrote, or a graph built
        in Python), so a failure is theirs; after a pass it is tinyc's bug. Likewise a pass must not turn
        finite weights into NaN or infinity."""
        try:
            verify(graph)
        except VerifyError as e:
            if p is None:
                raise TinycError(f"the input IR does not verify: {e.what.removeprefix('verify: ')}",
                                 where=e.where, hint=e.hint) from None
            raise TinycError(f"the IR does not verify after pass '{p.name}': {e.what}", where=e.where,
                             hint="this is a bug in tinyc; please report it with the model") from None
        bad = nonfinite_consts(graph)
        if p is None:
            self._input_finite = not bad
        elif bad and self._input_finite:
            raise TinycError(f"pass '{p.name}' produced NaN or infinite weights: " + "; ".join(bad),
                             hint="this is a bug in tinyc (or weights too close to the float32 limits); "
                                  "please report it with the model")

    def _record(self, step: int, p: Pass | None, graph: Graph, seconds: float, extra=None, ctx=None) -> None:
        s = graph_stats(graph)
        scores = None
        if ctx is not None and ctx.selection is not None and self.evaluate is ctx.evaluate:
            scores = ctx.selection.describe(graph)
            acc = scores["score"]
        else:
            acc = self.evaluate(graph) if self.evaluate else None
        self.history.append(StepStats(step, p.name if p else "import", p.spec() if p else "import",
                                      s.params, s.weight_bytes, s.macs, seconds, acc, dict(extra or {}), scores))

    def _emit(self, graph: Graph, p: Pass | None, step: int) -> None:
        opts = self.options
        name = p.name if p else "import"
        if opts.print_ir_after_all or name in opts.print_ir_after:
            opts.out.write(banner(p) + "\n" + print_graph(graph, elide_weights=opts.elide_weights) + "\n")
        if opts.dump_dir is not None:
            path = opts.dump_dir / f"{step:02d}-{name}.tir"
            try:
                opts.dump_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(banner(p) + "\n" + print_graph(graph, elide_weights=opts.elide_weights))
            except OSError as e:
                target = opts.dump_dir if not opts.dump_dir.is_dir() else path
                raise TinycError(f"cannot write the IR dump {target}: {e.strerror or e}",
                                 hint="give --dump-ir a new or existing, writable directory") from None

    def _print_timing(self) -> None:
        out = self.options.out
        total = sum(s.seconds for s in self.history) or 1e-9
        out.write("===-------------------------------------------------------------------------===\n")
        out.write("                         ... Pass execution timing report ...\n")
        out.write("===-------------------------------------------------------------------------===\n")
        out.write("  Wall Time (s)    (%)   Pass\n")
        for s in self.history[1:]:
            out.write(f"  {s.seconds:12.4f} {100 * s.seconds / total:6.1f}%   {s.spec}\n")
        out.write(f"  {total:12.4f} 100.0%   Total\n")

    def stats_table(self) -> str:
        """Per-step statistics as a small text table."""
        rows = ["step  pass                          params   weight bytes          MACs  accuracy"]
        for s in self.history:
            acc = f"{s.accuracy:8.2f}" if s.accuracy is not None else "       -"
            rows.append(f"{s.step:4d}  {s.spec[:28]:28s} {s.params:9,d} {s.weight_bytes:14,d} {s.macs:13,d}  {acc}")
        return "\n".join(rows)
