"""PyTorch frontend: torch.export programs (and model files) to tinyc IR.

The ExportedProgram is first functionalized without decomposing anything
(`run_decompositions({})`): that removes in-place ops and aliasing while keeping
the high-level aten ops (conv2d, linear, batch_norm, ...) that map one-to-one onto
the IR. Only if an op outside the table remains is the program decomposed further,
with PyTorch's core-ATen table minus the ops tinyc lowers directly (e.g. silu and
hardsigmoid then arrive as sigmoid/mul and add/clamp/div).
"""
from __future__ import annotations

import io
import operator
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from tinyc.errors import FrontendError
from tinyc.frontend_ops import LOWERINGS, OPS_HINT, PASSTHROUGH, Builder, ConstRef, clean_node_name, sanitize
from tinyc.ir import Graph, Value

__all__ = ["from_torch", "import_exported_program", "load_model", "supported_ops"]

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
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
            kind = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
            raise FrontendError(f"example input {i} is {kind}; tinyc model inputs must be float32 tensors",
                                hint="pass float32 tensors of the deployed shape (batch included)")
    module.eval()
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
    """Lower an ExportedProgram to a tinyc Graph (decomposing only if an op needs it)."""
    first = None
    if not _mutates(ep):  # already functional: lower the exported graph as is (the common, fast case)
        try:
            return _lower_program(ep, name)
        except _Unsupported as e:
            first = e.error
    else:  # in-place ops (relu_, x += y): functionalize, still without decomposing
        try:
            return _lower_program(_run_decompositions(ep, {}), name)
        except _Unsupported as e:
            first = e.error
    try:  # last chance: decompose what tinyc does not lower directly
        return _lower_program(_run_decompositions(ep, _decomp_table()), name)
    except (_Unsupported, FrontendError):
        raise first from None  # report the op as the user wrote it, not its decomposition


def load_model(path, *, trust_pickle: bool = False, input_shape=None, name: str | None = None) -> Graph:
    """Import a model file; the format is detected from the content, not the extension.

    - a torch.export.save archive: loaded with torch.export.load;
    - a pickled nn.Module (torch.save(model)): only with trust_pickle=True and input_shape;
    - a state_dict, IR text, anything else: a FrontendError saying what to do.
    """
    p = Path(path)
    if not p.exists():
        raise FrontendError(f"model file not found: {path}", hint="check the path")
    if not p.is_file():
        raise FrontendError(f"{path} is not a file", hint="pass a model file saved with torch.export.save")
    name = name or _name_from_stem(p.stem)
    data = p.read_bytes()
    kind = _sniff(data)
    if kind == "export":
        return import_exported_program(_load_export(data, path), name)
    if kind == "pickle":
        return _load_pickle(data, path, trust_pickle, input_shape, name)
    if kind == "ir":
        raise FrontendError(f"{path} is tinyc IR text, not a PyTorch model",
                            hint="read IR with tinyc.parse() (the CLI's IR commands take it directly)")
    raise FrontendError(f"{path} is not a PyTorch model file (unrecognized content)", hint=_SAVE_HINT)


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
    if val.dtype != torch.float32:
        raise FrontendError(f"model input {node.name} is {val.dtype}; tinyc inputs must be float32",
                            where=b.where(), hint="cast the input to float32 in the exported model's caller")
    return b.add_input(node.name, val.shape)


def _call(b: Builder, node, env):
    target = node.target
    if target is operator.getitem:
        return _getitem(b, node, env)
    name = str(target) if isinstance(target, torch._ops.OpOverload) else getattr(target, "__name__", str(target))
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
        if want.dtype != torch.float32:
            b.unsupported(f"a {want.dtype} result (tinyc computes in float32)")
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
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "unknown"
        export_marks = ("/archive_format", "/models/model.json", "serialized_exported_program.json")
        if any(n.endswith(export_marks) for n in names):
            return "export"
        if any(n.endswith("data.pkl") for n in names):
            return "pickle"
        return "unknown"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # legacy (non-zip) torch.save
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    lines = [ln.split("//")[0].strip() for ln in text.splitlines()]
    first = next((ln for ln in lines if ln), "")
    return "ir" if first.startswith("graph @") else "unknown"


def _load_export(data: bytes, path) -> ExportedProgram:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(io.BytesIO(data))
    except Exception as e:
        raise FrontendError(f"could not load the torch.export archive {path}: {_first_line(e)}",
                            hint=f"it may come from another PyTorch version; re-export it with this one "
                                 f"(torch {torch.__version__})") from e


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
