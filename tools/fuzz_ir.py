#!/usr/bin/env python3
"""A grammar-aware mutation fuzzer for tinyc's IR text (issue 13, item 6).

Each input is a seed from the corpus (tests/fuzz_corpus/*.tir) with one to four mutations that
respect the text's token structure (op kinds, attributes, integers, floats, tensor<...> types and
quantization parameters, SSA names, lines, strings and locs, the resources section, well-typed new
ops from the registry's samples) plus a few byte-level ones. It runs through

    parse -> verify -> the CLI's input checks -> fuse pass -> emit_bundle (host) -> interpreter

and the oracle is: every failure is a tinyc.errors.TinycError (a clean user error). Any other
exception, or an input that takes longer than --timeout seconds, is a finding: its text and
traceback are written to the findings directory (at most 3 files per distinct bug) and the run goes
on. The time limit is SIGALRM in this process: it interrupts Python code, not a single C call that
never returns (none is known; the run itself would then hang, which `make fuzz` shows plainly). A run is deterministic for a
given seed (the count of inputs a --seconds run reaches depends on the machine; --max-inputs not).

    python3 tools/fuzz_ir.py --seconds 300 --seed 1 --corpus tests/fuzz_corpus --findings fuzz-findings
    python3 tools/fuzz_ir.py --write-seeds tests/fuzz_corpus      # regenerate the valid seed graphs

Exit status: 0 without findings, 1 with findings, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyc.text import parse as _parse_for_mutation   # bound once: the mutator's own parser, never patched

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- mutation vocabulary

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 8, 127, 128, 255, 256, -128, -129, 2**15, 2**31 - 1, 2**31, -2**31,
                    2**32, 2**63 - 1, 2**63, 2**64, 10**30]
INTERESTING_FLOATS = ["nan", "inf", "-inf", "-0.0", "0.0", "1e38", "3.5e38", "1e39", "-1e38", "5e-324",
                      "1e-45", "1.0", "-1.0", "0.5", "1e308", "1e309"]
STRING_INSERTS = [r"\ud800", r"\udfff", r"\ud83d", r"\ud83d\ude00", r"\u0000", r"\u001f", r"\u007f",
                  r"\n", r"\t", r"\"", r"\\", "\\", r"\x41", r"\u12", r"\uZZZZ", "é", "😀", "\u202e", "\u200b",
                  "\ufeff", "*/", "/*", "\\*/", "%", "\x01", "\x7f", "\u2028", "\ud800", '"', "\n"]
NAME_INSERTS = ["é", "-", "$", " ", "\x00", "\ud800", "😀", ".", "..", "_", "0", "\u200b", "%", "@", "'"]
BOGUS_DTYPES = ["f16", "f64", "i3", "u16", "bf16", "x", "i", "f32f32", "I8", "int8", "u0", "i64"]
BOGUS_KINDS = ["linaer", "Linear", "conv", "relu_", "quant", "x", "graph", "return", "loc", "tensor", "const_"]
BYTE_JUNK = ["{", "}", "(", ")", "<", ">", ",", ":", "=", "%", "@", '"', "x", "0", "-", "[", "]", "{-#", "#-}",
             "//", "\x00", "\xff", "\t", "\r", "\n", "loc", "tensor<", "quant<", "->", "return"]

_RE_OPLINE = re.compile(r"^(\s*%[A-Za-z0-9_.]+\s*=\s*)([A-Za-z_][A-Za-z0-9_]*)", re.M)
_RE_ATTR = re.compile(r"(?<![%@\w.])([A-Za-z_][A-Za-z0-9_]*) = (\[[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*\]|\"(?:[^\"\\]|\\.)*\"|[^,}\s]+)")
_RE_ATTRS = re.compile(r"\) \{([^{}\n]*)\} :|(?<=[A-Za-z0-9_]) \{([^{}\n]*)\} :")
_RE_INT = re.compile(r"(?<![\w.%@\"x-])-?\d+(?![\w.])")
_RE_FLOAT = re.compile(r"(?<![\w.%@\"])-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|inf)(?![\w.])|\bnan\b")
_RE_SHAPE = re.compile(r"tensor<((?:\d+x)*)([A-Za-z_][A-Za-z0-9_]*)")
_RE_TYPE = re.compile(r"tensor<[^<>]*(?:<[^<>]*>)?[^<>]*>")
_RE_VALUE = re.compile(r"%[A-Za-z0-9_.]+")
_RE_STRING = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"")
_RE_LOC = re.compile(r" loc\(\"(?:[^\"\\\n]|\\.)*\"\)")
_RE_RESOURCE = re.compile(r"^(\s*)([A-Za-z0-9_.]+): \"0x([0-9A-Fa-f]*)\"", re.M)


def _known_attr_names() -> list[str]:
    from tinyc.ops import OPS
    return sorted({k for d in OPS.values() for k in d.attrs} | {"act", "act_min", "act_max", "value"})


def _kinds() -> list[str]:
    from tinyc.ops import OPS
    return sorted(OPS)


class Mutator:
    """Token-structure-aware mutations of IR text. Every choice comes from `rng`."""

    def __init__(self, rng: random.Random, corpus: list[str]):
        self.rng = rng
        self.corpus = corpus
        self.kinds = _kinds()
        self.attr_names = _known_attr_names()
        self.methods = [
            (self.swap_kind, 6), (self.attr_change, 6), (self.attr_drop, 4), (self.attr_dup, 2), (self.attr_add, 3),
            (self.perturb_int, 8), (self.perturb_float, 5), (self.perturb_shape, 8), (self.perturb_dtype, 4),
            (self.perturb_quant, 3), (self.perturb_scale, 4), (self.rename_value, 5), (self.drop_line, 4), (self.dup_line, 3),
            (self.reorder_lines, 3), (self.truncate, 2), (self.string_insert, 4), (self.add_loc, 2),
            (self.name_insert, 2), (self.resource_length, 4), (self.resource_hex, 3), (self.resource_values, 6),
            (self.resource_entry, 3), (self.swap_operands, 3), (self.retype_return, 2), (self.insert_op, 6),
            (self.byte_flip, 1), (self.byte_insert, 1), (self.byte_delete, 1), (self.splice, 1),
        ]
        self.weights = [w for _, w in self.methods]

    def mutate(self, text: str, n: int) -> tuple[str, list[str]]:
        applied = []
        for _ in range(n):
            for _attempt in range(5):   # a mutation with nothing to act on (no floats, no resources): another
                method = self.rng.choices([m for m, _ in self.methods], self.weights)[0]
                new = method(text)
                if new is not None and new != text:
                    text = new
                    applied.append(method.__name__)
                    break
        return text, applied

    # -- helpers
    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))] if seq else None

    def sub_match(self, text: str, regex: re.Pattern, fn, group: int = 0, everywhere: bool = False):
        """Replace one match (group) of `regex` by fn(match); with `everywhere`, every identical one."""
        matches = list(regex.finditer(text))
        m = self.pick(matches)
        if m is None:
            return None
        start, end = m.span(group)
        new = fn(m)
        if everywhere:
            old = text[start:end]
            return re.sub(re.escape(old) + r"(?![\w.])", lambda _: new, text)
        return text[:start] + new + text[end:]

    def everywhere(self) -> bool:
        """Change a type in every place it is written half of the time, so the graph stays consistent
        enough (header, return, producers, consumers) to reach the verifier and beyond."""
        return self.rng.random() < 0.5

    def rand_int(self, n: int | None = None) -> int:
        r = self.rng.random()
        if n is not None and r < 0.4:
            return n + self.rng.choice([-1, 1, -2, 2]) if r < 0.3 else -n
        return self.rng.choice(INTERESTING_INTS) * (self.rng.choice([1, -1]) if self.rng.random() < 0.2 else 1)

    def rand_value(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return str(self.rand_int())
        if r < 0.55:
            return self.rng.choice(INTERESTING_FLOATS)
        if r < 0.65:
            return self.rng.choice(["true", "false"])
        if r < 0.8:
            return json.dumps(self.rng.choice(self.kinds + ["", "same", "relu", "x" * 40]))
        if r < 0.82:   # deep nesting, a long list, a long string: sizes the parser must survive
            return self.rng.choice(["[" * (d := self.rng.choice([17, 100, 2000])) + "]" * d,
                                    "[" + ", ".join(["1"] * 5000) + "]", json.dumps("y" * 100000)])
        k = self.rng.randrange(0, 5)
        return "[" + ", ".join(self.rand_value() if self.rng.random() < 0.2 else str(self.rand_int())
                               for _ in range(k)) + "]"

    def lines(self, text: str) -> tuple[list[str], list[int]]:
        lines = text.split("\n")
        ops = [i for i, l in enumerate(lines) if _RE_OPLINE.match(l)]
        return lines, ops

    # -- op kinds and attributes
    def swap_kind(self, text):
        kind = self.pick(self.kinds) if self.rng.random() < 0.9 else self.pick(BOGUS_KINDS)
        return self.sub_match(text, _RE_OPLINE, lambda m: kind, 2)

    def attr_change(self, text):
        return self.sub_match(text, _RE_ATTR, lambda m: self.rand_value(), 2)

    def attr_drop(self, text):
        matches = list(_RE_ATTR.finditer(text))
        m = self.pick(matches)
        if m is None:
            return None
        start, end = m.span()
        if text[end:end + 2] == ", ":
            end += 2
        elif text[start - 2:start] == ", ":
            start -= 2
        return text[:start] + text[end:]

    def attr_dup(self, text):
        m = self.pick(list(_RE_ATTR.finditer(text)))
        if m is None:
            return None
        return text[:m.end()] + ", " + m.group() + text[m.end():]

    def attr_add(self, text):
        lines, ops = self.lines(text)
        i = self.pick(ops)
        if i is None:
            return None
        attr = f"{self.pick(self.attr_names)} = {self.rand_value()}"
        line = lines[i]
        m = re.search(r"\{([^{}]*)\} :", line)
        if m:
            inner = m.group(1)
            line = line[:m.start(1)] + (inner + ", " if inner else "") + attr + line[m.end(1):]
        else:
            line = line.replace(" : tensor<", " {" + attr + "} : tensor<", 1)
        lines[i] = line
        return "\n".join(lines)

    # -- numbers
    def perturb_int(self, text):
        head = text.split("{-#")[0]
        new = self.sub_match(head, _RE_INT, lambda m: str(self.rand_int(int(m.group()))))
        return None if new is None else new + text[len(head):]

    def perturb_float(self, text):
        head = text.split("{-#")[0]
        new = self.sub_match(head, _RE_FLOAT, lambda m: self.rng.choice(INTERESTING_FLOATS))
        return None if new is None else new + text[len(head):]

    def perturb_shape(self, text):
        def shape(m):
            dims = [int(d) for d in m.group(1).split("x")[:-1]]
            r = self.rng.random()
            if dims and r < 0.45:
                i = self.rng.randrange(len(dims))
                dims[i] = self.rng.choice([0, 1, dims[i] + 1, max(dims[i] - 1, 0), 2 * dims[i], 65536, 2**31,
                                           2**32 + 1, 10**10, 10**20])
            elif dims and r < 0.65:
                del dims[self.rng.randrange(len(dims))]
            elif r < 0.85:
                dims.insert(self.rng.randrange(len(dims) + 1), self.rng.choice([1, 1, 2, 3, 0]))
            else:
                self.rng.shuffle(dims)
            return "tensor<" + "".join(f"{d}x" for d in dims) + m.group(2)
        return self.sub_match(text, _RE_SHAPE, shape, everywhere=self.everywhere())

    def perturb_dtype(self, text):
        from tinyc.ir import DTYPES
        dtype = self.pick(list(DTYPES)) if self.rng.random() < 0.8 else self.pick(BOGUS_DTYPES)
        return self.sub_match(text, _RE_SHAPE, lambda m: m.group()[:m.start(2) - m.start()] + dtype,
                              everywhere=self.everywhere())

    def perturb_quant(self, text):
        def quant(m):
            t = m.group()
            if "quant<" in t and self.rng.random() < 0.4:
                return re.sub(r", quant<.*>>$", ">", t)
            if "quant<" in t:
                return re.sub(r"quant<.*>>$", lambda _: self.rand_quant() + ">", t)
            return t[:-1] + ", " + self.rand_quant() + ">"
        return self.sub_match(text, _RE_TYPE, quant, everywhere=self.everywhere())

    def perturb_scale(self, text):
        """One number of a quant<...>: a scale (tiny, huge, subnormal, non-finite) or a zero point."""
        spans = [(q.start() + m.start(), q.start() + m.end()) for q in re.finditer(r"quant<[^<>]*>", text)
                 for m in re.finditer(r"-?\d[\d.eE+-]*|nan|-?inf", q.group())]
        if not spans:
            return None
        a, b = self.pick(spans)
        old = text[a:b]
        is_int = re.fullmatch(r"-?\d+", old) is not None
        new = str(self.rand_int(int(old))) if is_int else self.rng.choice(INTERESTING_FLOATS)
        return text[:a] + new + text[b:]

    def rand_quant(self) -> str:
        f = lambda: self.rng.choice(INTERESTING_FLOATS + ["0.1", "0.02", "1"])
        if self.rng.random() < 0.5:
            return f"quant<scale={f()}, zp={self.rand_int()}>"
        k = self.rng.randrange(0, 4)
        return (f"quant<axis={self.rng.choice([0, 1, 2, -1, 5])}, scale=[{', '.join(f() for _ in range(k))}], "
                f"zp=[{', '.join(str(self.rand_int()) for _ in range(self.rng.randrange(0, 4)))}]>")

    # -- SSA values and lines
    def rename_value(self, text):
        names = sorted(set(_RE_VALUE.findall(text)))
        if not names:
            return None
        new = self.pick(names) if self.rng.random() < 0.7 else "%" + self.rng.choice(["z", "fresh", "0", "x.y"])
        return self.sub_match(text, _RE_VALUE, lambda m: new)

    def drop_line(self, text):
        lines, ops = self.lines(text)
        i = self.pick(ops) if ops and self.rng.random() < 0.8 else self.rng.randrange(len(lines))
        del lines[i]
        return "\n".join(lines)

    def dup_line(self, text):
        lines, ops = self.lines(text)
        i = self.pick(ops) if ops and self.rng.random() < 0.8 else self.rng.randrange(len(lines))
        lines.insert(self.rng.randrange(len(lines) + 1), lines[i])
        return "\n".join(lines)

    def reorder_lines(self, text):
        lines, ops = self.lines(text)
        if len(ops) < 2:
            return None
        i, j = self.rng.sample(ops, 2)
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)

    def swap_operands(self, text):
        lines, ops = self.lines(text)
        i = self.pick(ops)
        if i is None:
            return None
        m = re.search(r"\(([^()]*)\)", lines[i])
        if not m:
            return None
        args = [a for a in m.group(1).split(", ") if a]
        r = self.rng.random()
        if r < 0.4 and args:
            del args[self.rng.randrange(len(args))]
        elif r < 0.7 and args:
            args.insert(self.rng.randrange(len(args) + 1), self.pick(args))
        else:
            self.rng.shuffle(args)
        lines[i] = lines[i][:m.start(1)] + ", ".join(args) + lines[i][m.end(1):]
        return "\n".join(lines)

    def retype_return(self, text):
        m = re.search(r"-> \(([^\n]*)\) \{", text)
        if not m:
            return None
        types = _RE_TYPE.findall(text)
        if not types:
            return None
        return text[:m.start(1)] + ", ".join(self.pick(types) for _ in range(self.rng.randrange(0, 3))) + text[m.end(1):]

    def insert_op(self, text):
        """A well-typed new op on an existing value (a registered kind with the attributes of one of its
        samples, its type inferred by tinyc), returned as an extra graph output so it is emitted and run."""
        from tinyc.errors import TinycError
        from tinyc.ops import OPS, OpError, infer_type
        from tinyc.text import print_attr, print_type
        try:
            graph = _parse_for_mutation(text)
        except Exception:   # noqa: BLE001 - the seed does not parse (or parse has a bug: the oracle's job)
            return None
        values = list(graph.inputs) + [op.result for op in graph.ops]
        kinds = [k for k, d in OPS.items() if d.samples is not None]
        v, kind = self.pick(values), self.pick(kinds)
        samples = OPS[kind].samples(np.random.default_rng(self.rng.randrange(2**32)))
        s = self.pick(samples)
        operands = [v] + [self.pick(values) for _ in range(len(s.operands) - 1)]
        attrs = dict(s.attrs)
        if attrs and self.rng.random() < 0.3:   # and a hostile value for one of them
            attrs[self.pick(sorted(attrs))] = self.rng.choice([0, -1, 1, 2**31, 1.5, "relu", [0, 0], [-1]])
        try:
            t = infer_type(kind, [o.type for o in operands], attrs)
        except (OpError, TinycError):
            return None
        except Exception:   # an inference bug shows up again when the text is run: leave it to the oracle
            t = v.type
        name = "%fz" + str(self.rng.randrange(1000))
        args = ", ".join("%" + o.name for o in operands)
        body = ", ".join(f"{k} = {print_attr(a)}" for k, a in sorted(attrs.items()))
        line = f"  {name} = {kind}({args})" + (f" {{{body}}}" if body else "") + f" : {print_type(t)}"
        lines = text.split("\n")
        ret = next((i for i, l in enumerate(lines) if l.strip().startswith("return")), None)
        head = next((i for i, l in enumerate(lines) if l.startswith("graph @")), None)
        if ret is None or head is None:
            return None
        lines[ret] = lines[ret].rstrip() + (", " if lines[ret].strip() != "return" else " ") + name
        lines[head] = re.sub(r"-> \((.*)\) \{$", lambda m: f"-> ({m.group(1)}{', ' if m.group(1) else ''}"
                             f"{print_type(t)}) {{", lines[head])
        lines.insert(ret, line)
        return "\n".join(lines)

    def truncate(self, text):
        return text[:self.rng.randrange(len(text) + 1)]

    # -- strings and names
    def string_insert(self, text):
        head = text.split("{-#")[0]
        def ins(m):
            s = m.group()
            k = self.rng.randrange(1, len(s))
            return s[:k] + self.rng.choice(STRING_INSERTS) + s[k:]
        new = self.sub_match(head, _RE_STRING, ins)
        if new is None:
            return self.add_loc(text)
        return new + text[len(head):]

    def add_loc(self, text):
        lines, ops = self.lines(text)
        i = self.pick(ops)
        if i is None:
            return None
        body = "".join(self.rng.choice(STRING_INSERTS + ["a", "net.py:7", " "]) for _ in range(self.rng.randrange(1, 4)))
        line = _RE_LOC.sub("", lines[i].split("  //")[0])
        lines[i] = line + f' loc("{body}")'
        return "\n".join(lines)

    def name_insert(self, text):
        regex = re.compile(r"[%@][A-Za-z0-9_.]+") if self.rng.random() < 0.8 else _RE_RESOURCE
        def ins(m):
            s = m.group()
            k = self.rng.randrange(1, len(s) + 1)
            return s[:k] + self.rng.choice(NAME_INSERTS) + s[k:]
        return self.sub_match(text, regex, ins)

    # -- the resources section
    def resource_length(self, text):
        def length(m):
            digits = m.group(3)
            r = self.rng.random()
            if r < 0.3:
                digits = digits[:-2]
            elif r < 0.5:
                digits = digits + "00"
            elif r < 0.7:
                digits = digits[:-1]
            elif r < 0.85:
                digits = ""
            else:
                digits = digits + digits
            return f'{m.group(1)}{m.group(2)}: "0x{digits}"'
        return self.sub_match(text, _RE_RESOURCE, length)

    def resource_hex(self, text):
        def bad(m):
            digits = m.group(3)
            k = self.rng.randrange(len(digits) + 1)
            junk = self.rng.choice(["G", "g", "z", " ", "-", "0x", "\\u0030", "é", "\\\\", "x"])
            prefix = self.rng.choice(["0x", "0x", "0X", "", "x", "00"])
            return f'{m.group(1)}{m.group(2)}: "{prefix}{digits[:k]}{junk}{digits[k:]}"'
        return self.sub_match(text, _RE_RESOURCE, bad)

    def resource_values(self, text):
        """Valid hex with hostile contents: NaN/inf floats, extreme bytes (out-of-range codes, indices)."""
        def values(m):
            digits = m.group(3)
            if not digits:
                return m.group()
            word = self.rng.choice(["0000C07F", "0000807F", "000080FF", "FFFFFFFF", "7F7FFFFF", "00000080",
                                    "01000000", "FF", "7F", "80", "10", "04", "03", "02", "FE", "00"])
            k = self.rng.randrange(0, max(len(digits) - len(word), 0) + 1) // 2 * 2
            if self.rng.random() < 0.3:  # fill the whole resource
                filled = (word * (len(digits) // len(word) + 1))[:len(digits)]
                return f'{m.group(1)}{m.group(2)}: "0x{filled}"'
            new = (digits[:k] + word + digits[k + len(word):])[:len(digits)]
            return f'{m.group(1)}{m.group(2)}: "0x{new}"'
        return self.sub_match(text, _RE_RESOURCE, values)

    def resource_entry(self, text):
        matches = list(_RE_RESOURCE.finditer(text))
        m = self.pick(matches)
        if m is None:
            return None
        r = self.rng.random()
        line_end = text.find("\n", m.end())
        line_end = len(text) if line_end < 0 else line_end
        line = text[m.start():line_end]
        if r < 0.35:  # drop
            return text[:m.start()] + text[line_end + 1:]
        if r < 0.7:   # duplicate
            sep = "" if line.endswith(",") else ","
            return text[:line_end] + sep + "\n" + line + text[line_end:]
        other = self.pick(sorted(set(v[1:] for v in _RE_VALUE.findall(text))) or ["zz"])
        return text[:m.start(2)] + other + text[m.end(2):]

    # -- bytes
    def byte_flip(self, text):
        if not text:
            return None
        k = self.rng.randrange(len(text))
        return text[:k] + chr(self.rng.randrange(0, 0x80) if self.rng.random() < 0.9 else self.rng.randrange(0x80, 0x3000)) + text[k + 1:]

    def byte_insert(self, text):
        k = self.rng.randrange(len(text) + 1)
        return text[:k] + self.rng.choice(BYTE_JUNK) + text[k:]

    def byte_delete(self, text):
        if not text:
            return None
        k = self.rng.randrange(len(text))
        return text[:k] + text[k + self.rng.randrange(1, 16):]

    def splice(self, text):
        other = self.pick(self.corpus)
        if not other:
            return None
        a, b = self.rng.randrange(len(text) + 1), self.rng.randrange(len(other) + 1)
        return text[:a] + other[b:]


# ---------------------------------------------------------------- running one input

class Timeout(BaseException):
    """Raised by SIGALRM: not an Exception, so no `except Exception` in tinyc swallows it."""


MAX_INTERP_ELEMENTS = 4_000_000   # the interpreter's budget: beyond it, the input stops after emit


@dataclass
class Outcome:
    status: str                    # ok | error | skipped | finding
    stage: str                     # parse | verify | check | fuse | emit | interp | done
    error: str = ""                # exception type (and a message head for TinycErrors)
    trace: str = ""


def run_input(text: str, data_seed: int, workdir: Path, allow_nonfinite: bool = False) -> Outcome:
    """parse -> verify -> input checks -> fuse -> emit -> interpreter; classifies the first failure."""
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.errors import TinycError
    from tinyc.interpreter import run
    from tinyc.ir import DTYPES
    from tinyc.passmanager import PassManager
    from tinyc.text import parse
    from tinyc.verifier import code_range, nonfinite_consts, verify, zero_size_values

    stage = "parse"
    try:
        graph = parse(text, "<fuzz>")
        stage = "verify"
        verify(graph)
        stage = "check"   # what `tinyc compile` refuses after verifying (tinyc.commands.load_graph)
        empty = zero_size_values(graph)
        if empty:
            raise TinycError("the graph has tensors with no elements: " + "; ".join(empty))
        bad = nonfinite_consts(graph)
        if bad and not allow_nonfinite:
            raise TinycError("the graph has NaN or infinite weights: " + "; ".join(bad))
        stage = "fuse"
        fused = PassManager("fuse").run(graph)
        stage = "emit"
        out = workdir / "bundle"
        try:
            emit_bundle(fused, out, target_name="host")
        finally:
            shutil.rmtree(out, ignore_errors=True)
        stage = "interp"
        total = sum(v.type.numel for v in fused.inputs) + sum(op.result.type.numel for op in fused.ops)
        if total > MAX_INTERP_ELEMENTS:
            return Outcome("skipped", stage, "too large for the interpreter budget")
        rng = np.random.default_rng(data_seed)
        inputs = []
        for v in fused.inputs:
            storage = DTYPES[v.type.dtype]
            if storage.kind == "f":
                inputs.append((rng.standard_normal(v.type.shape) * rng.choice([1.0, 1e3, 1e-3])).astype(storage))
            elif v.type.dtype == "i32":
                # integer graph inputs are ids into a table (embedding, gather): a small range keeps
                # them inside the seeds' tables; an id outside a mutated table is a clear error
                inputs.append(rng.integers(0, 4, size=v.type.shape).astype(storage))
            else:
                lo, hi = code_range(v.type.dtype)
                inputs.append(rng.integers(lo, hi, size=v.type.shape, endpoint=True).astype(storage))
        with np.errstate(all="ignore"):
            run(fused, inputs)
    except TinycError as e:
        return Outcome("error", stage, f"{type(e).__name__}: {e.what[:60]}")
    except Timeout:
        return Outcome("finding", stage, "hang", traceback.format_exc())
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - the oracle: anything else is a finding
        return Outcome("finding", stage, type(e).__name__, traceback.format_exc())
    return Outcome("ok", "done")


def _signature(o: Outcome) -> str:
    """Findings with the same stage, exception type and innermost tinyc frame count as one bug."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', o.trace)
    inner = [f"{Path(f).name}:{n}" for f, n in frames if "/tinyc" in f or "/compiler/" in f or "/backends/" in f
             or "/passes/" in f]
    return f"{o.stage}-{o.error}-{inner[-1] if inner else 'none'}"


# ---------------------------------------------------------------- the campaign

@dataclass
class Summary:
    inputs: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: Counter = field(default_factory=Counter)
    finding_files: list = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"fuzz_ir: {self.inputs} inputs in {self.seconds:.1f} s"]
        for key, n in sorted(self.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {n:6d}  {key}")
        total = sum(self.findings.values())
        lines.append(f"findings: {total} ({len(self.findings)} distinct)")
        for sig, n in self.findings.most_common():
            lines.append(f"  {n:6d}  {sig}")
        for f in self.finding_files:
            lines.append(f"  written: {f}")
        return "\n".join(lines)


def load_corpus(corpus: Path) -> list[tuple[str, str]]:
    files = sorted(corpus.glob("*.tir"))
    return [(f.name, f.read_text(encoding="utf-8", errors="surrogateescape")) for f in files]


def fuzz(corpus: list[tuple[str, str]], *, seed: int, seconds: float | None, max_inputs: int | None,
         findings_dir: Path | None, timeout: float = 10.0, log=None) -> Summary:
    """Mutate and run inputs until the time or count runs out; the i-th input depends only on (seed, i)."""
    if not corpus:
        raise SystemExit("fuzz_ir: the corpus is empty")
    texts = [t for _, t in corpus]
    # single-op seeds are many and alike: the model-sized ones (int8, compressed, zoo) get more turns
    weights = [1 if name.startswith(("op_", "regress_")) else 6 for name, _ in corpus]
    summary = Summary()
    start = time.monotonic()
    per_signature: Counter = Counter()
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    warnings.simplefilter("ignore")
    try:
        with tempfile.TemporaryDirectory(prefix="tinyc-fuzz-") as tmp:
            i = 0
            while (max_inputs is None or i < max_inputs) and (seconds is None or time.monotonic() - start < seconds):
                rng = random.Random(f"{seed}:{i}")
                name, base = rng.choices(corpus, weights)[0]
                text, applied = base, []
                signal.setitimer(signal.ITIMER_REAL, timeout)   # the mutator parses too (insert_op)
                try:
                    if rng.random() >= 0.05:
                        text, applied = Mutator(rng, texts).mutate(base, rng.choice([1, 1, 1, 2, 2, 3, 4]))
                    allow = rng.random() < 0.5
                    outcome = run_input(text, rng.randrange(2**32), Path(tmp), allow_nonfinite=allow)
                except Timeout:   # in the mutator, or between run_input's handlers
                    outcome = Outcome("finding", "mutate", "hang", traceback.format_exc())
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                summary.inputs += 1
                key = f"{outcome.status}/{outcome.stage}" if outcome.status != "error" else \
                    f"error/{outcome.stage}/{outcome.error.split(':')[0]}"
                summary.outcomes[key] += 1
                if outcome.status == "finding":
                    sig = _signature(outcome)
                    summary.findings[sig] += 1
                    per_signature[sig] += 1
                    if findings_dir is not None and per_signature[sig] <= 3:
                        summary.finding_files.append(_write_finding(findings_dir, seed, i, name, applied, text,
                                                                    outcome, sig))
                    if log:
                        print(f"fuzz_ir: input {i} ({name}, {'+'.join(applied) or 'unmutated'}): finding {sig}",
                              file=log)
                i += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
    summary.seconds = time.monotonic() - start
    return summary


def _alarm(signum, frame):
    raise Timeout("per-input time limit")


def _write_finding(findings_dir: Path, seed: int, i: int, base: str, applied: list[str], text: str,
                   o: Outcome, sig: str) -> str:
    findings_dir.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = findings_dir / f"seed{seed}-input{i}-{h}"
    stem.with_suffix(".tir").write_bytes(text.encode("utf-8", "surrogatepass"))
    stem.with_suffix(".txt").write_text(
        f"signature: {sig}\nseed: {seed}\ninput: {i}\nbase: {base}\nmutations: {' '.join(applied) or 'none'}\n"
        f"stage: {o.stage}\nreproduce: python3 tools/fuzz_ir.py --replay {stem.with_suffix('.tir')}\n\n{o.trace}",
        encoding="utf-8", errors="backslashreplace")
    return str(stem.with_suffix(".tir"))


# ---------------------------------------------------------------- the seed corpus

def write_seeds(out: Path) -> list[Path]:
    """The valid seed graphs: small zoo models (float, int8, compressed) and one graph per op sample."""
    sys.path.insert(0, str(ROOT))
    import torch
    from bench import zoo
    from tinyc.frontend import from_torch
    from tinyc.ops import OPS
    from tinyc.ops.core import sample_graph
    from tinyc.passes import PassContext
    from tinyc.passmanager import PassManager
    from tinyc.text import print_graph
    from tinyc.verifier import verify

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, graph) -> None:
        verify(graph)
        path = out / f"{name}.tir"
        path.write_text(print_graph(graph), encoding="utf-8")
        written.append(path)

    for name in ("kitchen_sink", "mlp"):
        model, x = zoo.get(name)
        save(f"zoo_{name}", from_torch(model, x, name=name))

    # tiny models through the compression passes, so int8, packed and compressed ops are seeds too
    torch.manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 4 * 4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).eval()
    g = from_torch(tiny, torch.randn(1, 1, 4, 4), name="tiny")
    save("tiny_float", g)
    calib = np.random.default_rng(0).standard_normal((8, 1, 1, 4, 4)).astype(np.float32)
    save("tiny_int8", PassManager("fuse,quantize-int8").run(g.copy(), PassContext(calib=calib)))
    save("tiny_shared", PassManager("share-weights{bits=2}").run(g.copy(), PassContext()))
    save("tiny_binary", PassManager("binarize").run(g.copy(), PassContext()))

    for kind in sorted(k for k, d in OPS.items() if d.samples is not None):
        rng = np.random.default_rng(0)
        save(f"op_{kind}", sample_graph(kind, OPS[kind].samples(rng)[0], loc=f"{kind}.py:1"))
    return written


# ---------------------------------------------------------------- command line

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="fuzz_ir.py")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (default 60 without --max-inputs)")
    ap.add_argument("--max-inputs", type=int, default=None, help="stop after this many inputs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests" / "fuzz_corpus")
    ap.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    ap.add_argument("--timeout", type=float, default=10.0, help="per-input time limit in seconds (a hang)")
    ap.add_argument("--write-seeds", type=Path, metavar="DIR", help="write the valid seed graphs to DIR and exit")
    ap.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="run these inputs unmutated and exit")
    args = ap.parse_args(argv)
    if args.write_seeds:
        for p in write_seeds(args.write_seeds):
            print(p)
        return 0
    if args.replay:
        bad = 0
        old = signal.signal(signal.SIGALRM, _alarm)
        for path in args.replay:
            text = path.read_bytes().decode("utf-8", "surrogatepass")
            with tempfile.TemporaryDirectory(prefix="tinyc-fuzz-") as tmp:
                signal.setitimer(signal.ITIMER_REAL, args.timeout)
                try:
                    o = run_input(text, 0, Path(tmp), allow_nonfinite=True)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            print(f"{path}: {o.status} at {o.stage} {o.error}\n{o.trace}")
            bad += o.status == "finding"
        signal.signal(signal.SIGALRM, old)
        return 1 if bad else 0
    if args.seconds is None and args.max_inputs is None:
        args.seconds = 60.0
    corpus = load_corpus(args.corpus)
    if not corpus:
        print(f"fuzz_ir: no *.tir files in {args.corpus}", file=sys.stderr)
        return 2
    summary = fuzz(corpus, seed=args.seed, seconds=args.seconds, max_inputs=args.max_inputs,
                   findings_dir=args.findings, timeout=args.timeout, log=sys.stderr)
    print(summary.report())
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main())
