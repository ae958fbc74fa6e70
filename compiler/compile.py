"""`tinyc compile`, `tinyc run` and `tinyc bench`: from a model file to a verified C bundle."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyc.errors import TinycError
from tinyc.ir import Graph

REPORT = "report.json"


# ---- compile --------------------------------------------------------------------

def default_pipeline(calib: bool) -> str:
    return "fuse,quantize-int8" if calib else "fuse"


def load_npy(path: Path, what: str) -> np.ndarray:
    from tinyc.commands import load_array
    return load_array(path, what)


def compile_model(args) -> int:
    from tinyc.backends.targets import resolve
    from tinyc.commands import (check_output_path, contract_lines, load_graph, make_context, make_pass_manager,
                                print_score_notes, run_passes)

    t0 = time.perf_counter()
    check_output_path(args.output, "-o", directory=True)
    target, board = resolve(args.board) if args.board else resolve(args.target)
    if args.board and args.target not in ("host", target.name):
        raise TinycError(f"board {args.board} has a {target.name}, not a {args.target}",
                         hint=f"drop --target or use --target {target.name}")
    calib = load_npy(args.calib, "calibration") if args.calib else None
    graph = load_graph(args.model, args)
    from tinyc.passes.quant_from_model import has_model_quant
    quantized = has_model_quant(graph)   # a pt2e-quantized model brings its own int8 parameters
    auto_section = None
    if getattr(args, "auto", False):
        graph, pm, ctx, contract, auto_section = _auto(args, graph, calib, target, board)
    else:
        pipeline = args.pipeline if args.pipeline is not None else default_pipeline(calib is not None or quantized)
        pm = make_pass_manager(args, pipeline)
        ctx = make_context(args, graph, pm, calib=calib)
        graph, pm, contract = run_passes(args, pipeline, graph, ctx, pm)
    if calib is None and args.pipeline is None and not quantized:
        print("tinyc: note: compiling to float32; pass --calib X.npy (sample inputs) to get int8",
              file=sys.stderr)
    if args.stats:
        print(pm.stats_table(), file=sys.stderr)
        print_score_notes(ctx)
    report = _write_with_wide_weights(args, graph, target, board, pm, auto_section)
    report["metric"] = ctx.metric or None
    report["notes"] = ctx.notes
    stored_wider = storage_warnings(report)
    report["warnings"] = [s.warning for s in pm.history if s.warning] + stored_wider
    for line in stored_wider:
        print(f"tinyc: warning: {line}", file=sys.stderr)
    report["contract"] = contract
    if auto_section is not None:
        from tinyc import auto
        report["auto"] = auto_section
        if auto_section["accuracy_bound"]["warning"]:
            report["warnings"].append(auto_section["accuracy_bound"]["warning"])
        auto.plot([auto.Measured(**m) for m in auto_section["candidates"]], auto_section["chosen"],
                  auto.Budgets(**auto_section["budgets"]), args.output / "auto_pareto.png")
        (args.output / "auto.md").write_text(auto_section["table"] + "\n")
    report["compile_seconds"] = round(time.perf_counter() - t0, 3)
    _write_json(args.output / REPORT, report)
    print("\n".join([summary(report)] + contract_lines(contract)))
    return 0


# flash kept free when --auto --objective latency spends the rest of the budget on wide weights (the wide
# kernel variant's code, beside the measured candidate's firmware)
WIDE_MARGIN = 2048


def wide_allowance(objective: str, flash_budget: int | None, flash: int | None) -> int:
    """Bytes of flash --auto may spend on --wide-weights: with --objective latency, what the chosen
    candidate's measured firmware leaves under the flash budget less WIDE_MARGIN; else none."""
    if objective != "latency" or flash_budget is None or flash is None:
        return 0
    return max(0, flash_budget - flash - WIDE_MARGIN)


def _write_with_wide_weights(args, graph: Graph, target, board, pm, auto_section) -> dict:
    """write_bundle with the --wide-weights allowance: the option's; without it, under --auto --objective
    latency the flash the chosen candidate leaves free, else the balanced default (c_emitter.
    balanced_options: at most half the int8 weight bytes, on layers that save at least BALANCED_GAIN
    instructions per byte). An allowance tinyc chose that makes the bundle overflow the flash budget is
    dropped (the bundle is written again without it), never shipped over budget."""
    from tinyc.backends.c_emitter import balanced_options
    from tinyc.errors import BackendError

    wide = getattr(args, "wide_weights", None)
    chosen = wide is None
    min_gain = 0.0
    budget = board.flash_bytes if board else None
    if chosen and auto_section is not None:
        flash = next((c["flash"] for c in auto_section["candidates"] if c["pipeline"] == auto_section["chosen"]), None)
        budget = auto_section["budgets"]["flash"]
        wide = wide_allowance(auto_section["objective"], budget, flash)
    elif chosen:
        opts = balanced_options(graph)
        wide, min_gain = opts["wide_weights"], opts["min_gain"]
    if not (chosen and wide):
        report = write_bundle(graph, args.output, args.name, target, board, pm, wide or 0)
        if wide and not any(layer["wide_weights"] for layer in report["layers"]):
            print("tinyc: warning: --wide-weights changed nothing: no int8 dense conv (3x3 GEMM block, a "
                  "reduction over more than 8 values) fits the allowance; it needs an int8 model (--calib)",
                  file=sys.stderr)
        return report
    try:
        report = write_bundle(graph, args.output, args.name, target, board, pm, wide, min_gain)
    except BackendError:          # the board's budget check: over it with the allowance
        report = None
    if report is None or (budget is not None and report["flash"] is not None and report["flash"] > budget):
        return write_bundle(graph, args.output, args.name, target, board, pm, 0)
    widened = [layer["name"] for layer in report["layers"] if layer["wide_weights"]]
    if widened and auto_section is not None:
        print(f"tinyc: note: --auto --objective latency: {len(widened)} conv layer(s) store their weights as int16 "
              f"in the flash left under the budget ({', '.join(widened)})", file=sys.stderr)
    return report


def _auto(args, graph: Graph, calib, target, board):
    """--auto: search, then compile the best candidate through the contract (the next one if the
    confirmation split rejects it). (graph, pass manager, context, contract section, auto section)."""
    from tinyc import auto
    from tinyc.commands import load_array, make_context, make_pass_manager, run_passes
    from tinyc.contract import BudgetError

    auto.check_args(args, target)
    budgets = auto.resource_budgets(args, board)
    x, y = (list(args.eval) + [None])[:2]
    data = {"calib": calib, "eval_inputs": load_array(x, "evaluation input"),
            "eval_labels": load_array(y, "evaluation label") if y else None,
            "train": load_array(args.train, "training input") if args.train else None}
    tried, ranked = auto.search(graph, data, budgets, target.name, objective=args.objective, jobs=args.jobs,
                                ray_address=args.ray)
    print(auto.summary(tried, budgets), file=sys.stderr)
    weak = auto.bound_warning(tried, budgets.accuracy_drop)
    if weak:
        print(f"tinyc: warning: {weak}", file=sys.stderr)
    if not ranked:
        print(auto.table(tried, None), file=sys.stderr)
        raise TinycError(auto.summary(tried, budgets).replace("auto: ", "--auto: no candidate meets every budget: "),
                         hint="the table above shows what each candidate missed; raise a budget, give --train "
                              "(distillation recovers accuracy) or pick a bigger board")
    skipped = []
    for cand in ranked:
        args.pipeline = cand.pipeline
        pm = make_pass_manager(args, cand.pipeline)
        ctx = make_context(args, graph, pm, calib=calib)
        try:
            # no back-off: a candidate that breaks the confirmation is skipped, never shipped re-tuned
            out, pm, contract = run_passes(args, cand.pipeline, graph, ctx, pm, backoff=False)
        except BudgetError as e:
            skipped.append({"pipeline": cand.pipeline, "why": e.what})
            continue
        text = auto.table(tried, cand.pipeline)
        print(text, file=sys.stderr)
        if skipped:
            ctx.notes.append(f"--auto: {len(skipped)} better candidate(s) broke the budget on the confirmation "
                             f"split and were skipped: " + "; ".join(s["pipeline"] for s in skipped))
        section = auto.report_section(tried, cand.pipeline, budgets, args.objective, skipped)
        section["table"] = text
        return out, pm, ctx, contract, section
    raise TinycError("--auto: every candidate within the budgets on the selection split broke it on the "
                     "confirmation split", hint="the evaluation data may be too small to tell; give more --eval samples")


def write_bundle(graph: Graph, out: Path, name: str, target, board, pm, wide_weights: int = 0,
                 min_gain: float = 0.0) -> dict:
    """Emit into a fresh folder beside OUT and move it into place only when everything worked."""
    from tinyc.backends.budget import check_budget
    from tinyc.backends.build import build
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.backends.size import size
    from tinyc.backends.target_files import write_target_files

    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _honour_umask(tmp)
        info = emit_bundle(graph, tmp, name=name, target_name=target.name, wide_weights=wide_weights,
                           min_gain=min_gain)
        write_target_files(tmp, target, name)
        sizes = use = None
        if target.bare_metal:   # errors name OUT, not the temporary folder
            sizes, use = (check_budget(tmp, board, name, where=str(out)) if board
                          else (size(build(tmp, target, name, "run", where=str(out))), None))
        report = make_report(graph, info, target, board, pm, sizes)
        report["board_memory"] = ({"flash": use.flash, "ram": use.ram, "arena": use.arena, "static": use.static,
                                   "stack": use.stack, "stack_how": use.stack_how,
                                   "flash_budget": board.flash_bytes, "ram_budget": board.ram_bytes}
                                  if use else None)
        _write_json(tmp / REPORT, report)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return report
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _honour_umask(path: Path) -> None:
    """mkdtemp makes a drwx------ folder; a bundle gets the permissions of any new folder."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


def _check_replaceable(out: Path) -> None:
    """Only an empty folder or an earlier tinyc bundle is overwritten."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT).exists())):
        raise TinycError(f"output {out} exists and is not a tinyc bundle",
                         hint="choose a new or empty directory for -o")


def make_report(graph: Graph, info, target, board, pm, sizes) -> dict:
    from tinyc.stats import graph_stats, layer_table

    s = graph_stats(graph)
    layers = [{"index": i, "name": row.name, "kind": row.kind, "shape": list(row.shape), "macs": row.macs,
               "params": row.params, "weight_bytes": row.weight_bytes, "loc": layer.loc,
               "kernels": list(layer.kernels), "storage": layer.storage,
               "wide_weights": row.name in info.wide_layers or row.name in info.winograd_layers,
               "winograd": row.name in info.winograd_layers}
              for i, (row, layer) in enumerate(zip(layer_table(graph), info.layers))]
    return {
        "tinyc_version": _version(),
        "name": info.name, "target": target.name, "board": board.name if board else None,
        "graph": graph.name,
        "inputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype} for v in graph.inputs],
        "outputs": [{"name": v.name, "shape": list(v.type.shape)} for v in graph.outputs],
        "pipeline": ",".join(p.spec() for p in pm.passes),
        "passes": [step.as_dict() for step in pm.history],
        "ops": s.ops, "params": s.params, "weight_bytes": s.weight_bytes, "macs": s.macs,
        "arena_size": info.arena_size, "arena_lower_bound": info.lower_bound,
        "arena_tensors": info.plan.arena_tensors(),
        "flash": sizes.flash if sizes else None, "ram": sizes.ram if sizes else None,
        "sections": sizes.to_dict() if sizes else None,
        "layers": layers,
        "files": sorted(p.name for p in info.files),
    }


def _version() -> str:
    from tinyc import __version__
    return __version__


def storage_warnings(report: dict) -> list[str]:
    """Layers whose weights were asked for in fewer bits (share-weights, low-bit) than the format
    the backend stored them in, with why (never a silent fall-back to a larger format)."""
    return [f"%{lay['name']}: {lay['storage']['fallback']}" for lay in report["layers"]
            if (lay.get("storage") or {}).get("fallback")]


def summary(report: dict) -> str:
    lines = [
        f"compiled {report['graph']} for {report['target']}"
        + (f" ({report['board']})" if report["board"] else "") + f" with pipeline '{report['pipeline']}'",
        f"  ops {report['ops']}, params {report['params']:,}, weight bytes {report['weight_bytes']:,}, "
        f"MACs {report['macs']:,}",
        f"  arena {report['arena_size']:,} bytes (lower bound {report['arena_lower_bound']:,})",
    ]
    if report["flash"] is not None:
        lines.append(f"  firmware with run harness: flash {report['flash']:,} bytes, "
                     f"static RAM {report['ram']:,} bytes (arena included)")
    wide = [lay for lay in report["layers"] if lay.get("wide_weights")]
    if wide:
        wino = sum(1 for lay in wide if lay.get("winograd"))
        lines.append(f"  int16 weights for speed on {len(wide)} layer(s) ({wino} as Winograd F(2x2, 3x3)); "
                     "--wide-weights 0 for the smallest build")
    m = report.get("board_memory")
    if m:
        lines.append(f"  counted against {report['board']}: RAM {m['ram']:,} of {m['ram_budget']:,} bytes "
                     f"(arena {m['arena']:,} + static {m['static']:,} + stack {m['stack']:,}, {m['stack_how']}), "
                     f"flash {m['flash']:,} of {m['flash_budget']:,} bytes")
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ---- run / bench ------------------------------------------------------------------

@dataclass
class Bundle:
    path: Path
    report: dict

    @property
    def name(self) -> str:
        return self.report["name"]

    @property
    def target(self) -> str:
        return self.report["target"]


def open_bundle(path: Path) -> Bundle:
    from tinyc.commands import read_manifest
    return Bundle(path, read_manifest(path, REPORT))


def as_rows(x: np.ndarray, shape: list[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Inputs as (rows, features) plus the per-row output leading shape: one sample of the model's
    full input shape, or N samples stacked along a batch dimension of size 1."""
    shape = tuple(shape)
    if x.shape == shape:
        return x.reshape(1, -1), ()
    if shape and shape[0] == 1 and x.shape[1:] == shape[1:]:
        return x.reshape(x.shape[0], -1), (x.shape[0],)
    if x.shape[1:] == shape:
        return x.reshape(x.shape[0], -1), (x.shape[0],)
    raise TinycError(f"input array has shape {list(x.shape)}; the model takes {list(shape)}",
                     hint=f"give one sample of shape {list(shape)} or N samples of shape [N, {', '.join(map(str, shape[1:]))}]")


def run_bundle_cmd(args) -> int:
    from tinyc.backends.run import run_model

    bundle = open_bundle(args.bundle)
    if len(bundle.report["inputs"]) != 1:
        raise TinycError("`tinyc run` takes models with one input",
                         hint="call tinyc.backends.run.run_model from Python with the inputs concatenated per row")
    x = load_npy(args.input, "input")   # run_model converts: float32, or int32 for token ids
    rows, lead = as_rows(x, bundle.report["inputs"][0]["shape"])
    y = run_model(bundle.path, bundle.target, bundle.name, rows, timeout=args.timeout)
    out_shape = bundle.report["outputs"][0]["shape"]
    if len(bundle.report["outputs"]) == 1:
        y = y.reshape(lead + tuple(out_shape[1:] if lead else out_shape))
    if args.output:
        from tinyc.commands import save_array
        save_array(args.output, y)
        print(f"wrote {y.shape} outputs to {args.output}")
    else:
        np.set_printoptions(precision=6, suppress=True)
        print(y)
    return 0


def bench_bundle_cmd(args) -> int:
    from tinyc.backends.bench import bench_model

    bundle = open_bundle(args.bundle)
    if bundle.target == "host":
        raise TinycError("tinyc bench measures on the emulator; this bundle is for the host",
                         hint="compile with --target cortex-m4 (or another Cortex-M)")
    clock = getattr(args, "clock_mhz", None)
    if clock is not None and not clock > 0:
        raise TinycError(f"--clock-mhz must be a positive number of MHz, not {clock:g}", hint="e.g. --clock-mhz 80")
    html_path = getattr(args, "html", None)
    if html_path:
        from tinyc.backends.html_report import check_report
        check_report(bundle.report)        # before the slow measurement
    result = bench_model(bundle.path, bundle.report["board"] or bundle.target, bundle.name)
    figures = bench_figures(bundle.report, result, clock)
    page = None
    if html_path:
        from tinyc.backends.html_report import render
        page = render(bundle.report, figures)   # every check before anything is written
    print(format_bench(bundle.report, figures))
    if args.json:
        _write_json(args.json, figures)
    if page is not None:
        from tinyc.commands import write_atomically
        write_atomically(html_path, page)
    return 0


def default_clock_mhz(report: dict) -> tuple[float | None, str]:
    """The clock latencies are given at without --clock-mhz: the board's (compiled with --board),
    else the target's emulated board's. (MHz or None, where it comes from)."""
    from tinyc.backends.targets import get_board, get_target
    if report.get("board"):
        board = get_board(report["board"])
        if board.clock_mhz:
            return board.clock_mhz, f"{board.name}'s clock"
    clock = get_target(report["target"]).clock_mhz
    return clock, (f"{report['target']}'s emulated board clock" if clock else "no clock known")


def bench_figures(report: dict, result, clock_mhz: float | None = None) -> dict:
    from tinyc.backends import cycles as cyc

    arena = report["arena_size"]
    static = result.ram - arena - result.io_buffer_bytes
    clock_from = "--clock-mhz"
    if clock_mhz is None:
        clock_mhz, clock_from = default_clock_mhz(report)
    n = len(report["layers"])
    layer_cycles = getattr(result, "layer_cycles", None) or [None] * n
    layers = []
    for layer, count, cycles in zip(report["layers"], result.layer_instructions or [None] * n, layer_cycles):
        layers.append({**{k: layer[k] for k in ("index", "name", "kind", "macs", "weight_bytes")},
                       "instructions": count, "cycles": cycles})
    cycles = getattr(result, "cycles", None)
    classes = getattr(result, "classes", None)
    return {
        "target": report["target"], "method": result.method,
        "instructions": result.instructions,
        "instructions_per_mac": result.instructions / report["macs"] if report["macs"] else None,
        "macs": report["macs"], "flash": result.flash,
        "ram": arena + static + result.stack, "arena": arena, "static_ram": static, "stack": result.stack,
        "cycles": cycles, "cpi": cyc.cpi(cycles, result.instructions),
        "cycle_model": getattr(result, "cycle_model", ""), "cycle_assumptions": cyc.ASSUMPTIONS,
        "clock_mhz": clock_mhz, "clock_from": clock_from, "latency_ms": cyc.latency_ms(cycles, clock_mhz),
        "classes": classes,
        "wait_state_cycles_per_n": (classes.get("taken", 0) + cyc.flash_accesses(classes)) if classes else None,
        "layers": layers, "notes": result.notes,
    }


def format_bench(report: dict, f: dict) -> str:
    per_mac = f"{f['instructions_per_mac']:.2f}" if f["instructions_per_mac"] else "-"
    lines = [
        f"{report['graph']} on {f['target']} (QEMU -icount shift=0, {f['method']} count, after one warm-up)",
        f"  instructions / inference  {f['instructions']:>12,}   ({per_mac} per MAC, {f['macs']:,} MACs)",
        f"  flash                     {f['flash']:>12,}   bytes (text + rodata + data, run image)",
        f"  RAM                       {f['ram']:>12,}   bytes = arena {f['arena']:,} + static {f['static_ram']:,}"
        f" + stack {f['stack']:,}",
    ]
    cycles = f.get("cycles")
    if cycles is not None:
        lines.append(f"  estimated cycles          {cycles:>12,}   (CPI {f['cpi']:.2f}; {f['cycle_model']}; "
                     f"see docs/cycles.md)")
        if f["clock_mhz"]:
            lines.append(f"  latency                   {f['latency_ms']:>12.3f}   ms at {f['clock_mhz']:g} MHz "
                         f"({f['clock_from']})")
        lines.append(f"  with N flash wait states  <= {cycles:,} + N x {f['wait_state_cycles_per_n']:,} cycles "
                     f"(N x (taken branches + flash data reads), before any flash cache)")
    else:
        lines.append(f"  estimated cycles          {'unavailable':>12}   ({f.get('cycle_model') or 'no class counts'})")
    show_cycles = any(row.get("cycles") is not None for row in f["layers"])
    lines += ["", f"  {'#':>3}  {'layer':28s} {'op':12s} {'MACs':>10} {'weight B':>9} {'instr':>11} {'instr/MAC':>9}"
              + (f" {'est. cycles':>12} {'CPI':>5}" if show_cycles else "")]
    for row in f["layers"]:
        instr = row["instructions"]
        count = f"{instr:,}" if instr is not None else "-"
        ratio = f"{instr / row['macs']:.2f}" if instr is not None and row["macs"] else ""
        line = (f"  {row['index']:>3}  {row['name'][:28]:28s} {row['kind']:12s} {row['macs']:>10,} "
                f"{row['weight_bytes']:>9,} {count:>11} {ratio:>9}")
        if show_cycles:
            c = row.get("cycles")
            line += f" {c:>12,} {c / instr:>5.2f}" if c is not None and instr else f" {'-':>12} {'':>5}"
        lines.append(line)
    lines += [f"  note: {n}" for n in f["notes"]]
    return "\n".join(lines)
