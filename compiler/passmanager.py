"""Runs a pipeline of passes: verifies after each, dumps and prints IR, records statistics."""
from __future__ import annotations

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


def banner(p: Pass | None) -> str:
    what = f"{type(p).title()} ({p.name})" if p else "Import (import)"
    return f"// -----// IR Dump After {what} //----- //"


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
        self._record(0, None, graph, 0.0)
        self._emit(graph, None, 0)
        for i, p in enumerate(self.passes, start=1):
            t0 = time.perf_counter()
            try:
                graph = p.apply(graph, ctx)
            except (ValueError, ArithmeticError) as e:
                if self._input_finite:
                    raise
                raise TinycError(f"pass '{p.name}' failed on the input's NaN or infinite weights: "
                                 f"{type(e).__name__}: {e}",
                                 hint="fix the weights, or leave this pass out of the pipeline") from None
            seconds = time.perf_counter() - t0
            if opts.verify_each:
                self._check(graph, p)
            self._record(i, p, graph, seconds, ctx.stats.get(p.name))
            self._emit(graph, p, i)
        if opts.time_passes:
            self._print_timing()
        return graph

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

    def _record(self, step: int, p: Pass | None, graph: Graph, seconds: float, extra=None) -> None:
        s = graph_stats(graph)
        acc = self.evaluate(graph) if self.evaluate else None
        self.history.append(StepStats(step, p.name if p else "import", p.spec() if p else "import",
                                      s.params, s.weight_bytes, s.macs, seconds, acc, dict(extra or {})))

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
