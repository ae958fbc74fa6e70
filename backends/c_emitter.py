"""Float32 C backend: a graph becomes OUT/NAME.h + OUT/NAME.c plus the runtime kernels.

The bundle builds with `cc -std=c99 -I OUT OUT/*.c app.c -lm`. NAME.c #includes
tinyc_kernels_f32.c after defining the kernels it uses, so the kernels are
static functions of NAME.c: bundles with different names link into one program
and each carries only its own kernels. Every other symbol is prefixed NAME_.

Output is deterministic: it depends only on the graph (op order, names, values),
never on dict/hash order, time or paths.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from tinyc.backends import c_ops, planner
from tinyc.backends.c_ops import Call, Lowered, Param, Weight
from tinyc.backends.targets import get_target
from tinyc.errors import BackendError
from tinyc.ir import Graph, Op, Value

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime_c"
RUNTIME_FILES = ("tinyc_kernels_f32.h", "tinyc_kernels_f32.c", "tinyc_profile.h")
VALUES_PER_LINE = 8
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---- result ----------------------------------------------------------------

@dataclass(frozen=True)
class LayerInfo:
    """Layer i is the i-th non-const op; TINYC_LAYER_MARK(i) runs just before it."""

    index: int
    kind: str
    name: str
    loc: str | None
    kernels: tuple[str, ...]   # C functions called (empty for views)


@dataclass(frozen=True)
class BundleInfo:
    name: str
    target: str
    input_size: int            # floats
    output_size: int
    arena_size: int            # bytes, == NAME_ARENA_SIZE
    lower_bound: int           # bytes: max over ops of the live arena tensors
    tensors: dict[str, planner.Location]
    layers: tuple[LayerInfo, ...]
    files: tuple[Path, ...]
    plan: planner.Plan


# ---- template context ----------------------------------------------------------

@dataclass(frozen=True)
class IOCtx:
    index: int
    value: str
    type: str
    offset: int                # floats
    size: int


@dataclass(frozen=True)
class WeightCtx:
    cname: str
    size: int
    comment: str
    rows: tuple[str, ...]


@dataclass(frozen=True)
class LayerCtx:
    index: int
    comment: str
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class CopyCtx:
    comment: str
    dst: str
    src: str
    count: int


@dataclass(frozen=True)
class HeaderCtx:
    name: str
    guard: str
    graph_name: str
    target: str
    input_size: int
    output_size: int
    arena_size: int
    lower_bound: int
    inputs: tuple[IOCtx, ...]
    outputs: tuple[IOCtx, ...]


@dataclass(frozen=True)
class SourceCtx:
    name: str
    graph_name: str
    target: str
    kernels: tuple[str, ...]
    weights: tuple[WeightCtx, ...]
    params: tuple[Param, ...]
    arena_size: int
    layers: tuple[LayerCtx, ...]
    copies: tuple[CopyCtx, ...]
    n_layers: int


# ---- lowering context ------------------------------------------------------------

class _Lowerer:
    """Implements c_ops.Context: C expressions for values, names for the op being lowered."""

    def __init__(self, graph: Graph, name: str, plan: planner.Plan):
        self.name = name
        self.plan = plan
        self.consts = {op.result.name: op.attrs["value"] for op in graph.const_ops()}
        self.taken: set[str] = set()
        self.const_names = {n: self._weight_cname(n) for n in self.consts}
        self.used_consts: set[str] = set()
        self.layer = 0
        self.op: Op | None = None

    def ref(self, v: Value, offset: int = 0) -> str:
        loc = self.plan.locations[v.name]
        if loc.space == "const":
            self.used_consts.add(loc.const)
            base, elems = self.const_names[loc.const], 0
        elif loc.space == "arena":
            base, elems = f"{self.name}_arena.f32", loc.offset // 4
        else:  # the invoke() parameters are called `input` and `output`
            base, elems = loc.space, loc.offset // 4
        elems += offset
        return f"{base} + {elems}" if elems else base

    def const(self, v: Value) -> np.ndarray | None:
        loc = self.plan.locations[v.name]
        return self.consts[loc.const] if loc.space == "const" else None

    def param_name(self, k: int = 0) -> str:
        return f"{self.name}_p{self.layer}" + (f"_{k}" if k else "")

    def weight_name(self, suffix: str) -> str:
        return self._weight_cname(f"{self.op.result.name}_{suffix}")

    def _weight_cname(self, base: str) -> str:
        """NAME_w_<base> made a C identifier, unique in first-come order (graph order)."""
        base = f"{self.name}_w_" + re.sub(r"[^A-Za-z0-9_]", "_", base)
        cname, i = base, 1
        while cname in self.taken:
            cname, i = f"{base}_{i}", i + 1
        self.taken.add(cname)
        return cname


# ---- emission ----------------------------------------------------------------------

def emit_bundle(graph: Graph, out_dir, *, name: str = "model", target_name: str = "host") -> BundleInfo:
    """Write OUT/NAME.h, OUT/NAME.c and the runtime files they need; see the module doc."""
    target = get_target(target_name)
    _check_graph(graph, name)
    plan = planner.plan_graph(graph, c_ops.inplace_operands)
    plan.check()
    lowerer = _Lowerer(graph, name, plan)
    ops = list(graph.compute_ops())
    lowered = []
    for i, op in enumerate(ops):
        lowerer.layer, lowerer.op = i, op
        lowered.append(c_ops.lowering(op).emit(op, lowerer))
    copies = tuple(_output_copy(graph, c, lowerer) for c in plan.output_copies)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = _header_ctx(graph, name, target.name, plan)
    source = _source_ctx(graph, name, target.name, plan, ops, lowered, copies, lowerer)
    files = [_write(out / f"{name}.h", _render("model.h.j2", header)),
             _write(out / f"{name}.c", _render("model.c.j2", source))]
    for f in RUNTIME_FILES:
        shutil.copyfile(RUNTIME_DIR / f, out / f)
        files.append(out / f)
    layers = tuple(LayerInfo(i, op.kind, op.result.name, op.loc, tuple(c.function for c in low.calls))
                   for i, (op, low) in enumerate(zip(ops, lowered)))
    return BundleInfo(name, target.name, header.input_size, header.output_size, plan.arena_size,
                      plan.lower_bound, plan.locations, layers, tuple(files), plan)


def _check_graph(graph: Graph, name: str) -> None:
    if not _IDENT.fullmatch(name):
        raise BackendError(f"bundle name {name!r} is not a C identifier",
                           hint="use letters, digits and underscores, not starting with a digit")
    values = list(graph.inputs) + [op.result for op in graph.ops]
    for v in values:
        if v.type.dtype != "f32" or v.type.quant is not None:
            raise BackendError(f"the float C backend needs f32 tensors; %{v.name} is {v.type.dtype}",
                               hint="use the int8 backend for quantized graphs")
    if not graph.outputs:
        raise BackendError("the graph has no outputs")


def _output_copy(graph: Graph, copy: planner.OutputCopy, lowerer: _Lowerer) -> CopyCtx:
    v = graph.outputs[copy.index]
    slot = sum(o.type.numel for o in graph.outputs[:copy.index])
    dst = f"output + {slot}" if slot else "output"
    return CopyCtx(f"output {copy.index} (%{v.name}) is stored elsewhere: copy it",
                   dst, lowerer.ref(v), v.type.numel)


def _io(values: list[Value]) -> tuple[IOCtx, ...]:
    out, offset = [], 0
    for i, v in enumerate(values):
        out.append(IOCtx(i, v.name, _type_str(v), offset, v.type.numel))
        offset += v.type.numel
    return tuple(out)


def _type_str(v: Value) -> str:
    return "tensor<" + "x".join(map(str, v.type.shape)) + ("x" if v.type.shape else "") + "f32>"


def _header_ctx(graph: Graph, name: str, target: str, plan: planner.Plan) -> HeaderCtx:
    inputs, outputs = _io(graph.inputs), _io(graph.outputs)
    return HeaderCtx(name, f"{name.upper()}_TINYC_H", _comment(graph.name), target,
                     sum(io.size for io in inputs), sum(io.size for io in outputs),
                     plan.arena_size, plan.lower_bound, inputs, outputs)


def _source_ctx(graph: Graph, name: str, target: str, plan: planner.Plan, ops: list[Op],
                lowered: list[Lowered], copies: tuple[CopyCtx, ...], lowerer: _Lowerer) -> SourceCtx:
    kernels = sorted({k for low in lowered for k in low.kernels})
    weights = [_weight_ctx(Weight(lowerer.const_names[n], lowerer.consts[n]), f"%{n}: const")
               for n in lowerer.const_names if n in lowerer.used_consts]
    weights += [_weight_ctx(w, f"derived for layer {i} (%{op.result.name})")
                for i, (op, low) in enumerate(zip(ops, lowered)) for w in low.weights]
    params = tuple(p for low in lowered for p in low.params)
    layers = tuple(LayerCtx(i, _layer_comment(i, op, plan), low.calls)
                   for i, (op, low) in enumerate(zip(ops, lowered)))
    return SourceCtx(name, _comment(graph.name), target, tuple(kernels), tuple(weights), params,
                     plan.arena_size, layers, copies, len(ops))


def _weight_ctx(w: Weight, comment: str) -> WeightCtx:
    lits = c_ops.c_floats(w.values)
    if not lits:
        raise BackendError(f"cannot emit the empty constant {w.cname}")
    rows = tuple(", ".join(lits[i:i + VALUES_PER_LINE]) + ("," if i + VALUES_PER_LINE < len(lits) else "")
                 for i in range(0, len(lits), VALUES_PER_LINE))
    return WeightCtx(w.cname, len(lits), _comment(comment), rows)


def _layer_comment(i: int, op: Op, plan: planner.Plan) -> str:
    loc = plan.locations[op.result.name]
    where = f"{loc.space} byte {loc.offset}" if loc.space != "const" else loc.const
    text = f"layer {i}: %{op.result.name} = {op.kind} -> {where}"
    if op.kind == "reshape":
        text += " (a view: no code)"
    if op.loc:
        # no directories: the output must not depend on where the model was built
        text += " at " + re.sub(r"\S*[/\\]", "", op.loc)
    return _comment(text)


def _comment(text: str) -> str:
    """Safe inside a C block comment, on one line."""
    return " ".join(text.replace("*/", "* /").split())


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("tinyc.backends", "templates"),
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=True, autoescape=False)


def _render(template: str, ctx) -> str:
    return _ENV.get_template(template).render(**{f: getattr(ctx, f) for f in ctx.__dataclass_fields__})


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="\n")
    return path
