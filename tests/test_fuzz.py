"""The IR text fuzzer (tools/fuzz_ir.py, issue 13 item 6) and the bugs it found.

- A small fixed-seed campaign over tests/fuzz_corpus finds nothing: every malformed input is a
  clean TinycError, nothing else escapes and nothing hangs (`make fuzz` runs the long version).
- Every corpus file round-trips exactly through print(parse(text)) or fails with a TinycError;
  each regress_*.tir (the regressions of issue 13) fails with the message on its first line.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tinyc.errors import ParseError, VerifyError
from tinyc.ir import TensorType
from tinyc.ir import QuantParams
from tinyc.text import parse
from tinyc.verifier import _check_type


# ---------------------------------------------------------------- findings fixed in the verifier

@pytest.mark.parametrize("scale", [5e-324, 1e-45, 1e-39, 1e39, 1e300])
def test_quant_scale_outside_float32_is_refused(scale):
    """Found by the fuzzer: an i8 output scale of 5e-324 passed verify and made emit_bundle raise
    OverflowError (the requantization multiplier in_scale * w_scale / out_scale was inf)."""
    with pytest.raises(VerifyError, match="outside the normal float32 range"):
        _check_type(TensorType((1, 3), "i8", QuantParams((scale,), (0,))), "%y = linear", None)


def test_quant_scales_in_range_and_small_bias_scales_pass():
    f32 = np.finfo(np.float32)
    for scale in (float(f32.tiny), float(f32.max), 2.0 ** -64, 1.0):
        _check_type(TensorType((2,), "i8", QuantParams((scale,), (0,))), "x", None)
    # an i32 bias scale is in_scale * w_scale: two minimal calibrated scales (2^-64) give 2^-128
    _check_type(TensorType((2,), "i32", QuantParams((2.0 ** -128, 1e-300), (0, 0), 0)), "b", None)
    with pytest.raises(VerifyError, match="normal float64 range"):
        _check_type(TensorType((1,), "i32", QuantParams((5e-324,), (0,), 0)), "b", None)
    assert math.isfinite(float(f32.max))


@pytest.mark.parametrize("shape,words", [
    ("100000000000000000000x0xf32", "dimension 100000000000000000000 is too large: at most 2147483647"),
    ("2147483648xf32", "dimension 2147483648 is too large"),
    ("2147483647x2147483647x2147483647x0xf32", "dimensions multiply to more than 2^63 - 1")])
def test_dimension_too_large_is_a_parse_error(shape, words):
    """Found by the fuzzer: a zero-size const with a 10^20 dimension made parse raise numpy's
    ValueError "Maximum allowed dimension exceeded" (reshaping its empty resource)."""
    text = (f'graph @m(%x: tensor<1xf32>) -> (tensor<1xf32>) {{\n  %w = const : tensor<{shape}>\n'
            f'  return %x\n}}\n\n{{-#\n  resources: {{\n    w: "0x"\n  }}\n#-}}\n')
    with pytest.raises(ParseError, match=re.escape(words)) as info:
        parse(text)
    assert info.value.where == "<input>:2:23"   # the shape, after "tensor<"
    parse(text.replace(shape, "2147483647x0xf32"))    # the largest dimension is fine
