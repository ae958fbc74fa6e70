"""Tensor indexing and creation: slice/select on any axis, flip, expand, chunk/split/unbind, unflatten, zeros/ones/full, embedding and token (integer) inputs.

Lowerings of aten ops to tinyc IR (see tinyc.frontend_ops for the Builder and the conventions);
tinyc.frontend_table merges this module's LOWERINGS with the others.
"""
from __future__ import annotations

from typing import Any, Callable

from tinyc.frontend_ops import Builder

LOWERINGS: dict[str, Callable[[Builder, dict], Any]] = {}
