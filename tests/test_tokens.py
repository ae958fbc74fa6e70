"""Token (integer) model inputs end to end: int64/int32 inputs become i32 graph inputs, nn.Embedding
(and weight[ids], index_select) the `embedding` op, x.float() a `cast`; float C = PyTorch, int8 C =
the interpreter bit for bit (host and QEMU Cortex-M4), the bundle API takes `const int32_t *`, and
an out-of-range token id is an error everywhere (interpreter, invoke's return value, tinyc run)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers import assert_close
from tinyc.backends.build import build
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from tinyc.errors import BackendError, FrontendError, TinycError
from tinyc.frontend import from_torch
from tinyc.interpreter import run
from tinyc.ops import OPS
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager
from tinyc.text import parse, print_graph
from tinyc.verifier import verify

RTOL = 1e-4
HAS_LAYER_NORM = "layer_norm" in OPS


# ---- models, written as a third party would ---------------------------------------------------------

class TokenClassifier(nn.Module):
    """Intent classifier: embed 16 int64 tokens, average them, a small MLP, 4 classes."""

    def __init__(self, vocab=100, dim=32, classes=4, norm=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(dim, 24), nn.ReLU(), nn.Linear(24, dim), nn.Tanh())
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        x = self.norm(self.embed(tokens))
        x = x + self.mlp(x)
        return self.head(x.mean(dim=1))


class Int32Lookup(nn.Module):
    """An embedding read with int32 ids, returned per token (no reduction)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)

    def forward(self, ids):
        return torch.sigmoid(self.emb(ids))


class TableFeatures(nn.Module):
    """weight[ids] on a 3-D table, index_select, and the ids themselves as a float feature."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(30, 2, 3))
        self.rows = nn.Parameter(torch.randn(30, 5))
        self.fc = nn.Linear(6 + 5 + 1, 3)

    def forward(self, ids):
        a = self.table[ids].flatten(2)                       # [1, 6, 6]
        b = self.rows.index_select(0, ids.flatten())[None]    # [1, 6, 5]
        c = ids.float()[..., None] / 30.0                     # [1, 6, 1]
        return self.fc(torch.cat([a, b, c], dim=-1))


class TextCNN(nn.Module):
    """Convolutions over embedded tokens: over time (channels = features) and, as some keyword models
    do, with the tokens as channels (the embedding then writes a channels-last int8 layout)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 8)
        self.over_time = nn.Conv1d(8, 6, 3, padding=1)
        self.over_tokens = nn.Conv1d(12, 4, 3)
        self.fc = nn.Linear(6 + 4, 3)

    def forward(self, ids):
        x = self.emb(ids)                                              # [1, 12, 8]
        a = torch.relu(self.over_time(x.transpose(1, 2))).mean(dim=2)  # [1, 6]
        b = torch.relu(self.over_tokens(x)).mean(dim=2)                # [1, 4]
        return self.fc(torch.cat([a, b], dim=1))


def _seeded(cls, seed, **kw):
    torch.manual_seed(seed)
    return cls(**kw).eval()


MODELS = {
    "classifier": (lambda: _seeded(TokenClassifier, 0), (1, 16), torch.int64, 100),
    "int32_lookup": (lambda: _seeded(Int32Lookup, 1), (2, 5), torch.int32, 50),
    "table_features": (lambda: _seeded(TableFeatures, 2), (1, 6), torch.int64, 30),
    "textcnn": (lambda: _seeded(TextCNN, 4), (1, 12), torch.int64, 40),
}
if HAS_LAYER_NORM:
    MODELS["classifier_ln"] = (lambda: _seeded(TokenClassifier, 3, norm=True), (1, 16), torch.int64, 100)

_CACHE: dict = {}


def model(name):
    """(module, float graph, vocab) built once per name."""
    if name not in _CACHE:
        ctor, shape, dtype, vocab = MODELS[name]
        m = ctor()
        example = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
        _CACHE[name] = (m, from_torch(m, (example,), name=name), vocab)
    return _CACHE[name]


def tokens(name, rows, seed):
    _, shape, dtype, vocab = MODELS[name]
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, (rows, *shape)).astype(np.int64 if dtype == torch.int64 else np.int32)


def torch_out(name, x):
    m, _, _ = model(name)
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def quantized(name):
    key = name + "#int8"
    if key not in _CACHE:
        _, g, _ = model(name)
        calib = tokens(name, 32, seed=3)
        _CACHE[key] = PassManager("fuse,quantize-int8").run(g.copy(), PassContext(calib=calib))
    return _CACHE[key]


# ---- import and IR --------------------------------------------------------------------------------------

def test_token_inputs_import_as_i32_and_embedding_ops():
    _, g, _ = model("classifier")
    assert [v.type.dtype for v in g.inputs] == ["i32"] and g.inputs[0].type.shape == (1, 16)
    assert [op.kind for op in g.compute_ops()].count("embedding") == 1
    _, g, _ = model("table_features")
    kinds = [op.kind for op in g.compute_ops()]
    assert kinds.count("embedding") == 2 and "cast" in kinds


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_interpreter_matches_pytorch(name):
    _, g, _ = model(name)
    for x in tokens(name, 2, seed=1):
        assert_close(run(g, [x])[0], torch_out(name, x), RTOL)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_text_round_trip_float_and_int8(name):
    _, g, _ = model(name)
    for graph in (g, quantized(name)):
        text = print_graph(graph)
        assert "xi32>" in text
        again = parse(text)
        verify(again)
        assert print_graph(again) == text


def test_int8_keeps_tokens_unquantized_and_the_table_quantization():
    q = quantized("classifier")
    (x,) = q.inputs
    assert x.type.dtype == "i32"
    users = [op for op in q.ops if x in op.operands]
    assert [op.kind for op in users] == ["embedding"]   # no quantize op on the token input
    emb = users[0]
    table = emb.operands[0]
    assert table.type.dtype == "i8" and table.type.quant.axis is None
    assert emb.result.type.dtype == "i8" and emb.result.type.quant == table.type.quant


# ---- C ------------------------------------------------------------------------------------------------

def _rows(xs):
    return np.stack([x.reshape(-1) for x in xs])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_host_c_matches_pytorch(name, tmp_path):
    _, g, _ = model(name)
    emit_bundle(g, tmp_path, target_name="host")
    xs = tokens(name, 3, seed=2)
    got = run_model(tmp_path, "host", "model", _rows(xs), sanitize=True)
    for r, x in enumerate(xs):
        assert_close(got[r], torch_out(name, x).reshape(-1), RTOL)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_host_c_is_bit_exact(name, tmp_path):
    q = quantized(name)
    assert any(op.kind == "embedding" and op.result.type.dtype == "i8" for op in q.ops)
    emit_bundle(q, tmp_path, target_name="host")
    xs = tokens(name, 3, seed=4)
    for cc in ("gcc", "clang") if name == "table_features" else ("gcc",):   # -Wall -Wextra -Werror -pedantic
        got = run_model(tmp_path, "host", "model", _rows(xs), sanitize=True, cc=cc)
        for r, x in enumerate(xs):
            want = run(q, [x])[0].reshape(-1)
            assert np.array_equal(got[r].view(np.uint32), want.view(np.uint32)), (cc, r)


def test_bundle_api_is_int32_tokens(tmp_path):
    _, g, _ = model("classifier")
    emit_bundle(g, tmp_path, target_name="host")
    header = (tmp_path / "model.h").read_text()
    assert "int model_invoke(const int32_t *input, float *output);" in header
    assert "#define model_INPUT_TYPE int32_t\n" in header and "#define model_INPUT_INT32 1\n" in header
    assert "#define model_ERR_INDEX (-2)\n" in header and "#include <stdint.h>" in header
    manifest = json.loads((tmp_path / "bundle.json").read_text())
    assert [t["dtype"] for t in manifest["inputs"]] == ["i32"] and manifest["outputs"][0]["dtype"] == "f32"
    # a user's program including only model.h, built warning-free with clang as well
    (tmp_path / "app.c").write_text(r"""
#include <stdio.h>
#include "model.h"
int main(void)
{
    model_INPUT_TYPE ids[model_INPUT_SIZE];
    float out[model_OUTPUT_SIZE];
    int i;
    for (i = 0; i < model_INPUT_SIZE; ++i) ids[i] = i;
    if (model_invoke(ids, out) != 0) return 1;
    ids[3] = 100;                                   /* vocabulary is 100 */
    if (model_invoke(ids, out) != model_ERR_INDEX) return 2;
    ids[3] = -1;
    if (model_invoke(ids, out) != model_ERR_INDEX) return 3;
    if (model_invoke(0, out) != -1) return 4;
    printf("ok\n");
    return 0;
}
""")
    for cc in ("gcc", "clang"):
        exe = tmp_path / f"app_{cc}"
        subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsanitize=address,undefined",
                        "-I", str(tmp_path), str(tmp_path / "app.c"), str(tmp_path / "model.c"), "-o", str(exe),
                        "-lm"], check=True, capture_output=True)
        assert subprocess.run([str(exe)], capture_output=True, text=True).stdout == "ok\n"


@pytest.mark.parametrize("int8", [False, True])
def test_out_of_range_token_is_an_error(int8, tmp_path):
    _, g, vocab = model("classifier")
    graph = quantized("classifier") if int8 else g
    x = tokens("classifier", 1, seed=6)
    for bad in (vocab, -1, 2 ** 31 - 1):
        y = x.copy()
        y[0, 0, 7] = bad
        with pytest.raises(TinycError, match=rf"token index {bad} is out of range \[0, {vocab}\)"):
            run(graph, [y[0]])
    y = x.copy()
    y[0, 0, 7] = 2 ** 32 + 1   # an int64 id beyond int32 is refused, not wrapped to 1
    with pytest.raises(TinycError, match="outside i32's range"):
        run(graph, [y[0]])
    emit_bundle(graph, tmp_path, target_name="host")
    rows = _rows(np.concatenate([x, x]))
    rows[1, 7] = vocab
    with pytest.raises(BackendError, match="returned -2"):
        run_model(tmp_path, "host", "model", rows, sanitize=True)


@pytest.mark.qemu
def test_int8_cortex_m4_qemu_is_bit_exact(tmp_path):
    name = "classifier_ln" if HAS_LAYER_NORM else "classifier"
    q = quantized(name)
    emit_bundle(q, tmp_path, target_name="cortex-m4")
    write_target_files(tmp_path, "cortex-m4", "model")
    xs = tokens(name, 2, seed=8)
    got = run_model(tmp_path, "cortex-m4", "model", _rows(xs))
    for r, x in enumerate(xs):
        want = run(q, [x])[0].reshape(-1)
        assert np.array_equal(got[r].view(np.uint32), want.view(np.uint32)), r
    build(tmp_path, "cortex-m4", "model", "bench")   # the bench harness feeds int32 ids too


# ---- errors ---------------------------------------------------------------------------------------------

def test_mixed_float_and_token_inputs_have_no_bundle_api(tmp_path):
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = nn.Embedding(10, 4)

        def forward(self, ids, x):
            return self.e(ids).mean(1) + x

    g = from_torch(Mixed().eval(), (torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, 4)))
    assert [v.type.dtype for v in g.inputs] == ["i32", "f32"]
    with pytest.raises(BackendError, match="mixes float inputs"):
        emit_bundle(g, tmp_path)


@pytest.mark.parametrize("forward,match", [
    (lambda self, t: self.e(t) * (t * 2.0)[..., None], "reads the integer tensor"),
    (lambda self, t: self.e(t + 1), "reads the integer tensor"),
    (lambda self, t: self.e(torch.relu(t)), "computed from integer"),
    (lambda self, t: (self.e(t), t), "returns the integer tensor"),
    (lambda self, t: self.e(t).mean() + t.half().float().mean(), "conversion of token ids to torch.float16"),
])
def test_token_misuse_is_a_clear_error(forward, match):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = nn.Embedding(10, 4)

    M.forward = forward
    with pytest.raises(FrontendError, match=match):
        from_torch(M().eval(), (torch.zeros(1, 3, dtype=torch.int64),))


def test_other_input_dtypes_are_refused():
    for dtype in (torch.bool, torch.float16, torch.int16):
        with pytest.raises(FrontendError, match="float32 tensors, or int64/int32"):
            from_torch(nn.Identity(), (torch.zeros(1, 3, dtype=dtype),))


def test_calibration_needs_whole_token_ids():
    _, g, _ = model("classifier")
    with pytest.raises(TinycError, match="integer token ids"):
        PassManager("quantize-int8").run(g.copy(), PassContext(calib=np.full((4, 1, 16), 0.5, np.float32)))


# ---- the command line ----------------------------------------------------------------------------------

def tinyc(*args):
    return subprocess.run([sys.executable, "-m", "tinyc", *map(str, args)], capture_output=True, text=True)


def test_cli_compiles_and_runs_an_int64_exported_program(tmp_path):
    m, g, _ = model("classifier")
    example = torch.from_numpy(tokens("classifier", 1, seed=9)[0])
    torch.export.save(torch.export.export(m, (example,)), str(tmp_path / "model.pt2"))
    np.save(tmp_path / "calib.npy", tokens("classifier", 32, seed=3))
    result = tinyc("compile", tmp_path / "model.pt2", "--calib", tmp_path / "calib.npy", "--eval", tmp_path / "calib.npy",
                   "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "const int32_t *input" in (tmp_path / "out" / "model.h").read_text()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["inputs"][0]["dtype"] == "i32"
    assert report["metric"] and all(step["accuracy"] is not None for step in report["passes"])   # --eval on ids
    xs = tokens("classifier", 3, seed=10)
    np.save(tmp_path / "x.npy", xs)
    result = tinyc("run", tmp_path / "out", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    y = np.load(tmp_path / "y.npy")
    q = quantized("classifier")   # the same pipeline and calibration as the CLI's
    for r, x in enumerate(xs):
        assert np.array_equal(y[r].reshape(-1), run(q, [x])[0].reshape(-1))
        assert_close(y[r], torch_out("classifier", x)[0], 0.1)   # int8 within 10 % of PyTorch
    xs[1, 0, 2] = 100
    np.save(tmp_path / "bad.npy", xs)
    result = tinyc("run", tmp_path / "out", "--input", tmp_path / "bad.npy")
    assert result.returncode == 1 and "token id is out of range" in result.stderr and "Traceback" not in result.stderr
