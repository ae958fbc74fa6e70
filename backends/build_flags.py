"""The command line that builds a bundle: compiler flags, harness sources, product names.

Shared by ``build`` (which runs it) and ``target_files`` (whose OUT/Makefile replays it),
so the Python API and ``make`` in a bundle build exactly the same thing.
"""
from __future__ import annotations

from typing import Sequence

from tinyc.backends.targets import Target
from tinyc.errors import BackendError

KINDS = ("run", "bench")
WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
_COMMON_SOURCES = ("target/hio_fmt.c",)
_HOST_SOURCES = ("target/io_host.c",)
_ARM_SOURCES = ("target/startup.c", "target/semihost.c", "target/io_semihost.c")
_ARM_LIBS = ("-Wl,--start-group", "-lc", "-lm", "-lgcc", "-Wl,--end-group")
_HOST_LIBS = ("-lm",)
_SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                   "-fno-omit-frame-pointer", "-g")


def compile_flags(target: Target, *, profile: bool = False, sanitize: bool = False,
                  extra_cflags: Sequence[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """(cflags, ldflags, libs) for building a harness, paths relative to the bundle."""
    cflags = [*WARNING_FLAGS, *target.opt_flags, *target.cpu_flags, "-I.", "-Itarget"]
    if target.bare_metal:
        cflags += ["-DTINYC_BARE_METAL=1", f"-DTINYC_BENCH_MAX_STAMPS={target.bench_max_stamps}"]
        ldflags = ["-T", f"target/{target.name}.ld", "-nostartfiles", "--specs=nano.specs",
                   *target.link_flags]
        libs = list(_ARM_LIBS)
    else:
        ldflags = list(target.link_flags)
        libs = list(_HOST_LIBS)
    if sanitize:
        if target.bare_metal:
            raise BackendError("sanitizers are only available for the host target",
                               hint="use target='host' with sanitize=True")
        cflags += list(_SANITIZE_FLAGS)
    if profile:
        cflags.append("-DTINYC_PROFILE")
    cflags += list(extra_cflags)
    return cflags, ldflags, libs


def harness_sources(target: Target) -> list[str]:
    """The OUT/target sources linked with the model (besides run_main.c / bench_main.c)."""
    return list(_COMMON_SOURCES) + list(_ARM_SOURCES if target.bare_metal else _HOST_SOURCES)


def product_name(target: Target, name: str, kind: str, profile: bool = False,
                 sanitize: bool = False, compiler: str = "") -> str:
    """File name of a product in OUT/build/TARGET/ (``compiler`` tags a non-default compiler)."""
    stem = (f"{name}_{kind}" + ("_profile" if profile else "") + ("_asan" if sanitize else "")
            + (f"_{compiler}" if compiler else ""))
    return stem + (".elf" if target.bare_metal else "")
