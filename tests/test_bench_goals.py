"""bench.benchmarks: the like-for-like (int8 invoke) figures leave out exactly the float boundary layers."""
import numpy as np
import torch

from bench.benchmarks import BASELINES, Result, _float_io, goals
from tinyc.frontend import from_torch
from tinyc.passes import PassContext
from tinyc.passmanager import PassManager


def _int8_graph():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3), torch.nn.Softmax(-1)).eval()
    graph = from_torch(model, (torch.randn(1, 8),), name="m")
    calib = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    return PassManager("fuse,quantize-int8").run(graph, PassContext(calib=calib))


def test_float_io_marks_only_the_boundary_conversions():
    graph = _int8_graph()
    ops = list(graph.compute_ops())
    assert [op for op in ops if _float_io(graph, op)] == [ops[0], ops[-1]]
    assert (ops[0].kind, ops[-1].kind) == ("quantize", "dequantize")


def test_without_float_io_subtracts_the_marked_layers():
    layers = [{"instructions": 100, "cycles": 130, "float_io": True},
              {"instructions": 1000, "cycles": 1400, "float_io": False},
              {"instructions": 50, "cycles": 60, "float_io": True}]
    r = Result("ds_cnn", "int8", 1, 1150, 0, 0, 0, 0, 0, 0.0, layers, 1590)
    assert r.without_float_io("instructions") == 1000 and r.without_float_io("cycles") == 1400
    r.layers[0]["cycles"] = None
    assert r.without_float_io("cycles") is None


def test_goals_judge_cycles_against_the_baseline_estimate():
    b = BASELINES["ds_cnn"]
    cycles = int(b.cycles * 0.5)
    r = Result("ds_cnn", "int8", 1, int(b.instructions * 0.39), 0, 0, 100, 4, 100, 0.0, [], cycles)
    line = [x for x in goals([r]) if "toward the M4 limit" in x][0]
    assert "instructions 0.390x (target <= 0.40x: met)" in line
    assert "est. cycles 0.500x (target <= 0.45x: NOT met)" in line
    assert "int8 invoke instructions 0.390x" in line   # no float-io layers: equal to the whole
