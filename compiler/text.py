"""The IR's text form: `print_graph` writes it, `parse` reads it back (layout in docs/ir.md).

The printed text is canonical: parse(print_graph(g)) prints identically and every
const array comes back bitwise equal, because floats print as shortest round-trip
reprs and weights travel as the hex of their little-endian bytes.
"""
from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from tinyc.errors import ParseError
from tinyc.ir import DTYPES, Graph, Op, QuantParams, TensorType, Value

_NAME = re.compile(r"[A-Za-z0-9_.]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ELIDED_BANNER = ("// weights elided (--elide-weights): this dump cannot be parsed back; "
                  "dump without --elide-weights for a parseable file")


# ---- printing --------------------------------------------------------------

def print_graph(graph: Graph, *, elide_weights: bool = False) -> str:
    """The canonical text of `graph`; with `elide_weights`, a readable dump without weights."""
    args = ", ".join(f"{_value(v)}: {print_type(v.type)}" for v in graph.inputs)
    results = ", ".join(print_type(v.type) for v in graph.outputs)
    lines = [_ELIDED_BANNER] if elide_weights else []
    lines.append(f"graph @{_checked(_NAME, graph.name, 'graph name')}({args}) -> ({results}) {{")
    lines += ["  " + _op(op, elide_weights) for op in graph.ops]
    outputs = ", ".join(_value(v) for v in graph.outputs)
    lines.append(f"  return {outputs}" if outputs else "  return")
    lines.append("}")
    consts = list(graph.const_ops())
    if elide_weights:
        lines += ["", "{-# resources elided #-}"]
    elif consts:
        lines += ["", _resources(consts)]
    return "\n".join(lines) + "\n"


def print_type(t: TensorType) -> str:
    body = "x".join([str(d) for d in t.shape] + [t.dtype])
    return f"tensor<{body}, {_quant(t.quant)}>" if t.quant else f"tensor<{body}>"


def _quant(q: QuantParams) -> str:
    scales = [repr(float(s)) for s in q.scale]
    zps = [str(int(z)) for z in q.zero_point]
    if q.axis is None:
        return f"quant<scale={scales[0]}, zp={zps[0]}>"
    return f"quant<axis={q.axis}, scale=[{', '.join(scales)}], zp=[{', '.join(zps)}]>"


def _checked(pattern: re.Pattern, name: str, what: str) -> str:
    # A name the grammar cannot read back would make an unparseable dump; fail here instead.
    if not pattern.fullmatch(name):
        raise ValueError(f"{what} {name!r} cannot be printed: it must match {pattern.pattern}")
    return name


def _value(v: Value) -> str:
    return "%" + _checked(_NAME, v.name, "value name")


def _op(op: Op, elide_weights: bool) -> str:
    text = f"{_value(op.result)} = {_checked(_IDENT, op.kind, 'op kind')}"
    if op.operands or not op.is_const:
        text += "(" + ", ".join(_value(v) for v in op.operands) + ")"
    attrs = {k: a for k, a in op.attrs.items() if not (op.is_const and k == "value")}
    if attrs:
        text += " {" + ", ".join(_attr(op, k, attrs[k]) for k in sorted(attrs)) + "}"
    text += " : " + print_type(op.result.type)
    if op.loc is not None:
        text += f" loc({json.dumps(op.loc)})"
    if op.is_const and elide_weights:
        text += "  // " + _summary(op)
    return text


def _attr(op: Op, key: str, a) -> str:
    try:
        return f"{_checked(_IDENT, key, 'attribute name')} = {print_attr(a)}"
    except TypeError as e:
        raise TypeError(f"%{op.result.name} = {op.kind}: attribute {key!r}: {e}") from None


def print_attr(a) -> str:
    """Text of an attribute value (bool before int: bool is an int subclass)."""
    if isinstance(a, (bool, np.bool_)):
        return "true" if a else "false"
    if isinstance(a, (int, np.integer)):
        return str(int(a))
    if isinstance(a, (float, np.floating)):
        return repr(float(a))
    if isinstance(a, str):
        return json.dumps(a)
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join(print_attr(x) for x in a) + "]"
    raise TypeError(f"{type(a).__name__} value {a!r} has no text form")


def _summary(op: Op) -> str:
    """Size and range of an elided const, tolerant of broken graphs (it is a debugging aid)."""
    value = op.attrs.get("value")
    if value is None:
        return "no value"
    array = np.asarray(value)
    text = f"{op.result.type.nbytes} bytes"
    if array.size:
        text += f", min {array.min():.4g}, max {array.max():.4g}"
    return text


def _resources(consts: list[Op]) -> str:
    entries = ",\n".join(f'    {op.result.name}: "0x{_hex(op)}"' for op in consts)
    return "{-#\n  resources: {\n" + entries + "\n  }\n#-}"


def _hex(op: Op) -> str:
    t = op.result.type
    storage = DTYPES[t.dtype]
    if "value" not in op.attrs:
        raise ValueError(f"const %{op.result.name} has no value")
    array = np.asarray(op.attrs["value"])
    if array.shape != t.shape or array.dtype.newbyteorder("=") != storage:
        raise ValueError(f"const %{op.result.name}: value is {array.dtype} {array.shape}, "
                         f"but its type {print_type(t)} needs {storage} {t.shape}")
    return array.astype(storage.newbyteorder("<"), copy=False).tobytes().hex().upper()


# ---- parsing ---------------------------------------------------------------

def parse(text: str, filename: str = "<input>") -> Graph:
    """Build the Graph printed in `text`; errors name `filename:line:col`."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, filename) from None
    return _Builder(filename).graph(tree)


def parse_file(path) -> Graph:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ParseError(f"cannot read IR file: {e}", where=str(path)) from None
    return parse(text, filename=str(path))


@functools.lru_cache(maxsize=None)
def _parser() -> Lark:
    return Lark.open("tinyc_ir.lark", rel_to=__file__, parser="lalr", propagate_positions=True)


# -- syntax errors: lark's exception -> "found X, expected one of A, B"

_TERMINAL_NAMES = {
    "GRAPH_NAME": "a graph name like @net", "VALUE": "a value like %x",
    "RES_NAME": "a resource name", "IDENT": "a name", "INT": "an integer", "FLOAT": "a float",
    "SHAPE_DTYPE": "a shape and dtype like 1x16xf32", "STRING": 'a "string"',
    "$END": "end of file",
}


def _syntax_error(e: UnexpectedInput, text: str, filename: str) -> ParseError:
    if isinstance(e, UnexpectedCharacters) and text[e.pos_in_stream] == '"':
        # The string regex failed from its opening quote, which lark reports as an unexpected '"'.
        return ParseError("syntax error: unterminated string (strings end on the same line)",
                          where=f"{filename}:{e.line}:{e.column}")
    if isinstance(e, UnexpectedCharacters):
        found, expected, line, col = _word_at(text, e.pos_in_stream), e.allowed, e.line, e.column
    elif isinstance(e, UnexpectedToken) and e.token.type != "$END":
        found, expected, line, col = _shorten(repr(str(e.token))), e.accepts or e.expected, e.line, e.column
    else:  # end of input: UnexpectedEOF or UnexpectedToken at $END
        expected = e.accepts or e.expected if isinstance(e, UnexpectedToken) else e.expected
        found, (line, col) = "end of file", _end_position(text)
    what = f"syntax error: found {found}, expected {_describe(expected)}"
    return ParseError(what, where=f"{filename}:{line}:{col}")


def _describe(terminals) -> str:
    literals = {t.name: t.pattern.value for t in _parser().terminals if t.pattern.type == "str"}
    names = sorted({_TERMINAL_NAMES.get(t) or f"'{literals.get(t, t)}'" for t in terminals})
    if len(names) > 8:
        names = names[:8] + ["..."]
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


def _word_at(text: str, pos: int) -> str:
    word = re.match(r"[%@]?[\w.]+|\S|", text[pos:pos + 40]).group()
    return _shorten(repr(word))


def _shorten(s: str) -> str:
    return s if len(s) <= 32 else s[:29] + "..."


def _end_position(text: str) -> tuple[int, int]:
    return text.count("\n") + 1, len(text) - text.rfind("\n")


# -- building the Graph from the tree

_MAX_DIM = 2 ** 31 - 1
_MAX_ELEMENTS = 2 ** 63 - 1
_MAX_NESTING = 16                # attribute lists in lists (no op needs more than 2)
_SPLIT_SHAPE = re.compile(r"((?:\d+x)*)(.*)")
_NON_HEX = re.compile(r"[^0-9A-Fa-f]")


class _Builder:
    """Walks the parse tree, checking what the grammar cannot: names, dtypes, resources."""

    def __init__(self, filename: str):
        self.filename = filename
        self.values: dict[str, Value] = {}
        self.resources: dict[str, tuple[Token, Token]] = {}  # name -> (name, hex string)

    def error(self, what: str, at, hint: str | None = None) -> ParseError:
        """`at` is a Token or a tree's meta: both carry line and column."""
        return ParseError(what, where=f"{self.filename}:{at.line}:{at.column}", hint=hint)

    def graph(self, tree: Tree) -> Graph:
        graph_tree, resources_tree = tree.children
        if resources_tree is not None:  # first, so an elided dump is refused before anything else
            self.read_resources(resources_tree)
        name, inputs_tree, types_tree, *op_trees, ret_tree = graph_tree.children
        inputs = [self.define(v, self.type(t)) for v, t in (i.children for i in inputs_tree.children)]
        ops = [self.op(t) for t in op_trees]
        if self.resources:  # consts pop theirs, so these are left over
            name_tok, _ = next(iter(self.resources.values()))
            raise self.error(f"resource {str(name_tok)!r} has no const op %{name_tok}", name_tok)
        outputs = self.returns(ret_tree, [self.type(t) for t in types_tree.children])
        return Graph(name[1:], inputs, outputs, ops)

    def read_resources(self, tree: Tree) -> None:
        if tree.data == "elided":
            raise self.error("this dump was printed with --elide-weights: it has no weights and "
                             "cannot be parsed back", tree.children[0],
                             hint="dump the graph again without --elide-weights")
        for name, string in (r.children for r in tree.children):
            if name in self.resources:
                raise self.error(f"resource {str(name)!r} is given twice", name)
            self.resources[str(name)] = (name, string)

    def define(self, tok: Token, t: TensorType) -> Value:
        name = tok[1:]
        if name in self.values:
            raise self.error(f"value %{name} is defined twice", tok)
        self.values[name] = Value(name, t)
        return self.values[name]

    def use(self, tok: Token) -> Value:
        value = self.values.get(tok[1:])
        if value is None:
            raise self.error(f"use of undefined value {tok}", tok,
                             hint="values must be defined (as an input or op result) before use")
        return value

    def op(self, tree: Tree) -> Op:
        result, kind, operands, attrs_tree, type_tree, loc = tree.children
        args = [self.use(v) for v in operands.children] if operands is not None else []
        attrs = self.attrs(attrs_tree) if attrs_tree is not None else {}
        t = self.type(type_tree)
        if kind == "const":
            if "value" in attrs:
                raise self.error(f"const {result}: its value belongs in the resources section, "
                                 "not in its attributes", attrs_tree.meta)
            attrs["value"] = self.const_value(result, t)
        return Op(str(kind), args, self.define(result, t), attrs,
                  self.string(loc.children[0]) if loc is not None else None)

    def attrs(self, tree: Tree) -> dict:
        attrs = {}
        for key, value in (a.children for a in tree.children):
            if key in attrs:
                raise self.error(f"attribute {key} is given twice", key)
            attrs[str(key)] = self.attr_value(value, key)
        return attrs

    def attr_value(self, node, key: Token, depth: int = 1):
        if isinstance(node, Tree):  # a list
            if depth > _MAX_NESTING:  # before Python's recursion limit turns it into a RecursionError
                raise self.error(f"attribute {key}: lists nest more than {_MAX_NESTING} deep", key)
            return [self.attr_value(x, key, depth + 1) for x in node.children]
        if node.type == "STRING":
            return self.string(node)
        if node.type in ("TRUE", "FALSE"):
            return node.type == "TRUE"
        return int(node) if node.type == "INT" else float(node)

    def string(self, tok: Token) -> str:
        try:
            text = json.loads(tok)
        except json.JSONDecodeError as e:
            raise self.error(f"bad string escape: {e.msg}", _shifted(tok, e.pos)) from None
        try:  # "\ud800" decodes to a lone surrogate, which no UTF-8 output (C comments, JSON) can hold
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            at = _shifted(tok, 1 + tok[1:].lower().find(f"\\u{ord(text[e.start]):04x}"))
            raise self.error(f"string holds a lone surrogate \\u{ord(text[e.start]):04x}, which is not a "
                             "character", at, hint="escape a character outside the BMP as a surrogate pair "
                                                   "(\\ud83d\\ude00) or write it directly") from None
        return text

    def type(self, tree: Tree) -> TensorType:
        body, quant = tree.children
        dims, dtype = _SPLIT_SHAPE.fullmatch(body).groups()
        if dtype not in DTYPES:
            raise self.error(f"unknown dtype {dtype!r}", _shifted(body, len(dims)),
                             hint=f"expected one of {', '.join(DTYPES)}")
        shape = tuple(int(d) for d in dims.split("x")[:-1])
        big = next((d for d in shape if d > _MAX_DIM), None)
        if big is not None:  # numpy cannot even build the (empty) array of a 2^63 dimension
            raise self.error(f"dimension {big} is too large: at most {_MAX_DIM} (tensors are indexed "
                             "with C int32)", body)
        if math.prod(d for d in shape if d) > _MAX_ELEMENTS:
            raise self.error(f"tensor<{body}> is too large: its dimensions multiply to more than 2^63 - 1",
                             body)
        return TensorType(shape, dtype, self.quant(quant, len(shape)) if quant is not None else None)

    def quant(self, tree: Tree, rank: int) -> QuantParams:
        if tree.data == "per_tensor":
            scale, zp = tree.children
            scales, zps, axis = [scale], [zp], None
        else:
            axis_tok, scale_list, zp_list = tree.children
            scales, zps, axis = scale_list.children, zp_list.children, int(axis_tok)
            if not 0 <= axis < rank:
                raise self.error(f"quantization axis {axis} is out of range for rank {rank}", axis_tok)
        try:
            return QuantParams(tuple(float(s) for s in scales), tuple(int(z) for z in zps), axis)
        except ValueError as e:
            raise self.error(f"bad quantization parameters: {e}", tree.meta) from None

    def const_value(self, result: Token, t: TensorType) -> np.ndarray:
        name = result[1:]
        if name not in self.resources:
            raise self.error(f"const {result} has no resource {name!r}", result,
                             hint="every const needs an entry in the {-# resources #-} section at the end")
        _, string = self.resources.pop(name)
        digits = string[1:-1]
        if not digits.startswith("0x"):
            raise self.error(f'resource {name!r} must be a string "0x<hex bytes>"', string)
        digits = digits[2:]
        bad = _NON_HEX.search(digits)
        if bad:
            raise self.error(f"resource {name!r}: {bad.group()!r} is not a hex digit",
                             _shifted(string, 3 + bad.start()))
        if len(digits) % 2:
            raise self.error(f"resource {name!r} has an odd number of hex digits", string)
        storage = DTYPES[t.dtype]
        need = t.numel * storage.itemsize
        if len(digits) // 2 != need:
            raise self.error(f"resource {name!r} has {len(digits) // 2} bytes, but {result}: "
                             f"{print_type(t)} needs {need}", string)
        # bytearray, not bytes: passes may edit const arrays in place, so keep them writable.
        data = np.frombuffer(bytearray.fromhex(digits), dtype=storage.newbyteorder("<"))
        return data.astype(storage, copy=False).reshape(t.shape)

    def returns(self, tree: Tree, types: list[TensorType]) -> list[Value]:
        keyword, *toks = tree.children
        if len(toks) != len(types):
            raise self.error(f"return gives {len(toks)} values, but the graph header declares "
                             f"{len(types)} result types", keyword)
        outputs = [self.use(tok) for tok in toks]
        for tok, v, t in zip(toks, outputs, types):
            if print_type(v.type) != print_type(t):  # text, not ==: a nan scale never equals itself
                raise self.error(f"returned {tok} has type {print_type(v.type)}, but the graph "
                                 f"header declares {print_type(t)}", tok)
        return outputs


def _shifted(tok: Token, offset: int):
    """A position `offset` characters into a single-line token."""
    return Token(tok.type, "", line=tok.line, column=tok.column + offset)
