"""Every aten lowering of the frontend: the core table (tinyc.frontend_ops) and one module per op
family. An aten op is lowered by exactly one module; a name claimed twice is an import-time error."""
from __future__ import annotations

from typing import Any, Callable

from tinyc import (frontend_math, frontend_norms, frontend_ops, frontend_quantized, frontend_recurrent,
                   frontend_spatial, frontend_tensor)
from tinyc import frontend_tokens
from tinyc.frontend_ops import Builder

_MODULES = (frontend_ops, frontend_math, frontend_norms, frontend_recurrent, frontend_spatial, frontend_tensor,
            frontend_quantized)
_MODULES += (frontend_tokens,)


def _merge() -> dict[str, Callable[[Builder, dict], Any]]:
    table: dict[str, Callable[[Builder, dict], Any]] = {}
    for module in _MODULES:
        for name, fn in module.LOWERINGS.items():
            if name in table:
                raise RuntimeError(f"{name} is lowered by two frontend modules (one is {module.__name__})")
            table[name] = fn
    return table


LOWERINGS = _merge()
# Lowerings that hand their input through: applied even to constants (instead of folding) so a
# lifted constant keeps its own name.
PASSTHROUGH = frontend_ops.PASSTHROUGH | getattr(frontend_tensor, "PASSTHROUGH", frozenset())
PASSTHROUGH |= frontend_quantized.PASSTHROUGH   # the model's quantized constants keep their parameters
