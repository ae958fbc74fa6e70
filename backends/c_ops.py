"""Per-op lowering of the float32 IR to calls of runtime_c/tinyc_kernels_f32.c.

Each lowering turns one op into kernel calls plus the `static const` parameter
structs and derived weight arrays they need. All shape arithmetic happens here,
at compile time; the kernels only loop. A `Lowering` also says which operands
the kernel may overwrite with its result (the memory planner's in-place rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from tinyc.errors import BackendError
from tinyc.ir import Op, Value
from tinyc.ops import ACTIVATIONS, OPS, Trait

MAX_RANK = 8  # TINYC_MAX_RANK in tinyc_kernels_f32.h


@dataclass(frozen=True)
class Param:
    """A `static const CTYPE NAME = {...}` parameter struct; fields are C initializers."""

    ctype: str
    cname: str
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[str, ...]
    status: int = 0     # non-zero: the kernel returns an int, and invoke returns `status` when it is non-zero


@dataclass(frozen=True)
class Weight:
    """A `static const CTYPE` array (float unless said otherwise): the C name and its values."""

    cname: str
    values: np.ndarray
    ctype: str = "float"


@dataclass(frozen=True)
class KernelLibrary:
    """A runtime kernel file: a bundle defines MACRO<KERNEL> for each kernel it calls, then
    #includes SOURCE; FILES are copied into the bundle when it is included."""

    key: str                     # the manifest's name for it
    macro: str
    source: str
    files: tuple[str, ...]
    always: bool = False         # included by every bundle (its helpers serve the others)
    with_int8: bool = False      # included by every int8 bundle


@dataclass(frozen=True, order=True)
class Kernel:
    """A kernel of a library other than the lowering family's own (e.g. a packed-weight layer
    calling the int8 GEMM): lowerings name their own library's kernels as plain strings."""

    library: str                 # KernelLibrary.key
    name: str


LIBRARY = KernelLibrary("f32", "TINYC_F32_", "tinyc_kernels_f32.c",
                        ("tinyc_kernels_f32.h", "tinyc_kernels_f32.c", "tinyc_profile.h"), always=True)


@dataclass(frozen=True)
class Lowered:
    kernels: tuple = ()               # kernel names of the lowering family's library, or Kernel
    params: tuple[Param, ...] = ()
    weights: tuple[Weight, ...] = ()
    calls: tuple[Call, ...] = ()


class Context(Protocol):
    """What a lowering needs from the emitter."""

    def ref(self, v: Value, offset: int = 0) -> str:
        """C pointer expression to element `offset` of value v."""

    def const(self, v: Value) -> np.ndarray | None:
        """The array behind v if it is a const, else None."""

    def param_name(self, k: int = 0) -> str:
        """Name for the k-th parameter struct of the op being lowered."""

    def weight_name(self, suffix: str) -> str:
        """Name for a derived weight array of the op being lowered."""


@dataclass(frozen=True)
class Lowering:
    emit: Callable[[Op, Context], Lowered]
    inplace: Callable[[Op], Sequence[int]]
    scratch: Callable[[Op], int] | None = None     # bytes of arena scratch while the op runs


# ---- C text helpers -------------------------------------------------------

def c_float(x: float) -> str:
    """Shortest literal that reads back as the same float32 (e.g. `1.5f`)."""
    f = np.float32(x)
    if np.isnan(f):
        return "NAN"
    if np.isinf(f):
        return "INFINITY" if f > 0 else "-INFINITY"
    s = str(f)
    return s + "f" if ("." in s or "e" in s) else s + ".0f"


def c_ints(xs: Sequence[int]) -> str:
    return "{" + ", ".join(str(int(x)) for x in xs) + "}"


def c_floats(values: np.ndarray) -> list[str]:
    """c_float over an array, fast for the usual all-finite weights."""
    flat = np.asarray(values, np.float32).ravel()
    if not np.isfinite(flat).all():
        return [c_float(x) for x in flat]
    return [s + "f" if ("." in s or "e" in s) else s + ".0f" for s in map(str, flat)]


def _act_fields(kind: str | None, params: dict) -> tuple[tuple[str, str], ...]:
    """tinyc_act {kind, lo, hi} of an activation (its registry entry's c_code and c_args)."""
    if kind is None:
        return (("kind", "TINYC_ACT_NONE"), ("lo", "0.0f"), ("hi", "0.0f"))
    a = ACTIVATIONS[kind]
    if a.c_code is None:
        raise BackendError(f"activation {kind!r} has no tinyc_act form in the float C kernels")
    lo, hi = a.c_args(params)
    return (("kind", f"TINYC_ACT_{kind.upper()}"), ("lo", c_float(lo)), ("hi", c_float(hi)))


def act_kernels(kind: str | None) -> tuple[str, ...]:
    """TINYC_F32_ACT_<KIND> for an activation outside tinyc_f32_act's always-compiled cases (relu,
    clamp, leaky_relu: the ones an int8 requantization applies too): a bundle compiles the libm
    activations (gelu, silu, hardsigmoid) only when it uses them."""
    return () if kind is None or ACTIVATIONS[kind].requant else (f"ACT_{kind.upper()}",)


def fused_act(attrs: dict) -> str:
    """tinyc_act initializer for an op's optional fused `act` attribute."""
    kind = attrs.get("act")
    params = ACTIVATIONS[kind].params_of(attrs, fused=True) if kind else {}
    return "{" + ", ".join(v for _, v in _act_fields(kind, params)) + "}"


def standalone_act(op: Op) -> tuple[tuple[str, str], ...]:
    """tinyc_act fields for an activation op with a tinyc_act form (relu, clamp, leaky_relu, gelu...)."""
    return _act_fields(op.kind, op.attrs)


# ---- shape helpers ----------------------------------------------------------

def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return strides[::-1]


def broadcast_strides(shape: Sequence[int], out: Sequence[int]) -> list[int]:
    """Strides reading `shape` broadcast to `out` (0 along broadcast dims)."""
    padded = [1] * (len(out) - len(shape)) + list(shape)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(padded, out, contiguous_strides(padded))]


def coalesce(dims: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Drop unit dims and merge neighbours every stride array walks contiguously,
    so kernels run few, long rows. Always returns at least one dim."""
    keep = [i for i, d in enumerate(dims) if d != 1]
    out_dims: list[int] = []
    out_strides: list[list[int]] = [[] for _ in strides]
    for i in keep:
        mergeable = out_dims and all(s[-1] == src[i] * dims[i] for s, src in zip(out_strides, strides))
        if mergeable:
            out_dims[-1] *= dims[i]
            for s, src in zip(out_strides, strides):
                s[-1] = src[i]
        else:
            out_dims.append(dims[i])
            for s, src in zip(out_strides, strides):
                s.append(src[i])
    if not out_dims:
        return [1], [[0] for _ in strides]
    return out_dims, out_strides


def _check_rank(dims: Sequence[int], op: Op) -> None:
    if len(dims) > MAX_RANK:
        raise BackendError(f"{op.kind} needs {len(dims)} strided dims; the float kernels support {MAX_RANK}",
                           where=op.loc, hint="reshape to fewer dims before this op")


def _rows(dims: Sequence[int]) -> int:
    return math.prod(dims[:-1])


def _shape(v: Value) -> tuple[int, ...]:
    return v.type.shape


# ---- lowerings ----------------------------------------------------------------

def _bias(op: Op, ctx: Context) -> str:
    return ctx.ref(op.operands[2]) if len(op.operands) > 2 else "0"


def lower_conv2d(op: Op, ctx: Context) -> Lowered:
    (n, c, h, w), (o, _, kh, kw) = _shape(op.operands[0]), _shape(op.operands[1])
    _, _, oh, ow = _shape(op.result)
    a = op.attrs
    sh, sw = a["stride"]
    dh, dw = a["dilation"]
    top, left, bottom, right = a["padding"]
    groups = a["groups"]
    if kh == kw == 1 and (sh, sw) == (1, 1) and not any(a["padding"]) and groups == 1:
        kernel = "conv2d_1x1"
    else:
        kernel = "conv2d"
    fields = (("n", n), ("c", c), ("h", h), ("w", w), ("o", o), ("oh", oh), ("ow", ow), ("kh", kh), ("kw", kw),
              ("sh", sh), ("sw", sw), ("dh", dh), ("dw", dw), ("pad_top", top), ("pad_left", left),
              ("groups", groups))
    param = Param("tinyc_f32_conv2d_params", ctx.param_name(),
                  tuple((k, str(v)) for k, v in fields) + (("act", fused_act(a)),))
    x, wt = (ctx.ref(v) for v in op.operands[:2])
    call = Call(f"tinyc_f32_{kernel}", (x, wt, _bias(op, ctx), ctx.ref(op.result), "&" + param.cname))
    return Lowered((kernel.upper(), *act_kernels(a.get("act"))), (param,), (), (call,))


def lower_linear(op: Op, ctx: Context) -> Lowered:
    n, k = _shape(op.operands[1])
    param = Param("tinyc_f32_linear_params", ctx.param_name(),
                  (("rows", str(op.operands[0].type.numel // k)), ("k", str(k)), ("n", str(n)),
                   ("act", fused_act(op.attrs))))
    x, wt = (ctx.ref(v) for v in op.operands[:2])
    call = Call("tinyc_f32_linear", (x, wt, _bias(op, ctx), ctx.ref(op.result), "&" + param.cname))
    return Lowered(("LINEAR", *act_kernels(op.attrs.get("act"))), (param,), (), (call,))


def lower_matmul(op: Op, ctx: Context) -> Lowered:
    a, b = op.operands
    m, k = _shape(a)[-2:]
    n = _shape(b)[-1]
    batch = _shape(op.result)[:-2]
    a_str = [s * m * k for s in broadcast_strides(_shape(a)[:-2], batch)]
    b_str = [s * k * n for s in broadcast_strides(_shape(b)[:-2], batch)]
    dims, (a_str, b_str) = coalesce(batch, a_str, b_str)
    _check_rank(dims, op)
    param = Param("tinyc_f32_matmul_params", ctx.param_name(),
                  (("m", str(m)), ("k", str(k)), ("n", str(n)), ("batch", str(math.prod(batch))),
                   ("rank", str(len(dims))), ("dims", c_ints(dims)), ("a_strides", c_ints(a_str)),
                   ("b_strides", c_ints(b_str)), ("act", fused_act(op.attrs))))
    call = Call("tinyc_f32_matmul", (ctx.ref(a), ctx.ref(b), ctx.ref(op.result), "&" + param.cname))
    return Lowered(("MATMUL", *act_kernels(op.attrs.get("act"))), (param,), (), (call,))


def lower_batch_norm(op: Op, ctx: Context) -> Lowered:
    x, *stats = op.operands
    arrays = [ctx.const(v) for v in stats]
    if any(arr is None for arr in arrays):
        raise BackendError("batch_norm statistics must be constants", where=op.loc)
    mean, var, weight, bias = (np.asarray(arr, np.float64) for arr in arrays)
    scale = weight / np.sqrt(var + float(op.attrs["eps"]))
    shift = bias - mean * scale
    sw = Weight(ctx.weight_name("scale"), scale.astype(np.float32))
    tw = Weight(ctx.weight_name("shift"), shift.astype(np.float32))
    shape = _shape(x)
    call = Call("tinyc_f32_channel_affine",
                (ctx.ref(x), sw.cname, tw.cname, ctx.ref(op.result), str(shape[0]), str(shape[1]),
                 str(math.prod(shape[2:]))))
    return Lowered(("CHANNEL_AFFINE",), (), (sw, tw), (call,))


def lower_act(op: Op, ctx: Context) -> Lowered:
    """Activations with a tinyc_act form: the fused-activation helper as a kernel of its own."""
    param = Param("tinyc_act", ctx.param_name(), standalone_act(op))
    call = Call("tinyc_f32_act", (ctx.ref(op.operands[0]), ctx.ref(op.result), str(op.result.type.numel),
                                  "&" + param.cname))
    return Lowered(act_kernels(op.kind), (param,), (), (call,))


def lower_unary(op: Op, ctx: Context) -> Lowered:
    """sigmoid, tanh, hardswish."""
    call = Call(f"tinyc_f32_{op.kind}", (ctx.ref(op.operands[0]), ctx.ref(op.result), str(op.result.type.numel)))
    return Lowered((op.kind.upper(),), (), (), (call,))


def lower_binary(op: Op, ctx: Context) -> Lowered:
    a, b = op.operands
    out = _shape(op.result)
    dims, (a_str, b_str) = coalesce(out, broadcast_strides(_shape(a), out), broadcast_strides(_shape(b), out))
    _check_rank(dims, op)
    param = Param("tinyc_f32_binary_params", ctx.param_name(),
                  (("op", f"TINYC_{op.kind.upper()}"), ("rows", str(_rows(dims))), ("rank", str(len(dims))),
                   ("dims", c_ints(dims)), ("a_strides", c_ints(a_str)), ("b_strides", c_ints(b_str)),
                   ("act", fused_act(op.attrs))))
    call = Call("tinyc_f32_binary", (ctx.ref(a), ctx.ref(b), ctx.ref(op.result), "&" + param.cname))
    return Lowered(("BINARY", *act_kernels(op.attrs.get("act"))), (param,), (), (call,))


def lower_pool2d(op: Op, ctx: Context) -> Lowered:
    n, c, h, w = _shape(op.operands[0])
    _, _, oh, ow = _shape(op.result)
    a = op.attrs
    kh, kw = a["kernel"]
    sh, sw = a["stride"]
    dh, dw = a.get("dilation", (1, 1))
    top, left, bottom, right = a["padding"]
    fields = (("planes", n * c), ("h", h), ("w", w), ("oh", oh), ("ow", ow), ("kh", kh), ("kw", kw),
              ("sh", sh), ("sw", sw), ("dh", dh), ("dw", dw), ("pad_top", top), ("pad_left", left),
              ("pad_bottom", bottom), ("pad_right", right),
              ("count_include_pad", int(bool(a.get("count_include_pad", False)))))
    param = Param("tinyc_f32_pool2d_params", ctx.param_name(), tuple((k, str(v)) for k, v in fields))
    call = Call(f"tinyc_f32_{op.kind}", (ctx.ref(op.operands[0]), ctx.ref(op.result), "&" + param.cname))
    return Lowered((op.kind.upper(),), (param,), (), (call,))


def lower_mean(op: Op, ctx: Context) -> Lowered:
    shape = _shape(op.operands[0])
    axes = set(op.attrs["axes"])
    kept = [1 if i in axes else d for i, d in enumerate(shape)]
    y_str = [0 if i in axes else s for i, s in enumerate(contiguous_strides(kept))]
    dims, (y_str,) = coalesce(shape, y_str)
    _check_rank(dims, op)
    count = math.prod(shape[i] for i in axes)
    param = Param("tinyc_f32_mean_params", ctx.param_name(),
                  (("rows", str(_rows(dims))), ("rank", str(len(dims))), ("dims", c_ints(dims)),
                   ("y_strides", c_ints(y_str)), ("y_size", str(op.result.type.numel)),
                   ("count", c_float(count))))
    call = Call("tinyc_f32_mean", (ctx.ref(op.operands[0]), ctx.ref(op.result), "&" + param.cname))
    return Lowered(("MEAN",), (param,), (), (call,))


def lower_softmax(op: Op, ctx: Context) -> Lowered:
    shape, axis = _shape(op.operands[0]), op.attrs["axis"]
    sizes = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
    call = Call("tinyc_f32_softmax", (ctx.ref(op.operands[0]), ctx.ref(op.result), *map(str, sizes)))
    return Lowered(("SOFTMAX",), (), (), (call,))


def _copy(op: Op, ctx: Context, k: int, x: str, y: str, dims, x_str, y_str) -> tuple[Param, Call]:
    dims, (x_str, y_str) = coalesce(dims, x_str, y_str)
    _check_rank(dims, op)
    param = Param("tinyc_f32_copy_params", ctx.param_name(k),
                  (("rows", str(_rows(dims))), ("rank", str(len(dims))), ("dims", c_ints(dims)),
                   ("x_strides", c_ints(x_str)), ("y_strides", c_ints(y_str))))
    return param, Call("tinyc_f32_copy", (x, y, "&" + param.cname))


def lower_transpose(op: Op, ctx: Context) -> Lowered:
    x = op.operands[0]
    x_str = contiguous_strides(_shape(x))
    out = _shape(op.result)
    param, call = _copy(op, ctx, 0, ctx.ref(x), ctx.ref(op.result), out,
                        [x_str[p] for p in op.attrs["perm"]], contiguous_strides(out))
    return Lowered(("COPY",), (param,), (), (call,))


def lower_cat(op: Op, ctx: Context) -> Lowered:
    axis = op.attrs["axis"]
    y_str = contiguous_strides(_shape(op.result))
    params, calls, start = [], [], 0
    for k, x in enumerate(op.operands):
        if x.type.numel:
            param, call = _copy(op, ctx, k, ctx.ref(x), ctx.ref(op.result, start * y_str[axis]), _shape(x),
                                contiguous_strides(_shape(x)), y_str)
            params.append(param)
            calls.append(call)
        start += _shape(x)[axis]
    return Lowered(("COPY",), tuple(params), (), tuple(calls))


def lower_pad(op: Op, ctx: Context) -> Lowered:
    x, shape, out = op.operands[0], _shape(op.operands[0]), _shape(op.result)
    rank, pads = len(shape), op.attrs["pads"]
    begin, end = pads[:rank], pads[rank:]
    # negative pads crop: copy only the part of x that survives
    dims = [d - max(0, -b) - max(0, -e) for d, b, e in zip(shape, begin, end)]
    x_str, y_str = contiguous_strides(shape), contiguous_strides(out)
    x_off = sum(max(0, -b) * s for b, s in zip(begin, x_str))
    y_off = sum(max(0, b) * s for b, s in zip(begin, y_str))
    kernels, params, calls = [], [], []
    if any(p > 0 for p in pads):
        kernels.append("FILL")
        calls.append(Call("tinyc_f32_fill", (ctx.ref(op.result), str(op.result.type.numel),
                                             c_float(op.attrs.get("value", 0.0)))))
    if all(d > 0 for d in dims):
        param, call = _copy(op, ctx, 0, ctx.ref(x, x_off), ctx.ref(op.result, y_off), dims, x_str, y_str)
        kernels.append("COPY")
        params.append(param)
        calls.append(call)
    return Lowered(tuple(kernels), tuple(params), (), tuple(calls))


def gather_offsets(op: Op, offsets: np.ndarray) -> np.ndarray:
    """For an op whose `ref` only moves elements (slice, flip, expand: the "gather_copy" rule): the
    operand offset each result element reads, given the operand's element offsets."""
    return np.asarray(OPS[op.kind].ref(op, offsets))


def lower_gather_copy(op: Op, ctx: Context) -> Lowered:
    """slice / flip / expand: a strided copy (offset start, negative strides flip, 0 strides expand)."""
    x, y = op.operands[0], op.result
    if not y.type.numel:
        return Lowered()
    from tinyc.backends.int8_layout import dim_strides
    src = gather_offsets(op, np.arange(x.type.numel, dtype=np.int64).reshape(_shape(x)))
    base, x_str = int(src.flat[0]), dim_strides(src)
    if x_str is None:
        raise BackendError(f"%{y.name} = {op.kind}: its elements are not a strided view of its operand "
                           "(internal error: the gather_copy rule needs one)", where=op.loc)
    param, call = _copy(op, ctx, 0, ctx.ref(x, base), ctx.ref(y), _shape(y), x_str, contiguous_strides(_shape(y)))
    return Lowered(("COPY",), (param,), (), (call,))


def lower_reshape(op: Op, ctx: Context) -> Lowered:
    """A view: the planner gives it its operand's storage, so there is nothing to do."""
    return Lowered()


def lower_norm(op: Op, ctx: Context) -> Lowered:
    """layer_norm and group_norm: sets of `cpr` parameter positions x `inner` elements."""
    x = op.operands[0]
    shape, a = _shape(x), op.attrs
    if "groups" in a:
        g = a["groups"]
        rows, groups, cpr, inner = shape[0] * g, g, shape[1] // g, math.prod(shape[2:])
    else:
        cpr = math.prod(shape[a["axis"]:])
        rows, groups, inner = x.type.numel // cpr if cpr else 0, 1, 1
    param = Param("tinyc_f32_norm_params", ctx.param_name(),
                  (("rows", str(rows)), ("groups", str(groups)), ("cpr", str(cpr)), ("inner", str(inner)),
                   ("eps", c_float(a["eps"])), ("rms", str(int(bool(a.get("rms", False)))))))
    w, b = (ctx.ref(op.operands[i]) if len(op.operands) > i else "0" for i in (1, 2))
    call = Call("tinyc_f32_norm", (ctx.ref(x), w, b, ctx.ref(op.result), "&" + param.cname))
    return Lowered(("NORM",), (param,), (), (call,))


def lower_fake_quant(op: Op, ctx: Context) -> Lowered:
    """fake_quant (an imported model's quantize-dequantize): per tensor, or per channel of axis;
    the inverse scales are computed here exactly as the interpreter does (tinyc.ops.fake_quant)."""
    from tinyc.ops.fake_quant import inv_scales
    a, shape = op.attrs, _shape(op.operands[0])
    axis = a.get("axis")
    if axis is None:
        outer, channels, inner = 1, 1, op.result.type.numel
    else:
        outer, channels, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    weights = (Weight(ctx.weight_name("scale"), np.asarray(a["scale"], np.float32)),
               Weight(ctx.weight_name("inv_scale"), inv_scales(a["scale"], axis is not None)),
               Weight(ctx.weight_name("zp"), np.asarray(a["zero_point"], np.float32)))
    call = Call("tinyc_f32_fake_quant", (ctx.ref(op.operands[0]), ctx.ref(op.result), *(w.cname for w in weights),
                                         c_float(a["qmin"]), c_float(a["qmax"]), str(outer), str(channels),
                                         str(inner)))
    return Lowered(("FAKE_QUANT",), (), weights, (call,))


# ---- in-place rules -----------------------------------------------------------

def _none(op: Op) -> Sequence[int]:
    return ()


def _first(op: Op) -> Sequence[int]:
    return (0,)


def _same_size_operands(op: Op) -> Sequence[int]:
    """Binary ops: an operand the result's size has the result's shape (broadcasting
    can only grow), so it is read at exactly the index being written."""
    return tuple(i for i, v in enumerate(op.operands) if v.type.numel == op.result.type.numel)


# By the `c` rule of an op's definition (tinyc.ops); activations by their Activation's c_code.
LOWERINGS: dict[str, Lowering] = {
    "conv": Lowering(lower_conv2d, _none),
    "dense": Lowering(lower_linear, _none),
    "batched_matmul": Lowering(lower_matmul, _none),
    "channel_affine": Lowering(lower_batch_norm, _first),
    "elementwise": Lowering(lower_binary, _same_size_operands),
    "pool": Lowering(lower_pool2d, _none),
    "reduce": Lowering(lower_mean, _none),
    "softmax_axis": Lowering(lower_softmax, _first),
    "permute": Lowering(lower_transpose, _none),
    "concat": Lowering(lower_cat, _none),
    "pad_const": Lowering(lower_pad, _none),
    # reshape is a view; decode(indices, codebook) of share-weights emits no code either: the layer
    # reading it stores the weights in its own format (c_ops_packed), or the decoded array is a constant
    "view": Lowering(lower_reshape, _none),
    "decoded_weight": Lowering(lower_reshape, _none),
    "normalize": Lowering(lower_norm, _first),
    "gather_copy": Lowering(lower_gather_copy, _none),
    "quant_dequant": Lowering(lower_fake_quant, _first),
}
LOWERINGS["gather_rows"] = Lowering(lambda op, ctx: lower_embedding(op, ctx), _none)
LOWERINGS["int_to_float"] = Lowering(lambda op, ctx: lower_int_to_float(op, ctx), _none)
ACT_LOWERINGS = {True: Lowering(lower_act, _first), False: Lowering(lower_unary, _first)}


def lowering(op: Op) -> Lowering:
    d = OPS.get(op.kind)
    if d is not None and d.has(Trait.ACTIVATION):
        return ACT_LOWERINGS[ACTIVATIONS[op.kind].c_code is not None]
    if d is None or d.c not in LOWERINGS:
        supported = sorted(k for k, x in OPS.items() if x.c in LOWERINGS or x.has(Trait.ACTIVATION))
        raise BackendError(f"the float C backend has no kernel for op '{op.kind}'", where=op.loc,
                           hint=f"supported: {', '.join(supported)}")
    return LOWERINGS[d.c]


def inplace_operands(op: Op) -> Sequence[int]:
    return lowering(op).inplace(op)


class KernelFamily(Protocol):
    """What the emitter asks of each kernel family (float, int8, packed, binary): whether it lowers
    an op, how the planner must treat the op's result (in place over an operand, a view of operand
    0, scratch bytes while it runs), and the lowering itself. The emitter gives each op to the
    first family that accepts it and tags the kernels it names with the family's library."""

    library: KernelLibrary

    def accepts(self, op: Op) -> bool: ...

    def inplace(self, op: Op) -> Sequence[int]: ...

    def is_view(self, op: Op) -> bool: ...

    def scratch(self, op: Op) -> int: ...

    def emit(self, op: Op, ctx: Context) -> Lowered: ...


class FloatFamily:
    """The float kernels (tinyc_kernels_f32.c); layers whose weights c_ops_packed stores in a packed
    format go to its kernels first. Takes every op no other family took."""

    library = LIBRARY

    def __init__(self, packing=None):
        self.packing = packing

    def accepts(self, op: Op) -> bool:
        return True

    def inplace(self, op: Op) -> Sequence[int]:
        return inplace_operands(op)

    def is_view(self, op: Op) -> bool:
        """Views and decoded weights: the planner gives them their operand's storage (or a constant)."""
        return OPS[op.kind].c in ("view", "decoded_weight")

    def scratch(self, op: Op) -> int:
        d = OPS.get(op.kind)
        low = LOWERINGS.get(d.c) if d is not None and not d.has(Trait.ACTIVATION) else None
        return low.scratch(op) if low is not None and low.scratch is not None else 0

    def emit(self, op: Op, ctx: Context) -> Lowered:
        packed = self.packing.emit(op, ctx) if self.packing is not None else None
        return packed or lowering(op).emit(op, ctx)


# ---- token ids (tinyc.ops.gather) ------------------------------------------------------------

def lower_embedding(op: Op, ctx: Context) -> Lowered:
    """Rows of the table by i32 token ids; an id outside [0, V) makes invoke return ERR_INDEX."""
    from tinyc.ops.gather import ERR_INDEX
    table, idx = op.operands
    vocab, dim = _shape(table)
    call = Call("tinyc_f32_embedding", (ctx.ref(idx), ctx.ref(table), ctx.ref(op.result), str(idx.type.numel),
                                        str(vocab), str(dim)), ERR_INDEX)
    return Lowered(("EMBEDDING",), (), (), (call,))


def lower_int_to_float(op: Op, ctx: Context) -> Lowered:
    call = Call("tinyc_f32_from_i32", (ctx.ref(op.operands[0]), ctx.ref(op.result), str(op.result.type.numel)))
    return Lowered(("FROM_I32",), (), (), (call,))


from tinyc.backends import c_ops_spatial  # noqa: E402,F401  (registers the spatial ops' lowerings)
from tinyc.backends import c_ops_recurrent  # noqa: E402,F401  (registers gru and lstm's lowering)
from tinyc.backends import c_ops_math  # noqa: E402,F401  (registers the math ops' lowerings)
