"""The IR text fuzzer (tools/fuzz_ir.py, issue 13 item 6) and the bugs it found.

- A small fixed-seed campaign over tests/fuzz_corpus finds nothing: every malformed input is a
  clean TinycError, nothing else escapes and nothing hangs (`make fuzz` runs the long version).
- Every corpus file round-trips exactly through print(parse(text)) or fails with a TinycError;
  each regress_*.tir (the regressions of issue 13) fails with the message on its first line.
"""
from __future__ import annotations

import importlib.util
import math
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinyc.errors import ParseError, TinycError, VerifyError
from tinyc.ir import QuantParams, TensorType
from tinyc.text import parse, print_graph
from tinyc.verifier import _check_type


# ---------------------------------------------------------------- findings, fixed in the verifier and the parser

@pytest.mark.parametrize("scale", [5e-324, 1e-45, 1e-39, 1e39, 1e300])
def test_quant_scale_outside_float32_is_refused(scale):
    """Found by the fuzzer: an i8 output scale of 5e-324 passed verify and made emit_bundle raise
    OverflowError (the requantization multiplier in_scale * w_scale / out_scale was inf)."""
    with pytest.raises(VerifyError, match="outside the normal float32 range"):
        _check_type(TensorType((1, 3), "i8", QuantParams((scale,), (0,))), "%y = linear", None)


def test_quant_scales_in_range_and_small_bias_scales_pass():
    f32 = np.finfo(np.float32)
    for scale in (float(f32.tiny), float(f32.max), 2.0 ** -64, 1.0):
        _check_type(TensorType((2,), "i8", QuantParams((scale,), (0,))), "x", None)
    # an i32 bias scale is in_scale * w_scale: two minimal calibrated scales (2^-64) give 2^-128
    _check_type(TensorType((2,), "i32", QuantParams((2.0 ** -128, 1e-300), (0, 0), 0)), "b", None)
    with pytest.raises(VerifyError, match="normal float64 range"):
        _check_type(TensorType((1,), "i32", QuantParams((5e-324,), (0,), 0)), "b", None)
    assert math.isfinite(float(f32.max))


@pytest.mark.parametrize("shape,words", [
    ("100000000000000000000x0xf32", "dimension 100000000000000000000 is too large: at most 2147483647"),
    ("2147483648xf32", "dimension 2147483648 is too large"),
    ("2147483647x2147483647x2147483647x0xf32", "dimensions multiply to more than 2^63 - 1")])
def test_dimension_too_large_is_a_parse_error(shape, words):
    """Found by the fuzzer: a zero-size const with a 10^20 dimension made parse raise numpy's
    ValueError "Maximum allowed dimension exceeded" (reshaping its empty resource)."""
    text = (f'graph @m(%x: tensor<1xf32>) -> (tensor<1xf32>) {{\n  %w = const : tensor<{shape}>\n'
            f'  return %x\n}}\n\n{{-#\n  resources: {{\n    w: "0x"\n  }}\n#-}}\n')
    with pytest.raises(ParseError, match=re.escape(words)) as info:
        parse(text)
    assert info.value.where == "<input>:2:23"   # the shape, after "tensor<"
    parse(text.replace(shape, "2147483647x0xf32"))    # the largest dimension is fine


@pytest.mark.parametrize("depth", [17, 600, 20000])
def test_deeply_nested_attribute_list_is_a_parse_error(depth):
    """Found by the fuzzer: `{foo = [[[...]]]}` 500 deep raised RecursionError in the parser."""
    text = ('graph @m(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = relu(%x) {foo = ' + "[" * depth +
            "]" * depth + '} : tensor<2xf32>\n  return %y\n}\n')
    with pytest.raises(ParseError, match="attribute foo: lists nest more than 16 deep"):
        parse(text)
    graph = parse(text.replace("[" * depth + "]" * depth, "[" * 16 + "]" * 16))
    assert graph.ops[0].attrs["foo"] == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]

# ---------------------------------------------------------------- the fuzzer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"
FILES = sorted(CORPUS.glob("*.tir"))


def _load_fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_ir", ROOT / "tools" / "fuzz_ir.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_ir"] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fuzz_ir = _load_fuzzer()


def test_fixed_seed_run_finds_nothing(tmp_path):
    """2,000 mutated inputs (or 20 s, whichever first) of seed 1: no findings, and the mutations reach
    every stage (parse and verify errors, and inputs that run all the way through the interpreter)."""
    summary = fuzz_ir.fuzz(fuzz_ir.load_corpus(CORPUS), seed=1, seconds=20, max_inputs=2000,
                           findings_dir=tmp_path / "findings")
    assert not summary.findings, summary.report() + "\n" + "\n".join(
        p.read_text() for p in sorted((tmp_path / "findings").glob("*.txt")))
    assert summary.inputs >= 50, summary.report()
    kinds = {key.split("/")[0] + "/" + key.split("/")[1] for key in summary.outcomes}
    assert {"ok/done", "error/parse", "error/verify"} <= kinds, summary.report()


def test_a_run_is_deterministic_for_its_seed():
    corpus = fuzz_ir.load_corpus(CORPUS)
    texts = [t for _, t in corpus]
    first = [fuzz_ir.Mutator(random.Random(f"7:{i}"), texts).mutate(texts[i % len(texts)], 3) for i in range(40)]
    again = [fuzz_ir.Mutator(random.Random(f"7:{i}"), texts).mutate(texts[i % len(texts)], 3) for i in range(40)]
    assert first == again
    assert len({t for t, _ in first}) > 30     # and the mutations do differ


def test_findings_are_written_and_fail_the_run(tmp_path, monkeypatch, capsys):
    """The oracle: an exception that is not a TinycError, or an input over the time limit, is a finding."""
    import tinyc.text
    real_parse = tinyc.text.parse

    def flaky_parse(text, filename="<input>"):
        if "relu" in text:
            raise KeyError("boom")
        if "sigmoid" in text:
            time.sleep(3)
        return real_parse(text, filename)

    monkeypatch.setattr(tinyc.text, "parse", flaky_parse)
    corpus = [(p.name, p.read_text()) for p in FILES if p.name in ("op_relu.tir", "op_sigmoid.tir", "op_add.tir")]
    summary = fuzz_ir.fuzz(corpus, seed=3, seconds=None, max_inputs=12, findings_dir=tmp_path, timeout=0.3)
    errors = {sig.split("-")[1] for sig in summary.findings}
    assert errors == {"KeyError", "hang"}, summary.report()
    written = sorted(tmp_path.glob("*.txt"))
    assert written and all(p.with_suffix(".tir").exists() for p in written)
    assert "KeyError: 'boom'" in "".join(p.read_text() for p in written)
    # and the command line exits 1 on findings, 0 without
    assert fuzz_ir.main(["--max-inputs", "5", "--seed", "3", "--corpus", str(CORPUS),
                         "--findings", str(tmp_path / "cli")]) == 1
    monkeypatch.setattr(tinyc.text, "parse", real_parse)
    assert fuzz_ir.main(["--max-inputs", "5", "--seed", "3", "--corpus", str(CORPUS),
                         "--findings", str(tmp_path / "cli2")]) == 0
    assert "fuzz_ir: 5 inputs" in capsys.readouterr().out


# ---------------------------------------------------------------- the seed corpus

def _expected(text: str) -> str | None:
    first = text.split("\n", 1)[0]
    return first.removeprefix("// expect-error: ") if first.startswith("// expect-error: ") else None


def test_corpus_has_valid_seeds_and_regressions():
    names = [p.name for p in FILES]
    assert sum(n.startswith("regress_") for n in names) >= 10
    assert {"zoo_kitchen_sink.tir", "tiny_int8.tir", "tiny_shared.tir", "tiny_binary.tir"} <= set(names)
    assert sum(n.startswith("op_") for n in names) >= 20


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_corpus_file_round_trips_or_fails_cleanly(path):
    text = path.read_text(encoding="utf-8")
    try:
        graph = parse(text, str(path))
    except TinycError:
        assert path.name.startswith("regress_"), f"{path.name} is a seed but does not parse"
        return
    if path.name.startswith("regress_"):
        return                      # parses; refused later (verify, the input checks or emit)
    assert print_graph(graph) == text


@pytest.mark.parametrize("path", [p for p in FILES if p.name.startswith("regress_")], ids=lambda p: p.name)
def test_regression_fails_with_its_message(path, tmp_path):
    text = path.read_text(encoding="utf-8")
    want = _expected(text)
    assert want, f"{path.name} lacks its first line '// expect-error: <message>'"
    outcome = fuzz_ir.run_input(text, 0, tmp_path)
    assert outcome.status == "error", (outcome.status, outcome.error, outcome.trace)
    with pytest.raises(TinycError) as info:
        _pipeline(text, tmp_path)
    assert want in str(info.value), str(info.value)


@pytest.mark.parametrize("path", [p for p in FILES if not p.name.startswith("regress_")], ids=lambda p: p.name)
def test_seed_runs_through_the_whole_pipeline(path, tmp_path):
    outcome = fuzz_ir.run_input(path.read_text(encoding="utf-8"), 0, tmp_path)
    assert (outcome.status, outcome.stage) == ("ok", "done"), (outcome.error, outcome.trace)


def _pipeline(text: str, tmp_path: Path) -> None:
    """run_input's stages without its classification, so the TinycError itself reaches the test."""
    from tinyc.backends.c_emitter import emit_bundle
    from tinyc.passmanager import PassManager
    from tinyc.verifier import nonfinite_consts, verify, zero_size_values
    graph = parse(text, "<regression>")
    verify(graph)
    empty, bad = zero_size_values(graph), nonfinite_consts(graph)
    if empty:
        raise TinycError("the graph has tensors with no elements: " + "; ".join(empty))
    if bad:
        raise TinycError("the graph has NaN or infinite weights: " + "; ".join(bad))
    emit_bundle(PassManager("fuse").run(graph), tmp_path / "bundle", target_name="host")
