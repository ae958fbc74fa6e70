"""tinyc graph IR: typed SSA values, single-result ops with attributes, constants as numpy arrays.

A `Graph` is a straight-line list of ops in definition order. Every value is
defined exactly once, either as a graph input or as the result of an op.
Weights are `const` ops whose `value` attribute holds the numpy array; the
textual form prints them in a resource section at the end of the dump.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

# dtype name -> numpy storage dtype. Sub-byte types (i4, i2, i1, u4, u2, u1) are stored
# unpacked, one element per int8, and packed only by the backends.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "i32": np.dtype(np.int32),
    "i16": np.dtype(np.int16),
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i4": np.dtype(np.int8),
    "i2": np.dtype(np.int8),
    "i1": np.dtype(np.int8),
    "u4": np.dtype(np.uint8),   # unsigned sub-byte types: codebook indices, bit-packed signs
    "u2": np.dtype(np.uint8),
    "u1": np.dtype(np.uint8),
}
DTYPE_BITS = {"f32": 32, "i32": 32, "i16": 16, "i8": 8, "u8": 8, "i4": 4, "i2": 2, "i1": 1,
              "u4": 4, "u2": 2, "u1": 1}


def dtype_of(array: np.ndarray) -> str:
    """The IR dtype name of a numpy array (unpacked storage types only)."""
    for name in ("f32", "i32", "i16", "i8", "u8"):
        if array.dtype == DTYPES[name]:
            return name
    raise TypeError(f"no tinyc dtype for numpy dtype {array.dtype}")


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization real = scale * (q - zero_point); per tensor or per channel along `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self):
        if len(self.scale) != len(self.zero_point):
            raise ValueError("quantization scale and zero_point differ in length")
        if self.axis is None and len(self.scale) != 1:
            raise ValueError("per-tensor quantization needs exactly one scale")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str = "f32"
    quant: QuantParams | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes in memory, packed for sub-byte types."""
        return (self.numel * DTYPE_BITS[self.dtype] + 7) // 8

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(int(d) for d in shape), self.dtype, self.quant)


@dataclass(eq=False)
class Value:
    """An SSA value. Identity matters: two Values with one name are a verifier error."""

    name: str
    type: TensorType

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Op:
    """A single-result operation. `loc` is the user's source location, e.g. "model.py:12"."""

    kind: str
    operands: list[Value]
    result: Value
    attrs: dict[str, Any] = field(default_factory=dict)
    loc: str | None = None

    @property
    def is_const(self) -> bool:
        return self.kind == "const"

    def __repr__(self) -> str:
        args = ", ".join("%" + v.name for v in self.operands)
        return f"%{self.result.name} = {self.kind}({args})"


@dataclass(eq=False)
class Graph:
    name: str
    inputs: list[Value]
    outputs: list[Value]
    ops: list[Op] = field(default_factory=list)

    # ---- queries -------------------------------------------------------
    def producers(self) -> dict[int, Op]:
        """id(value) -> op defining it."""
        return {id(op.result): op for op in self.ops}

    def users(self) -> dict[int, list[Op]]:
        """id(value) -> ops using it (in order; an op using a value twice is listed twice)."""
        out: dict[int, list[Op]] = {}
        for op in self.ops:
            for v in op.operands:
                out.setdefault(id(v), []).append(op)
        return out

    def const_ops(self) -> Iterator[Op]:
        return (op for op in self.ops if op.is_const)

    def compute_ops(self) -> Iterator[Op]:
        return (op for op in self.ops if not op.is_const)

    def const_value(self, v: Value) -> np.ndarray | None:
        """The array behind `v` if it is defined by a const op, else None."""
        for op in self.ops:
            if op.result is v:
                return op.attrs["value"] if op.is_const else None
        return None

    def value_names(self) -> set[str]:
        return {v.name for v in self.inputs} | {op.result.name for op in self.ops}

    # ---- edits ---------------------------------------------------------
    def replace_uses(self, old: Value, new: Value) -> None:
        """Point every use of `old` (operands and graph outputs) at `new`."""
        for op in self.ops:
            op.operands = [new if v is old else v for v in op.operands]
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_dead(self) -> None:
        """Drop ops whose result nobody uses (consts included), repeatedly."""
        live = {id(v) for v in self.outputs}
        kept = []
        for op in reversed(self.ops):
            if id(op.result) in live:
                kept.append(op)
                live.update(id(v) for v in op.operands)
        self.ops = kept[::-1]

    def fresh_name(self, base: str) -> str:
        return unique_name(base, self.value_names())

    def add_const(self, base: str, array: np.ndarray, *, before: Op | None = None,
                  quant: QuantParams | None = None, dtype: str | None = None) -> Value:
        """Insert a const op (before `before`, or at the start) and return its value."""
        array = np.require(array, requirements="C")  # keeps 0-d arrays 0-d, unlike ascontiguousarray
        name = self.fresh_name(base)
        v = Value(name, TensorType(tuple(array.shape), dtype or dtype_of(array), quant))
        op = Op("const", [], v, {"value": array})
        idx = self.ops.index(before) if before is not None else 0
        self.ops.insert(idx, op)
        return v

    def copy(self) -> "Graph":
        """Deep copy: new Values and Ops, const arrays copied."""
        vmap: dict[int, Value] = {}

        def cp(v: Value) -> Value:
            if id(v) not in vmap:
                vmap[id(v)] = Value(v.name, v.type)
            return vmap[id(v)]

        inputs = [cp(v) for v in self.inputs]
        ops = []
        for op in self.ops:
            attrs = {k: (a.copy() if isinstance(a, np.ndarray) else _copy_attr(a)) for k, a in op.attrs.items()}
            ops.append(Op(op.kind, [cp(v) for v in op.operands], cp(op.result), attrs, op.loc))
        return Graph(self.name, inputs, [cp(v) for v in self.outputs], ops)


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... whichever is not in `taken`; the choice is added to `taken`."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _copy_attr(a):
    return [_copy_attr(x) for x in a] if isinstance(a, list) else a
