"""tinyc's IR passes. Each pass lives in its own module and registers itself by name."""
from tinyc.passes.base import (PASSES, Pass, PassContext, option, option_fields, parse_pipeline,
                               print_pipeline, register)
from tinyc.passes import fuse  # noqa: F401  (registers)
from tinyc.passes import quantize_int8  # noqa: F401  (registers)
from tinyc.passes import prune_channels, prune_layers, svd  # noqa: F401  (register)
from tinyc.passes import distill  # noqa: F401  (registers)
from tinyc.passes import prune_weights, share_weights, binarize  # noqa: F401  (register)
from tinyc.passes import patch  # noqa: F401  (registers)

__all__ = ["PASSES", "Pass", "PassContext", "option", "option_fields", "parse_pipeline",
           "print_pipeline", "register"]
