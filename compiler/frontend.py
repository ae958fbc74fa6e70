"""PyTorch frontend: torch.export programs (and model files) to tinyc IR.

The ExportedProgram is first functionalized without decomposing anything
(`run_decompositions({})`): that removes in-place ops and aliasing while keeping
the high-level aten ops (conv2d, linear, batch_norm, ...) that map one-to-one onto
the IR. Only if an op outside the table remains is the program decomposed further,
with PyTorch's core-ATen table minus the ops tinyc lowers directly (e.g. silu and
hardsigmoid then arrive as sigmoid/mul and add/clamp/div).
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import math
import operator
import os
import pickle
import re
import stat
import types
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from tinyc.errors import FrontendError
from tinyc.frontend_ops import OPS_HINT, TOKENS_HINT, Builder, ConstRef, clean_node_name, sanitize
from tinyc.frontend_table import LOWERINGS, PASSTHROUGH
from tinyc.ir import Graph, Value
from tinyc.ops import Trait, has

__all__ = ["from_torch", "import_exported_program", "load_model", "supported_ops"]

# Model input dtypes -> IR dtype. Token ids (int64, PyTorch's index type, or int32) become i32 inputs:
# ids beyond int32's range are the caller's problem (no vocabulary is that large).
INPUT_DTYPES = {torch.float32: "f32", torch.int64: "i32", torch.int32: "i32"}

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_TRANSPOSES = {"aten.t.default", "aten.transpose.int", "aten.permute.default"}


def supported_ops() -> list[str]:
    """The aten ops tinyc lowers directly (others may still import via decomposition)."""
    return sorted(LOWERINGS)


# ---------------------------------------------------------------- public entry points

def from_torch(module: torch.nn.Module, example_inputs, name: str = "model") -> Graph:
    """Export `module` (in eval mode) with `example_inputs` and import it."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor) or x.dtype not in INPUT_DTYPES:
            kind = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
            raise FrontendError(f"example input {i} is {kind}; tinyc model inputs must be float32 tensors, "
                                "or int64/int32 tensors of token ids",
                                hint="pass float32 tensors (token ids: int64 or int32) of the deployed shape "
                                     "(batch included)")
    try:
        module.eval()
    except NotImplementedError:   # an exported graph module (a pt2e model): its mode was fixed at export
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module, example_inputs)
    except Exception as e:
        raise FrontendError(f"torch.export could not capture the model: {_first_line(e)}",
                            hint="tinyc needs a model torch.export can trace with static shapes: avoid "
                                 "data-dependent Python control flow and non-tensor state in forward()") from e
    return import_exported_program(ep, name)


def import_exported_program(ep: ExportedProgram, name: str = "model") -> Graph:
    """Lower an ExportedProgram to a tinyc Graph (decomposing only if an op needs it). A model with
    ops tinyc cannot lower, directly or through PyTorch's decompositions, gets one error naming
    every such op (as the user wrote it), its node and source line."""
    # already functional: lower the exported graph as is (the common, fast case); in-place ops
    # (relu_, x += y): functionalize, still without decomposing
    direct = ep if not _mutates(ep) else _run_decompositions(ep, {})
    if not _unsupported_nodes(direct):
        try:
            return _lower_program(direct, name)
        except _Unsupported:
            pass
    decomposed = _run_decompositions(ep, _decomp_table())   # decompose what tinyc does not lower directly
    missing = _unsupported_nodes(decomposed)
    if not missing:
        return _lower_program(decomposed, name)
    raise _unsupported_error(missing)


def _unsupported_nodes(ep: ExportedProgram) -> list:
    """The call nodes no lowering handles, in graph order (nodes computing constants fold instead)."""
    specs = {s.arg.name: s.kind for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    const = {n for n in ep.graph.nodes if n.op == "placeholder"
             and specs.get(n.name) in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)}
    out = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        inputs_const = all(n in const for n in node.all_input_nodes)
        if node.target is operator.getitem:
            if inputs_const:
                const.add(node)
            continue
        fn = LOWERINGS.get(_target_name(node.target))
        if inputs_const and (fn in PASSTHROUGH or isinstance(node.target, torch._ops.OpOverload)):
            const.add(node)   # folded with PyTorch (or handed through) at import
        elif fn is None:
            out.append(node)
    return out


def _target_name(target) -> str:
    return str(target) if isinstance(target, torch._ops.OpOverload) else getattr(target, "__name__", str(target))


def _unsupported_error(nodes: list) -> FrontendError:
    """One error for every unsupported node, each named by the op the user wrote (a decomposed
    node by its original aten op) with its node and source line."""
    seen, lines = set(), []
    for node in nodes:
        original = node.meta.get("original_aten")
        op = _target_name(original) if original is not None else _target_name(node.target)
        loc = _source_loc(node)
        key = (op, loc)
        if key in seen:
            continue
        seen.add(key)
        needs = "" if op == _target_name(node.target) else f" (its decomposition needs {_target_name(node.target)})"
        lines.append((op, f"node {node.name}" + (f" ({loc})" if loc else ""), needs))
    if len(lines) == 1:
        op, where, needs = lines[0]
        return FrontendError(f"unsupported PyTorch op {op}{needs}", where=where, hint=OPS_HINT)
    listing = "\n".join(f"  {op} at {where}{needs}" for op, where, needs in lines)
    return FrontendError(f"{len(lines)} unsupported PyTorch ops:\n{listing}", where=lines[0][1], hint=OPS_HINT)


def load_model(path, *, trust_pickle: bool = False, input_shape=None, name: str | None = None,
               allow_nonfinite: bool = False) -> Graph:
    """Import a model file; the format is detected from the content, not the extension.

    - a torch.export.save archive: checked (zip CRCs, no member that needs unpickling code, no
      symbolic expression torch would evaluate, no native code), then loaded with torch.export.load;
    - a pickled nn.Module (torch.save(model)): only with trust_pickle=True and input_shape;
    - a state_dict, IR text, anything else: a FrontendError saying what to do.

    Without trust_pickle no code from the file runs, whatever its format. NaN or infinite weights
    are refused (naming the tensor) unless allow_nonfinite.
    """
    data = read_model_bytes(path)
    if not data:
        raise FrontendError(f"{path} is empty", hint=_SAVE_HINT)
    name = name or _name_from_stem(Path(path).stem)
    kind = _sniff(data)
    if kind == "export":
        program = _load_export(data, path, trust_pickle)
        with _quiet_torch():
            graph = import_exported_program(program, name)
    elif kind == "pickle":
        graph = _load_pickle(data, path, trust_pickle, input_shape, name)
    elif kind == "ir":
        raise FrontendError(f"{path} is tinyc IR text, not a PyTorch model",
                            hint="read IR with tinyc.parse() (the CLI's IR commands take it directly)")
    elif kind == "broken-zip":
        raise FrontendError(f"{path} is a damaged zip archive (truncated or corrupt)",
                            hint="copy the file again or re-save the model: " + _SAVE_HINT)
    elif kind == "zip":
        raise FrontendError(f"{path} is a zip archive but not a torch.export archive or a torch.save file",
                            hint=_SAVE_HINT)
    else:
        raise FrontendError(f"{path} is not a PyTorch model file (unrecognized content)", hint=_SAVE_HINT)
    _check_imported(graph, path, allow_nonfinite)
    return graph


def read_model_bytes(path) -> bytes:
    """The file's bytes, refusing missing, unreadable and non-regular files (a FIFO would block)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FrontendError(f"model file not found: {path}", hint="check the path") from None
    except OSError as e:
        raise FrontendError(f"cannot access model file {path}: {e.strerror}",
                            hint="check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise FrontendError(f"{path} is a directory, not a file",
                            hint="pass a model file saved with torch.export.save")
    if not stat.S_ISREG(st.st_mode):
        raise FrontendError(f"{path} is not a regular file (a FIFO, socket or device)",
                            hint="save the model to a regular file and pass that")
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError as e:
        raise FrontendError(f"cannot read model file {path}: {e.strerror}",
                            hint="check the file's permissions") from None


def _check_imported(graph: Graph, path, allow_nonfinite: bool) -> None:
    """The frontend's output verifies (else it is tinyc's bug) and has finite weights (else the file's)."""
    from tinyc.errors import VerifyError
    from tinyc.verifier import check_values, verify
    for op in graph.ops:  # a source path with undecodable bytes arrives as lone surrogates
        if op.loc is not None:
            op.loc = op.loc.encode("utf-8", "replace").decode("utf-8")
    try:
        verify(graph)
    except VerifyError as e:
        raise FrontendError(f"the IR imported from {path} does not verify: {e.what}", where=e.where,
                            hint="this is a bug in tinyc's frontend; please report it with the model") from None
    check_values(graph, path, allow_nonfinite, FrontendError)


_SAVE_HINT = ("save the model with torch.export.save(torch.export.export(model.eval(), example_inputs), "
              "'model.pt2')")


# ---------------------------------------------------------------- decomposition

class _Unsupported(Exception):
    """An op outside the table: maybe decomposition helps; otherwise `error` is reported."""

    def __init__(self, error: FrontendError):
        super().__init__(str(error))
        self.error = error


def _run_decompositions(ep: ExportedProgram, table) -> ExportedProgram:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ep.run_decompositions(table)
    except Exception as e:
        raise FrontendError(f"torch.export could not functionalize the program: {_first_line(e)}",
                            hint="re-export the model with this PyTorch version") from e


def _mutates(ep: ExportedProgram) -> bool:
    return any(isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
               for n in ep.graph.nodes if n.op == "call_function")


def _decomp_table():
    table = torch.export.default_decompositions()
    for name in LOWERINGS:
        op = _overload(name)
        if op is not None and op in table:
            table.pop(op)  # keep what tinyc lowers directly
    return table


def _overload(name: str):
    _, packet, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, packet, None), overload, None)


# ---------------------------------------------------------------- lowering driver

def _lower_program(ep: ExportedProgram, name: str) -> Graph:
    b = Builder(name)
    env: dict[torch.fx.Node, Any] = {}
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    outputs: list[Value] = []
    for node in ep.graph.nodes:
        b.node, b.loc = node, _source_loc(node)
        if node.op == "placeholder":
            env[node] = _placeholder(b, ep, node, specs.get(node.name))
        elif node.op == "call_function":
            env[node] = _call(b, node, env)
        elif node.op == "output":
            outputs = _outputs(b, ep, node, env)
        else:
            raise FrontendError(f"unsupported graph construct {node.op} ({node.target})",
                                where=b.where(), hint="control flow and submodule calls cannot be compiled; "
                                                      + OPS_HINT)
    return b.graph(outputs)


def _placeholder(b: Builder, ep: ExportedProgram, node, spec):
    kind = spec.kind if spec is not None else InputKind.USER_INPUT
    if kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
        tensor = ep.state_dict.get(spec.target)
        if tensor is None:
            tensor = ep.constants.get(spec.target)
        if not isinstance(tensor, torch.Tensor):
            raise FrontendError(f"constant {spec.target} is a {type(tensor).__name__}, not a tensor",
                                where=b.where(), hint=OPS_HINT)
        return ConstRef(sanitize(spec.target), _to_numpy(tensor))
    if kind != InputKind.USER_INPUT:
        raise FrontendError(f"unsupported model input kind {kind.name} ({node.name})", hint=OPS_HINT)
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise FrontendError(f"model input {node.name} is a {type(val).__name__}; tinyc inputs must be "
                            "float32 tensors", where=b.where(),
                            hint="make it a constant of the model, or a float32 tensor input")
    if not all(type(d) is int for d in val.shape):
        raise FrontendError(f"model input {node.name} has a dynamic shape {list(val.shape)}", where=b.where(),
                            hint="export with static shapes (no dynamic_shapes=); microcontroller "
                                 "buffers are sized at compile time")
    if val.dtype not in INPUT_DTYPES:
        raise FrontendError(f"model input {node.name} is {val.dtype}; tinyc inputs must be float32, or int64/int32 "
                            "token ids", where=b.where(),
                            hint="cast the input to float32 (token ids: int64) in the exported model's caller")
    return b.add_input(node.name, val.shape, INPUT_DTYPES[val.dtype])


def _call(b: Builder, node, env):
    target = node.target
    if target is operator.getitem:
        return _getitem(b, node, env)
    name = _target_name(target)
    fn = LOWERINGS.get(name)
    if fn not in PASSTHROUGH and _all_const(node, env) and isinstance(target, torch._ops.OpOverload):
        return _fold(b, node, env, name)
    if fn is None:
        raise _Unsupported(FrontendError(f"unsupported PyTorch op {name}", where=b.where(), hint=OPS_HINT))
    out = fn(b, _bind(node, env))
    _check_result(b, out)
    return out


def _getitem(b: Builder, node, env):
    parent, index = env[node.args[0]], node.args[1]
    got = parent[index]
    if got is None and node.users:
        raise FrontendError(f"uses output {index} of {node.args[0].target}, which tinyc does not compute "
                            "(e.g. max-pool indices)", where=b.where(),
                            hint="drop return_indices=True or the use of that output")
    return got


def _bind(node, env) -> dict[str, Any]:
    """The node's arguments by schema name, defaults filled in, fx nodes replaced by env values."""
    out = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            v = node.args[i]
        elif arg.name in node.kwargs:
            v = node.kwargs[arg.name]
        else:
            v = arg.default_value if arg.has_default_value() else None
        out[arg.name] = _resolve(v, env)
    return out


def _resolve(v, env):
    if isinstance(v, torch.fx.Node):
        return env[v]
    if isinstance(v, (list, tuple)):
        return type(v)(_resolve(x, env) for x in v)
    return v


def _all_const(node, env) -> bool:
    def const(x):
        return isinstance(x, ConstRef) or (isinstance(x, (tuple, list)) and all(const(y) for y in x))
    return all(const(env[n]) for n in node.all_input_nodes)


def _fold(b: Builder, node, env, name: str):
    """Evaluate an op on constants with PyTorch itself (param arithmetic, t(W), torch.ones, ...)."""
    if torch.Tag.nondeterministic_seeded in node.target.tags:
        raise _Unsupported(FrontendError(f"unsupported random op {name}", where=b.where(), hint=OPS_HINT))

    def real(x):
        if isinstance(x, ConstRef):
            return torch.from_numpy(x.array.copy())
        if isinstance(x, (list, tuple)):
            return type(x)(real(y) for y in x)
        return x

    try:
        with torch.no_grad():
            result = node.target(*real(_resolve(node.args, env)), **real(_resolve(dict(node.kwargs), env)))
    except Exception as e:
        raise FrontendError(f"could not evaluate constant op {name}: {_first_line(e)}", where=b.where()) from e
    base = clean_node_name(node.name)

    def wrap(r):
        if isinstance(r, torch.Tensor):
            return ConstRef(base, _to_numpy(r))
        if isinstance(r, (list, tuple)):
            return tuple(wrap(x) for x in r)
        return r

    out = wrap(result)
    if name in _TRANSPOSES and isinstance(out, ConstRef) and out.array.ndim == 2:
        src = env[node.all_input_nodes[0]]
        if src.transpose_of is not None and np.array_equal(out.array, src.transpose_of.array):
            return src.transpose_of  # t(t(W)) is W
        if src.array.ndim == 2 and np.array_equal(out.array, src.array.T):
            out.transpose_of = src  # lets matmul(x, t(W)) become linear(x, W) under W's own name
    return out


def _check_result(b: Builder, out) -> None:
    """Cross-check what was built against PyTorch's fake-tensor result (shape and dtype)."""
    val = b.node.meta.get("val")
    pairs = zip(out, val) if isinstance(out, tuple) and isinstance(val, (tuple, list)) else [(out, val)]
    for got, want in pairs:
        if not isinstance(got, Value):
            continue
        if not isinstance(want, torch.Tensor):
            b.unsupported(f"a {type(want).__name__} result")
        if got.type.dtype == "i32":   # token ids: only views of them (reshapes) stay integer
            made = next((op for op in reversed(b.body) if op.result is got), None)
            if want.dtype not in (torch.int32, torch.int64) or (made is not None and not has(made, Trait.VIEW)):
                b.unsupported(f"a {want.dtype} result computed from integer (token id) tensors", TOKENS_HINT)
        elif want.dtype != torch.float32 and not (want.dtype == torch.bool and got.type.dtype == "f32"):
            b.unsupported(f"a {want.dtype} result (tinyc computes in float32)")   # (bool: a 0/1 float mask)
        if tuple(got.type.shape) != tuple(want.shape):
            raise FrontendError(f"internal error: tinyc built shape {list(got.type.shape)} for {b.node.target} "
                                f"but PyTorch computes {list(want.shape)}", where=b.where(),
                                hint="please file an issue with this model")


def _outputs(b: Builder, ep: ExportedProgram, node, env) -> list[Value]:
    results = node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
    outputs = []
    for spec, r in zip(ep.graph_signature.output_specs, results):
        if spec.kind == OutputKind.USER_INPUT_MUTATION:
            continue  # the returned values are still right; the caller's buffer is just not updated
        if spec.kind != OutputKind.USER_OUTPUT:
            target = f" {spec.target}" if getattr(spec, "target", None) else ""
            raise FrontendError(f"the model updates state{target} in forward() ({spec.kind.name})",
                                hint="tinyc compiles stateless inference: call model.eval() and keep "
                                     "forward() free of buffer updates")
        v = env[r] if isinstance(r, torch.fx.Node) else r
        if isinstance(v, ConstRef):
            v = b.value(v)
        if not isinstance(v, Value):
            raise FrontendError(f"the model returns a {type(v).__name__}; tinyc outputs must be float32 "
                                "tensors", hint="return only tensors (a tensor or a tuple/list of tensors)")
        if v.type.dtype != "f32":
            raise FrontendError(f"the model returns the integer tensor %{v.name}; tinyc outputs must be float32 "
                                "tensors", hint="return float results (e.g. the logits), not token ids")
        outputs.append(v)
    return outputs


# ---------------------------------------------------------------- helpers

def _source_loc(node) -> str | None:
    """"file.py:LINE in func" of the innermost stack frame outside torch itself."""
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    user = [f for f in frames if not os.path.abspath(f[0]).startswith(_TORCH_DIR)]
    if not user:
        return None
    path, line, func = user[-1]
    return f"{os.path.basename(path)}:{line} in {func}"


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return t.contiguous().numpy().copy()


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _name_from_stem(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "model"
    return "model_" + name if name[0].isdigit() else name  # backends use it in C identifiers


# ---------------------------------------------------------------- file formats

def _sniff(data: bytes) -> str:
    if data[:4] == b"PK\x03\x04":
        try:
            names = _open_zip(data).namelist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
            return "export" if _EXPORT_MARK.search(data[:65536]) else "broken-zip"
        export_marks = ("/archive_format", "/models/model.json", "serialized_exported_program.json")
        if any(n.endswith(export_marks) for n in names):
            return "export"
        if any(n.endswith("data.pkl") for n in names):
            return "pickle"
        return "zip"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # legacy (non-zip) torch.save
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    lines = [ln.split("//")[0].strip() for ln in text.splitlines()]
    first = next((ln for ln in lines if ln), "")
    return "ir" if first.startswith("graph @") else "unknown"


def _open_zip(data: bytes) -> zipfile.ZipFile:
    """The zip whose first member starts the file. A cut-off archive can still hold a complete inner
    zip (torch.save members are stored uncompressed), which zipfile would find and open instead."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    infos = zf.infolist()
    n = int.from_bytes(data[26:28], "little")
    if not infos or infos[0].header_offset != 0 or data[30:30 + n] != infos[0].orig_filename.encode(
            "utf-8" if infos[0].flag_bits & 0x800 else "cp437"):
        raise zipfile.BadZipFile("the central directory does not describe the file's first member")
    return zf


# A local file header of a torch.export member: lets a truncated archive still be named as one.
_EXPORT_MARK = re.compile(rb"PK\x03\x04.{26}[^/\x00]{1,200}/(archive_format|models/|data/weights/)", re.S)


def _load_export(data: bytes, path, trust_pickle: bool = False) -> ExportedProgram:
    """Check the archive, then load it with torch.export.load.

    torch.export.load runs code from the file in several places: weights and constants marked
    `use_pickle` and `opaque_obj_` constants are unpickled with the full unpickler, sample inputs
    fall back to it when the weights-only load fails, `custom_obj_` constants go through the
    TorchScript unpickler, symbolic shape expressions are parsed with sympy.sympify (Python eval),
    and an AOTInductor member is a shared library it loads. Without trust_pickle every such member
    is refused before torch sees the file, torch gets a copy holding only the members checked here
    (sample inputs emptied: tinyc does not use them), and the full unpicklers are disabled while
    it loads, as a second line of defence.
    """
    members = _read_archive(data, path)
    if any(b"quantized_decomposed" in blob for name, blob in members.items() if name.endswith(".json")):
        from tinyc.frontend_quantized import register_ops
        register_ops()   # a pt2e-quantized model: torch.export.load needs PyTorch's definition of its ops
    if not trust_pickle:
        members = _safe_export_members(members, path)
        data = _rezip(members)
    try:
        with _quiet_torch(), _unpickling_disabled(not trust_pickle):
            return torch.export.load(io.BytesIO(data))
    except _UnsafeUnpickling as e:
        raise FrontendError(f"{path} needs unsafe unpickling ({e}), which runs code from the file",
                            hint=_TRUST_HINT) from None
    except FrontendError:
        raise
    except Exception as e:
        raise FrontendError(f"could not load the torch.export archive {path}: {_first_line(e)}",
                            hint=f"it may be damaged or come from another PyTorch version; re-export it "
                                 f"with this one (torch {torch.__version__})") from None


_TRUST_HINT = ("re-export the model with plain tensor weights and static shapes "
               "(torch.export.save(torch.export.export(model.eval(), example_inputs), 'model.pt2')), "
               "or pass --trust-pickle if you trust the file")


_MAX_ARCHIVE_BYTES = 4 << 30


def _read_archive(data: bytes, path) -> dict[str, bytes]:
    """Every member of the zip, CRC-checked; refuses truncated, damaged and ambiguous archives."""
    damaged = f"{path} is a damaged torch.export archive"
    hint = "the file is truncated or corrupt: copy it again or re-export the model"
    try:
        zf = _open_zip(data)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as e:
        raise FrontendError(f"{damaged} (not a readable zip: {e})", hint=hint) from None
    declared = sum(i.file_size for i in infos)
    if declared > _MAX_ARCHIVE_BYTES:  # a zip bomb, or a model far beyond any microcontroller
        raise FrontendError(f"{path} declares {declared:,} bytes of content, more than the "
                            f"{_MAX_ARCHIVE_BYTES:,} tinyc reads from a model archive",
                            hint="tinyc compiles models for microcontrollers; check that this is the right file")
    counts = collections.Counter(i.filename for i in infos)
    dup = sorted(n for n, c in counts.items() if c > 1)
    if dup:  # zip readers disagree on which copy counts: what is checked must be what torch loads
        raise FrontendError(f"{path} holds the archive member {dup[0]!r} twice", hint=hint)
    members = {}
    for info in infos:
        if info.is_dir():
            continue
        try:
            members[info.filename] = zf.read(info)
        except zipfile.BadZipFile as e:  # "Bad CRC-32 for file ..." and damaged headers
            raise FrontendError(f"{damaged}: member {info.filename}: {e}", hint=hint) from None
        except (zlib.error, EOFError, ValueError, OSError, NotImplementedError) as e:
            raise FrontendError(f"{damaged}: cannot read member {info.filename}: {e}", hint=hint) from None
    return members


def _safe_export_members(members: dict[str, bytes], path) -> dict[str, bytes]:
    """The members torch may load without running code from the file; refuses the others."""
    roots = {n.split("/", 1)[0] for n in members}
    if len(roots) != 1 or any("/" not in n for n in members):
        raise FrontendError(f"{path} is not a torch.export archive: its members are not under one folder",
                            hint=_SAVE_HINT)
    root = roots.pop() + "/"
    rel = {n[len(root):]: d for n, d in members.items()}

    def refuse(what: str):
        raise FrontendError(f"{path} {what}; loading it runs code from the file", hint=_TRUST_HINT)

    if "archive_format" in rel:
        models = [n[len("models/"):-len(".json")] for n in rel if n.startswith("models/") and n.endswith(".json")]
        for n in rel:
            if n.startswith("data/aotinductor/"):
                refuse(f"holds AOTInductor native code ({root}{n})")
        for m in models:
            _check_program_json(rel[f"models/{m}.json"], f"{root}models/{m}.json", refuse)
            for kind in ("weights", "constants"):
                legacy = f"data/{kind}/{m}.pt"
                if legacy in rel:
                    _check_weights_only(rel[legacy], root + legacy, refuse)
                    continue
                config = rel.get(f"data/{kind}/{m}_{kind}_config.json")
                if config is not None:
                    _check_payload_config(config, kind, f"{root}data/{kind}/{m}_{kind}_config.json", refuse)
            sample = f"data/sample_inputs/{m}.pt"
            if sample in rel:
                rel[sample] = b""  # torch unpickles these (falling back to the unsafe loader); tinyc needs none
    elif "serialized_exported_program.json" in rel or "version" in rel:  # the PyTorch 2.7 layout
        if "serialized_exported_program.json" in rel:
            _check_program_json(rel["serialized_exported_program.json"],
                                root + "serialized_exported_program.json", refuse)
        for n in ("serialized_state_dict.pt", "serialized_constants.pt"):
            if n in rel:
                _check_weights_only(rel[n], root + n, refuse)
        if "serialized_example_inputs.pt" in rel:
            rel["serialized_example_inputs.pt"] = b""
    else:
        raise FrontendError(f"{path} is not a torch.export archive (no archive_format member)", hint=_SAVE_HINT)
    return {root + n: d for n, d in rel.items()}


def _check_payload_config(text: bytes, kind: str, where: str, refuse) -> None:
    try:
        config = json.loads(text)["config"]
        entries = list(config.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FrontendError(f"damaged torch.export archive: {where} is not a valid payload config",
                            hint="re-export the model") from None
    for fqn, meta in entries:
        if not isinstance(meta, dict):
            raise FrontendError(f"damaged torch.export archive: {where}: entry {fqn!r} is not an object",
                                hint="re-export the model")
        file = str(meta.get("path_name", ""))
        if meta.get("use_pickle"):
            refuse(f"stores {kind[:-1]} {fqn!r} as a pickle ({file}, loaded by torch with weights_only=False)")
        if kind == "constants" and file.startswith(("custom_obj_", "opaque_obj_")):
            refuse(f"holds a pickled Python object as constant {fqn!r} ({file})")


def _check_weights_only(blob: bytes, where: str, refuse) -> None:
    """A member torch loads weights-only first and with the full unpickler if that fails."""
    if not blob:
        return
    try:
        with _quiet_torch(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception:
        refuse(f"has a member that only the unsafe unpickler can load ({where})")


# Graph node targets the deserializer may resolve: PyTorch operators and plain arithmetic.
_OP_TARGET = re.compile(r"torch\.ops\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){1,2}")
_PY_OPERATORS = {"abs", "add", "and_", "eq", "floordiv", "ge", "getitem", "gt", "index", "inv", "invert", "le",
                 "lshift", "lt", "matmul", "mod", "mul", "ne", "neg", "not_", "or_", "pos", "pow", "rshift",
                 "sub", "truediv", "truth", "xor"}


def _check_program_json(text: bytes, where: str, refuse) -> None:
    """Refuse what the deserializer would evaluate: sympy expressions (Python eval) and odd targets."""
    try:
        program = json.loads(text)
    except ValueError as e:
        raise FrontendError(f"damaged torch.export archive: {where} is not valid JSON ({e})",
                            hint="re-export the model") from None
    stack = [program]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            if "expr_str" in x:
                refuse(f"has a symbolic shape expression {_clip(x['expr_str'])} (torch evaluates these as "
                       "Python code; tinyc compiles static shapes only)")
            target = x.get("target")
            if isinstance(target, str) and "inputs" in x and "outputs" in x and not _safe_target(target):
                refuse(f"calls {_clip(target)}, which is not a PyTorch operator")
            stack.extend(x.values())


def _safe_target(target: str) -> bool:
    if _OP_TARGET.fullmatch(target):
        parts = target.split(".")
        if any(p.startswith("__") for p in parts):
            return False
        namespace = getattr(torch.ops, parts[2], None)  # not torch.ops.load_library and friends
        return isinstance(namespace, (torch._ops._OpNamespace, torch._ops._HigherOrderNamespace))
    module, _, fn = target.partition(".")
    if module == "_operator":
        return fn in _PY_OPERATORS
    if module == "math":
        return fn.isidentifier() and not fn.startswith("_") and callable(getattr(math, fn, None))
    return False


def _clip(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _rezip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return out.getvalue()


class _UnsafeUnpickling(Exception):
    """torch tried a full (code-running) unpickle while loading an untrusted archive."""


@contextlib.contextmanager
def _unpickling_disabled(active: bool = True):
    """Make torch.load(weights_only=False), pickle.loads and the TorchScript unpickler refuse."""
    if not active:
        yield
        return
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def load(f, *args, weights_only=None, **kwargs):
        if weights_only is not True:
            raise _UnsafeUnpickling("torch.load with weights_only=False")
        return real_load(f, *args, weights_only=True, **kwargs)

    def refuse(what):
        def fn(*args, **kwargs):
            raise _UnsafeUnpickling(what)
        return fn

    safe_pickle = types.SimpleNamespace(**{k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    safe_pickle.loads = safe_pickle.load = refuse("pickle.loads")
    saved = (torch.load, torch._C._pickle_load_obj, _package.pickle)
    torch.load, torch._C._pickle_load_obj, _package.pickle = load, refuse("TorchScript unpickling"), safe_pickle
    try:
        yield
    finally:
        torch.load, torch._C._pickle_load_obj, _package.pickle = saved


@contextlib.contextmanager
def _quiet_torch():
    """Silence torch's loggers and warnings (torch.export.load logs whole tracebacks for bad files)."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _load_pickle(data: bytes, path, trust_pickle: bool, input_shape, name: str) -> Graph:
    try:  # the weights-only unpickler runs no code: it tells state_dicts from pickled modules safely
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        obj = _PICKLED_OBJECT
    if obj is not _PICKLED_OBJECT:
        what = "a state_dict (weights only)" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise FrontendError(f"{path} holds {what}, not a model: it has no architecture to compile",
                            hint="build the model in Python, model.load_state_dict(torch.load(path)), then "
                                 + _SAVE_HINT + " or call tinyc.from_torch(model, example_inputs)")
    if not trust_pickle:
        raise FrontendError(
            f"{path} is a pickled PyTorch model (torch.save(model)); loading it means unpickling it, "
            "which runs arbitrary code from the file",
            hint="export it with torch.export.save(torch.export.export(model, example_inputs), 'model.pt2'), "
                 "or pass --trust-pickle --input-shape 1,3,32,32 if you trust the file")
    if input_shape is None:
        raise FrontendError(f"{path} is a pickled model, which does not record its input shape",
                            hint="pass --input-shape with the batch size included, e.g. --input-shape 1,3,32,32")
    shapes = _input_shapes(input_shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:
        raise FrontendError(f"could not unpickle {path}: {_first_line(e)}",
                            hint="the model's classes must be importable under the module path they were "
                                 "saved from; or export the model instead: " + _SAVE_HINT) from e
    if not isinstance(module, torch.nn.Module):
        raise FrontendError(f"{path} unpickles to a {type(module).__name__}, not a torch.nn.Module",
                            hint=_SAVE_HINT)
    return from_torch(module, tuple(torch.zeros(s) for s in shapes), name=name)


_PICKLED_OBJECT = object()


def _input_shapes(spec) -> list[tuple[int, ...]]:
    """(1,3,32,32), "1,3,32,32", or a list of those for several inputs."""
    if isinstance(spec, str):  # "1,3,32,32" or "1x3x32x32"; ";" separates inputs
        spec = [tuple(part.replace("x", ",").split(",")) for part in spec.split(";")]
    elif spec and all(isinstance(d, (int, np.integer)) for d in spec):
        spec = [spec]
    try:
        shapes = [tuple(int(d) for d in s) for s in spec]
    except (TypeError, ValueError):
        shapes = []
    if not shapes or any(not s or min(s) < 1 for s in shapes):
        raise FrontendError(f"bad input shape {spec!r}", hint="give positive sizes, batch included, "
                                                              "e.g. --input-shape 1,3,32,32")
    return shapes
