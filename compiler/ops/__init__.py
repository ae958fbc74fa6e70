"""The op registry (see tinyc.ops.core): one definition per op kind, every facet in one place.

The families register themselves on import: layers, activations, elementwise, pooling and
reductions, shape and data movement, the int8 boundary, compressed representations. To add an op,
add one `register(OpDef(...))` (or `activation_op(Activation(...))`) to its family's file; the
verifier, the interpreter, to_torch, the passes and the conformance test pick it up from here.
"""
from tinyc.ops.core import (ACT_ATTRS, ACTIVATIONS, OPS, WEIGHT_DTYPES, Activation, OpDef, OpError, Trait,
                            attr_matches, broadcast, check_act, check_result_quant, check_signature,
                            fmt_shape, has, infer_type, is_int_form, kinds_with, macs, op_def, type_name,
                            window_out)
from tinyc.ops import layers, activations, elementwise, pooling, shape, quantization, compressed  # noqa: E402,F401
from tinyc.ops import gather  # noqa: E402,F401  (embedding, cast: token inputs)
from tinyc.ops import norms  # noqa: E402,F401  (layer_norm, group_norm)
from tinyc.ops import spatial  # noqa: E402,F401  (conv_transpose2d, resize, masked_softmax)
from tinyc.ops import fake_quant  # noqa: E402,F401  (imported models' own quantization: pt2e)
from tinyc.ops import mathops  # noqa: E402,F401  (prelu, log_softmax, sum, amax, amin)
from tinyc.ops import recurrent  # noqa: E402,F401  (gru, lstm)
from tinyc.ops import compare  # noqa: E402,F401  (compare, logical, where, cumsum)
from tinyc.ops.compressed import INDEX_DTYPES, bin_int_form  # noqa: E402

__all__ = ["ACT_ATTRS", "ACTIVATIONS", "INDEX_DTYPES", "OPS", "WEIGHT_DTYPES", "Activation", "OpDef", "OpError",
           "Trait", "attr_matches", "bin_int_form", "broadcast", "check_act", "check_result_quant",
           "check_signature", "fmt_shape", "has", "infer_type", "is_int_form", "kinds_with", "macs", "op_def",
           "type_name", "window_out"]
