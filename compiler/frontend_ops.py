"""Lowering of aten ops to tinyc IR: a table from aten op name to a small function.

Each lowering gets the `Builder` (positioned at the fx node being lowered) and the
node's arguments bound to the op schema's names, with defaults filled in. Tensor
arguments arrive as a `Value` (an activation), a `ConstRef` (a parameter, buffer or
folded constant) or a Python number; `b.value(...)` turns any of them into an operand.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Callable, NoReturn

import numpy as np
import torch

from tinyc.errors import FrontendError
from tinyc.ir import Graph, Op, TensorType, Value, unique_name
from tinyc.ops import ACTIVATIONS, OpError, Trait, infer_type, kinds_with

OPS_HINT = ("supported ops: see `tinyc ops` or docs/ir.md; rewrite this part of the model "
            "with supported ops, or file an issue")
TOKENS_HINT = ("tinyc reads integer (token id) tensors only as embedding indices (nn.Embedding, weight[ids], "
               "index_select), through reshapes, and converted to float with x.float()")


# ---------------------------------------------------------------- building blocks

@dataclass(eq=False)
class ConstRef:
    """A constant not yet in the graph (parameter, buffer, folded result).

    It becomes a `const` op only when first used as an operand, so constants consumed
    only by folding (W in t(W), a conv1d weight before its reshape) never reach the IR.
    `transpose_of` remembers t(W) so matmul(x, t(W)) can become linear(x, W).
    """

    name: str
    array: np.ndarray
    transpose_of: "ConstRef | None" = None

    def place(self, b: "Builder", v: Value) -> Value:
        """The operand that stands for this constant once its const op `v` is in the graph; a
        subclass may add ops reading it (tinyc.frontend_quantized: a model's quantized weights)."""
        return v

    def transposed(self) -> "ConstRef":
        """W^T of a 2-D constant, one per constant however often it is used."""
        if self.transpose_of is None:
            self.transpose_of = ConstRef(f"{self.name}_t", np.ascontiguousarray(self.array.T), self)
        return self.transpose_of


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name) or "v"


class Builder:
    """Accumulates the IR graph; knows the fx node being lowered (for names, loc, errors)."""

    def __init__(self, name: str):
        self.name = name
        self.inputs: list[Value] = []
        self.consts: list[Op] = []
        self.body: list[Op] = []
        self.taken: set[str] = set()
        # Keyed by id(): the key objects are kept alive in the entries so ids are never reused.
        self.placed: dict[int, tuple[ConstRef, Value]] = {}   # ConstRef -> its const op's value
        self.reshaped: dict[int, tuple[Value, Value]] = {}    # reshape result -> reshape operand
        self.node: torch.fx.Node | None = None
        self.loc: str | None = None

    # ---- names and values
    def unique(self, base: str) -> str:
        return unique_name(sanitize(base), self.taken)

    def add_input(self, name: str, shape, dtype: str = "f32") -> Value:
        v = Value(self.unique(name), TensorType(tuple(shape), dtype))
        self.inputs.append(v)
        return v

    def value(self, x, tag: str = "scalar") -> Value:
        """An operand for `x`: a Value as is, a ConstRef placed as a const op, a number as a scalar const."""
        if isinstance(x, Value):
            return x
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            x = self.scalar(x, tag)
        if isinstance(x, ConstRef):
            return self._place(x)
        self.unsupported(f"a {type(x).__name__} where a tensor is expected")

    def scalar(self, x: float, tag: str) -> ConstRef:
        return ConstRef(f"{self.node.name}.{tag}", np.array(x, dtype=np.float32))

    def _place(self, ref: ConstRef) -> Value:
        if id(ref) not in self.placed:
            array = ref.array
            if array.dtype != np.float32:
                if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
                    self.unsupported(f"a constant of dtype {array.dtype}")
                array = array.astype(np.float32)  # ints/bools/f64 meet f32 activations: torch promotes to f32
            array = np.require(array, requirements="C")  # (ascontiguousarray would make 0-d arrays 1-d)
            v = Value(self.unique(ref.name), TensorType(tuple(array.shape)))
            self.consts.append(Op("const", [], v, {"value": array}))
            self.placed[id(ref)] = (ref, ref.place(self, v))
        return self.placed[id(ref)][1]

    def emit(self, kind: str, operands: list[Value], shape=None, attrs: dict | None = None,
             tag: str | None = None) -> Value:
        """Append an op; its type comes from the registry's type inference (a `shape` the lowering
        computed must agree). The node's main result is named after the fx node; helpers get `_tag`."""
        base = self.node.name if tag is None else f"{self.node.name}_{tag}"
        attrs = dict(attrs or {})
        try:
            t = infer_type(kind, [v.type for v in operands], attrs)
        except OpError as e:
            ints = [v for v in operands if v.type.dtype == "i32"]
            if ints:   # token ids (an int32/int64 model input) where a float is expected
                raise FrontendError(f"{self.node.target} reads the integer tensor %{ints[0].name} (token ids) "
                                    "as a number", where=self.where(), hint=TOKENS_HINT) from None
            raise FrontendError(f"internal error: the {kind} built for {self.node.target} does not type-check: {e}",
                                where=self.where(), hint="please file an issue with this model") from None
        if shape is not None and tuple(int(d) for d in shape) != t.shape:
            raise FrontendError(f"internal error: tinyc computed shape {list(shape)} for the {kind} of "
                                f"{self.node.target}, type inference {list(t.shape)}", where=self.where(),
                                hint="please file an issue with this model")
        v = Value(self.unique(clean_node_name(base)), t)
        self.body.append(Op(kind, list(operands), v, attrs, self.loc))
        return v

    def reshape(self, x: Value, shape, tag: str | None = None) -> Value:
        """A reshape; a reshape of a reshape reads the original (conv1d -> pool1d chains)."""
        shape = [int(d) for d in shape]
        x = self.reshaped.get(id(x), (x, x))[1]
        if list(x.type.shape) == shape:
            return x
        y = self.emit("reshape", [x], shape, {"shape": shape}, tag)
        self.reshaped[id(y)] = (y, x)
        return y

    # ---- facts about the node
    def out_shape(self) -> tuple[int, ...]:
        val = self.node.meta["val"]
        return tuple(int(d) for d in val.shape)

    def unsupported(self, form: str, hint: str | None = None) -> NoReturn:
        raise FrontendError(f"unsupported form of {self.node.target}: {form}",
                            where=self.where(), hint=hint or OPS_HINT)

    def where(self) -> str:
        return f"node {self.node.name}" + (f" ({self.loc})" if self.loc else "")

    def graph(self, outputs: list[Value]) -> Graph:
        g = Graph(self.name, self.inputs, outputs, self.consts + self.body)
        g.remove_dead()
        return g


def clean_node_name(name: str) -> str:
    """Shorter value names for aten spellings (the IR op kind says the rest)."""
    name = name.replace("_native_batch_norm_legit_no_training", "batch_norm")
    return name.replace("_with_indices", "")


# ---------------------------------------------------------------- shape helpers

def _ints(v, n: int) -> list[int]:
    """An int or a list of 1 or n ints (aten's IntArrayRef conventions) as n ints."""
    if isinstance(v, int):
        return [v] * n
    v = [int(d) for d in v]
    return v * n if len(v) == 1 else v


def _axis(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _shape(v: Value) -> tuple[int, ...]:
    return v.type.shape


def _broadcast(*shapes) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(*shapes))


def _conv_out(size, k, s, lo, hi, d) -> int:
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


def _pool_out(size, k, s, p, d, ceil) -> int:
    """PyTorch's pooling output size (symmetric padding p)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input
        out -= 1
    return out


def _need_rank(b: Builder, x: Value, rank: int, what: str) -> None:
    if x.type.rank != rank:
        b.unsupported(f"{what} on a rank-{x.type.rank} tensor (expected rank {rank}, batch included)")


# ---------------------------------------------------------------- convolution

def _conv(b: Builder, x, w, bias, stride, padding, dilation, groups) -> Value:
    """conv1d/conv2d: 1-D goes through conv2d on [N,C,1,L] (reshapes are free)."""
    x = b.value(x)
    wshape = w.array.shape if isinstance(w, ConstRef) else _shape(w)
    nd = len(wshape) - 2
    if nd not in (1, 2):
        b.unsupported(f"{nd}-D convolution")
    _need_rank(b, x, nd + 2, f"conv{nd}d")
    ks = list(wshape[2:])
    stride, dilation = _ints(stride, nd), _ints(dilation, nd)
    if isinstance(padding, str):  # padding='same' / 'valid'
        if padding == "valid":
            lo = hi = [0] * nd
        else:  # PyTorch 'same': any odd extra pixel goes after
            total = [d * (k - 1) for d, k in zip(dilation, ks)]
            lo = [t // 2 for t in total]
            hi = [t - t // 2 for t in total]
    else:
        lo = hi = _ints(padding, nd)
    if nd == 1:
        n, c, length = _shape(x)
        x = b.reshape(x, [n, c, 1, length], tag="in")
        if isinstance(w, ConstRef):  # same parameter, 2-D shape
            w = replace(w, array=w.array.reshape(wshape[0], wshape[1], 1, ks[0]), transpose_of=None)
        else:
            w = b.reshape(w, [wshape[0], wshape[1], 1, ks[0]], tag="w2d")
        ks, stride, dilation, lo, hi = [1] + ks, [1] + stride, [1] + dilation, [0] + lo, [0] + hi
    w = b.value(w, "weight")
    operands = [x, w] + ([b.value(bias, "bias")] if bias is not None else [])
    n, _, h, wd = _shape(x)
    shape = [n, wshape[0]] + [_conv_out(s, k, st, l, r, d) for s, k, st, l, r, d
                              in zip((h, wd), ks, stride, lo, hi, dilation)]
    attrs = {"stride": stride, "padding": [lo[0], lo[1], hi[0], hi[1]], "dilation": dilation,
             "groups": int(groups)}
    y = b.emit("conv2d", operands, shape, attrs, tag="2d" if nd == 1 else None)
    return b.reshape(y, [shape[0], shape[1], shape[3]]) if nd == 1 else y


def conv_nd(b, a):
    return _conv(b, a["input"], a["weight"], a["bias"], a["stride"], a["padding"],
                 a["dilation"], a["groups"])


def convolution(b, a):
    if a["transposed"]:   # ConvTranspose: the spatial family's lowering (tinyc.frontend_spatial imports this module)
        from tinyc.frontend_spatial import conv_transpose
        return conv_transpose(b, a)
    return conv_nd(b, a)


# ---------------------------------------------------------------- linear algebra

def linear(b, a):
    x, w = b.value(a["input"]), b.value(a["weight"], "weight")
    operands = [x, w] + ([b.value(a["bias"], "bias")] if a["bias"] is not None else [])
    return b.emit("linear", operands, _shape(x)[:-1] + (_shape(w)[0],))


def _matmul(b: Builder, lhs, rhs, bias=None) -> Value:
    """x @ W with a constant 2-D W is a linear layer (weight W^T); otherwise a matmul."""
    if isinstance(rhs, ConstRef) and rhs.array.ndim == 2:
        w = rhs.transposed()
        operands = [b.value(lhs), b.value(w)]
        if isinstance(bias, ConstRef) and bias.array.shape == (w.array.shape[0],):
            return b.emit("linear", operands + [b.value(bias)], _shape(operands[0])[:-1] + w.array.shape[:1])
        y = b.emit("linear", operands, _shape(operands[0])[:-1] + w.array.shape[:1],
                   tag=None if bias is None else "mm")
    else:
        x, y2 = b.value(lhs), b.value(rhs)
        if x.type.rank < 2 or y2.type.rank < 2:
            b.unsupported("matmul with a 1-D operand", "reshape the vector to a 1xK or Kx1 matrix")
        (m, _), (_, n) = _shape(x)[-2:], _shape(y2)[-2:]
        batch = _broadcast(_shape(x)[:-2], _shape(y2)[:-2])
        y = b.emit("matmul", [x, y2], batch + (m, n), tag=None if bias is None else "mm")
    if bias is None:
        return y
    bv = b.value(bias, "self")
    return b.emit("add", [y, bv], _broadcast(_shape(y), _shape(bv)))


def matmul(b, a):
    return _matmul(b, a["self"], a["other"] if "other" in a else a["mat2"])


def addmm(b, a):
    if a["beta"] != 1 or a["alpha"] != 1:
        b.unsupported("addmm with beta or alpha other than 1")
    return _matmul(b, a["mat1"], a["mat2"], bias=a["self"])


# ---------------------------------------------------------------- normalization

def batch_norm(b, a):
    if a.get("training"):
        b.unsupported("batch norm in training mode (batch statistics)", "call model.eval() before exporting")
    x = b.value(a["input"])
    if a["running_mean"] is None or a["running_var"] is None:
        b.unsupported("batch norm without running statistics (track_running_stats=False)")
    c = _shape(x)[1]
    weight = a["weight"] if a["weight"] is not None else ConstRef(f"{b.node.name}.weight", np.ones(c, np.float32))
    bias = a["bias"] if a["bias"] is not None else ConstRef(f"{b.node.name}.bias", np.zeros(c, np.float32))
    operands = [x, b.value(a["running_mean"]), b.value(a["running_var"]), b.value(weight), b.value(bias)]
    y = b.emit("batch_norm", operands, _shape(x), {"eps": float(a["eps"])})
    return _first_of(b, y)


def _first_of(b: Builder, y):
    """Ops returning (out, extras...) (saved BN stats, pool indices): only `out` has an IR equivalent."""
    val = b.node.meta["val"]
    return (y,) + (None,) * (len(val) - 1) if isinstance(val, (tuple, list)) else y


# ---------------------------------------------------------------- activations

def unary(kind: str) -> Callable:
    def lower(b, a):
        x = b.value(a["self"])
        return b.emit(kind, [x], _shape(x))
    return lower


def gelu(b, a):
    x = b.value(a["self"])
    return b.emit("gelu", [x], _shape(x), {"approximate": str(a["approximate"])})


def _clamp(b: Builder, x, lo, hi) -> Value:
    x = b.value(x)
    lo = -float("inf") if lo is None else float(lo)
    hi = float("inf") if hi is None else float(hi)
    return b.emit("clamp", [x], _shape(x), {"min": lo, "max": hi})


def clamp(b, a):
    return _clamp(b, a["self"], a["min"], a["max"])


def hardtanh(b, a):
    return _clamp(b, a["self"], a["min_val"], a["max_val"])


def relu6(b, a):
    return _clamp(b, a["self"], 0.0, 6.0)


def leaky_relu(b, a):
    x = b.value(a["self"])
    return b.emit("leaky_relu", [x], _shape(x), {"alpha": float(a["negative_slope"])})


def softmax(b, a):
    if a.get("dtype") not in (None, torch.float32) or a.get("half_to_float"):
        b.unsupported("softmax with a dtype conversion")
    x = b.value(a["self"])
    return b.emit("softmax", [x], _shape(x), {"axis": _axis(a["dim"], x.type.rank)})


# ---------------------------------------------------------------- elementwise arithmetic

def binary(kind: str, reverse: bool = False) -> Callable:
    """add/sub/mul/div, Tensor and Scalar forms; `alpha` scales `other`; rsub swaps sides."""
    def lower(b, a):
        if a.get("rounding_mode") is not None:
            b.unsupported(f"division with rounding_mode={a['rounding_mode']!r}")
        xtag, ytag = ("other", "self") if reverse else ("self", "other")  # rsub: other - alpha*self
        x, y = a[xtag], a[ytag]
        alpha = a.get("alpha", 1)
        if alpha != 1:
            y = _scaled(b, y, alpha, ytag)
        xv, yv = b.value(x, xtag), b.value(y, ytag)
        return b.emit(kind, [xv, yv], _broadcast(_shape(xv), _shape(yv)))
    return lower


def _scaled(b: Builder, y, alpha, tag: str):
    """alpha * y: folded for constants, a mul op for activations."""
    if isinstance(y, (int, float)):
        return y * alpha
    if isinstance(y, ConstRef):
        return ConstRef(f"{b.node.name}.{tag}", (y.array * np.float32(alpha)).astype(np.float32))
    return b.emit("mul", [y, b.value(float(alpha), "alpha")], _shape(y), tag="alpha")


def neg(b, a):
    x = b.value(a["self"])
    return b.emit("mul", [x, b.value(-1.0, "minus_one")], _shape(x))


# ---------------------------------------------------------------- pooling

def _pool2d(b: Builder, kind: str, x: Value, kernel, stride, padding, dilation, ceil_mode,
            count_include_pad=True, tag=None) -> Value:
    kernel = _ints(kernel, 2)
    stride = _ints(stride, 2) if stride not in (None, []) else kernel  # empty stride = kernel
    padding, dilation = _ints(padding, 2), _ints(dilation, 2)
    n, c, h, w = _shape(x)
    shape = [n, c] + [_pool_out(s, k, st, p, d, ceil_mode)
                      for s, k, st, p, d in zip((h, w), kernel, stride, padding, dilation)]
    attrs = {"kernel": kernel, "stride": stride, "padding": padding + padding, "ceil_mode": bool(ceil_mode)}
    if kind == "max_pool2d":
        attrs["dilation"] = dilation
    else:
        attrs["count_include_pad"] = bool(count_include_pad)
    return b.emit(kind, [x], shape, attrs, tag)


def _pool(b: Builder, kind: str, nd: int, a: dict) -> Value:
    x = b.value(a["self"])
    _need_rank(b, x, nd + 2, f"{kind[:-2]}{nd}d")
    if a.get("divisor_override") is not None:
        b.unsupported("avg pool with divisor_override")
    args = dict(kernel=a["kernel_size"], stride=a["stride"], padding=a["padding"],
                dilation=a.get("dilation", 1), ceil_mode=a["ceil_mode"],
                count_include_pad=a.get("count_include_pad", True))
    if nd == 2:
        y = _pool2d(b, kind, x, **args)
    else:  # 1-D: pool over [N,C,1,L] with a 1xk window
        one = lambda v, pad: [pad] + _ints(v, 1)
        args.update(kernel=one(args["kernel"], 1),
                    stride=one(args["stride"], 1) if args["stride"] not in (None, []) else None,
                    padding=one(args["padding"], 0), dilation=one(args["dilation"], 1))
        n, c, length = _shape(x)
        y = _pool2d(b, kind, b.reshape(x, [n, c, 1, length], tag="in"), tag="2d", **args)
        y = b.reshape(y, [n, c, _shape(y)[3]])
    return _first_of(b, y)


def pool(kind: str, nd: int) -> Callable:
    return lambda b, a: _pool(b, kind, nd, a)


def adaptive_avg_pool(nd: int) -> Callable:
    """Output 1 (global pooling) is a mean; an exact divisor is a plain avg pool."""
    def lower(b, a):
        x = b.value(a["self"])
        _need_rank(b, x, nd + 2, f"adaptive_avg_pool{nd}d")
        sizes, outs = list(_shape(x)[2:]), _ints(a["output_size"], nd)
        if all(o in (1, s) for s, o in zip(sizes, outs)):
            axes = [2 + i for i, (s, o) in enumerate(zip(sizes, outs)) if o == 1 and s != 1]
            if not axes:
                return x
            shape = [1 if i in axes else d for i, d in enumerate(_shape(x))]
            return b.emit("mean", [x], shape, {"axes": axes, "keepdim": True})
        if any(s % o for s, o in zip(sizes, outs)):
            b.unsupported(f"adaptive pooling from {sizes} to {outs} (uneven windows)",
                          "use an output size that divides the input size, or 1")
        kernel = [s // o for s, o in zip(sizes, outs)]
        fake = {"self": x, "kernel_size": kernel, "stride": kernel, "padding": 0, "ceil_mode": False}
        return _pool(b, "avg_pool2d", nd, fake)
    return lower


def mean(b, a):
    if a.get("dtype") not in (None, torch.float32):
        b.unsupported("mean with a dtype conversion")
    x = b.value(a["self"])
    rank = x.type.rank
    dims = a.get("dim")
    axes = sorted({_axis(d, rank) for d in dims}) if dims else list(range(rank))
    keep = bool(a.get("keepdim", False))
    shape = [1 if i in axes else d for i, d in enumerate(_shape(x)) if keep or i not in axes]
    return b.emit("mean", [x], shape, {"axes": axes, "keepdim": keep})


# ---------------------------------------------------------------- shape ops

def reshape(b, a):
    """view/reshape/flatten/squeeze/unsqueeze: the result shape is in the node's fake tensor."""
    return b.reshape(b.value(a["self"]), b.out_shape())


def _permute(b: Builder, x, perm) -> Value:
    x = b.value(x)
    perm = [_axis(p, x.type.rank) for p in perm]
    if perm == sorted(perm):
        return x
    return b.emit("transpose", [x], [_shape(x)[p] for p in perm], {"perm": perm})


def permute(b, a):
    return _permute(b, a["self"], a["dims"])


def transpose(b, a):
    rank = b.value(a["self"]).type.rank
    perm = list(range(rank))
    i, j = _axis(a["dim0"], rank), _axis(a["dim1"], rank)
    perm[i], perm[j] = perm[j], perm[i]
    return _permute(b, a["self"], perm)


def t(b, a):
    rank = b.value(a["self"]).type.rank
    return _permute(b, a["self"], [1, 0] if rank == 2 else list(range(rank)))


def cat(b, a):
    xs = [b.value(x, f"tensors{i}") for i, x in enumerate(a["tensors"])]
    xs = [x for x in xs if x.type.numel or x.type.rank > 1]  # torch skips legacy empty 1-D tensors
    axis = _axis(a["dim"], xs[0].type.rank)
    shape = list(_shape(xs[0]))
    shape[axis] = sum(_shape(x)[axis] for x in xs)
    return b.emit("cat", xs, shape, {"axis": axis})


def pad(b, a):
    mode = a.get("mode", "constant")
    if mode in ("reflect", "replicate", "circular"):   # copies of x's own elements (tinyc.frontend_tensor)
        from tinyc.frontend_tensor import pad_by_copies
        return pad_by_copies(b, b.value(a["self"]), [int(v) for v in a["pad"]], mode)
    if mode != "constant":
        b.unsupported(f"padding mode {mode!r}", "tinyc pads with a constant, or with mode 'reflect', 'replicate' "
                      "or 'circular'")
    x = b.value(a["self"])
    p = [int(v) for v in a["pad"]]
    if any(v < 0 for v in p):
        b.unsupported("negative padding (cropping)")
    rank = x.type.rank
    begin, end = [0] * rank, [0] * rank
    for i in range(len(p) // 2):  # torch lists (before, after) pairs from the last dim backwards
        begin[rank - 1 - i], end[rank - 1 - i] = p[2 * i], p[2 * i + 1]
    value = a.get("value")
    shape = [d + lo + hi for d, lo, hi in zip(_shape(x), begin, end)]
    return b.emit("pad", [x], shape, {"pads": begin + end, "value": float(value or 0.0)})


# ---------------------------------------------------------------- no-ops

def identity(b, a):
    return a["self"] if "self" in a else a["input"]


def dropout(b, a):
    if a["train"]:
        b.unsupported("dropout in training mode", "call model.eval() before exporting")
    return _first_of(b, a["input"])


def to_copy(b, a):
    x = a["self"]
    if isinstance(x, Value) and x.type.dtype == "i32":   # token ids (tinyc.frontend_tokens)
        from tinyc.frontend_tokens import token_to_copy
        return token_to_copy(b, x, a.get("dtype"))
    if a.get("dtype") not in (None, torch.float32):
        b.unsupported(f"conversion to {a['dtype']}", "tinyc imports float32 models; quantize with tinyc's passes")
    return a["self"]


def no_result(b, a):
    return None  # runtime asserts on metadata: nothing to compute


# ---------------------------------------------------------------- the table

def _table() -> dict[str, Callable]:
    t_: dict[str, Callable] = {}

    def add(names: str, fn: Callable):
        for n in names.split():
            t_["aten." + n] = fn

    add("conv1d.default conv2d.default conv1d.padding conv2d.padding", conv_nd)
    add("convolution.default", convolution)
    add("linear.default", linear)
    add("matmul.default mm.default bmm.default", matmul)
    add("addmm.default", addmm)
    add("batch_norm.default _native_batch_norm_legit_no_training.default "
        "native_batch_norm.default _native_batch_norm_legit.default "
        "_native_batch_norm_legit_functional.default", batch_norm)  # training forms are rejected
    for kind, act in ACTIVATIONS.items():   # the registry's activations: aten.<kind>.default
        if not act.params and hasattr(torch.ops.aten, kind):   # (signum is aten.sign: frontend_math)
            add(f"{kind}.default", unary(kind))
    add("gelu.default", gelu)
    add("clamp.default", clamp)
    add("hardtanh.default", hardtanh)
    add("relu6.default", relu6)
    add("leaky_relu.default", leaky_relu)
    add("softmax.int _softmax.default", softmax)
    for kind in kinds_with(Trait.ELEMENTWISE):   # add, sub, mul, div: aten.<kind>.Tensor / .Scalar
        add(f"{kind}.Tensor {kind}.Scalar", binary(kind))
    add("div.Tensor_mode div.Scalar_mode", binary("div"))  # rejected unless rounding_mode is None
    add("rsub.Tensor rsub.Scalar", binary("sub", reverse=True))
    add("neg.default", neg)
    add("max_pool2d.default max_pool2d_with_indices.default", pool("max_pool2d", 2))
    add("max_pool1d.default max_pool1d_with_indices.default", pool("max_pool2d", 1))
    add("avg_pool2d.default", pool("avg_pool2d", 2))
    add("avg_pool1d.default", pool("avg_pool2d", 1))
    add("adaptive_avg_pool2d.default _adaptive_avg_pool2d.default", adaptive_avg_pool(2))
    add("adaptive_avg_pool1d.default", adaptive_avg_pool(1))
    add("mean.dim mean.default", mean)
    add("view.default reshape.default _unsafe_view.default flatten.using_ints squeeze.dim "
        "squeeze.dims squeeze.default unsqueeze.default view_copy.default", reshape)
    add("permute.default", permute)
    add("transpose.int", transpose)
    add("t.default", t)
    add("cat.default", cat)
    add("constant_pad_nd.default pad.default", pad)
    add("clone.default alias.default detach.default lift_fresh_copy.default contiguous.default", identity)
    add("dropout.default feature_dropout.default native_dropout.default", dropout)
    add("_to_copy.default to.dtype", to_copy)
    add("_assert_tensor_metadata.default", no_result)
    return t_


LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = _table()
# Lowerings that hand their input through: applied even to constants (instead of folding) so a
# lifted constant keeps its own name.
PASSTHROUGH = frozenset({identity, dropout, to_copy, no_result})
