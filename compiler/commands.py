"""Implementations of the CLI commands. Each takes the parsed argparse namespace."""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from tinyc.errors import TinycError
from tinyc.ir import Graph


# ---- shared helpers ---------------------------------------------------------

def check_input_file(path: Path, what: str) -> None:
    """Refuse a missing, unreadable or non-regular input before anything opens it (a FIFO would block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        found = f"no such file: {path}" if what == "model file" else f"{what} not found: {path}"
        raise TinycError(found, hint="check the path") from None
    except OSError as e:
        raise TinycError(f"cannot access {what} {path}: {e.strerror}",
                         hint="check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise TinycError(f"{what} {path} is a directory, not a file", hint="pass a file")
    if not stat.S_ISREG(st.st_mode):
        raise TinycError(f"{what} {path} is not a regular file (a FIFO, socket or device)",
                         hint="write the data to a regular file and pass that")
    if not os.access(path, os.R_OK):
        raise TinycError(f"cannot read {what} {path}: permission denied", hint="check the file's permissions")


def read_head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise TinycError(f"cannot read {path}: {e.strerror}", hint="check the file's permissions") from None


_BINARY_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"\x93NUMPY")


def is_ir_text(path: Path) -> bool:
    """IR is tried first for `.tir` files and any UTF-8 text; model archives and pickles are binary."""
    head = read_head(path)
    if head.startswith(_BINARY_MAGIC):
        return False
    if path.suffix == ".tir" or head.lstrip().startswith((b"//", b"graph")):
        return True
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end of the head
            return False
    return bool(head.strip())


def load_graph(path: Path, args) -> Graph:
    """The model or IR file as a verified Graph; NaN or infinite weights refused unless --allow-nonfinite."""
    from tinyc.verifier import check_values

    check_input_file(path, "model file")
    allow = getattr(args, "allow_nonfinite", False)
    if is_ir_text(path):
        from tinyc.errors import VerifyError
        from tinyc.text import parse_file
        from tinyc.verifier import verify
        graph = parse_file(path)
        try:
            verify(graph)
        except VerifyError as e:  # the user's IR: no "bug in tinyc" hint
            where = f"{path}" + (f" (loc {e.where})" if e.where else "")
            raise TinycError(f"the IR does not verify: {e.what.removeprefix('verify: ')}", where=where,
                             hint=e.hint or "fix the IR text; `tinyc ops` and docs/ir.md list the ops") from None
    else:
        from tinyc.frontend import load_model
        graph = load_model(path, trust_pickle=args.trust_pickle, input_shape=parse_shape(args.input_shape),
                           allow_nonfinite=True)
    bad = check_values(graph, path, allow)
    if bad:
        print(f"tinyc: warning: {path} has NaN or infinite weights (--allow-nonfinite): " + "; ".join(bad),
              file=sys.stderr)
    return graph


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
    if path.is_dir():
        raise TinycError(f"output {path} is a directory", hint="give a file name for -o, e.g. out.tir")
    _replace_atomically(path, "w", lambda f: f.write(text))


def _replace_atomically(path: Path, mode: str, write) -> None:
    """write(file) into a temporary file beside `path` (umask permissions), then rename it over
    `path`; an OS error is a TinycError and leaves nothing behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise TinycError(f"cannot write {path}: {e.strerror or e}",
                         hint="check that the directory exists and is writable") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(path: Path, option: str) -> None:
    """A directory option (--dump-ir) must not name an existing file."""
    if path.exists() and not path.is_dir():
        raise TinycError(f"{option} {path} exists and is not a directory",
                         hint=f"give {option} a new or existing directory")


def load_array(path: Path, what: str, *, rows: bool = True):
    """A numeric .npy array (real, not complex, not empty, finite); refuses .npz, text and object arrays."""
    import numpy as np

    check_input_file(path, f"{what} file")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise TinycError(f"cannot read {what} file {path}: {e}",
                         hint="save it with numpy.save (a .npy array of numbers)") from None
    if isinstance(x, np.lib.npyio.NpzFile):
        names = ", ".join(x.files) or "none"
        x.close()
        raise TinycError(f"{what} file {path} is an .npz archive (arrays: {names}), not an .npy array",
                         hint="save one array with numpy.save, e.g. numpy.save('x.npy', data['x'])")
    if x.dtype.kind == "c":
        raise TinycError(f"{what} file {path} holds complex numbers ({x.dtype})",
                         hint="models take real inputs: save x.real (or abs(x)) as float32")
    if x.dtype.kind not in "biuf":
        raise TinycError(f"{what} file {path} holds {x.dtype} values, not numbers",
                         hint="save a numeric array, e.g. numpy.save(path, x.astype(numpy.float32))")
    if x.size == 0 or (rows and x.ndim and x.shape[0] == 0):
        raise TinycError(f"{what} file {path} is empty (shape {list(x.shape)})",
                         hint="save at least one sample")
    if x.dtype.kind == "f":
        finite = np.isfinite(x.astype(np.float32))
        if not finite.all():
            raise TinycError(f"{what} file {path} has {int(x.size - finite.sum())} NaN or infinite values "
                             "(in float32)", hint="clean the data before passing it")
    return x


def check_output_path(path: Path, option: str, *, directory: bool = False) -> None:
    """Refuse an output path that cannot be written, before any slow work: a file where a directory
    is wanted (or the reverse), or a parent folder that is not a writable directory."""
    if directory and path.exists() and not path.is_dir():
        raise TinycError(f"{option} {path} exists and is not a directory",
                         hint=f"give {option} a new directory (or an earlier tinyc bundle to replace)")
    if not directory and path.is_dir():
        raise TinycError(f"{option} {path} is a directory", hint=f"give {option} a file name")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise TinycError(f"cannot create {path}: {parent} is not a directory", hint=f"choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TinycError(f"cannot write {path}: directory {parent} is not writable",
                         hint=f"choose a writable location for {option} or fix the directory's permissions")


def save_array(path: Path, array) -> None:
    """numpy.save through a temporary file, so a failure leaves nothing half-written."""
    import numpy as np

    check_output_path(path, "-o")
    _replace_atomically(path, "wb", lambda f: np.save(f, array))


_MANIFEST_KEYS = {"name": str, "target": str, "graph": str, "inputs": list, "outputs": list, "layers": list,
                  "arena_size": int, "macs": int}


def read_manifest(bundle: Path, filename: str) -> dict:
    """A bundle's report.json, checked for what run/bench read from it."""
    import json

    if not bundle.is_dir():
        what = "does not exist" if not bundle.exists() else "is not a directory"
        raise TinycError(f"bundle {bundle} {what}", hint="pass the directory written by `tinyc compile -o DIR`")
    rep = bundle / filename
    if not rep.exists():
        raise TinycError(f"{bundle} is not a tinyc bundle (no {filename})",
                         hint="pass the directory written by `tinyc compile -o DIR`")
    check_input_file(rep, "bundle manifest")
    damaged = f"the bundle manifest {rep} is damaged"
    hint = "compile the bundle again with `tinyc compile`"
    try:
        report = json.loads(rep.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TinycError(f"{damaged}: {e}", hint=hint) from None
    except OSError as e:
        raise TinycError(f"cannot read {rep}: {e.strerror}", hint="check the file's permissions") from None
    if not isinstance(report, dict):
        raise TinycError(f"{damaged}: not a JSON object", hint=hint)
    for key, typ in _MANIFEST_KEYS.items():
        if not isinstance(report.get(key), typ):
            raise TinycError(f"{damaged}: {'missing' if key not in report else 'bad'} field {key!r}", hint=hint)
    if not (report.get("board") is None or isinstance(report["board"], str)):
        raise TinycError(f"{damaged}: bad field 'board'", hint=hint)
    layer_keys = ("index", "name", "kind", "macs", "weight_bytes")
    if not all(isinstance(row, dict) and all(k in row for k in layer_keys) for row in report["layers"]):
        raise TinycError(f"{damaged}: bad 'layers' entry", hint=hint)
    for key in ("inputs", "outputs"):
        for v in report[key]:
            shape = v.get("shape") if isinstance(v, dict) else None
            if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
                raise TinycError(f"{damaged}: bad {key} entry {v!r}", hint=hint)
    if not report["outputs"] or not report["inputs"]:
        raise TinycError(f"{damaged}: it lists no {'inputs' if not report['inputs'] else 'outputs'}", hint=hint)
    return report


def make_pass_manager(args, pipeline: str):
    from tinyc.passmanager import PassManager, PassManagerOptions

    if args.dump_ir is not None:
        check_output_dir(args.dump_ir, "--dump-ir")
    options = PassManagerOptions(
        verify_each=not args.no_verify,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after=frozenset(args.print_ir_after),
        dump_dir=args.dump_ir,
        time_passes=args.time_passes,
        elide_weights=args.elide_weights,
        out=sys.stderr,
        check_steps=True,
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
    from tinyc.evaluate import make_context as context

    if args.eval and len(args.eval) > 2:
        raise TinycError(f"--eval takes one or two files (inputs, then labels), got {len(args.eval)}")
    x, y = (list(args.eval) + [None])[:2] if args.eval else (None, None)
    ctx = context(graph, calib=calib, eval_inputs=load_array(x, "evaluation input") if x else None,
                  eval_labels=load_array(y, "evaluation label") if y else None,
                  train=load_array(args.train, "training input") if args.train else None,
                  max_accuracy_drop=args.max_accuracy_drop)
    pm.evaluate = ctx.evaluate
    return ctx


def run_passes(args, pipeline: str, graph: Graph, ctx, pm=None, backoff: bool = True):
    """Run the pipeline under the budget contract (tinyc.contract): (graph, pass manager, report
    section or None). `backoff` False: a broken confirmation is a BudgetError at once (--auto
    moves on to its next candidate rather than ship something it did not measure)."""
    from tinyc.contract import confirm, run_pipeline

    def make_pm():
        fresh = make_pass_manager(args, pipeline)
        fresh.evaluate = ctx.evaluate
        return fresh
    outcome = run_pipeline(make_pm, graph, ctx, backoff=backoff)
    section = None
    if ctx.max_accuracy_drop is not None and ctx.selection is not None:
        final = ctx.selection.describe(outcome.graph)
        section = {"budget": ctx.max_accuracy_drop, "metric": ctx.metric, "baseline": ctx.baseline,
                   "selection": {"samples": ctx.selection.samples, "labelled": ctx.selection.labelled,
                                 "drop": ctx.baseline - final["score"], "figures": final},
                   "confirmation": confirm(ctx, outcome.graph), "attempts": outcome.attempts}
    return outcome.graph, outcome.pm, section


def contract_lines(section: dict | None) -> list[str]:
    if not section:
        return []
    sel, conf = section["selection"], section["confirmation"]
    line = (f"  budget contract: {section['metric']} drop {sel['drop']:.2f} on {sel['samples']} selection samples")
    if "estimated_drop_ci" in sel["figures"]:
        lo, hi = sel["figures"]["estimated_drop_ci"]
        line += f" (95 % interval {lo:.2f} to {hi:.2f})"
    elif "agreement_ci" in sel["figures"]:
        lo, hi = sel["figures"]["agreement_ci"]
        line += f" (agreement 95 % interval {lo:.2f} to {hi:.2f} %)"
    if conf:
        line += f", {conf['drop']:.2f} on {conf['samples']} confirmation samples"
    return [line + f"; budget {section['budget']:g}"]


# ---- commands -----------------------------------------------------------------

def cmd_opt(args) -> int:
    from tinyc.text import print_graph

    if args.output:
        check_output_path(args.output, "-o")
    pm = make_pass_manager(args, args.pipeline)  # parse the pipeline before the (slow) import
    graph = load_graph(args.input, args)
    ctx = make_context(args, graph, pm)
    graph, pm, section = run_passes(args, args.pipeline, graph, ctx, pm)
    text = print_graph(graph, elide_weights=args.elide_weights)
    if args.stats:
        print(pm.stats_table(), file=sys.stderr)
        print_score_notes(ctx)
        for line in contract_lines(section):
            print(line.strip(), file=sys.stderr)
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
    if args.json:
        check_output_path(args.json, "--json")
    if getattr(args, "html", None):
        check_output_path(args.html, "--html")
    return bench_bundle_cmd(args)
