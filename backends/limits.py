"""Sizes a bundle can have: what C's int32 indexing and the targets can address.

The kernels index tensors with ``int32_t`` (elements and bytes), the arena offsets and
the ``NAME_*_SIZE`` macros are ``int`` literals, and a static array larger than 2 GiB
does not link with the host's default code model (nor fit a 32-bit Cortex-M's address
space beside anything else).  So every tensor, the arena and the invoke's input and
output buffers are at most INT32_MAX bytes; the emitter refuses a graph beyond that
with the tensor's name and size instead of writing C that overflows.  (Whether a model
fits a particular part's RAM and flash is the linker's and the board budget's job.)
"""
from __future__ import annotations

from tinyc.backends.targets import Target
from tinyc.errors import BackendError
from tinyc.ir import Graph

INT32_MAX = 2 ** 31 - 1
_HINT = "make the model smaller (fewer channels, a smaller input) or split it into several bundles"


def _too_big(what: str, amount: int, unit: str, target: Target) -> BackendError:
    return BackendError(f"{what} has {amount:,} {unit}, more than a bundle for {target.name} can address: "
                        f"at most {INT32_MAX:,} {unit} (C int32 indexing)", hint=_HINT)


def check_tensors(graph: Graph, target: Target) -> None:
    """Every tensor of the graph, and the input and output buffers, are addressable."""
    consts = {op.result.name for op in graph.ops if op.is_const}
    for v in list(graph.inputs) + [op.result for op in graph.ops]:
        kind = "constant" if v.name in consts else "input" if v in graph.inputs else "tensor"
        if v.type.numel > INT32_MAX:
            raise _too_big(f"{kind} %{v.name} ({_shape(v)})", v.type.numel, "elements", target)
        if v.type.nbytes > INT32_MAX:
            raise _too_big(f"{kind} %{v.name} ({_shape(v)})", v.type.nbytes, "bytes", target)
    for side, vals in (("input", graph.inputs), ("output", graph.outputs)):
        total = 4 * sum(v.type.numel for v in vals)
        if total > INT32_MAX:
            names = ", ".join(f"%{v.name} ({_shape(v)})" for v in vals)
            raise _too_big(f"the {side} buffer of the model ({names})", total, "bytes", target)


def check_arena(graph: Graph, arena_size: int, locations: dict, target: Target) -> None:
    """The planned activation arena is addressable; the error names its largest tensors."""
    if arena_size <= INT32_MAX:
        return
    sizes = {op.result.name: op.result.type.nbytes for op in graph.ops}
    in_arena = sorted((n for n, loc in locations.items() if loc.space == "arena" and n in sizes),
                      key=lambda n: (-sizes[n], n))[:3]
    largest = ", ".join(f"%{n} {sizes[n]:,} B" for n in in_arena)
    raise BackendError(f"the activation arena needs {arena_size:,} bytes (largest tensors in it: {largest}), "
                       f"more than a bundle for {target.name} can address: at most {INT32_MAX:,} bytes "
                       f"(C int32 indexing)", hint=_HINT)


def _shape(v) -> str:
    return "tensor<" + "x".join(map(str, v.type.shape)) + f"x{v.type.dtype}>"
