"""tinyc.evaluate: metrics checked by hand, batched runs equal sample-by-sample runs, the
PassContext, and the CLI's --eval / --train / --max-accuracy-drop."""
import contextlib
import io
import json
import re
import time

import numpy as np
import pytest

from helpers import fused_graph, zoo_graph, zoo_inputs
from tinyc.errors import TinycError
from tinyc.evaluate import (SQNR_CAP, as_samples, batch_safe, make_context, make_evaluator, run_batch,
                            sqnr_db)
from tinyc.interpreter import run
from tinyc.ir import Graph, Op, TensorType, Value
from bench.zoo import names as zoo_names

# linear 3 -> 4 picking x0, x1, x2 and a constant 0.5: the class is argmax(x0, x1, x2, 0.5)
PICK = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
BIAS = np.array([0, 0, 0, 0.5], np.float32)
X = np.array([[2, 0, 0], [0, 3, 1], [0, 0, 1], [0, 0, 0], [1, 0, 9]], np.float32)   # classes 0 1 2 3 2


def picker(w=PICK, b=BIAS) -> Graph:
    x = Value("x", TensorType((1, 3)))
    wv, bv, y = Value("w", TensorType(w.shape)), Value("b", TensorType(b.shape)), Value("y", TensorType((1, 4)))
    return Graph("picker", [x], [y], [Op("const", [], wv, {"value": w}), Op("const", [], bv, {"value": b}),
                                      Op("linear", [x, wv, bv], y)])


# ---- metrics by hand ------------------------------------------------------------------------

def test_accuracy_with_labels():
    evaluate, metric = make_evaluator(picker(), X, np.array([0, 1, 2, 3, 0]))
    assert metric == "accuracy %"
    assert evaluate(picker()) == pytest.approx(80.0)          # the last sample is class 2, not 0
    swapped = picker(PICK[[1, 0, 2, 3]])                       # predicts 1 for 0 and 0 for 1
    assert evaluate(swapped) == pytest.approx(40.0)


def test_labels_as_float_or_one_hot():
    labels = np.array([0, 1, 2, 3, 2])
    for y in (labels.astype(np.float32), np.eye(4, dtype=np.float32)[labels], labels[:, None]):
        evaluate, _ = make_evaluator(picker(), X, y)
        assert evaluate(picker()) == 100.0


def test_agreement_without_labels():
    evaluate, metric = make_evaluator(picker(), X)
    assert metric == "top-1 agreement %"
    assert evaluate(picker()) == 100.0
    assert evaluate(picker(PICK[[1, 0, 2, 3]])) == pytest.approx(60.0)   # samples 0 and 1 change
    assert evaluate(picker(b=np.array([0, 0, 0, 5], np.float32))) == pytest.approx(40.0)  # only 3 and 2 (the 9) stay


def test_sqnr_by_hand():
    want = np.array([3.0, -4.0])
    assert sqnr_db(want * 1.1, want) == pytest.approx(20.0)      # noise = 1% of the signal
    assert sqnr_db(want + [0.5, 0.0], want) == pytest.approx(10 * np.log10(25 / 0.25))
    assert sqnr_db(want, want) == SQNR_CAP
    assert sqnr_db(np.array([np.nan, 0]), want) == -SQNR_CAP


def test_sqnr_on_the_autoencoder():
    graph = fused_graph("fc_autoencoder")
    x = zoo_inputs("fc_autoencoder", rows=16)
    evaluate, metric = make_evaluator(graph, x)
    assert metric == "SQNR dB"
    assert evaluate(graph) == SQNR_CAP
    scaled = graph.copy()
    last = [op for op in scaled.compute_ops() if op.kind == "linear"][-1]
    for v in last.operands[1:]:                                 # weight and bias x 1.1: output x 1.1
        prod = next(op for op in scaled.const_ops() if op.result is v)
        prod.attrs["value"] = (prod.attrs["value"] * np.float32(1.1)).astype(np.float32)
    assert evaluate(scaled) == pytest.approx(20.0, abs=1e-3)


@pytest.mark.parametrize("name, metric", [("mlp", "top-1 agreement %"), ("ds_cnn", "top-1 agreement %"),
                                          ("fc_autoencoder", "SQNR dB"), ("kitchen_sink", "top-1 agreement %")])
def test_metric_choice_on_the_zoo(name, metric):
    assert make_evaluator(fused_graph(name), zoo_inputs(name, rows=2))[1] == metric


def test_forced_metric():
    evaluate, metric = make_evaluator(picker(), X, metric="sqnr")
    assert metric == "SQNR dB" and evaluate(picker()) == SQNR_CAP
    with pytest.raises(TinycError, match="needs labels"):
        make_evaluator(picker(), X, metric="accuracy")


# ---- data errors --------------------------------------------------------------------------------

def test_input_forms():
    graph = fused_graph("cnn_bn")
    x = zoo_inputs("cnn_bn", rows=3)                             # [3, 1, 8, 8]
    for data in (x, x[:, None]):
        assert as_samples(graph, data)[0].shape == (3, 1, 1, 8, 8)
    assert as_samples(graph, x[:1])[0].shape == (1, 1, 1, 8, 8)  # one sample of the input shape
    with pytest.raises(TinycError, match=r"has shape \[3, 1, 4, 8\]; the model input is \[1, 1, 8, 8\]"):
        make_evaluator(graph, x[:, :, :4])


@pytest.mark.parametrize("labels, match", [(np.arange(4) % 4, "4 labels for 5 predictions"),
                                           (np.array([0, 1, 2, 3, 4]), "4 classes"),
                                           (np.array([0, 1.5, 2, 3, 0]), "integer class indices"),
                                           (np.array(["a"] * 5), "dtype")])
def test_label_errors(labels, match):
    with pytest.raises(TinycError, match=match):
        make_evaluator(picker(), X, labels)


def test_graph_with_other_output_shape_is_an_error():
    evaluate, _ = make_evaluator(picker(), X)
    with pytest.raises(TinycError, match="first output"):
        evaluate(fused_graph("mlp"))


# ---- batched runs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", zoo_names())
def test_batched_run_equals_sample_by_sample(name):
    graph = fused_graph(name)
    x = zoo_inputs(name, rows=3, seed=2)
    # kitchen_sink's squeeze(0) mixes the batch axis; multi-head attention folds the heads into axis
    # 0 (nn.MultiheadAttention's [N * heads, T, d] view) and MobileViT folds its patches into it
    assert batch_safe(graph) == (name not in ("kitchen_sink", "transformer_encoder", "mobilevit_block"))
    got = run_batch(graph, as_samples(graph, x), chunk=2)       # chunks of 2 and 1
    for i in range(3):
        for g, want in zip(got, run(graph, [x[i:i + 1]])):
            np.testing.assert_allclose(g[i], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("name", ["cnn_bn", "conv1d", "fc_autoencoder"])
def test_batched_int8_run_is_bit_exact(name):
    from tinyc.passes import PassContext
    from tinyc.passmanager import PassManager
    q = PassManager("quantize-int8").run(fused_graph(name).copy(), PassContext(calib=zoo_inputs(name, 8, seed=3)))
    assert batch_safe(q)
    x = zoo_inputs(name, rows=3)
    got = run_batch(q, as_samples(q, x))[0]
    for i in range(3):
        np.testing.assert_array_equal(got[i], run(q, [x[i:i + 1]])[0])


@pytest.mark.parametrize("pipeline", ["binarize{activations=binary threshold=zero scale=mean-abs}",
                                      "share-weights"])
def test_batched_compressed_graphs_are_exact(pipeline):
    from tinyc.passes import PASSES
    from tinyc.passmanager import PassManager
    if pipeline.split("{")[0] not in PASSES:
        pytest.skip(f"no {pipeline} pass")
    graph = PassManager(pipeline).run(fused_graph("cnn_bn").copy())
    assert batch_safe(graph)
    x = zoo_inputs("cnn_bn", rows=3)
    got = run_batch(graph, as_samples(graph, x))[0]
    for i in range(3):
        np.testing.assert_allclose(got[i], run(graph, [x[i:i + 1]])[0], rtol=1e-6, atol=1e-7)


def test_unbatchable_ops_fall_back_to_a_loop():
    graph = zoo_graph("kitchen_sink")
    x = zoo_inputs("kitchen_sink", rows=2)
    out = run_batch(graph, as_samples(graph, x))
    assert [o.shape for o in out] == [(2, 1, 5), (2, 1, 5)]
    np.testing.assert_array_equal(out[1][1], run(graph, [x[1:]])[1])


def test_digits_sized_cnn_is_fast():
    graph = fused_graph("cnn_bn")
    x = np.random.default_rng(0).random((360, 1, 8, 8), np.float32)
    evaluate, _ = make_evaluator(graph, x, np.arange(360) % 10)
    t0 = time.perf_counter()
    evaluate(graph)
    assert time.perf_counter() - t0 < 2.0


# ---- the pass context ------------------------------------------------------------------------------

def test_make_context():
    graph = picker()
    labels = np.array([0, 1, 2, 3, 0])
    ctx = make_context(graph, eval_inputs=X, eval_labels=labels, train=X)
    assert ctx.metric == "accuracy %" and ctx.baseline == pytest.approx(80.0)
    assert ctx.reference is not graph and ctx.reference.ops[2].kind == "linear"
    assert ctx.train is X and ctx.evaluate(graph) == pytest.approx(80.0)
    # under a budget (the contract): the score is estimated from agreement; 5 samples are too few
    # for a confirmation split
    ctx = make_context(graph, eval_inputs=X, eval_labels=labels, train=X, max_accuracy_drop=1.5)
    assert ctx.metric == "accuracy % (estimated from agreement)" and ctx.baseline == pytest.approx(80.0)
    assert ctx.max_accuracy_drop == 1.5 and ctx.train is X and ctx.evaluate(graph) == pytest.approx(80.0)
    assert ctx.confirmation is None and any("too few" in n for n in ctx.notes)
    assert ctx.selection.samples == 5 and ctx.selection.labelled == 5
    bare = make_context(graph)
    assert bare.evaluate is None and bare.reference is not None


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_accuracy_drop=1.0), "needs evaluation data"),
    (dict(eval_labels=np.zeros(5)), "without evaluation inputs"),
    (dict(eval_inputs=X, max_accuracy_drop=-1.0), "non-negative"),
    (dict(train=np.zeros((4, 5), np.float32)), r"training data .* has shape \[4, 5\]"),
])
def test_make_context_errors(kwargs, match):
    with pytest.raises(TinycError, match=match):
        make_context(picker(), **kwargs)


# ---- CLI ------------------------------------------------------------------------------------------

def tinyc(*args):
    from tinyc.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """A digits-sized zoo CNN saved with torch.export, evaluation inputs and labels."""
    import torch
    from helpers import zoo_model
    root = tmp_path_factory.mktemp("eval")
    module, example = zoo_model("cnn_bn")
    torch.export.save(torch.export.export(module.eval(), (example,)), str(root / "cnn.pt2"))
    x = np.random.default_rng(0).random((50, 1, 8, 8), np.float32)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", np.arange(50) % 10)
    np.save(root / "y_short.npy", np.arange(10))
    np.save(root / "x_bad.npy", x[:, :, :4])
    return root


def test_cli_stats_show_accuracy(digits_files):
    d = digits_files
    code, out, err = tinyc("opt", d / "cnn.pt2", "-p", "fuse", "--eval", d / "x.npy", d / "y.npy", "--stats",
                           "--elide-weights")
    assert code == 0, err
    rows = [line.split() for line in err.splitlines() if line.strip().startswith(("0 ", "1 "))]
    assert [r[1] for r in rows] == ["import", "fuse"]
    assert all(r[-1] != "-" for r in rows) and rows[0][-1] == rows[1][-1]     # fuse keeps the accuracy
    assert "accuracy: accuracy % on the --eval data" in err
    code, _, err = tinyc("opt", d / "cnn.pt2", "-p", "fuse", "--eval", d / "x.npy", "--stats", "--elide-weights")
    assert code == 0 and "top-1 agreement %" in err and "100.00" in err


@pytest.mark.parametrize("files, match", [
    (["missing.npy"], "evaluation input file not found"),
    (["x_bad.npy"], r"shape \[50, 1, 4, 8\]; the model input is \[1, 1, 8, 8\]"),
    (["x.npy", "y_short.npy"], "10 labels for 50 predictions"),
    (["x.npy", "y.npy", "y.npy"], "one or two files"),
])
def test_cli_bad_eval_files(digits_files, files, match):
    code, _, err = tinyc("opt", digits_files / "cnn.pt2", "-p", "fuse", "--eval", *(digits_files / f for f in files))
    assert code == 1 and err.startswith("tinyc: error:")
    assert re.search(match, err), err


def test_cli_accuracy_drop_needs_eval(digits_files):
    code, _, err = tinyc("opt", digits_files / "cnn.pt2", "--max-accuracy-drop", "1")
    assert code == 1 and "--eval" in err


def test_cli_compile_report_has_accuracy_per_pass(digits_files, tmp_path):
    d = digits_files
    code, _, err = tinyc("compile", d / "cnn.pt2", "-o", tmp_path / "out", "--eval", d / "x.npy", d / "y.npy")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metric"] == "accuracy %"
    assert [p["name"] for p in report["passes"]] == ["import", "fuse"]
    assert all(isinstance(p["accuracy"], float) for p in report["passes"])
