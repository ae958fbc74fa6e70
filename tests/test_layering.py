"""Import directions between tinyc's layers, read from the source (ast), not from a running import.

    core     compiler/ (IR, ops, text, verifier, interpreter, frontend, evaluate, stats, quant, ...)
    passes   passes/           -> core
    backends backends/         -> core (and tinyc.runtime_c, the C sources)
    driver   the CLI and the pass manager (DRIVER below)  -> core, passes, backends
    bench    bench/ (zoo, datasets, doc generators; not installed) -> anything; nothing imports it

Every import counts, also one inside a function, and `importlib.import_module("...")` /
`__import__("...")` with a constant name. A new module in compiler/ is core unless it is added to
DRIVER; a new exception goes in ALLOWED with the reason, and leaves it when it is fixed.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"tinyc": "compiler", "tinyc.passes": "passes", "tinyc.backends": "backends"}

# compiler/ modules that drive the pipeline: they alone may import both passes and backends.
DRIVER = {"tinyc.__main__", "tinyc.cli", "tinyc.commands", "tinyc.compile", "tinyc.passmanager", "tinyc.auto"}

# What each layer must not import.
FORBIDDEN = {
    "core": {"passes", "backends", "driver", "bench"},
    "passes": {"backends", "driver", "bench"},
    "backends": {"passes", "driver", "bench"},
    "driver": {"bench"},
}

# (importing module, imported layer) -> why it is still allowed. Keep this short; an entry that is
# no longer needed fails test_allowed_entries_are_still_needed.
ALLOWED: dict = {}   # no exceptions today


def module_name(path: Path) -> str:
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[1])):
        base = ROOT / folder
        if path.is_relative_to(base):
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(f"{path} is in no tinyc package")


def modules() -> dict[str, Path]:
    """Every module of the installed packages: tinyc (compiler/, with subpackages such as ops/),
    tinyc.passes and tinyc.backends."""
    found = {}
    for folder in PACKAGE_DIRS.values():
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[module_name(path)] = path
    return found


def layer(name: str) -> str:
    if name == "bench" or name.startswith("bench."):
        return "bench"
    if name == "tinyc.passes" or name.startswith("tinyc.passes."):
        return "passes"
    if name == "tinyc.backends" or name.startswith("tinyc.backends."):
        return "backends"
    if name == "tinyc.runtime_c" or name.startswith("tinyc.runtime_c."):
        return "runtime_c"
    if name in DRIVER:
        return "driver"
    if name == "tinyc" or name.startswith("tinyc."):
        return "core"
    return "external"


def imports(name: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import in module `name`'s source; `from a import b` gives
    both a and a.b (b may be a submodule); relative imports are resolved against its package."""
    tree = ast.parse(source, name)
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.append((node.lineno, source))
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def violations() -> dict[tuple[str, str], list[str]]:
    """(importing module, forbidden layer) -> ["path:line imports module", ...]"""
    found: dict[tuple[str, str], list[str]] = {}
    for name, path in modules().items():
        forbidden = FORBIDDEN.get(layer(name), set())
        seen = set()
        for line, target in imports(name, path.read_text(), path.name == "__init__.py"):
            if layer(target) in forbidden and (line, layer(target)) not in seen:
                seen.add((line, layer(target)))
                found.setdefault((name, layer(target)), []).append(
                    f"{path.relative_to(ROOT)}:{line} imports {target}")
    return found


def test_the_layers_are_found():
    """Not vacuous: the core, the driver, the passes and the backends are all seen."""
    names = modules()
    for core in ("tinyc", "tinyc.ir", "tinyc.ops", "tinyc.text", "tinyc.verifier", "tinyc.interpreter",
                 "tinyc.frontend", "tinyc.evaluate", "tinyc.to_torch"):
        assert core in names and layer(core) == "core", core
    assert DRIVER <= set(names), f"DRIVER names modules that do not exist: {sorted(DRIVER - set(names))}"
    assert any(layer(n) == "passes" for n in names) and any(layer(n) == "backends" for n in names)
    assert not any(n.startswith("tinyc.") and n.split(".")[1] in ("zoo", "digits", "anomaly", "benchmarks",
                                                                   "compression_eval", "compression_report")
                   for n in names), "the zoo, datasets and doc generators live in bench/"


def test_imports_are_read_everywhere():
    """Function-local, relative and importlib imports are all seen (checked on a scratch module)."""
    src = ("import os\nfrom . import fuse\nfrom ..backends import c_ops\n"
           "def f():\n    from tinyc.backends.bench import bench_model\n"
           "    importlib.import_module('bench.zoo')\n")
    tree_names = [t for _, t in imports("tinyc.passes.probe", src)]
    for want in ("os", "tinyc.passes.fuse", "tinyc.backends.c_ops", "tinyc.backends.bench", "bench.zoo"):
        assert want in tree_names, (want, tree_names)


def test_import_directions():
    found = {key: where for key, where in violations().items() if key not in ALLOWED}
    assert not found, "layering violations (see the module docstring):\n" + "\n".join(
        f"  {name} ({layer(name)}) must not import {target}:\n    " + "\n    ".join(where)
        for (name, target), where in sorted(found.items()))


def test_allowed_entries_are_still_needed():
    stale = set(ALLOWED) - set(violations())
    assert not stale, f"fixed, remove from ALLOWED: {sorted(stale)}"


def test_bench_is_not_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    assert not any(p == "bench" or p.startswith("bench.") for p in packages), packages
    assert (ROOT / "bench" / "__init__.py").exists()

