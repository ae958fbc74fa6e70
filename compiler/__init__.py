"""tinyc: compile trained PyTorch models to small, fast, verified C for microcontrollers."""
from tinyc.ir import Graph, Op, QuantParams, TensorType, Value
from tinyc.errors import TinycError

__all__ = ["Graph", "Op", "QuantParams", "TensorType", "Value", "TinycError", "from_torch",
           "parse", "print_graph", "run", "verify"]
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: importing tinyc must not import torch (slow) unless the frontend is used.
    if name == "from_torch":
        from tinyc.frontend import from_torch
        return from_torch
    if name == "parse":
        from tinyc.text import parse
        return parse
    if name == "print_graph":
        from tinyc.text import print_graph
        return print_graph
    if name == "run":
        from tinyc.interpreter import run
        return run
    if name == "verify":
        from tinyc.verifier import verify
        return verify
    raise AttributeError(name)
