"""Implementations of the CLI commands. Each takes the parsed argparse namespace."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tinyc.errors import TinycError
from tinyc.ir import Graph


# ---- shared helpers ---------------------------------------------------------

def is_ir_text(path: Path) -> bool:
    """IR dumps are UTF-8 text starting with a comment or `graph`; model archives are binary."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head.startswith((b"//", b"graph"))


def load_graph(path: Path, args) -> Graph:
    if not path.exists():
        raise TinycError(f"no such file: {path}", hint="check the path")
    if path.is_dir():
        raise TinycError(f"{path} is a directory, not a model or IR file")
    if is_ir_text(path):
        from tinyc.text import parse_file
        return parse_file(path)
    from tinyc.frontend import load_model
    return load_model(path, trust_pickle=args.trust_pickle, input_shape=parse_shape(args.input_shape))


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise TinycError(f"bad --input-shape '{text}'", hint="give positive dimensions with the batch, e.g. 1,3,32,32")
    return shape


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder so a failure leaves nothing half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def make_pass_manager(args, pipeline: str):
    from tinyc.passmanager import PassManager, PassManagerOptions

    options = PassManagerOptions(
        verify_each=not args.no_verify,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after=frozenset(args.print_ir_after),
        dump_dir=args.dump_ir,
        time_passes=args.time_passes,
        elide_weights=args.elide_weights,
        out=sys.stderr,
    )
    pm = PassManager(pipeline, options)
    known = {p.name for p in pm.passes} | {"import"}
    unknown = [n for n in args.print_ir_after if n not in known]
    if unknown:
        raise TinycError(f"--print-ir-after names a pass not in the pipeline: {', '.join(unknown)}",
                         hint="pipeline passes: " + ", ".join(sorted(known)))
    return pm


def make_context(args, graph: Graph, pm, calib=None):
    """The PassContext of --calib/--eval/--train/--max-accuracy-drop; scores every step when --eval is given."""
    from tinyc.compile import load_npy
    from tinyc.evaluate import make_context as context

    if args.eval and len(args.eval) > 2:
        raise TinycError(f"--eval takes one or two files (inputs, then labels), got {len(args.eval)}")
    x, y = (list(args.eval) + [None])[:2] if args.eval else (None, None)
    ctx = context(graph, calib=calib, eval_inputs=load_npy(x, "evaluation input") if x else None,
                  eval_labels=load_npy(y, "evaluation label") if y else None,
                  train=load_npy(args.train, "training input") if args.train else None,
                  max_accuracy_drop=args.max_accuracy_drop)
    pm.evaluate = ctx.evaluate
    return ctx


# ---- commands -----------------------------------------------------------------

def cmd_opt(args) -> int:
    from tinyc.text import print_graph

    pm = make_pass_manager(args, args.pipeline)  # parse the pipeline before the (slow) import
    graph = load_graph(args.input, args)
    ctx = make_context(args, graph, pm)
    graph = pm.run(graph, ctx)
    text = print_graph(graph, elide_weights=args.elide_weights)
    if args.stats:
        print(pm.stats_table(), file=sys.stderr)
        print_score_notes(ctx)
    if args.output:
        write_atomically(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def print_score_notes(ctx) -> None:
    """Under --stats: what the accuracy column measures, and the passes' notes."""
    if ctx.metric:
        print(f"accuracy: {ctx.metric} on the --eval data (imported model: {ctx.baseline:.2f})", file=sys.stderr)
    for note in ctx.notes:
        print(f"note: {note}", file=sys.stderr)


def cmd_passes(args) -> int:
    from tinyc.passes import PASSES, option_fields
    from tinyc.passes.base import format_option

    for name in sorted(PASSES):
        cls = PASSES[name]
        print(f"{name}")
        doc = " ".join(cls.__doc__.split())
        print(f"    {doc}")
        for dashed, typ, default, help_ in option_fields(cls):
            print(f"    {dashed}={format_option(default)}  ({type_name(typ)}) {help_}")
        print()
    return 0


def type_name(typ) -> str:
    """An option type for people: `l1|l2`, `float|str`, `list of str`."""
    import typing
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if args:
        return "|".join(type_name(a) for a in args)
    return getattr(typ, "__name__", str(typ))


def cmd_ops(args) -> int:
    from tinyc.frontend import supported_ops
    for name in supported_ops():
        print(name)
    return 0


def cmd_compile(args) -> int:
    from tinyc.compile import compile_model
    return compile_model(args)


def cmd_run(args) -> int:
    from tinyc.compile import run_bundle_cmd
    return run_bundle_cmd(args)


def cmd_bench(args) -> int:
    from tinyc.compile import bench_bundle_cmd
    return bench_bundle_cmd(args)
