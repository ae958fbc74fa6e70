"""Unary activations. One `Activation` per kind serves the standalone op and the fused
`act = ...` attribute of conv2d / linear / matmul / add / sub / mul (float), numpy and torch side
by side. quantize-int8 turns a standalone activation into a 256-entry table (`lut`); a fused
relu / clamp / leaky_relu stays fused in the int8 requantization, other fused activations are
split out into a table first."""
from __future__ import annotations

import math

import numpy as np

from tinyc.ops.core import (Activation, OpDef, Trait, keeps_batch_unary, need, register_activation,
                            same_shape, sample, torch)
from tinyc.ops.refs import clamp

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_FORMS = ("none", "tanh")


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to 1 ulp (math.erf per element; activations are small arrays)."""
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _gelu(x, p):
    if p["approximate"] == "tanh":
        return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))   # no overflow for large |x|


def _gelu_shape(ts, attrs):
    need(attrs["approximate"] in GELU_FORMS, f"approximate must be one of {', '.join(map(repr, GELU_FORMS))}, "
         f"got {attrs['approximate']!r}")
    return ts[0].shape


def activation_op(a: Activation, attrs: dict | None = None, infer=same_shape, identity=None,
                  params: tuple[dict, ...] = ({},)) -> None:
    """Register `a` and its op; `params` are the attribute sets the conformance samples use."""
    register_activation(a, OpDef(
        a.kind, infer, 1, 1, attrs or {}, traits=Trait.ACTIVATION, doc=a.doc,
        ref=lambda op, x: a.numpy(x, op.attrs), torch=lambda op, x: a.torch(x, op.attrs),
        int8="table", channels="same", keeps_batch=keeps_batch_unary, identity=identity,
        samples=lambda rng: [sample((2, 3, 4, 5), **p) for p in params]))


activation_op(Activation("relu", lambda x, p: np.maximum(x, 0.0), lambda x, p: torch.relu(x),
                         requant=True, idempotent=True, c_code=1, doc="max(x, 0)"))
activation_op(Activation("clamp", lambda x, p: clamp(x, p["min"], p["max"]),
                         lambda x, p: torch.clamp(x, min=p["min"], max=p["max"]),
                         params=("min", "max"), fused=("act_min", "act_max"), requant=True, idempotent=True, c_code=2,
                         c_args=lambda p: (p["min"], p["max"]),
                         doc="min(max(x, min), max) (relu6, hardtanh)"),
              {"min": float, "max": float}, params=({"min": -0.5, "max": 1.0},),
              identity=lambda op, const: 0 if (op.attrs["min"], op.attrs["max"]) == (-np.inf, np.inf) else None)
activation_op(Activation("leaky_relu", lambda x, p: np.where(x >= 0, x, x * p["alpha"]),
                         lambda x, p: torch.where(x >= 0, x, x * p["alpha"]),
                         params=("alpha",), fused=("act_alpha",), requant=True, c_code=3,
                         c_args=lambda p: (p["alpha"], 0.0),
                         doc="x >= 0 ? x : alpha x"),
              {"alpha": float}, params=({"alpha": 0.1},))
activation_op(Activation("sigmoid", lambda x, p: _sigmoid(x), lambda x, p: torch.sigmoid(x),
                         fusable=False, doc="1 / (1 + exp(-x))"))
activation_op(Activation("tanh", lambda x, p: np.tanh(x), lambda x, p: torch.tanh(x), fusable=False))
activation_op(Activation("hardswish", lambda x, p: x * clamp(x + 3.0, 0.0, 6.0) / 6.0,
                         lambda x, p: x * torch.clamp(x + 3.0, min=0.0, max=6.0) / 6.0,
                         fusable=False, doc="x relu6(x + 3) / 6"))
activation_op(Activation("hardsigmoid", lambda x, p: clamp(x + 3.0, 0.0, 6.0) / 6.0,
                         lambda x, p: torch.clamp(x + 3.0, min=0.0, max=6.0) / 6.0,
                         c_code=6, doc="relu6(x + 3) / 6"))
activation_op(Activation("silu", lambda x, p: x * _sigmoid(x), lambda x, p: x * torch.sigmoid(x),
                         c_code=5, doc="x sigmoid(x) (swish)"))
activation_op(Activation("gelu", _gelu,
                         lambda x, p: torch.nn.functional.gelu(x, approximate=p["approximate"]),
                         params=("approximate",), fused=("act_approximate",), c_code=4,
                         c_args=lambda p: (1.0 if p["approximate"] == "tanh" else 0.0, 0.0),
                         doc="x Phi(x); approximate = \"none\" (erf) or \"tanh\""),
              {"approximate": str}, _gelu_shape, params=({"approximate": "none"}, {"approximate": "tanh"}))


# ---- elementwise math (abs, sqrt, rsqrt, exp, log, reciprocal, elu/selu/celu, mish, softplus,
# pow by a scalar). All have a case in the float C kernels' tinyc_act switch, so all are fusable. Their
# int8 form is the 256-entry table like every activation; a table entry whose float value is NaN (sqrt,
# log, rsqrt or a fractional pow of a negative code) quantizes to the zero point (real 0), +-inf (log 0,
# 1/0, rsqrt 0) saturates to 127 / -128 (docs/quantization.md).

SELU_ALPHA = 1.6732632423543772848170429916717    # torch.nn.functional.selu's constants
SELU_SCALE = 1.0507009873554804934193349852946


def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _positive(name: str):
    def infer(ts, attrs):
        need(attrs[name] > 0, f"{name} must be > 0, got {attrs[name]}")
        return ts[0].shape
    return infer


def _softplus(x, p):
    beta, threshold = p["beta"], p["threshold"]
    bx = x * beta
    return np.where(bx > threshold, x, np.logaddexp(0.0, bx) / beta)


def _softplus_shape(ts, attrs):
    need(attrs["beta"] != 0, "beta must be non-zero")
    return ts[0].shape


def _pow(x, p):
    return np.power(x, p["exponent"])


def _torch_pow(x, p):
    return torch.pow(x, p["exponent"])


activation_op(Activation("abs", lambda x, p: np.abs(x), lambda x, p: torch.abs(x), c_code=7, doc="|x|"))
activation_op(Activation("sqrt", lambda x, p: np.sqrt(x), lambda x, p: torch.sqrt(x), c_code=8,
                         doc="sqrt(x) (NaN below 0)"))
activation_op(Activation("rsqrt", lambda x, p: 1.0 / np.sqrt(x), lambda x, p: torch.rsqrt(x), c_code=9,
                         doc="1 / sqrt(x)"))
activation_op(Activation("exp", lambda x, p: np.exp(x), lambda x, p: torch.exp(x), c_code=10, doc="e^x"))
activation_op(Activation("log", lambda x, p: np.log(x), lambda x, p: torch.log(x), c_code=11,
                         doc="natural log (NaN below 0, -inf at 0)"))
activation_op(Activation("reciprocal", lambda x, p: 1.0 / x, lambda x, p: torch.reciprocal(x), c_code=12,
                         doc="1 / x"))
activation_op(Activation("elu", lambda x, p: _elu(x, p["alpha"]),
                         lambda x, p: torch.nn.functional.elu(x, alpha=p["alpha"]),
                         params=("alpha",), fused=("act_alpha",), c_code=13, c_args=lambda p: (p["alpha"], 0.0),
                         doc="x > 0 ? x : alpha (e^x - 1)"),
              {"alpha": float}, params=({"alpha": 0.7},))
activation_op(Activation("selu", lambda x, p: SELU_SCALE * _elu(x, SELU_ALPHA), lambda x, p: torch.selu(x),
                         c_code=14, doc="1.0507 elu(x, alpha = 1.6733)"))
activation_op(Activation("celu", lambda x, p: np.where(x > 0, x, _elu(x / p["alpha"], p["alpha"])),
                         lambda x, p: torch.celu(x, alpha=p["alpha"]),
                         params=("alpha",), fused=("act_alpha",), c_code=15, c_args=lambda p: (p["alpha"], 0.0),
                         doc="x > 0 ? x : alpha (e^(x / alpha) - 1)"),
              {"alpha": float}, _positive("alpha"), params=({"alpha": 1.3},))
activation_op(Activation("mish", lambda x, p: x * np.tanh(np.logaddexp(0.0, x)),
                         lambda x, p: torch.nn.functional.mish(x), c_code=16, doc="x tanh(softplus(x))"))
activation_op(Activation("softplus", _softplus,
                         lambda x, p: torch.nn.functional.softplus(x, beta=p["beta"], threshold=p["threshold"]),
                         params=("beta", "threshold"), fused=("act_beta", "act_threshold"), c_code=17,
                         c_args=lambda p: (p["beta"], p["threshold"]),
                         doc="beta x > threshold ? x : log(1 + e^(beta x)) / beta (PyTorch's)"),
              {"beta": float, "threshold": float}, _softplus_shape,
              params=({"beta": 1.0, "threshold": 20.0}, {"beta": 2.0, "threshold": 1.0}))
activation_op(Activation("pow", _pow, _torch_pow, params=("exponent",), fused=("act_exponent",), c_code=18,
                         c_args=lambda p: (p["exponent"], 0.0),
                         doc="x^exponent, a scalar exponent (NaN for a negative x and a fractional exponent)"),
              {"exponent": float}, identity=lambda op, const: 0 if op.attrs["exponent"] == 1.0 else None,
              params=({"exponent": 2.0}, {"exponent": 0.5}, {"exponent": 3.0}, {"exponent": -1.5}))
