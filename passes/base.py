"""Pass base class, registry and pipeline-string syntax.

A pass is a frozen dataclass whose fields are its options. Pipeline strings use
MLIR's syntax: `fuse,prune-channels{ratio=0.5 criterion=l2}`; an option's
dashed name maps to the field's underscored name.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tinyc.context import PassContext  # noqa: F401  (defined in the core, used by every pass)
from tinyc.errors import ParseError, PassError
from tinyc.ir import Graph
from tinyc.ops import Trait, has

PASSES: dict[str, type["Pass"]] = {}


@dataclass(frozen=True)
class Pass:
    """Base class. Subclasses set `name` and implement `apply`; the docstring is the help text."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = False     # retrains weights (distill): not replayed to score candidates
    searches: ClassVar[tuple[str, ...]] = ()   # options whose value `auto` searches against the budget

    def apply(self, graph: Graph, ctx: PassContext) -> Graph:
        raise NotImplementedError

    @property
    def accuracy_aware(self) -> bool:
        """A `searches` option set to `auto`: the pass chooses its setting against the accuracy budget."""
        return any(getattr(self, name) == "auto" for name in self.searches)

    @classmethod
    def title(cls) -> str:
        return cls.__name__

    def spec(self) -> str:
        """Canonical pipeline text: the name, then non-default options in declaration order."""
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                opts.append(f"{f.name.replace('_', '-')}={format_option(value)}")
        return self.name + ("{" + " ".join(opts) + "}" if opts else "")


def register(cls: type[Pass]) -> type[Pass]:
    if not cls.name or not cls.__doc__:
        raise TypeError(f"pass {cls.__name__} needs a name and a docstring")
    PASSES[cls.name] = cls
    return cls


def format_option(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_option(v) for v in value)
    return str(value)


def option_fields(cls: type[Pass]) -> list[tuple[str, Any, Any, str]]:
    """(dashed name, type, default, help) for each option of a pass."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append((f.name.replace("_", "-"), hints[f.name], f.default, f.metadata.get("help", "")))
    return out


def option(default, help: str):
    """A pass option with a help line, for `tinyc passes`."""
    return field(default=default, metadata={"help": help})


# ---- pipeline strings ----------------------------------------------------

_PASS_RE = re.compile(r"\s*([a-z0-9][a-z0-9-]*)\s*(\{[^{}]*\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[Pass]:
    """Parse `a,b{k=v k2=v2}` into pass instances; errors name the position and the valid choices."""
    passes, pos = [], 0
    text = text.strip()
    if not text:
        return []
    while pos < len(text):
        m = _PASS_RE.match(text, pos)
        if not m:
            raise ParseError(f"malformed pipeline at column {pos + 1}: {text[pos:]!r}",
                             hint="write passes as name or name{option=value ...}, separated by commas")
        name, body = m.group(1), m.group(2)
        passes.append(_make_pass(name, body[1:-1] if body else "", pos))
        pos = m.end()
        if m.group(3) == "," and pos >= len(text):
            raise ParseError("pipeline ends with a comma", hint="remove the trailing comma")
    return passes


def _make_pass(name: str, body: str, pos: int) -> Pass:
    if name not in PASSES:
        raise ParseError(f"unknown pass '{name}' in pipeline (column {pos + 1})",
                         hint="valid passes: " + ", ".join(sorted(PASSES)) + " (see `tinyc passes`)")
    cls = PASSES[name]
    fields = {dashed: (typ, dflt) for dashed, typ, dflt, _ in option_fields(cls)}
    kwargs = {}
    for item in body.split():  # MLIR: options separate by spaces; list values use commas
        key, eq, raw = item.partition("=")
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise ParseError(f"unknown option '{key}' for pass '{name}'", hint=f"valid options: {valid}")
        if not eq:
            raise ParseError(f"option '{key}' of pass '{name}' needs a value ({key}=...)")
        if key.replace("-", "_") in kwargs:
            raise ParseError(f"option '{key}' is given twice for pass '{name}'",
                             hint="give each option once")
        kwargs[key.replace("-", "_")] = _convert(raw, fields[key][0], f"{name}{{{key}}}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ParseError(f"invalid options for pass '{name}': {e}") from None


def _convert(raw: str, typ, where: str):
    """Convert option text to the field's type; unions try each member in order."""
    choices = typing.get_args(typ) if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union else (typ,)
    for t in choices:
        try:
            return _convert_one(raw, t)
        except (ValueError, TypeError):
            continue
    names = " or ".join(getattr(t, "__name__", str(t)) for t in choices)
    raise ParseError(f"bad value '{raw}' for {where}: expected {names}")


def _convert_one(raw: str, t):
    if t is bool:
        if raw in ("true", "false", "1", "0"):
            return raw in ("true", "1")
        raise ValueError(raw)
    if t is int:
        return int(raw)
    if t is float:
        return float(raw)
    if t is str:
        return raw
    if t is type(None):
        if raw == "none":
            return None
        raise ValueError(raw)
    if typing.get_origin(t) is typing.Literal:
        if raw in typing.get_args(t):
            return raw
        raise ValueError(raw)
    if typing.get_origin(t) is tuple:
        (elem, *_rest) = typing.get_args(t)
        return tuple(_convert_one(x, elem) for x in raw.split(",") if x)
    raise TypeError(f"unsupported option type {t}")


def print_pipeline(passes: list[Pass]) -> str:
    return ",".join(p.spec() for p in passes)


def check(condition: bool, what: str, hint: str | None = None) -> None:
    """Raise a PassError unless `condition` holds."""
    if not condition:
        raise PassError(what, hint=hint)


def is_quantized(graph: Graph) -> bool:
    """True once quantize-int8 (or anything else) has put integer tensors or quant params in."""
    return any(has(op, Trait.INT_ONLY) or op.result.type.quant is not None
               or (not op.is_const and op.result.type.dtype != "f32") for op in graph.ops)


def refuse_quantized(graph: Graph, name: str) -> None:
    """The structural passes (prune-channels, prune-layers, svd) work on float graphs only."""
    check(not is_quantized(graph), f"{name} works on float graphs; @{graph.name} is already quantized",
          f"run {name} before quantize-int8, e.g. -p fuse,{name},quantize-int8")
