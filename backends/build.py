"""Building a bundle: compile the model with a harness into an executable or ELF.

Products go to ``OUT/build/TARGET/`` (``NAME_run``, ``NAME_run.elf``,
``NAME_bench.elf``, ``NAME_bench_profile.elf``, ...) with the compiler's messages
beside them (``<product>.log``) and the command that made them (``<product>.cmd``).
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

from tinyc.backends.build_flags import KINDS, compile_flags, harness_sources, product_name
from tinyc.backends.target_files import TARGET_SUBDIR, check_name, prepare
from tinyc.backends.targets import ARM_PACKAGES, Board, Target, resolve
from tinyc.backends.tools import require_tool
from tinyc.errors import BackendError


def model_sources(out: Path, name: str, where: str | None = None) -> list[str]:
    """The bundle's C sources (OUT/*.c: the model and its kernels)."""
    for ext in ("h", "c"):
        if not (out / f"{name}.{ext}").exists():
            raise BackendError(f"the bundle has no {name}.{ext}", where=where or str(out),
                               hint="generate the C code first (or pass the right name=)")
    return sorted(p.name for p in out.glob("*.c"))


def build(out_dir: Path | str, target: "str | Target | Board" = "host", name: str = "model",
          kind: str = "run", profile: bool = False, *, sanitize: bool = False,
          extra_cflags: Sequence[str] = (), force: bool = False, timeout: float = 600.0,
          cc: str | None = None, where: str | None = None) -> Path:
    """Compile the bundle with the ``kind`` harness ("run" or "bench") for ``target``.

    Returns the executable (host) or ELF (Cortex-M) in OUT/build/TARGET/.  The
    compiler runs with -std=c99 -Wall -Wextra -Werror -pedantic; its messages are also
    kept next to the product as ``<product>.log``.  ``sanitize`` (host only) adds
    -fsanitize=address,undefined.  ``cc`` replaces the target's compiler (e.g. "clang"
    for the host; the product's name then carries the compiler's name).  Nothing is
    recompiled when the command line and the sources are unchanged (unless ``force``).
    ``where`` is how errors name the bundle (default: OUT).
    """
    out = Path(out_dir).resolve()
    where = where or str(out)
    t, _ = resolve(target)
    check_name(name)
    if kind not in KINDS:
        raise BackendError(f"unknown harness kind '{kind}'", hint=f"use one of {', '.join(KINDS)}")
    if kind == "bench" and t.is_host:
        raise BackendError("the bench harness needs a Cortex-M target",
                           hint="e.g. target='cortex-m4'; on the host, time run() instead")
    model_srcs = model_sources(out, name, where)
    compiler = cc or t.cc
    cc_path = require_tool(compiler, t)
    prepare(out, t, name)
    cflags, ldflags, libs = compile_flags(t, profile=profile, sanitize=sanitize,
                                          extra_cflags=extra_cflags)
    bdir = out / "build" / t.name
    bdir.mkdir(parents=True, exist_ok=True)
    tag = Path(compiler).name if compiler != t.cc else ""
    product = bdir / product_name(t, name, kind, profile, sanitize, tag)
    rel_product = product.relative_to(out).as_posix()
    cmd = [compiler, *cflags, *model_srcs, *harness_sources(t), f"target/{kind}_main.c",
           *ldflags, "-o", rel_product, *libs]

    stamp = product.with_name(product.name + ".cmd")
    inputs = [out / s for s in model_srcs] + list(out.glob("*.h")) + list((out / TARGET_SUBDIR).iterdir())
    if (not force and product.exists() and stamp.exists() and stamp.read_text() == " ".join(cmd)
            and all(p.stat().st_mtime <= product.stat().st_mtime for p in inputs)):
        return product

    try:
        proc = subprocess.run([cc_path, *cmd[1:]], cwd=out, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendError(f"compiling '{name}' for {t.name} timed out after {timeout:.0f} s",
                           where=where) from None
    log = proc.stdout + proc.stderr
    product.with_name(product.name + ".log").write_text(log)
    if proc.returncode != 0:
        stamp.unlink(missing_ok=True)
        hint = "the command was: " + " ".join(cmd)
        if "No such file or directory" in log and ("#include" in log or "stdint.h" in log
                                                    or "string.h" in log):
            hint = f"is newlib installed? apt-get install {ARM_PACKAGES}. " + hint
        if "region `RAM' overflowed" in log or "region `FLASH' overflowed" in log:
            hint = (f"the model does not fit the memory of {t.qemu_machine or t.name} "
                    f"(flash {t.flash.size if t.flash else 0} B, RAM {t.ram.size if t.ram else 0} B, "
                    f"stack {t.stack_size} B). " + hint)
        raise BackendError(
            f"compiling '{name}' for {t.name} failed (exit {proc.returncode}):\n{log.rstrip()}",
            where=where, hint=hint)
    stamp.write_text(" ".join(cmd))
    return product
