"""The bundle manifest OUT/bundle.json: what a bundle is, for the tools that run it.

The emitter writes it next to NAME.c/NAME.h; ``run`` and ``bench`` read it (the
sizes of a row of inputs and outputs, the arena) instead of re-reading the C header.
It holds: the model's name and target, each input and output (graph value name,
shape, dtype, offset and size in elements within the invoke buffers), the total input
and output sizes, the arena size (and its lower bound), the kernels each kernel
family compiles in, and the files of the bundle.  Written deterministically
(sorted keys, no paths or times).

A manifest that is missing, not JSON, or lacks a field is a BackendError that names
the file and says to compile the bundle again, never a Python exception.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinyc.errors import BackendError

MANIFEST = "bundle.json"
FORMAT = "tinyc-bundle"
VERSION = 1


@dataclass(frozen=True)
class Tensor:
    name: str                   # graph value name
    shape: tuple[int, ...]
    dtype: str                  # "f32" (float), or "i32" for inputs of int32_t token ids
    offset: int                 # elements (4 bytes each) from the start of the input / output buffer
    size: int                   # elements


@dataclass(frozen=True)
class Manifest:
    name: str
    target: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    arena_size: int             # bytes, == NAME_ARENA_SIZE
    arena_lower_bound: int = 0
    graph: str = ""
    kernels: dict[str, tuple[str, ...]] = field(default_factory=dict)   # family -> kernels
    files: tuple[str, ...] = ()                                        # NAME.c, NAME.h, runtime files

    @property
    def input_size(self) -> int:
        return sum(t.size for t in self.inputs)

    @property
    def input_dtype(self) -> str:
        """The element type of the input buffer: "i32" (int32_t token ids) if every input is i32, else "f32"."""
        return "i32" if self.inputs and all(t.dtype == "i32" for t in self.inputs) else "f32"

    @property
    def output_size(self) -> int:
        return sum(t.size for t in self.outputs)

    @property
    def io_bytes(self) -> int:
        """Bytes of one row of inputs plus one row of outputs (float32 or int32 elements)."""
        return 4 * (self.input_size + self.output_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(format=FORMAT, version=VERSION, input_size=self.input_size,
                 output_size=self.output_size)
        for key in ("inputs", "outputs"):
            d[key] = [{**t, "shape": list(t["shape"])} for t in d[key]]
        d["kernels"] = {k: list(v) for k, v in sorted(self.kernels.items())}
        d["files"] = list(self.files)
        return d


def io_tensors(values) -> tuple[Tensor, ...]:
    """Manifest entries for graph inputs or outputs (IR values), packed in order."""
    out, offset = [], 0
    for v in values:
        out.append(Tensor(v.name, tuple(int(d) for d in v.type.shape), v.type.dtype, offset,
                          int(v.type.numel)))
        offset += v.type.numel
    return tuple(out)


def write_manifest(out_dir: Path | str, manifest: Manifest) -> Path:
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n",
                    encoding="utf-8", newline="\n")
    return path


def read_manifest(out_dir: Path | str, name: str | None = None) -> Manifest:
    """OUT/bundle.json, checked; ``name`` (if given) must be the model it describes."""
    path = Path(out_dir) / MANIFEST
    again = "compile the bundle again (tinyc compile, or emit_bundle) to rewrite it"
    if not path.is_file():
        raise BackendError(f"the bundle has no {MANIFEST}", where=str(Path(out_dir)),
                           hint="is this a bundle written by tinyc? Bundles from older tinyc versions "
                                f"have none: {again}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackendError(f"cannot read the bundle manifest: {e}", where=str(path), hint=again) from None
    try:
        manifest = _from_dict(data)
    except _Incomplete as e:
        raise BackendError(f"the bundle manifest is incomplete or inconsistent: {e}", where=str(path),
                           hint=again) from None
    if name is not None and manifest.name != name:
        raise BackendError(f"the bundle manifest describes model '{manifest.name}', not '{name}'",
                           where=str(path), hint=f"pass name='{manifest.name}'")
    return manifest


class _Incomplete(Exception):
    pass


def _get(d, key: str, kind, where: str):
    if not isinstance(d, dict):
        raise _Incomplete(f"{where} is not an object")
    if key not in d:
        raise _Incomplete(f"{where} has no '{key}'")
    v = d[key]
    if kind is int:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    else:
        ok = isinstance(v, kind)
    if not ok:
        raise _Incomplete(f"{where}.{key} is {json.dumps(v)[:40]}, expected "
                          f"{'a non-negative integer' if kind is int else kind.__name__}")
    return v


def _tensors(data: dict, key: str) -> tuple[Tensor, ...]:
    items = _get(data, key, list, "the manifest")
    out, offset = [], 0
    for i, t in enumerate(items):
        where = f"{key}[{i}]"
        shape = _get(t, "shape", list, where)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _Incomplete(f"{where}.shape is not a list of non-negative integers")
        tensor = Tensor(_get(t, "name", str, where), tuple(shape), _get(t, "dtype", str, where),
                        _get(t, "offset", int, where), _get(t, "size", int, where))
        if tensor.dtype not in (("f32", "i32") if key == "inputs" else ("f32",)):
            raise _Incomplete(f"{where}.dtype is '{tensor.dtype}'; bundle {key} are f32"
                              + (" or i32 (token ids)" if key == "inputs" else ""))
        if tensor.size != math.prod(shape):
            raise _Incomplete(f"{where}.size {tensor.size} is not the size of shape {list(shape)}")
        if tensor.offset != offset:
            raise _Incomplete(f"{where}.offset is {tensor.offset}, expected {offset}")
        offset += tensor.size
        out.append(tensor)
    if key == "outputs" and not out:
        raise _Incomplete("the model has no outputs")
    return tuple(out)


def _from_dict(data) -> Manifest:
    if _get(data, "format", str, "the manifest") != FORMAT:
        raise _Incomplete(f"format is '{data['format']}', not '{FORMAT}'")
    version = _get(data, "version", int, "the manifest")
    if version != VERSION:
        raise _Incomplete(f"version {version} is not the version this tinyc reads ({VERSION})")
    kernels = _get(data, "kernels", dict, "the manifest")
    for family, names in kernels.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _Incomplete(f"kernels.{family} is not a list of names")
    files = _get(data, "files", list, "the manifest")
    if not all(isinstance(f, str) for f in files):
        raise _Incomplete("files is not a list of file names")
    m = Manifest(
        name=_get(data, "name", str, "the manifest"), target=_get(data, "target", str, "the manifest"),
        inputs=_tensors(data, "inputs"), outputs=_tensors(data, "outputs"),
        arena_size=_get(data, "arena_size", int, "the manifest"),
        arena_lower_bound=_get(data, "arena_lower_bound", int, "the manifest"),
        graph=_get(data, "graph", str, "the manifest"),
        kernels={k: tuple(v) for k, v in kernels.items()}, files=tuple(files))
    for key in ("input_size", "output_size"):
        total = _get(data, key, int, "the manifest")
        if total != getattr(m, key):
            raise _Incomplete(f"{key} is {total}, but the {key.split('_')[0]}s add up to {getattr(m, key)}")
    return m
