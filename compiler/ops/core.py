"""The op registry: one `OpDef` per op kind, holding every facet of the op.

A definition says what an op is (operands, attributes, result type, MACs), what it computes
(the numpy float reference, the bit-exact integer reference, the torch function for
`to_torch`), and what passes may do with it (traits, how channels flow through it for
pruning, whether it keeps samples independent along the batch axis, how quantize-int8 lowers
it). The verifier, the interpreter, to_torch, the passes and the backends read these facets;
no other module keeps a list of op names. docs/ir.md is the prose version.

Shape rules follow PyTorch exactly; the result dtype is the first operand's (so integer forms
keep their dtype) unless the OpDef says otherwise. Integer forms (docs/quantization.md): an op
whose first operand is quantized is the int8 form of its kind; `int_operands` checks its
operands' quantization and `check_result_quant` its result's.
"""
from __future__ import annotations

import enum
import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, get_args, get_origin

import numpy as np

from tinyc import quant
from tinyc.ir import Graph, Op, TensorType, Value

Shape = tuple[int, ...]


class OpError(ValueError):
    """An op's operands or attributes are inconsistent. The verifier adds which op it is."""

    def __init__(self, what: str, hint: str | None = None):
        super().__init__(what)
        self.hint = hint


class Trait(enum.Flag):
    """Op groups that passes and backends ask about (tinygrad's GroupOp, MLIR's traits)."""

    NONE = 0
    LAYER = enum.auto()          # weight in operand 1, optional bias in operand 2 (conv2d, linear)
    BINARY_LAYER = enum.auto()   # sign (u1) weight in operand 1, alpha, optional bias (bin_conv2d, bin_linear)
    FUSABLE = enum.auto()        # may carry a fused activation (`act = ...` attributes)
    ACTIVATION = enum.auto()     # a unary elementwise activation (registered with an Activation)
    ELEMENTWISE = enum.auto()    # binary elementwise arithmetic with broadcasting
    ADDITIVE = enum.auto()       # a + b or a - b: int8 rescales both operands to a common scale first
    VIEW = enum.auto()           # the result aliases its operand's storage (reshape)
    SAME_QUANT = enum.auto()     # the int8 result keeps its input's quantization
    CHANNEL_AFFINE = enum.auto()  # a per-channel affine of axis 1 that folds into the producing layer
    PADDED_WINDOW = enum.auto()  # a window op whose zero padding can absorb a preceding zero pad
    INT_ONLY = enum.auto()       # an int8 op: the boundary and tables (quantize, dequantize, lut)


# A lazily imported module: `import tinyc` must not import torch unless torch is used.
class _Lazy:
    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


torch = _Lazy("torch")
F = _Lazy("torch.nn.functional")


@dataclass(frozen=True)
class OpDef:
    """Every facet of one op kind. Only `kind` and `infer` are required."""

    kind: str
    infer: Callable[[list[TensorType], dict], Shape]   # result shape; raises OpError
    min_operands: int = 1
    max_operands: int | None = 1                        # None: any number (cat)
    required: dict[str, Any] = field(default_factory=dict)   # attribute -> Python type
    optional: dict[str, Any] = field(default_factory=dict)
    traits: Trait = Trait.NONE
    macs: Callable[[list[TensorType], TensorType], int] | None = None
    dtype: str | None = None                            # result dtype; None: the first operand's
    dtype_rule: Callable[[list[TensorType]], str] | None = None   # result dtype from the operands
    doc: str = ""
    # semantics
    ref: Callable | None = None        # float: f(op, *float64 arrays) -> array (fused act and cast by the caller)
    ref_int: Callable | None = None    # int8 form: f(op, *arrays) -> array, bit-exact
    ref_exact: Callable | None = None  # f(op, *arrays) -> result array as is (compressed forms, const)
    torch: Callable | None = None      # f(op, *tensors) -> tensor (fused act applied by the caller)
    trainable: tuple[int, ...] = ()    # operand slots whose float const becomes an nn.Parameter
    # integer forms
    int_operands: Callable[[list[TensorType], dict], None] | None = None   # None: no int8 form
    int_form: Callable[[list[TensorType]], bool] | None = None  # default: the first operand is quantized
    operand_rule: Callable[[list[TensorType], dict], None] | None = None  # replaces the int-form checks
    result_quant_rule: Callable[[list[TensorType], TensorType], None] | None = None  # replaces the default
    result_type: Callable[[list[TensorType], dict], TensorType] | None = None  # replaces shape + dtype rules
    # facets read by passes (each names a rule the pass defines, never an op)
    int8: str | None = None            # quantize-int8's lowering rule: layer, same, lut, softmax, special...
    prepare: str | None = None         # quantize-int8's float rewrite before calibration
    channels: str | None = None        # prune-channels' channel-flow rule; None freezes the channels
    folds: str | None = None           # fuse: how a following channel affine (batch_norm) folds in: "out_rows"
    #                                    (weight operand 1 with output channels on axis 0 = the result's axis 1
    #                                    or, rank 2, its last; optional bias operand 2)
    keeps_batch: Callable[[dict, list[TensorType], list[bool], TensorType], bool] | None = None
    identity: Callable[[Op, Callable[[Any], np.ndarray | None]], int | None] | None = None
    # fuse: the operand index this op merely forwards (given const lookups), or None
    accepts_act: Callable[["Activation"], bool] = lambda a: a.fusable   # with Trait.FUSABLE
    id_bound: Callable[[Op, int], int | None] | None = None
    # integer operands that address rows: f(op, operand index) -> the exclusive bound of a valid id
    weight_operands: Callable[[Op], tuple["WeightOperand", ...]] | None = None
    # the compressible weight matrices (prune-weights, share-weights, svd): f(op) -> its weight
    # operands; None: operand 1 for Trait.LAYER ops, none otherwise (OpDef.weights)
    c: str | None = None               # the C kernel families' lowering rule (backends); activations:
    #                                    their Activation's c_code; compressed forms: their family
    # conformance: sample invocations (tests/test_registry.py runs every op's samples through
    # type inference, numpy vs torch, and the C kernels on the host, float and int8)
    samples: Callable[[np.random.Generator], list["Sample"]] | None = None

    def arity(self) -> str:
        lo, hi = self.min_operands, self.max_operands
        return str(lo) if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"

    @property
    def attrs(self) -> dict[str, Any]:
        return {**self.required, **self.optional}

    def has(self, trait: Trait) -> bool:
        return bool(self.traits & trait)

    def weights(self, op: Op) -> tuple["WeightOperand", ...]:
        """The op's compressible weight operands (the weight_operands facet, or a layer's operand 1)."""
        if self.weight_operands is not None:
            return tuple(self.weight_operands(op))
        return (WeightOperand(1, "weight"),) if self.has(Trait.LAYER) else ()


@dataclass(frozen=True)
class WeightOperand:
    """One weight matrix an op reads: operand `slot`, one row per output unit (axis 0), named `role`
    in pass statistics. `projects_input`: the op uses it only as x @ W^T with x its operand 0 and W's
    columns x's last axis, so svd may factor it through a bias-free linear before the op (every such
    operand of the op jointly: they share x). `dense`: the C kernels read it as a dense array, so a
    sparse or codebook (decode) form is expanded at compile time and stored no smaller."""

    slot: int
    role: str
    projects_input: bool = False
    dense: bool = False


@dataclass(frozen=True)
class Sample:
    """One invocation of an op for the conformance test: each operand is a shape (a graph input of
    random float32 values), an `IntInput` (a graph input of random i32 values in a range) or an
    array (a constant), plus the attributes."""

    operands: tuple
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class IntInput:
    """A sample operand: a graph input of i32 values drawn uniformly from [low, high) (token ids)."""

    shape: tuple[int, ...]
    low: int
    high: int


def sample(*operands, **attrs) -> Sample:
    return Sample(tuple(operands), attrs)


def sample_graph(kind: str, s: Sample, name: str | None = None, loc: str | None = None) -> Graph:
    """A one-op graph of `kind` applied to sample `s`: shape operands become graph inputs x<i>,
    array operands consts c<i>, the result y (typed by inference)."""
    inputs, operands, consts = [], [], []
    for i, o in enumerate(s.operands):
        if isinstance(o, np.ndarray):
            v = Value(f"c{i}", TensorType(o.shape, _np_dtype_name(o)))
            consts.append(Op("const", [], v, {"value": o}))
        elif isinstance(o, IntInput):
            v = Value(f"x{i}", TensorType(tuple(o.shape), "i32"))
            inputs.append(v)
        else:
            v = Value(f"x{i}", TensorType(tuple(o)))
            inputs.append(v)
        operands.append(v)
    y = Value("y", infer_type(kind, [v.type for v in operands], dict(s.attrs)))
    return Graph(name or kind, inputs, [y], consts + [Op(kind, operands, y, dict(s.attrs), loc)])


def _np_dtype_name(a: np.ndarray) -> str:
    return "i32" if a.dtype == np.int32 else "f32"


def sample_inputs(s: Sample, rng: np.random.Generator, count: int | None = None) -> list[np.ndarray]:
    """Random values for the graph inputs of sample `s` (as sample_graph orders them): float32
    standard normal for shape operands, i32 uniform in [low, high) for IntInput operands; with
    `count`, a stack of that many samples per input (calibration data)."""
    lead = () if count is None else (count,)
    out = []
    for o in s.operands:
        if isinstance(o, IntInput):
            out.append(rng.integers(o.low, o.high, lead + tuple(o.shape)).astype(np.int32))
        elif not isinstance(o, np.ndarray):
            out.append(rng.standard_normal(lead + tuple(o)).astype(np.float32))
    return out


@dataclass(frozen=True)
class Activation:
    """A unary elementwise activation: one definition serves the standalone op (`kind` with
    attributes `params`) and the fused form (`act = kind` with attributes `fused`), in numpy
    (float64) and torch. `fusable`: may be fused into a producer; `clamp_form(params)` gives the
    (lo, hi) saturation it amounts to in an int8 requantization (relu, relu6, clamp) or None."""

    kind: str
    numpy: Callable[[np.ndarray, dict], np.ndarray]      # (x, params by standalone name)
    torch: Callable[[Any, dict], Any]
    params: tuple[str, ...] = ()
    fused: tuple[str, ...] = ()      # fused attribute names, parallel to params
    fusable: bool = True
    requant: bool = False            # an int8 requantization applies it exactly (relu, clamp, leaky_relu)
    idempotent: bool = False         # a(a(x)) = a(x) (relu, clamp)
    c_code: int | None = None        # its tinyc_act kind in the C runtime (TINYC_ACT_<KIND>): fusable in C
    c_args: Callable[[dict], tuple[float, float]] = lambda p: (0.0, 0.0)   # tinyc_act's lo, hi
    doc: str = ""

    def fused_attrs(self, op_attrs: dict) -> dict:
        """`act = kind` plus the parameters, from a standalone op's attributes."""
        return {"act": self.kind, **{f: op_attrs[p] for p, f in zip(self.params, self.fused)}}

    def params_of(self, attrs: dict, fused: bool) -> dict:
        """The parameters by standalone name, from standalone or fused attributes."""
        return {p: attrs[f if fused else p] for p, f in zip(self.params, self.fused)}


OPS: dict[str, OpDef] = {}
ACTIVATIONS: dict[str, Activation] = {}
ACT_ATTRS: dict[str, Any] = {"act": str}   # grows with each activation's fused parameters


def register(d: OpDef) -> OpDef:
    if d.kind in OPS:
        raise ValueError(f"op kind {d.kind!r} is registered twice")
    OPS[d.kind] = d
    return d


def register_activation(a: Activation, op: OpDef) -> OpDef:
    """An activation and its standalone op (unary, same shape, Trait.ACTIVATION)."""
    if a.kind in ACTIVATIONS:
        raise ValueError(f"activation {a.kind!r} is registered twice")
    ACTIVATIONS[a.kind] = a
    for p, f in zip(a.params, a.fused):
        ACT_ATTRS[f] = op.required[p]
    return register(op)


def op_def(kind: str) -> OpDef:
    """The definition of `kind`; a kind nobody registered is an OpError, never a silent miss."""
    d = OPS.get(kind)
    if d is None:
        raise OpError(f"unknown op kind '{kind}'", "known kinds: " + ", ".join(sorted(OPS)))
    return d


def has(op_or_kind: Op | str, trait: Trait) -> bool:
    """Whether the op (or kind) has `trait`; unknown kinds raise OpError."""
    kind = op_or_kind if isinstance(op_or_kind, str) else op_or_kind.kind
    return op_def(kind).has(trait)


def kinds_with(trait: Trait) -> list[str]:
    return sorted(k for k, d in OPS.items() if d.has(trait))


# ---- helpers for shape rules ------------------------------------------------------------

def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def need(cond: bool, what: str, hint: str | None = None) -> None:
    if not cond:
        raise OpError(what, hint)


def rank_is(t: TensorType, rank: int, role: str) -> None:
    need(t.rank == rank, f"{role} must have rank {rank}, got shape {fmt_shape(t.shape)}")


def int_list(attrs: dict, name: str, n: int, lo: int) -> list[int]:
    """The int-list attribute `name`, checked to have `n` entries each >= `lo`."""
    v = attrs[name]
    need(len(v) == n and all(x >= lo for x in v), f"{name} must be {n} integers >= {lo}, got {v}")
    return v


def axis_attr(attrs: dict, name: str, rank: int) -> int:
    a = attrs[name]
    need(0 <= a < rank, f"{name} {a} is out of range for rank {rank}", "axes are non-negative")
    return a


def same_dtype(ts: list[TensorType]) -> None:
    dtypes = sorted({t.dtype for t in ts})
    need(len(dtypes) == 1, f"operand dtypes differ: {', '.join(dtypes)}")


def window_out(size: int, k: int, stride: int, dilation: int, pad_begin: int, pad_end: int,
               ceil_mode: bool = False) -> int:
    """Output length of a sliding window (conv or pool), PyTorch's rule.

    With ceil_mode a partial last window counts, but only if it starts inside the input or
    the begin padding.
    """
    span = size + pad_begin + pad_end - dilation * (k - 1) - 1
    need(span >= 0, f"window of {k} (dilation {dilation}) is larger than the padded input "
         f"({size} + {pad_begin} + {pad_end})")
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def broadcast(*shapes: Shape) -> Shape:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise OpError("shapes " + " and ".join(fmt_shape(s) for s in shapes) + " do not broadcast") from None


def same_shape(ts, a) -> Shape:
    return ts[0].shape


# ---- integer forms: operand quantization (docs/quantization.md) ---------------------------

WEIGHT_DTYPES = ("i8", "i4", "i2", "i1")


def act_q(t: TensorType, role: str) -> None:
    got = "without quant" if t.quant is None else "per-channel" if t.quant.per_channel else "per-tensor"
    need(t.dtype == "i8" and got == "per-tensor", f"{role} must be i8 with per-tensor quant, got {t.dtype} {got}",
         "run quantize-int8 to produce integer IR")


def weight_q(t: TensorType) -> None:
    q = t.quant
    need(t.dtype in WEIGHT_DTYPES and q is not None and q.axis == 0 and not any(q.zero_point),
         f"weight must be {'/'.join(WEIGHT_DTYPES)} quantized per output channel (axis 0, zp 0)")


def bias_q(t: TensorType, x: TensorType, w: TensorType) -> None:
    q = t.quant
    need(t.dtype == "i32" and q is not None and q.axis == 0 and not any(q.zero_point),
         "bias must be i32 quantized per channel (axis 0, zp 0)")
    want = quant.bias_params(x.quant, w.quant).scale
    need(all(math.isclose(s, w_, rel_tol=1e-6) for s, w_ in zip(q.scale, want)),
         "bias scales are not input scale x weight scales", "requantize the bias after changing a scale")


def int_layer(ts, a) -> None:
    act_q(ts[0], "input")
    weight_q(ts[1])
    if len(ts) == 3:
        bias_q(ts[2], ts[0], ts[1])


def int_all(ts, a) -> None:
    for i, t in enumerate(ts):
        act_q(t, f"operand {i}")


def int_checked_by_shape_rule(ts, a) -> None:
    """The int8 form's operands are checked by the op's shape rule (compressed forms)."""


def is_act_i8(t: TensorType) -> bool:
    return t.dtype == "i8" and t.quant is not None and not t.quant.per_channel


def is_int_form(kind: str, operand_types: list[TensorType]) -> bool:
    """True for the int8 form of `kind`: by default when its first operand is quantized; ops that
    exist only as int8 forms always; an op's own `int_form` rule otherwise. Integer tensors
    without quant are plain integers."""
    d = op_def(kind)
    if d.int_form is not None:
        return d.int_form(operand_types)
    return d.has(Trait.INT_ONLY) or (bool(operand_types) and operand_types[0].quant is not None)


def check_result_quant(kind: str, operand_types: list[TensorType], result: TensorType) -> None:
    """Raise OpError unless the result of an int8-form op carries the quantization its kind requires."""
    d = op_def(kind)
    if d.result_quant_rule is not None:
        d.result_quant_rule(operand_types, result)
        return
    if result.dtype == "f32" or not is_int_form(kind, operand_types):
        return
    act_q(result, "result")
    if d.has(Trait.SAME_QUANT):
        need(result.quant == operand_types[0].quant, "result quant differs from the input's",
             f"{kind} keeps its input's quantization")


# ---- checks and the public entry points ---------------------------------------------------

def type_name(t) -> str:
    return str(t) if get_origin(t) else t.__name__


def attr_matches(value, t) -> bool:
    """isinstance for attribute schemas: `list[int]` checks elements; bools are not ints;
    floats must be floats (so the text form and the C backends see the same literal)."""
    if get_origin(t) is list:
        (elem,) = get_args(t)
        return isinstance(value, list) and all(attr_matches(v, elem) for v in value)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


def check_act(attrs: dict, d: OpDef) -> None:
    """Raise OpError unless the fused-activation attributes (act and its parameters) agree and
    the op `d` accepts that activation."""
    act = attrs.get("act")
    params = sorted(k for k in ACT_ATTRS if k != "act" and k in attrs)
    if act is None:
        need(not params, f"{', '.join(params)} given without act")
        return
    a = ACTIVATIONS.get(act)
    fusable = [k for k, x in ACTIVATIONS.items() if d.accepts_act(x)]
    need(a is not None and d.accepts_act(a), f"unknown act {act!r}" if a is None else f"{d.kind} cannot fuse act {act!r}",
         "act is one of " + ", ".join(map(repr, fusable)))
    want = sorted(a.fused)
    need(params == want, f"act {act!r} takes attributes [{', '.join(want)}], got [{', '.join(params)}]")
    OPS[act].infer([TensorType((1,))], a.params_of(attrs, fused=True))   # the parameters' values
    if act == "clamp":
        need(attrs["act_min"] <= attrs["act_max"], f"act_min {attrs['act_min']} > act_max {attrs['act_max']}")


def check_signature(kind: str, n_operands: int, attrs: dict) -> OpDef:
    """Check the kind, operand count and attribute names/types; return the op's definition."""
    d = op_def(kind)
    need(d.min_operands <= n_operands and (d.max_operands is None or n_operands <= d.max_operands),
         f"takes {d.arity()} operands, got {n_operands}")
    fusable = d.has(Trait.FUSABLE)
    schema = {**d.attrs, **(ACT_ATTRS if fusable else {})}
    for name, value in attrs.items():
        if name not in schema:
            hint = "act is only allowed on " + ", ".join(kinds_with(Trait.FUSABLE)) if name in ACT_ATTRS \
                else f"{kind} takes: {', '.join(sorted(schema)) or 'no attributes'}"
            raise OpError(f"unknown attribute '{name}'", hint)
        need(attr_matches(value, schema[name]),
             f"attribute '{name}' must be {type_name(schema[name])}, got {type(value).__name__} {value!r}")
    missing = [k for k in d.required if k not in attrs]
    need(not missing, f"missing attribute {', '.join(missing)}")
    if fusable:
        check_act(attrs, d)
    return d


def infer_type(kind: str, operand_types: list[TensorType], attrs: dict) -> TensorType:
    """The result type of `kind` applied to operands of these types (raises OpError)."""
    d = check_signature(kind, len(operand_types), attrs)
    if d.result_type is not None:
        return d.result_type(operand_types, attrs)
    shape = d.infer(operand_types, attrs)
    if d.operand_rule is not None:
        d.operand_rule(operand_types, attrs)
    elif is_int_form(kind, operand_types):
        need(d.int_operands is not None, f"{kind} has no integer form",
             "quantize-int8 lowers it (batch_norm to a depthwise conv, activations to lut)")
        d.int_operands(operand_types, attrs)
    dtype = d.dtype_rule(operand_types) if d.dtype_rule else d.dtype or operand_types[0].dtype
    return TensorType(tuple(int(s) for s in shape), dtype)


def macs(op: Op) -> int:
    """Multiply-accumulates of one op (0 for ops without any)."""
    d = op_def(op.kind)
    return d.macs([v.type for v in op.operands], op.result.type) if d.macs else 0


def conv_macs(ts, result) -> int:
    return result.numel * math.prod(ts[1].shape[1:])


def linear_macs(ts, result) -> int:
    return result.numel * ts[1].shape[1]


def keeps_batch_unary(a, types, flags, result) -> bool:
    """Per-sample ops whose only batched operand is the first (layers, activations, pools)."""
    return flags[0] and not any(flags[1:])


def keeps_batch_broadcast(a, types, flags, result) -> bool:
    """Elementwise with broadcasting: batched operands have the result's rank, the others
    broadcast along the batch axis."""
    r = result.rank
    return all(t.rank == r if f else (t.rank < r or t.shape[0] == 1) for t, f in zip(types, flags))

