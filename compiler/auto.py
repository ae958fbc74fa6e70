"""`tinyc compile --auto`: search the pipeline space under an accuracy budget and a board's budgets.

Candidates are whole pipelines (fixed settings), searched in stages, each stage one parallel batch:

1. unstructured sparsity: prune-weights{sparsity=s} for s in SPARSITIES (then distill when --train,
   quantization-aware by default);
2. weight sharing on the two sparsest settings that kept the accuracy budget: share-weights{bits=b};
3. channel pruning on the best so far (models with conv layers): prune-channels{ratio=r} for fixed
   ratios and ratio=auto (each layer's ratio chosen under the budget);
4. per-layer low rank on the best so far (svd{rank=auto}), and, with --train, binarization
   (binarize: first and last layers int8, the others binary) with distillation.

Every candidate ends in quantize-int8. Each is compiled for the target and measured for real:
flash and RAM (arena + static + measured stack) of the firmware, exact instructions per inference
under QEMU, and its accuracy on the selection split (the budget contract's score, contract.py).
A candidate is feasible when its drop is within the budget, the one-sided 95 % upper bound of
its drop is within 1.5 x the budget (contract.bound_limit), and it meets every resource budget. The bound
is what makes the promise hold on new data: a point estimate of 0.00 on 210 samples still allows
a true drop of 1.3 points. When the selection split is too small for even an unchanged model to
show that bound (contract.samples_for_bound: 178 samples for a 1-point budget), the search judges
on the point estimate alone and warns with the figure.
The best feasible one (smallest flash, or fewest instructions with --objective latency) is compiled
through the normal path, where the contract confirms it on the confirmation split; if that breaks
the budget, the next best is tried, and the report says so.

Candidates run on a local process pool (`--jobs N`) or on a Ray cluster (`--ray ADDRESS`); the
worker is `measure`, a plain function of a picklable `Job`.
"""
from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tinyc.contract import CONFIRM_FRACTION as CONFIRM
from tinyc.errors import TinycError
from tinyc.ir import Graph

SPARSITIES = (0.0, 0.5, 0.75, 0.9, 0.93, 0.95)
SHARE_BITS = (6, 5, 4, 3)
CHANNEL_RATIOS = (0.25, 0.5)
PATCH_GRIDS = (2, 3, 4)          # patches a side tried when only RAM is over budget (Search.patched)
PRUNE_EPOCHS = 20        # distill after pruning (the larger loss to recover)
DISTILL_EPOCHS = 10      # distill after sharing


@dataclass(frozen=True)
class Budgets:
    accuracy_drop: float
    flash: int | None = None
    ram: int | None = None
    instructions: int | None = None

    def violations(self, m: "Measured", bounded: bool = False) -> list[str]:
        out = []
        if not self.accurate(m, bounded):
            out.append("accuracy" if m.drop is None or m.drop > self.accuracy_drop + 1e-9 else "accuracy bound")
        for what, limit in (("flash", self.flash), ("ram", self.ram), ("instructions", self.instructions)):
            value = getattr(m, what)
            if limit is not None and (value is None or value > limit):
                out.append(what)
        return out

    def accurate(self, m: "Measured", bounded: bool) -> bool:
        from tinyc.contract import bound_limit
        if m.error or m.drop is None or m.drop > self.accuracy_drop + 1e-9:
            return False
        return not bounded or m.drop_upper is None or m.drop_upper <= bound_limit(self.accuracy_drop) + 1e-9


@dataclass(frozen=True)
class Job:
    graph: Graph
    pipeline: str
    data: dict            # calib, eval_inputs, eval_labels, train (numpy arrays or None)
    budget: float
    target: str


@dataclass
class Measured:
    pipeline: str
    flash: int | None = None
    ram: int | None = None
    instructions: int | None = None
    macs: int | None = None
    score: float | None = None
    drop: float | None = None
    drop_ci: tuple[float, float] | None = None
    drop_upper: float | None = None      # one-sided 95 % upper bound of the drop
    samples: int = 0                     # selection samples it was scored on
    seconds: float = 0.0
    error: str | None = None
    feasible: bool = False
    pareto: bool = False
    violations: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return asdict(self)


def measure(job: Job) -> Measured:
    """Run the pipeline, score it on the selection split, compile and measure it on the target."""
    import torch
    torch.set_num_threads(1)
    from tinyc.backends.bench import bench_model
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.backends.manifest import read_manifest
    from tinyc.backends.size import MemoryUse
    from tinyc.backends.target_files import write_target_files
    from tinyc.evaluate import make_context
    from tinyc.passmanager import PassManager
    from tinyc.stats import graph_stats

    t0 = time.perf_counter()
    m = Measured(job.pipeline)
    try:
        ctx = make_context(job.graph, max_accuracy_drop=job.budget, **job.data)
        graph = PassManager(job.pipeline).run(job.graph.copy(), ctx)
        figures = ctx.selection.describe(graph)
        m.score, m.drop = figures["score"], ctx.baseline - figures["score"]
        ci = figures.get("estimated_drop_ci")
        if ci is None and "agreement_ci" in figures:
            ci = (100.0 - figures["agreement_ci"][1], 100.0 - figures["agreement_ci"][0])
        m.drop_ci = tuple(ci) if ci else None
        m.drop_upper, m.samples = figures.get("drop_upper"), int(figures.get("inputs", 0))
        m.macs = graph_stats(graph).macs
        with tempfile.TemporaryDirectory(prefix="tinyc-auto-") as tmp:
            info = emit_bundle(graph, tmp, target_name=job.target)
            write_target_files(tmp, job.target, "model")
            bench = bench_model(tmp, job.target, "model", profile=False)
            use = MemoryUse.of(bench.sizes, info.arena_size, read_manifest(Path(tmp), "model").io_bytes,
                               bench.stack, "measured")
            m.flash, m.ram, m.instructions = use.flash, use.ram, bench.instructions
    except TinycError as e:
        m.error = e.what
    m.seconds = time.perf_counter() - t0
    return m


# ---- running batches ------------------------------------------------------------------------------

class Runner:
    """Runs jobs on a local process pool (jobs > 1), in this process (jobs = 1) or on Ray."""

    def __init__(self, jobs: int = 1, ray_address: str | None = None):
        if jobs < 1:
            raise TinycError(f"--jobs must be at least 1, got {jobs}")
        self.jobs, self.ray_address, self._pool, self._ray = jobs, ray_address, None, None
        if ray_address:
            try:
                import ray
            except ImportError:
                raise TinycError("--ray needs Ray, an optional extra", hint="pip install 'tinyc[ray]'") from None
            if not ray.is_initialized():
                try:
                    ray.init(address=None if ray_address == "local" else ray_address,
                             include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
                except (ConnectionError, ValueError, RuntimeError) as e:
                    raise TinycError(f"cannot connect to the Ray cluster at {ray_address}: {e}",
                                     hint="start one with `ray start --head` and pass its address, "
                                          "or use --ray local") from None
            self._ray = ray
            self._remote = ray.remote(num_cpus=1)(measure)
        elif jobs > 1:
            import concurrent.futures
            import multiprocessing
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def run(self, jobs: list[Job], done: Callable[[Measured], None]) -> list[Measured]:
        """Results in the order of `jobs`; `done` is called as each finishes."""
        results: list[Measured | None] = [None] * len(jobs)
        if self._ray is not None:
            refs = {self._remote.remote(j): i for i, j in enumerate(jobs)}
            pending = list(refs)
            while pending:
                ready, pending = self._ray.wait(pending, num_returns=1)
                for r in ready:
                    results[refs[r]] = self._ray.get(r)
                    done(results[refs[r]])
        elif self._pool is not None:
            import concurrent.futures
            futures = {self._pool.submit(measure, j): i for i, j in enumerate(jobs)}
            for f in concurrent.futures.as_completed(futures):
                results[futures[f]] = f.result()
                done(results[futures[f]])
        else:
            for i, j in enumerate(jobs):
                results[i] = measure(j)
                done(results[i])
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class Progress:
    """A one-line progress bar on stderr with the candidate that finished last."""

    def __init__(self, out=None):
        out = out or sys.stderr
        self.out, self.total, self.count = out, 0, 0
        self.tty = hasattr(out, "isatty") and out.isatty()

    def add(self, n: int) -> None:
        self.total += n

    def __call__(self, m: Measured) -> None:
        self.count += 1
        width = 20
        filled = int(width * self.count / max(self.total, 1))
        state = "error" if m.error else f"drop {m.drop:.2f}, flash {m.flash:,} B"
        line = f"auto: [{'#' * filled}{'-' * (width - filled)}] {self.count}/{self.total} {m.pipeline} ({state})"
        self.out.write(("\r\033[K" + line) if self.tty else line + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")


# ---- the search -----------------------------------------------------------------------------------

def pipeline(sparsity: float = 0.0, bits: int | None = None, ratio: float | str = 0.0, train: bool = False,
             svd: bool = False, binary: bool = False) -> str:
    """One candidate. `ratio` "auto" and `svd` are per-layer choices (prune-channels{ratio=auto},
    svd{rank=auto}: accuracy-aware passes choosing each layer's setting under the same budget)."""
    steps = ["fuse"]
    if ratio:
        steps.append(f"prune-channels{{ratio={ratio if isinstance(ratio, str) else format(ratio, 'g')}}}")
    if svd:
        steps.append("svd{rank=auto}")
    if binary:
        steps.append("binarize")
    if train and (svd or binary) and not sparsity:
        steps.append(f"distill{{epochs={PRUNE_EPOCHS}}}")
    if sparsity:
        steps.append(f"prune-weights{{sparsity={sparsity:g}}}")
    if train and (sparsity or ratio):
        steps.append(f"distill{{epochs={PRUNE_EPOCHS}}}")
    if bits:
        steps.append(f"share-weights{{bits={bits}}}")
        if train:
            steps.append(f"distill{{epochs={DISTILL_EPOCHS}}}")
    steps.append("quantize-int8")
    return ",".join(steps)


def has_conv(graph: Graph) -> bool:
    from tinyc.ops import Trait, has
    return any(has(op, Trait.LAYER) and op.operands[1].type.rank == 4 for op in graph.compute_ops())


@dataclass
class Search:
    graph: Graph
    data: dict
    budgets: Budgets
    target: str
    objective: str = "flash"
    runner: Runner | None = None
    progress: Progress | None = None
    tried: list[Measured] = field(default_factory=list)
    bounded: bool | None = None          # judged on the upper bound too (None: not known before the first batch)

    def batch(self, pipelines: Iterable[str]) -> list[Measured]:
        seen = {m.pipeline for m in self.tried}
        todo = [p for p in dict.fromkeys(pipelines) if p not in seen]
        if self.progress:
            self.progress.add(len(todo))
        jobs = [Job(self.graph, p, self.data, self.budgets.accuracy_drop, self.target) for p in todo]
        out = self.runner.run(jobs, self.progress or (lambda m: None))
        if self.bounded is None:
            self.bounded = bound_possible(self.budgets.accuracy_drop, out)
        for m in out:
            m.violations = self.budgets.violations(m, self.bounded) if not m.error else ["error"]
            m.feasible = not m.violations
        self.tried += out
        return out

    def key(self, m: Measured) -> tuple:
        first = m.instructions if self.objective == "latency" else m.flash
        second = m.flash if self.objective == "latency" else m.instructions
        return (first, second, m.drop)

    def run(self) -> list[Measured]:
        """Every candidate tried, best first among the feasible ones (ranked by the objective)."""
        train = self.data.get("train") is not None
        stage1 = self.batch(pipeline(s, train=train) for s in SPARSITIES)
        kept = [s for s, m in zip(SPARSITIES, stage1) if self.budgets.accurate(m, self.bounded)]
        base = sorted(kept)[-2:] or [0.0]
        self.batch(pipeline(s, b, train=train) for s in base for b in SHARE_BITS)
        best = self.best() or stage1[0]
        s, b = _settings(best.pipeline)
        if has_conv(self.graph):
            self.batch(pipeline(s, b, r, train=train) for r in CHANNEL_RATIOS + ("auto",))
        # per-layer low rank on the best so far, and binarization where it pays (with recovery)
        more = [pipeline(s, b, train=train, svd=True)]
        if train:
            more.append(pipeline(train=True, binary=True))
        self.batch(more)
        self.batch(self.patched())
        mark_pareto(self.tried)
        return sorted([m for m in self.tried if m.feasible], key=self.key)

    def best(self) -> Measured | None:
        ok = [m for m in self.tried if m.feasible]
        return min(ok, key=self.key) if ok else None

    def patched(self) -> list[str]:
        """With a RAM budget that only RAM keeps the best candidate from meeting, that candidate run
        patch by patch (the patch pass, MCUNetV2: bit-exact, so its accuracy holds; the first stage's
        arena shrinks for some code and recomputed MACs) at PATCH_GRIDS patches a side."""
        if self.budgets.ram is None or not has_conv(self.graph):
            return []
        only_ram = [m for m in self.tried if m.violations == ["ram"] and "patch{" not in m.pipeline]
        if not only_ram:
            return []
        base = min(only_ram, key=self.key).pipeline
        return [f"{base},patch{{patches={n}}}" for n in PATCH_GRIDS]


def selection_samples(rows: list[Measured]) -> int:
    return max((m.samples for m in rows if not m.error), default=0)


def bound_possible(budget: float, rows: list[Measured]) -> bool:
    """Whether the selection split is large enough for an unchanged model's upper bound to be
    within the budget's limit (classifier metrics only: other metrics have no bound)."""
    from tinyc.contract import bound_limit, zero_change_bound
    if not any(m.drop_upper is not None for m in rows):
        return False
    return zero_change_bound(selection_samples(rows)) <= bound_limit(budget) + 1e-9


def bound_warning(tried: list[Measured], budget: float) -> str | None:
    """The warning when candidates could only be judged on the point estimate."""
    from tinyc.contract import bound_limit, samples_for_bound, zero_change_bound
    n = selection_samples(tried)
    if budget <= 0 or not any(m.drop_upper is not None for m in tried) or bound_possible(budget, tried):
        return None         # a budget of 0 asks for no change at all: the point estimate is the test
    need = samples_for_bound(budget)
    return (f"--auto: the {n} selection samples cannot bound the drop at {bound_limit(budget):g} points (95 %): "
            f"even a model that changes no prediction has an upper bound of {zero_change_bound(n):.2f}; "
            f"candidates were judged on the point estimate alone, and the shipped model may lose more than "
            f"its {budget:g}-point budget on new data. For the 95 % promise give at least {need:,} selection "
            f"samples (about {math.ceil(need / (1 - CONFIRM)):,} --eval samples: {CONFIRM:.0%} are kept for the "
            f"confirmation)")


def _settings(p: str) -> tuple[float, int | None]:
    import re
    s = re.search(r"sparsity=([0-9.]+)", p)
    b = re.search(r"bits=(\d+)", p)
    return (float(s.group(1)) if s else 0.0, int(b.group(1)) if b else None)


def mark_pareto(rows: list[Measured]) -> None:
    """Pareto-optimal over (flash, RAM, instructions, drop), lower is better in each."""
    ok = [m for m in rows if not m.error]
    vec = lambda m: (m.flash, m.ram, m.instructions, m.drop)
    for m in ok:
        m.pareto = not any(all(a <= b for a, b in zip(vec(o), vec(m))) and vec(o) != vec(m) for o in ok)


def table(rows: list[Measured], chosen: str | None) -> str:
    lines = ["| | pipeline | flash B | RAM B | instructions | drop (95 % interval) | 95 % bound | feasible |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for m in sorted(rows, key=lambda r: (r.error is not None, r.flash or 0)):
        mark = "**chosen**" if m.pipeline == chosen else ("pareto" if m.pareto else "")
        if m.error:
            lines.append(f"| | `{m.pipeline}` | | | | | | error: {m.error[:60]} |")
            continue
        ci = f" ({m.drop_ci[0]:.2f} to {m.drop_ci[1]:.2f})" if m.drop_ci else ""
        feas = "yes" if m.feasible else "no: " + ", ".join(m.violations)
        bound = "" if m.drop_upper is None else f"{m.drop_upper:.2f}"
        lines.append(f"| {mark} | `{m.pipeline}` | {m.flash:,} | {m.ram:,} | {m.instructions:,} | "
                     f"{m.drop:.2f}{ci} | {bound} | {feas} |")
    return "\n".join(lines)


def plot(rows: list[Measured], chosen: str | None, budgets: Budgets, path: Path) -> None:
    """flash and instructions against the accuracy drop, the budget as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [m for m in rows if not m.error]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, what, label in ((axes[0], "flash", "firmware flash (B)"), (axes[1], "instructions", "instructions")):
        for m in ok:
            color = "tab:green" if m.feasible else "tab:gray"
            ax.scatter(m.drop, getattr(m, what), c=color, s=60 if m.pipeline == chosen else 20,
                       edgecolors="black" if m.pipeline == chosen else "none")
        ax.axvline(budgets.accuracy_drop, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlabel("accuracy drop (points, selection split)")
        ax.set_ylabel(label)
    axes[0].set_title("candidates (green: feasible, ringed: chosen)")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def resource_budgets(args, board) -> Budgets:
    flash = args.max_flash if args.max_flash is not None else (board.flash_bytes if board else None)
    ram = args.max_ram if args.max_ram is not None else (board.ram_bytes if board else None)
    for flag, v in (("--max-flash", args.max_flash), ("--max-ram", args.max_ram),
                    ("--max-instructions", args.max_instructions)):
        if v is not None and v <= 0:
            raise TinycError(f"{flag} must be a positive number, got {v}")
    return Budgets(args.max_accuracy_drop, flash, ram, args.max_instructions)


def check_args(args, target) -> None:
    if args.pipeline is not None:
        raise TinycError("--auto chooses the pipeline; -p/--pipeline cannot be given with it",
                         hint="drop -p, or drop --auto to run your pipeline")
    if not target.bare_metal:
        raise TinycError("--auto measures candidates on the emulator; the target is the host",
                         hint="give --target cortex-m4 (or another Cortex-M) or --board NAME")
    missing = [flag for flag, v in (("--calib", args.calib), ("--eval", args.eval),
                                    ("--max-accuracy-drop", args.max_accuracy_drop)) if v is None]
    if missing:
        raise TinycError(f"--auto needs {', '.join(missing)}",
                         hint="--calib X.npy (int8 calibration), --eval X.npy [Y.npy] and --max-accuracy-drop POINTS "
                              "(what the search must keep)")


def search(graph: Graph, data: dict, budgets: Budgets, target: str, *, objective: str = "flash",
           jobs: int = 1, ray_address: str | None = None, out=None) -> tuple[list[Measured], list[Measured]]:
    """(every candidate tried, the feasible ones best first)."""
    runner = Runner(jobs, ray_address)
    progress = Progress(out)
    try:
        s = Search(graph, data, budgets, target, objective, runner, progress)
        ranked = s.run()
    finally:
        progress.finish()
        runner.close()
    return s.tried, ranked


def summary(tried: list[Measured], budgets: Budgets) -> str:
    from tinyc.contract import bound_limit
    feasible = sum(m.feasible for m in tried)
    parts = [f"accuracy drop <= {budgets.accuracy_drop:g}"
             + (f" (95 % bound <= {bound_limit(budgets.accuracy_drop):g})" if bound_possible(budgets.accuracy_drop, tried)
                else "")]
    parts += [f"{k} <= {v:,}" for k, v in (("flash", budgets.flash), ("RAM", budgets.ram),
                                            ("instructions", budgets.instructions)) if v is not None]
    return f"auto: {len(tried)} candidates tried, {feasible} within {', '.join(parts)}"


def report_section(tried, chosen, budgets, objective, skipped) -> dict[str, Any]:
    from tinyc.contract import bound_limit
    bounded = bound_possible(budgets.accuracy_drop, tried)
    return {"objective": objective, "budgets": asdict(budgets), "chosen": chosen,
            "accuracy_bound": {"judged_on_bound": bounded, "limit": bound_limit(budgets.accuracy_drop),
                               "selection_samples": selection_samples(tried),
                               "warning": bound_warning(tried, budgets.accuracy_drop)},
            "rejected_on_confirmation": skipped, "candidates": [m.row() for m in tried]}
