"""The `tinyc` command line: opt, passes, compile, run, bench."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from tinyc.errors import TinycError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False) or os.environ.get("TINYC_DEBUG", "") not in ("", "0")
    try:
        return args.func(args) or 0
    except TinycError as e:
        print(f"tinyc: error: {e.format()}", file=sys.stderr)
        _traceback_if(debug)
        return 1
    except KeyboardInterrupt:
        print("tinyc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tinyc opt ... | head`: the reader left; not an error worth a message
        _silence_stdout()
        return 1
    except OSError as e:  # a file-system failure no command anticipated: still the user's to fix
        print(f"tinyc: error: {os_error(e)}", file=sys.stderr)
        _traceback_if(debug)
        return 1
    except MemoryError:
        print("tinyc: error: out of memory\n  hint: the model or data is too large for this machine",
              file=sys.stderr)
        _traceback_if(debug)
        return 1
    except Exception as e:  # the last line of defence: a bug in tinyc, never a raw traceback
        text = " ".join(str(e).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        print(f"tinyc: internal error in tinyc: {type(e).__name__}{': ' + text if text else ''}\n"
              f"  hint: this is a bug in tinyc; please report it with the command line and input files"
              + ("" if debug else " (run with --debug or TINYC_DEBUG=1 for the traceback)"), file=sys.stderr)
        _traceback_if(debug)
        return 70


def os_error(e: OSError) -> str:
    """An OSError as what, where and what to do."""
    what = e.strerror or type(e).__name__
    where = f" {e.filename}" if e.filename is not None else ""
    if e.filename2 is not None:
        where += f" -> {e.filename2}"
    return f"cannot access{where}: {what}\n  hint: check that the path exists, is of the right kind " \
           f"(file or directory) and that you may read or write it"


def _traceback_if(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)


def _silence_stdout() -> None:
    try:  # Python would complain again when flushing stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def build_parser() -> argparse.ArgumentParser:
    from tinyc import commands

    parser = argparse.ArgumentParser(prog="tinyc", description="Compile PyTorch models to verified C for microcontrollers.")
    parser.add_argument("--debug", action="store_true",
                        help="print Python tracebacks of errors (also: environment variable TINYC_DEBUG=1)")
    sub = parser.add_subparsers(metavar="COMMAND")
    debug = argparse.ArgumentParser(add_help=False)  # --debug also after the command name
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("opt", parents=[debug], help="run IR passes and print the IR (tinyc's mlir-opt)")
    p.add_argument("input", type=Path, help="IR text (.tir) or a model file (torch.export archive)")
    p.add_argument("-p", "--pipeline", default="", help="passes to run, e.g. 'fuse,prune-channels{ratio=0.5}'")
    p.add_argument("-o", "--output", type=Path, help="write the IR here instead of stdout")
    add_model_options(p)
    add_data_options(p)
    add_pass_manager_options(p)
    p.set_defaults(func=commands.cmd_opt)

    p = sub.add_parser("passes", parents=[debug], help="list every pass with its options")
    p.set_defaults(func=commands.cmd_passes)

    p = sub.add_parser("ops", parents=[debug], help="list the PyTorch (aten) ops the frontend imports")
    p.set_defaults(func=commands.cmd_ops)

    p = sub.add_parser("compile", parents=[debug], help="compile a model to a C bundle for a target")
    p.add_argument("model", type=Path, help="a torch.export archive (or IR text)")
    p.add_argument("--target", default="host", help="host, cortex-m0, cortex-m3, cortex-m4, cortex-m7, cortex-m33")
    p.add_argument("--board", help="a board whose flash/RAM budget the model must fit, e.g. nucleo-f446re")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--name", default="model", help="C prefix of the bundle's API (default: model)")
    p.add_argument("-p", "--pipeline", help="passes to run (default: fuse; fuse,quantize-int8 with --calib)")
    p.add_argument("--calib", type=Path, help="calibration inputs (.npy, N x input shape) for int8")
    p.add_argument("--wide-weights", type=wide_weights_arg, default=None, metavar="BYTES|all",
                   help="int8 only: flash bytes the int16 weight forms may add: 3x3 stride-1 convs as Winograd "
                        "F(2x2, 3x3) (16 int16 per 9 weights, 36 -> 16 multiplies) and other dense convs as the "
                        "int16 pairs the GEMM multiplies (twice their weight flash, no unpacking); the best "
                        "instructions saved per byte first. 0: none (the smallest build); 'all': every layer "
                        "that can. Default: up to half the int8 weight bytes, on layers saving at least 8 "
                        "instructions per byte (dropped if the bundle then overflows --board's flash); with "
                        "--auto --objective latency the flash left under the budget, --objective flash none")
    add_model_options(p)
    add_data_options(p)
    add_auto_options(p)
    add_pass_manager_options(p)
    p.set_defaults(func=commands.cmd_compile)

    p = sub.add_parser("run", parents=[debug], help="run a compiled bundle on its target (host or QEMU)")
    p.add_argument("bundle", type=Path, help="a directory written by `tinyc compile`")
    p.add_argument("--input", type=Path, required=True, help="inputs (.npy): one row per inference")
    p.add_argument("-o", "--output", type=Path, help="write outputs here (.npy); default: print them")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up after this long (default: 60 s plus 0.25 s per input row under QEMU, "
                        "0.02 s per row on the host)")
    p.set_defaults(func=commands.cmd_run)

    p = sub.add_parser("bench", parents=[debug], help="measure instructions, flash and RAM of a bundle on the emulator")
    p.add_argument("bundle", type=Path, help="a directory written by `tinyc compile` for a Cortex-M target")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--html", type=Path, metavar="FILE.html",
                   help="also write a self-contained HTML page of the figures: per-layer bars (instructions and "
                        "estimated cycles, instr/MAC against 0.75, weight bytes, arena bytes live) and the "
                        "arena's memory timeline")
    p.add_argument("--clock-mhz", type=float, metavar="MHZ",
                   help="CPU clock for the latency from the estimated cycles (default: the clock of the board "
                        "the bundle was compiled for with --board, else of the target's emulated board: "
                        "25 MHz on mps2)")
    p.set_defaults(func=commands.cmd_bench)
    return parser


def wide_weights_arg(text: str) -> int:
    """--wide-weights: a byte count >= 0, or 'all' (-1: no limit)."""
    if text == "all":
        return -1
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of bytes (>= 0) or 'all', got {text!r}")
    return value


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model loading")
    g.add_argument("--trust-pickle", action="store_true",
                   help="load parts of a model file that run code from it: a whole pickled nn.Module "
                        "(torch.save(model)), or .pt2 members torch unpickles or evaluates (pickled "
                        "weights or objects, symbolic shapes); only for files you trust")
    g.add_argument("--input-shape", help="input shape for a pickled module, e.g. 1,3,32,32")
    g.add_argument("--allow-nonfinite", action="store_true",
                   help="only warn about NaN or infinite weights instead of refusing the model")


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("accuracy")
    g.add_argument("--eval", nargs="+", type=Path, metavar=("X.npy", "Y.npy"),
                   help="evaluation inputs (N x input shape) and optional labels: every step is scored "
                        "(accuracy with labels, else agreement with the imported model or SQNR)")
    g.add_argument("--train", type=Path, metavar="X.npy", help="training inputs for distill (no labels needed)")
    g.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                   help="accuracy budget of accuracy-aware passes, in points of the --eval metric")


def add_auto_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search (--auto)")
    g.add_argument("--auto", action="store_true",
                   help="search pipelines (sparsity, weight sharing, channel pruning, distill with --train) and "
                        "compile the best one that keeps --max-accuracy-drop and the resource budgets; needs "
                        "--calib, --eval and a Cortex-M --target or --board")
    g.add_argument("--objective", choices=("flash", "latency"), default="flash",
                   help="what --auto minimises: firmware flash (default) or instructions per inference")
    g.add_argument("--max-flash", type=int, metavar="BYTES", help="flash budget (default: the --board's)")
    g.add_argument("--max-ram", type=int, metavar="BYTES", help="RAM budget, arena + static + stack (default: the --board's)")
    g.add_argument("--max-instructions", type=int, metavar="N", help="instructions per inference on the target")
    g.add_argument("--jobs", type=int, default=1, metavar="N", help="candidates measured in parallel (local processes)")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="measure candidates on a Ray cluster (host:port, or 'local' to start one here); "
                        "needs the extra tinyc[ray]")


def add_pass_manager_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pass manager")
    g.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (stderr)")
    g.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                   help="print the IR after the named pass (repeatable; 'import' for the imported IR)")
    g.add_argument("--dump-ir", type=Path, metavar="DIR", help="write the IR after each step to DIR/NN-PASS.tir")
    g.add_argument("--time-passes", action="store_true", help="print the time each pass took")
    g.add_argument("--elide-weights", action="store_true", help="print IR without weight data (cannot be parsed back)")
    g.add_argument("--no-verify", action="store_true", help="do not verify the IR after each pass")
    g.add_argument("--stats", action="store_true", help="print per-pass statistics (params, weight bytes, MACs)")


if __name__ == "__main__":
    sys.exit(main())
