"""The context a pipeline runs in: what passes may need beyond the graph (the user's data, the
evaluator, the accuracy budget) and what they report back. Part of the core, so that the evaluator
can build one without importing the passes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tinyc.ir import Graph


@dataclass
class PassContext:
    """What a pass may need beyond the graph: data the user supplied, and a log of decisions.

    `evaluate(graph) -> float` scores a graph on the user's evaluation data, higher is better
    (`metric` says what the number is: "accuracy %", "top-1 agreement %" or "SQNR dB").
    Accuracy-aware passes (ratio=auto, rank=auto) compare candidates against `baseline`, the
    score of the uncompressed graph, and may lose at most `max_accuracy_drop` points.
    `reference` is the graph as imported (before any pass): the teacher for distillation.
    """

    calib: Any = None          # calibration inputs (numpy array, N x input shape)
    eval_inputs: Any = None    # evaluation inputs
    eval_labels: Any = None    # evaluation labels (optional)
    train: Any = None          # training inputs (for distillation)
    evaluate: Callable[[Graph], float] | None = None
    metric: str = ""
    baseline: float | None = None
    max_accuracy_drop: float | None = None
    reference: Graph | None = None
    selection: Any = None      # contract.Scorer of the selection split (under a budget)
    confirmation: Any = None   # contract.Scorer of the confirmation split, or None
    later: tuple = ()          # the passes after the running one in the pipeline (set by the PassManager)
    notes: list[str] = field(default_factory=list)   # decisions a pass wants in the report
    stats: dict[str, Any] = field(default_factory=dict)  # pass name -> pass-specific statistics
