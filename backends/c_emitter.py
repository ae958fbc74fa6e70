"""Float32 C backend: a graph becomes OUT/NAME.h + OUT/NAME.c plus the runtime kernels.

The bundle builds with `cc -std=c99 -I OUT OUT/*.c app.c -lm`. NAME.c #includes
tinyc_kernels_f32.c after defining the kernels it uses, so the kernels are
static functions of NAME.c: bundles with different names link into one program
and each carries only its own kernels. Every other symbol is prefixed NAME_.

Quantized graphs (quantize-int8's output: float at the edges, int8 inside, float
islands from keep-float) keep the same API. Their int8 ops are lowered by
tinyc.backends.c_ops_int8 to tinyc_kernels_s8.c, with tensors in the layouts
tinyc.backends.int8_layout picks, per-op arena scratch, and per-shape kernel
wrappers (NAME_sK) that call the always-inline kernels with literal shapes.

Output is deterministic: it depends only on the graph (op order, names, values),
never on dict/hash order, time or paths.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import jinja2
import numpy as np

from tinyc.backends import c_ops, c_ops_binary, c_ops_int8, c_ops_packed, int8_layout, limits, planner
from tinyc.backends import c_ops_compare, c_ops_recurrent
from tinyc.backends.c_ops import Call, Kernel, Lowered, Param, Weight
from tinyc.backends.manifest import Manifest, io_tensors, write_manifest
from tinyc.backends.targets import get_target
from tinyc.errors import BackendError
from tinyc.ir import Graph, Op, Value
from tinyc.ops import OPS, Trait, has

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime_c"
# The kernel libraries, in the order a model source includes them.
LIBRARIES = (c_ops.LIBRARY, c_ops_int8.LIBRARY, c_ops_binary.LIBRARY, c_ops_packed.LIBRARY, c_ops_recurrent.LIBRARY,
             c_ops_compare.LIBRARY)
VALUES_PER_LINE = 8
INTS_PER_LINE = 16
_CTYPES = {"f32": "float", "i8": "int8_t", "i32": "int32_t", "i16": "int16_t", "u8": "uint8_t"}
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
    # conv2d / linear / binary layers with constant weights: {"format", "bytes", "dense_bytes",
    # "detail", "why"}, the storage of the weights and why (c_ops_packed.Packing.storage)
    storage: dict | None = None
    fused_into: str | None = None      # int8: the lut this layer's kernel applies (its own result never exists)


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
    # int8 tensors: value name -> byte offset of each logical element (int8_layout); the
    # bytes TINYC_LAYER_OUTPUT reports for layer i are in this order
    int8_layouts: dict[str, np.ndarray] = field(default_factory=dict)
    # layers whose weights are stored as int16 pairs (emit_bundle's wide_weights)
    wide_layers: tuple[str, ...] = ()
    # layers run as Winograd F(2x2, 3x3) (int16 transformed weights, from the same allowance)
    winograd_layers: tuple[str, ...] = ()


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
    ctype: str = "float"
    alias: str | None = None       # the same values as this earlier array: a #define, no second copy


@dataclass(frozen=True)
class LayerCtx:
    index: int
    comment: str
    calls: tuple[Call, ...]
    output: tuple[str, int] | None = None   # int8 bundles: (pointer, bytes) for TINYC_LAYER_OUTPUT


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
    input_type: str = "float"   # the C element type of `input`: float, or int32_t (token ids)


@dataclass(frozen=True)
class LibraryCtx:
    macro: str                  # TINYC_F32_, TINYC_S8_, ...
    source: str                 # the kernel file the model source #includes
    kernels: tuple[str, ...]    # the kernels this model calls (sorted)


@dataclass(frozen=True)
class SourceCtx:
    name: str
    graph_name: str
    target: str
    libraries: tuple[LibraryCtx, ...]
    weights: tuple[WeightCtx, ...]
    params: tuple[Param, ...]
    arena_size: int
    layers: tuple[LayerCtx, ...]
    copies: tuple[CopyCtx, ...]
    n_layers: int
    int8: bool = False
    wrappers: tuple[str, ...] = ()
    i8_arena: bool = False      # the arena has an int8 view (int8 or binary layers)
    input_type: str = "float"   # the C element type of `input`: float, or int32_t (token ids)


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
        self.wrappers: dict[tuple, tuple[str, str]] = {}   # signature -> (name, C definition)
        self.layouts = None                                 # int8_layout.Layouts of an int8 graph

    def ref(self, v: Value, offset: int = 0) -> str:
        loc = self.plan.locations[v.name]
        if loc.space == "const":
            self.used_consts.add(loc.const)
            base, elems = self.const_names[loc.const], 0
        elif loc.space == "arena" and v.type.dtype != "f32":
            base, elems = f"{self.name}_arena.i8", loc.offset
        elif loc.space == "arena":
            base, elems = f"{self.name}_arena.f32", loc.offset // 4
        else:  # the invoke() parameters are called `input` and `output`
            base, elems = loc.space, loc.offset // 4
        elems += offset
        return f"{base} + {elems}" if elems else base

    def scratch(self, offset: int = 0) -> str:
        """Byte pointer into the scratch buffer of the op being lowered."""
        loc = self.plan.locations[planner.scratch_name(self.op)]
        return f"{self.name}_arena.i8 + {loc.offset + offset}" if loc.offset + offset else f"{self.name}_arena.i8"

    def specialize(self, kernel: str, pointers, literals) -> Call:
        """A call of NAME_sK(pointers...), a wrapper calling `kernel` with the pointers and
        these literal arguments; one wrapper per distinct (kernel, pointer types, literals)."""
        key = (kernel, tuple(t for t, _ in pointers), tuple(int(v) for v in literals))
        if key not in self.wrappers:
            fname = f"{self.name}_s{len(self.wrappers)}"
            params = ", ".join(f"{t}{'' if t.endswith('*') else ' '}p{i}" for i, (t, _) in enumerate(pointers))
            args = ", ".join([f"p{i}" for i in range(len(pointers))] + [str(int(v)) for v in literals])
            self.wrappers[key] = (fname, f"TINYC_S8_WRAPPER void {fname}({params})\n{{\n    {kernel}({args});\n}}")
        return Call(self.wrappers[key][0], tuple(e for _, e in pointers))

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


# ---- the default flash allowance for int16 weight forms ------------------------------------

# `tinyc compile` without --wide-weights: int16 weights (Winograd, wide GEMM pairs) in at most half the
# int8 weight bytes more flash, only on layers saving at least 8 estimated instructions per added byte
# (for wide GEMM pairs: weights each used at 64 output pixels or more)
BALANCED_SHARE, BALANCED_GAIN = 0.5, 8.0


def balanced_allowance(graph: Graph) -> int:
    """Flash bytes the default build may add: BALANCED_SHARE of the graph's int8 constants (its weights)."""
    n = sum(op.result.type.numel for op in graph.const_ops() if op.result.type.dtype == "i8")
    return int(BALANCED_SHARE * n)


def balanced_options(graph: Graph) -> dict:
    """emit_bundle's options for `tinyc compile`'s default build."""
    return {"wide_weights": balanced_allowance(graph), "min_gain": BALANCED_GAIN}


# ---- emission ----------------------------------------------------------------------

def emit_bundle(graph: Graph, out_dir, *, name: str = "model", target_name: str = "host",
                packing: c_ops_packed.PackingPolicy | None = None, wide_weights: int = 0,
                winograd: bool = True, min_gain: float = 0.0) -> BundleInfo:
    """Write OUT/NAME.h, OUT/NAME.c, the runtime files they need and the manifest
    OUT/bundle.json (tinyc.backends.manifest); see the module doc. `packing` overrides how
    weight formats are chosen (tests and measurements). `wide_weights`: flash bytes the int8 dense
    convs may add by storing their weights as int16 pairs (the GEMM then skips unpacking them;
    c_ops_int8.choose_wide), first on 3x3 stride-1 convs as Winograd F(2x2, 3x3) where it pays more per
    byte (c_ops_int8.choose_wino; `winograd` False: never, for tests and measurements); 0 none, < 0 all;
    only on layers saving at least `min_gain` estimated instructions per added byte."""
    target = get_target(target_name)
    int8 = _check_graph(graph, name)
    limits.check_tensors(graph, target)
    ops = list(graph.compute_ops())
    policy = packing

    def attempt(inplace_dw, drop=frozenset(), wino=frozenset()):
        # The kernel families (c_ops.KernelFamily), asked in order: binary layers and sign (any graph),
        # the int8 ops of an int8 graph, then float (packed-weight layers first).
        families: list[c_ops.KernelFamily] = [c_ops_binary.BinaryLowering(graph)]
        low8 = None
        if int8:
            low8 = c_ops_int8.Int8Lowering(int8_layout.assign(graph, inplace_dw))
            low8.wino_ops = wino
            plans = {op.result.name: low8.plan(op) for op in ops if _is_int8_op(op)}
            packing = c_ops_packed.Packing(graph, low8, plans, policy)   # may override conv/linear plans, lowerings
            low8.fuse_table_epilogues(graph)                            # after the overrides: they keep their lut
            families.append(c_ops_int8.Int8Family(low8, plans))
        else:
            packing = c_ops_packed.Packing(graph, policy=policy)
        families.append(c_ops.FloatFamily(packing))
        family = {op.result.name: next(f for f in families if f.accepts(op)) for op in ops}
        rules = dict(inplace_operands=lambda op: c_ops_int8.without_overlaps(family[op.result.name].inplace(op))
                     if op.result.name in drop else family[op.result.name].inplace(op),
                     is_view=lambda op: family[op.result.name].is_view(op),
                     scratch=lambda op: family[op.result.name].scratch(op))
        return planner.plan_graph(graph, **rules), family, packing, low8, rules, (inplace_dw, drop)

    best = attempt(False)
    if int8 and int8_layout.has_depthwise(graph):
        # int8 depthwise convs run in place over channels-last operands where that plans a smaller arena
        # (c_ops_int8.inplace_depthwise); the others keep their faster channels-first operands
        cl = attempt(True)
        if cl[0].arena_size < best[0].arena_size:
            best = cl
            some, drop = c_ops_int8.inplace_depthwise(graph, cl[0].arena_size, cl[1], **cl[4])
            if len(some) < len(int8_layout.int8_depthwise(graph)):
                fewer = attempt(some, drop)
                if fewer[0].arena_size <= cl[0].arena_size:
                    best = fewer
    if int8:
        # the flash allowance: Winograd layers first (their scratch differs: planned again), the rest
        # to wide GEMM weights
        wino, spent = c_ops_int8.choose_wino(graph, best[3], wide_weights if winograd else 0, min_gain)
        if wino:
            best = attempt(*best[5], wino=wino)
    plan, family, packing, low8 = best[:4]
    if int8:
        rest = wide_weights if wide_weights < 0 else wide_weights - spent
        low8.wide_ops = c_ops_int8.choose_wide(graph, low8, rest, min_gain)
    plan.check()
    limits.check_arena(graph, plan.arena_size, plan.locations, target)   # before anything is written
    lowerer = _Lowerer(graph, name, plan)
    packing.register(lowerer)      # decoded (share-weights) weights: constants, no code
    lowerer.layouts = low8.lay if int8 else None
    lowered = []
    for i, op in enumerate(ops):
        lowerer.layer, lowerer.op = i, op
        f = family[op.result.name]
        low = f.emit(op, lowerer)
        lowered.append(Lowered(tuple(k if isinstance(k, Kernel) else Kernel(f.library.key, k) for k in low.kernels),
                               low.params, low.weights, low.calls))
    copies = tuple(_output_copy(graph, c, lowerer) for c in plan.output_copies)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = _header_ctx(graph, name, target.name, plan)
    source = _source_ctx(graph, name, target.name, plan, ops, lowered, copies, lowerer, int8)
    files = [_write(out / f"{name}.h", _render("model.h.j2", header)),
             _write(out / f"{name}.c", _render("model.c.j2", source))]
    for lib in _included(lowered, int8):
        for f in lib.files:
            shutil.copyfile(RUNTIME_DIR / f, out / f)
            files.append(out / f)
    kernels = {lib.key: _used(lowered, lib) for lib in LIBRARIES}
    files.append(write_manifest(out, Manifest(
        name, target.name, io_tensors(graph.inputs), io_tensors(graph.outputs), plan.arena_size,
        plan.lower_bound, graph.name, {k: v for k, v in kernels.items() if v},
        tuple(f.name for f in files))))
    layers = tuple(LayerInfo(i, op.kind, op.result.name, op.loc, tuple(c.function for c in low.calls),
                             packing.storage.get(op.result.name) or _binary_storage(op, low),
                             fused_into(op, low8.lay if int8 else None))
                   for i, (op, low) in enumerate(zip(ops, lowered)))
    return BundleInfo(name, target.name, header.input_size, header.output_size, plan.arena_size,
                      plan.lower_bound, plan.locations, layers, tuple(files), plan,
                      dict(low8.lay.offsets) if int8 else {},
                      tuple(op.result.name for op in ops if int8 and op.result.name in low8.wide_ops),
                      tuple(op.result.name for op in ops if int8 and low8.plans.get(op.result.name) is not None
                            and low8.plans[op.result.name].info.get("kind") == "wino"))


def _binary_storage(op: Op, low: Lowered) -> dict | None:
    """A binary layer's storage: its u1 weights packed 32 per word (c_ops_binary)."""
    if not has(op, Trait.BINARY_LAYER):
        return None
    n = sum(np.asarray(w.values).size * 4 for w in low.weights if w.ctype == "uint32_t" and w.cname.endswith("_w"))
    dense = op.operands[1].type.numel
    return {"format": "binary 1-bit packed", "bytes": int(n), "dense_bytes": dense, "detail": "u1 weights, 32 per word",
            "why": f"binary 1-bit packed: {n:,} B, 32 weights per word (int8 dense would be {dense:,} B)"}


def _used(lowered: list[Lowered], lib: c_ops.KernelLibrary) -> tuple[str, ...]:
    return tuple(sorted({k.name for low in lowered for k in low.kernels if k.library == lib.key}))


def _included(lowered: list[Lowered], int8: bool) -> list[c_ops.KernelLibrary]:
    """The libraries a model includes: those it calls, the float one always, the int8 one for int8 graphs."""
    return [lib for lib in LIBRARIES if lib.always or (lib.with_int8 and int8) or _used(lowered, lib)]


def _is_int8_op(op: Op) -> bool:
    if c_ops_binary.handles(op):          # lowered by c_ops_binary (int8 forms included)
        return False
    return int8_layout.is_int8_op(op) or (OPS[op.kind].c in int8_layout.VIEW_RULES and int8_layout.is_int8(op.result))


def _check_graph(graph: Graph, name: str) -> bool:
    """Check the graph can be emitted; True if it has int8 ops (a quantize-int8 graph)."""
    if not _IDENT.fullmatch(name):
        raise BackendError(f"bundle name {name!r} is not a C identifier",
                           hint="use letters, digits and underscores, not starting with a digit")
    int8 = any(_is_int8_op(op) for op in graph.compute_ops())
    input_type(graph)
    for v in list(graph.inputs) + list(graph.outputs):
        token = v in graph.inputs and v.type.dtype == "i32"
        if (v.type.dtype != "f32" and not token) or v.type.quant is not None:
            raise BackendError(f"the C backend needs f32 tensors at the graph's inputs and outputs (inputs may "
                               f"also be i32 token ids); %{v.name} is {v.type.dtype}",
                               hint="quantize-int8 keeps them float (quantize/dequantize at the edges)")
    for op in graph.ops:
        v = op.result
        if (v.type.dtype == "f32" and v.type.quant is None) or c_ops_binary.accepts(op) or c_ops_packed.accepts(op):
            continue
        if v.type.dtype == "i32" and v.type.quant is None and (op.is_const or OPS[op.kind].c == "view"):
            continue   # token ids: i32 constants, and views (reshapes) of the i32 inputs
        if int8 and (int8_layout.is_int8(v) or (op.is_const and v.type.dtype in ("i8", "i32"))):
            if not op.is_const and op.kind not in c_ops_int8.SUPPORTED:
                raise BackendError(f"the int8 C backend has no kernel for op '{op.kind}'", where=op.loc,
                                   hint=f"supported: {', '.join(c_ops_int8.SUPPORTED)}")
            continue
        raise BackendError(f"the float C backend needs f32 tensors; %{v.name} is {v.type.dtype}",
                           hint="int8 graphs come from quantize-int8 (quantized i8 tensors)")
    if not graph.outputs:
        raise BackendError("the graph has no outputs")
    return int8


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
    return "tensor<" + "x".join(map(str, v.type.shape)) + ("x" if v.type.shape else "") + v.type.dtype + ">"


def input_type(graph: Graph) -> str:
    """The C element type of invoke's `input`: float, or int32_t when every graph input is i32 (token
    ids). A graph mixing float and token inputs has no single-buffer API: a BackendError."""
    kinds = {v.type.dtype for v in graph.inputs}
    if kinds == {"i32"}:
        return "int32_t"
    if "i32" in kinds:
        f = next(v for v in graph.inputs if v.type.dtype != "i32")
        t = next(v for v in graph.inputs if v.type.dtype == "i32")
        raise BackendError(f"the graph mixes float inputs (%{f.name}: {f.type.dtype}) and token-id inputs "
                           f"(%{t.name}: i32); NAME_invoke takes one input buffer of one element type",
                           hint="give the model only float inputs or only token-id inputs (e.g. compile the "
                                "token and the float parts as two bundles)")
    return "float"


def _header_ctx(graph: Graph, name: str, target: str, plan: planner.Plan) -> HeaderCtx:
    inputs, outputs = _io(graph.inputs), _io(graph.outputs)
    return HeaderCtx(name, f"{name.upper()}_TINYC_H", _comment(graph.name), target,
                     sum(io.size for io in inputs), sum(io.size for io in outputs),
                     plan.arena_size, plan.lower_bound, inputs, outputs, input_type(graph))


def _source_ctx(graph: Graph, name: str, target: str, plan: planner.Plan, ops: list[Op],
                lowered: list[Lowered], copies: tuple[CopyCtx, ...], lowerer: _Lowerer,
                int8: bool = False) -> SourceCtx:
    libraries = tuple(LibraryCtx(lib.macro, lib.source, _used(lowered, lib)) for lib in _included(lowered, int8))
    weights = [_weight_ctx(Weight(lowerer.const_names[n], lowerer.consts[n],
                                  _CTYPES.get(c_ops_dtype(lowerer.consts[n]), "float")), f"%{n}: const")
               for n in lowerer.const_names if n in lowerer.used_consts]
    weights += [_weight_ctx(w, f"derived for layer {i} (%{op.result.name})")
                for i, (op, low) in enumerate(zip(ops, lowered)) for w in low.weights]
    weights = _shared_arrays(weights)
    params = tuple(p for low in lowered for p in low.params)
    layouts = lowerer.layouts
    layers = tuple(LayerCtx(i, _layer_comment(i, op, plan, layouts), low.calls,
                            _layer_output(op, lowerer) if int8 else None)
                   for i, (op, low) in enumerate(zip(ops, lowered)))
    return SourceCtx(name, _comment(graph.name), target, libraries, tuple(weights), params,
                     plan.arena_size, layers, copies, len(ops), int8,
                     tuple(text for _, text in lowerer.wrappers.values()),
                     int8 or bool(_used(lowered, c_ops_binary.LIBRARY)), input_type(graph))


def _shared_arrays(weights: list[WeightCtx]) -> list[WeightCtx]:
    """Arrays with the same type and values as an earlier one become aliases of it (layers repeated by
    the patch pass, shared tables): one copy in flash."""
    first: dict[tuple, str] = {}
    out = []
    for w in weights:
        key = (w.ctype, w.size, w.rows)
        if key in first:
            w = replace(w, rows=(), alias=first[key])
        else:
            first[key] = w.cname
        out.append(w)
    return out


def c_ops_dtype(a: np.ndarray) -> str:
    return {np.dtype(np.float32): "f32", np.dtype(np.int8): "i8", np.dtype(np.int32): "i32",
            np.dtype(np.int16): "i16", np.dtype(np.uint8): "u8"}.get(np.asarray(a).dtype, "f32")


def _layer_output(op: Op, lowerer: _Lowerer) -> tuple[str, int] | None:
    loc = lowerer.plan.locations[op.result.name]
    if loc.space == "const" or fused_into(op, lowerer.layouts):
        return None                     # a fused layer's own result never exists: its bytes hold the lut's
    return lowerer.ref(op.result), op.result.type.nbytes


def fused_into(op: Op, layouts) -> str | None:
    """The lut whose table op's kernel applies (int8 table epilogues), by its result name, or None."""
    lut = layouts.epilogues.get(op.result.name) if layouts is not None else None
    return lut.result.name if lut is not None else None


def _c_int(v: int) -> str:
    return "(-2147483647 - 1)" if v == -2 ** 31 else str(v)


def _weight_ctx(w: Weight, comment: str) -> WeightCtx:
    if w.ctype == "float":
        lits, per_line = c_ops.c_floats(w.values), VALUES_PER_LINE
    else:
        lits, per_line = [_c_int(v) for v in np.asarray(w.values).ravel().tolist()], INTS_PER_LINE
    if not lits:
        raise BackendError(f"cannot emit the empty constant {w.cname}")
    rows = tuple(", ".join(lits[i:i + per_line]) + ("," if i + per_line < len(lits) else "")
                 for i in range(0, len(lits), per_line))
    return WeightCtx(w.cname, len(lits), _comment(comment), rows, w.ctype)


def _layer_comment(i: int, op: Op, plan: planner.Plan, layouts=None) -> str:
    loc = plan.locations[op.result.name]
    where = f"{loc.space} byte {loc.offset}" if loc.space != "const" else loc.const
    text = f"layer {i}: %{op.result.name} = {op.kind} -> {where}"
    if layouts is not None and op.result.name in layouts.offsets:
        text += f", {layouts.describe(op.result)}"
    if op.kind == "reshape" or (layouts is not None and op.result.name in layouts.views):
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
