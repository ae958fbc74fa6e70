"""Golden tests: every zoo model compiled to C, run on the host (ASan/UBSan) and on a QEMU
Cortex-M4, compared with PyTorch; the arena the bundle reserves equals the report's."""
import re
import subprocess

import numpy as np
import pytest

from helpers import assert_close, fused_graph, torch_outputs, zoo_inputs
from tinyc.backends.bench import bench_model
from tinyc.backends.build import build
from tinyc.backends.c_emitter import emit_bundle
from tinyc.backends.run import run_model
from tinyc.backends.target_files import write_target_files
from bench.zoo import names as zoo_names

RTOL = 1e-4


def split_outputs(flat: np.ndarray, graph) -> list[np.ndarray]:
    """Rows of concatenated outputs -> one array per graph output (rows x its shape without batch)."""
    out, start = [], 0
    for v in graph.outputs:
        n = v.type.numel
        out.append(flat[:, start:start + n].reshape(flat.shape[0], *v.type.shape[1:]))
        start += n
    return out


def compile_and_run(name, target, tmp_path, **run_options):
    graph = fused_graph(name)
    info = emit_bundle(graph, tmp_path, target_name=target)
    write_target_files(tmp_path, target, "model")
    x = zoo_inputs(name, rows=2)
    y = run_model(tmp_path, target, "model", x.reshape(len(x), -1), **run_options)
    for got, want in zip(split_outputs(y, graph), torch_outputs(name, x)):
        assert_close(got, want, RTOL)
    return info


@pytest.mark.parametrize("name", zoo_names())
def test_host_matches_pytorch_under_sanitizers(name, tmp_path):
    compile_and_run(name, "host", tmp_path, sanitize=True)


@pytest.mark.qemu
@pytest.mark.parametrize("name", zoo_names())
def test_cortex_m4_qemu_matches_pytorch(name, tmp_path):
    info = compile_and_run(name, "cortex-m4", tmp_path)
    elf = build(tmp_path, "cortex-m4", "model", "run")
    symbols = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    arena = re.search(r"^\S+ (\S+) [bBdD] model_arena$", symbols, re.M)
    assert arena and int(arena.group(1), 16) == info.arena_size  # what the bundle really reserves
    header = (tmp_path / "model.h").read_text()
    assert f"#define model_ARENA_SIZE {info.arena_size}\n" in header
    assert info.lower_bound <= info.arena_size


@pytest.mark.qemu
def test_bench_on_cortex_m4(tmp_path):
    """The bench counts: more instructions than MACs, layers adding up to the whole invoke."""
    graph = fused_graph("fc_autoencoder")
    emit_bundle(graph, tmp_path, target_name="cortex-m4")
    write_target_files(tmp_path, "cortex-m4", "model")
    result = bench_model(tmp_path, "cortex-m4", "model")
    from tinyc.stats import graph_stats
    macs = graph_stats(graph).macs
    assert macs < result.instructions < 50 * macs
    assert len(result.layer_instructions) == len(list(graph.compute_ops()))
    assert abs(sum(result.layer_instructions) - result.profiled_instructions) <= 0.01 * result.instructions
    assert result.stack > 0 and result.flash > graph_stats(graph).weight_bytes
