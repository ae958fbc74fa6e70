"""Recurrent layers: aten.gru.input / aten.lstm.input as first-class gru / lstm ops.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others.
"""
from __future__ import annotations

from typing import Any, Callable

from tinyc.frontend_ops import Builder

LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = {}
