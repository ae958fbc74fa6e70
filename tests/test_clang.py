"""Every kind of bundle builds warning-free with gcc and clang (issue 13): the host run harness
and every .c file of the bundle (each kernel file is also compiled on its own) under
-std=c99 -Wall -Wextra -Werror -pedantic, and both executables compute what the interpreter does
(integer bundles bit for bit)."""
from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest

from helpers import assert_close, zoo_graph, zoo_inputs
from tinyc.backends.build import build
from tinyc.backends.build_flags import WARNING_FLAGS
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.interpreter import run as interpret
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager

COMPILERS = ("gcc", "clang")

# name: (zoo model, pipeline, integer outputs: compared bit for bit)
BUNDLES = {
    "float": ("kitchen_sink", "fuse", False),
    "float_conv": ("mobilenet_v1_025", "fuse", False),
    "int8": ("kitchen_sink", "fuse,quantize-int8", True),
    "int8_conv": ("ds_cnn", "fuse,quantize-int8", True),
    "packed_codebook": ("mlp", "fuse,quantize-int8,share-weights{bits=4}", True),
    "packed_sparse": ("cnn_bn", "fuse,prune-weights{sparsity=0.8 scope=layer},quantize-int8", True),
    "packed_float": ("conv1d", "fuse,share-weights{bits=2}", False),
    "binary": ("cnn_bn", "fuse,binarize", False),
    "binary_act": ("resnet8", "fuse,binarize{activations=binary}", False),
    "binary_int8": ("cnn_bn", "fuse,binarize,quantize-int8", True),
    "binary_act_int8": ("cnn_bn", "fuse,binarize{activations=binary},quantize-int8", True),
}


@functools.lru_cache(maxsize=None)
def compiled(case: str):
    model, pipeline, _ = BUNDLES[case]
    return PassManager(pipeline).run(zoo_graph(model).copy(), PassContext(calib=zoo_inputs(model, 8, seed=1)))


def test_flags_are_the_strict_ones():
    assert set(WARNING_FLAGS) == {"-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"}


@pytest.mark.parametrize("case", sorted(BUNDLES))
def test_bundle_builds_clean_and_runs_with_gcc_and_clang(case, tmp_path):
    for cc in COMPILERS:
        assert shutil.which(cc), f"{cc} is not installed (make setup installs it: apt-get install {cc})"
    graph = compiled(case)
    model, _, integer = BUNDLES[case]
    emit_bundle(graph, tmp_path, target_name="host")
    rows = zoo_inputs(model, 3, seed=11)
    want = np.stack([np.concatenate([np.asarray(o, np.float32).ravel() for o in interpret(graph, [r[None]])])
                     for r in rows])
    for cc in COMPILERS:
        exe = build(tmp_path, "host", "model", "run", cc=cc)
        log = exe.with_name(exe.name + ".log").read_text()
        assert log == "", f"{cc} printed diagnostics for {case}:\n{log}"
        assert exe.with_name(exe.name + ".cmd").read_text().split()[0] == cc
        got = run_model(tmp_path, "host", "model", rows.reshape(len(rows), -1), cc=cc)
        if integer:
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{cc}: {case} differs"
        else:
            assert_close(got, want, 1e-4)
