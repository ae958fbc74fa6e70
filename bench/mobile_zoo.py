"""Third-party mobile architectures, re-written in plain PyTorch, at sizes a 2 MB-flash MCU runs.

torchvision and timm cannot be imported here, so each architecture is re-typed from its paper and
reference code (torchvision for MobileNetV2, MobileNetV3, MnasNet-B1 and SqueezeNet; timm for
MnasNet-A1, TinyNet, PP-LCNet and MobileNetV4; Huawei's CV-Backbones / timm for GhostNet): the same
block structure, expansion ratios, squeeze-excite placement and reduction, activations (ReLU,
ReLU6, hardswish, hardsigmoid, SiLU, sigmoid), kernel sizes, strides and channel rounding
(``_make_divisible``). Only the width multiplier, the input resolution and, where a 1000-class
head would not fit 2 MB of flash with int8 weights, the number of classes are chosen for an MCU;
each entry's description says which.

Weights are seeded and deterministic, batch-norm layers get non-trivial running statistics
(bench.zoo's ``_seeded`` / ``_calibrate_bn``), so BN folding is really exercised.

    from bench import mobile_zoo
    model, x = mobile_zoo.get("mobilenet_v3_small_100_96")
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.zoo import _seeded

FLASH_BUDGET = 2 * 1024 * 1024      # bytes: the "fits a 2 MB-flash MCU" line of issue 12


@dataclass(frozen=True)
class MobileEntry:
    name: str
    build: Callable[[], nn.Module]     # the seeded model in eval mode
    input_shape: tuple[int, ...]       # batch included
    family: str                        # the architecture as its source names it
    source: str                        # where the block structure was taken from
    description: str                   # width, resolution, head: what was chosen for an MCU
    classes: int

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference (conv and linear layers), counted by forward hooks."""
        return count_macs(self.name)

    @property
    def params(self) -> int:
        return count_params(self.name)


# ---------------------------------------------------------------- helpers

def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round channels to a multiple of `divisor`, never more than 10 % down (TF/torchvision/timm)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def _conv_bn(cin, cout, k, stride=1, groups=1, act: Callable[[], nn.Module] | None = nn.ReLU, bias=False):
    """Conv (padding (k-1)//2) + BN + optional activation: torchvision's Conv2dNormActivation."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=bias), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Global average pool, 1x1 conv reduce (bias), activation, 1x1 conv expand (bias), gate, x * gate
    (torchvision.ops.SqueezeExcitation, timm's SqueezeExcite)."""

    def __init__(self, channels: int, squeezed: int, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation = act()
        self.scale_activation = gate()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


# ---------------------------------------------------------------- MobileNetV2 (torchvision)

class InvertedResidualV2(nn.Module):
    def __init__(self, cin, cout, stride, expand_ratio):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers = []
        if expand_ratio != 1:
            layers.append(_conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2: (t, c, n, s) settings, ReLU6, last channel 1280 * max(1, width)."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self, width_mult=1.0, num_classes=1000, round_nearest=8, dropout=0.2):
        super().__init__()
        cin = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [_conv_bn(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidualV2(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(_conv_bn(cin, self.last_channel, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- MobileNetV3-Small (torchvision)

class InvertedResidualV3(nn.Module):
    """torchvision's MobileNetV3 block: expand (skipped when expanded == input), depthwise, SE (squeeze
    _make_divisible(expanded // 4, 8), ReLU, hardsigmoid) after the depthwise, project."""

    def __init__(self, cin, k, expanded, cout, use_se, act, stride):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers = []
        if expanded != cin:
            layers.append(_conv_bn(cin, expanded, 1, act=act))
        layers.append(_conv_bn(expanded, expanded, k, stride, groups=expanded, act=act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8), nn.ReLU, nn.Hardsigmoid))
        layers.append(_conv_bn(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3Small(nn.Module):
    """torchvision.models.mobilenet_v3_small: 11 blocks, hardswish from the 4th, last channel 1024."""

    RE, HS = nn.ReLU, nn.Hardswish
    # input, kernel, expanded, output, SE, activation, stride (at width 1.0)
    SETTINGS = [(16, 3, 16, 16, True, RE, 2), (16, 3, 72, 24, False, RE, 2), (24, 3, 88, 24, False, RE, 1),
                (24, 5, 96, 40, True, HS, 2), (40, 5, 240, 40, True, HS, 1), (40, 5, 240, 40, True, HS, 1),
                (40, 5, 120, 48, True, HS, 1), (48, 5, 144, 48, True, HS, 1), (48, 5, 288, 96, True, HS, 2),
                (96, 5, 576, 96, True, HS, 1), (96, 5, 576, 96, True, HS, 1)]

    def __init__(self, width_mult=1.0, num_classes=1000, dropout=0.2):
        super().__init__()
        ch = functools.partial(lambda c: _make_divisible(c * width_mult, 8))
        stem = ch(16)
        layers = [_conv_bn(3, stem, 3, 2, act=nn.Hardswish)]
        for cin, k, exp, cout, se, act, s in self.SETTINGS:
            layers.append(InvertedResidualV3(ch(cin), k, ch(exp), ch(cout), se, act, s))
        last_conv = 6 * ch(96)
        layers.append(_conv_bn(ch(96), last_conv, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last_channel = _make_divisible(1024 * width_mult, 8)
        self.classifier = nn.Sequential(nn.Linear(last_conv, last_channel), nn.Hardswish(), nn.Dropout(dropout),
                                        nn.Linear(last_channel, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- MnasNet-B1 (torchvision) and -A1 (timm)

def _round_to_multiple_of(val, divisor, round_up_bias=0.9):
    new_val = max(divisor, int(val + divisor / 2) // divisor * divisor)
    return new_val if new_val >= round_up_bias * val else new_val + divisor


class _MnasInvertedResidual(nn.Module):
    """torchvision's MnasNet block: expand 1x1, depthwise k x k, project 1x1 (ReLU, no SE)."""

    def __init__(self, cin, cout, k, stride, expansion):
        super().__init__()
        mid = cin * expansion
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.layers(x) + x if self.apply_residual else self.layers(x)


def _mnas_stack(cin, cout, k, stride, exp, repeats):
    first = _MnasInvertedResidual(cin, cout, k, stride, exp)
    return nn.Sequential(first, *[_MnasInvertedResidual(cout, cout, k, 1, exp) for _ in range(1, repeats)])


class MnasNetB1(nn.Module):
    """torchvision.models.MNASNet (MnasNet-B1, no SE): depths rounded to multiples of 8, 1280 head."""

    def __init__(self, alpha=1.0, num_classes=1000, dropout=0.2):
        super().__init__()
        d = [_round_to_multiple_of(c * alpha, 8) for c in (32, 16, 24, 40, 80, 96, 192, 320)]
        self.layers = nn.Sequential(
            nn.Conv2d(3, d[0], 3, 2, 1, bias=False), nn.BatchNorm2d(d[0]), nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[0], 3, 1, 1, groups=d[0], bias=False), nn.BatchNorm2d(d[0]), nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[1], 1, bias=False), nn.BatchNorm2d(d[1]),
            _mnas_stack(d[1], d[2], 3, 2, 3, 3), _mnas_stack(d[2], d[3], 5, 2, 3, 3),
            _mnas_stack(d[3], d[4], 5, 2, 6, 3), _mnas_stack(d[4], d[5], 3, 1, 6, 2),
            _mnas_stack(d[5], d[6], 5, 2, 6, 4), _mnas_stack(d[6], d[7], 3, 1, 6, 1),
            nn.Conv2d(d[7], 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


class _DepthwiseSeparable(nn.Module):
    """timm's DepthwiseSeparableConv ('ds' block): depthwise k x k + BN + act, optional SE, pointwise + BN,
    skip when stride 1 and in == out (unless noskip)."""

    def __init__(self, cin, cout, k, stride, act, se_squeezed=0, noskip=False):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout and not noskip
        self.conv_dw = _conv_bn(cin, cin, k, stride, groups=cin, act=act)
        self.se = SqueezeExcitation(cin, se_squeezed, act, nn.Sigmoid) if se_squeezed else nn.Identity()
        self.conv_pw = _conv_bn(cin, cout, 1, act=None)

    def forward(self, x):
        y = self.conv_pw(self.se(self.conv_dw(x)))
        return y + x if self.has_skip else y


class _MBConv(nn.Module):
    """timm's InvertedResidual ('ir' block, EfficientNet MBConv): expand 1x1 (mid = make_divisible(in * e)),
    depthwise k x k, SE reduced from the block input (round(in * se_ratio), block activation, sigmoid
    gate), project 1x1 + BN; skip when stride 1 and in == out."""

    def __init__(self, cin, cout, k, stride, exp, act, se_ratio=0.0):
        super().__init__()
        mid = _make_divisible(cin * exp)
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv_bn(cin, mid, 1, act=act)
        self.conv_dw = _conv_bn(mid, mid, k, stride, groups=mid, act=act)
        self.se = SqueezeExcitation(mid, max(1, round(cin * se_ratio)), act, nn.Sigmoid) if se_ratio else nn.Identity()
        self.conv_pwl = _conv_bn(mid, cout, 1, act=None)

    def forward(self, x):
        y = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return y + x if self.has_skip else y


class _EfficientNetStyle(nn.Module):
    """timm's EfficientNet class: stem conv 3x3 s2, the stages (list of (block type, repeats, kernel, stride,
    expansion, channels, se_ratio)), conv_head 1x1 + BN + act, global pool, classifier."""

    def __init__(self, stages, width=1.0, depth=1.0, stem=32, num_features=1280, act=nn.ReLU,
                 num_classes=1000, fix_stem=False, dropout=0.2, noskip_first=False):
        super().__init__()
        ch = (lambda c: _make_divisible(c * width)) if width != 1.0 else (lambda c: _make_divisible(c))
        stem = stem if fix_stem else ch(stem)
        self.conv_stem = _conv_bn(3, stem, 3, 2, act=act)
        blocks, cin = [], stem
        for kind, repeats, k, stride, exp, c, se in stages:
            cout = ch(c)
            for i in range(max(1, round(repeats * depth))):
                s = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(_DepthwiseSeparable(cin, cout, k, s, act, max(1, round(cin * se)) if se else 0,
                                                      noskip=noskip_first))
                else:
                    blocks.append(_MBConv(cin, cout, k, s, exp, act, se))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = _conv_bn(cin, num_features, 1, act=act)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))

    def forward(self, x):
        x = self.conv_head(self.blocks(self.conv_stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# timm arch_def strings, decoded: (block, repeats, kernel, stride, expansion, channels, se ratio)
MNASNET_A1 = [("ds", 1, 3, 1, 1, 16, 0.0), ("ir", 2, 3, 2, 6, 24, 0.0), ("ir", 3, 5, 2, 3, 40, 0.25),
              ("ir", 4, 3, 2, 6, 80, 0.0), ("ir", 2, 3, 1, 6, 112, 0.25), ("ir", 3, 5, 2, 6, 160, 0.25),
              ("ir", 1, 3, 1, 6, 320, 0.0)]
EFFICIENTNET_B0 = [("ds", 1, 3, 1, 1, 16, 0.25), ("ir", 2, 3, 2, 6, 24, 0.25), ("ir", 2, 5, 2, 6, 40, 0.25),
                   ("ir", 3, 3, 2, 6, 80, 0.25), ("ir", 3, 5, 1, 6, 112, 0.25), ("ir", 4, 5, 2, 6, 192, 0.25),
                   ("ir", 1, 3, 1, 6, 320, 0.25)]


def mnasnet_a1(width=1.0, num_classes=1000):
    """timm mnasnet_a1 (_gen_mnasnet_a1): ReLU, SE with sigmoid gate in three stages, first ds block noskip."""
    return _EfficientNetStyle(MNASNET_A1, width=width, act=nn.ReLU, num_classes=num_classes, noskip_first=True)


def tinynet(r_width=0.51, r_depth=0.6, num_classes=1000):
    """timm tinynet_e (_gen_tinynet): EfficientNet-B0 stages, width 0.51, depth 0.6 ('round'), SiLU,
    num_features max(1280, round_chs(1280)) = 1280, input 106x106."""
    return _EfficientNetStyle(EFFICIENTNET_B0, width=r_width, depth=r_depth, act=nn.SiLU,
                              num_features=max(1280, _make_divisible(1280 * r_width)), num_classes=num_classes)


# ---------------------------------------------------------------- GhostNet (CV-Backbones / timm ghostnet)

def _hard_sigmoid(x):
    return F.relu6(x + 3.0) / 6.0


class _GhostHardSigmoid(nn.Module):
    def forward(self, x):
        return _hard_sigmoid(x)


class GhostModule(nn.Module):
    def __init__(self, cin, cout, kernel_size=1, ratio=2, dw_size=3, stride=1, relu=True):
        super().__init__()
        self.oup = cout
        init = math.ceil(cout / ratio)
        new = init * (ratio - 1)
        act = [nn.ReLU(inplace=True)] if relu else []
        self.primary_conv = nn.Sequential(nn.Conv2d(cin, init, kernel_size, stride, kernel_size // 2, bias=False),
                                          nn.BatchNorm2d(init), *act)
        self.cheap_operation = nn.Sequential(nn.Conv2d(init, new, dw_size, 1, dw_size // 2, groups=init, bias=False),
                                             nn.BatchNorm2d(new), *[nn.ReLU(inplace=True)] * bool(relu))

    def forward(self, x):
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        return torch.cat([x1, x2], dim=1)[:, :self.oup, :, :]


class GhostBottleneck(nn.Module):
    def __init__(self, cin, mid, cout, k=3, stride=1, se_ratio=0.0):
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(cin, mid, relu=True)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid, mid, k, stride, (k - 1) // 2, groups=mid, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid)
        # SqueezeExcite(mid, se_ratio, divisor=4): ReLU, hard_sigmoid = relu6(x + 3) / 6
        self.se = (SqueezeExcitation(mid, _make_divisible(mid * se_ratio, 4), nn.ReLU, _GhostHardSigmoid)
                   if se_ratio else None)
        self.ghost2 = GhostModule(mid, cout, relu=False)
        if cin == cout and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cin, k, stride, (k - 1) // 2, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        residual = x
        x = self.ghost1(x)
        if self.stride > 1:
            x = self.bn_dw(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        return x + self.shortcut(residual)


class GhostNet(nn.Module):
    """GhostNet (Han et al. 2020, huawei-noah/CV-Backbones ghostnet_pytorch): channels
    _make_divisible(c * width, 4), SE with hard sigmoid, pool then conv_head 1x1 -> 1280 + ReLU."""

    # kernel, expansion, channels, se ratio, stride
    CFGS = [[(3, 16, 16, 0, 1)], [(3, 48, 24, 0, 2)], [(3, 72, 24, 0, 1)], [(5, 72, 40, 0.25, 2)],
            [(5, 120, 40, 0.25, 1)], [(3, 240, 80, 0, 2)],
            [(3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1),
             (3, 672, 112, 0.25, 1)],
            [(5, 672, 160, 0.25, 2)],
            [(5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)]]

    def __init__(self, width=1.0, num_classes=1000, dropout=0.2):
        super().__init__()
        cin = _make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(3, cin, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.ReLU(inplace=True)
        stages, exp = [], 16
        for cfg in self.CFGS:
            layers = []
            for k, exp, c, se, s in cfg:
                cout = _make_divisible(c * width, 4)
                layers.append(GhostBottleneck(cin, _make_divisible(exp * width, 4), cout, k, s, se))
                cin = cout
            stages.append(nn.Sequential(*layers))
        out = _make_divisible(exp * width, 4)
        stages.append(nn.Sequential(_conv_bn(cin, out, 1, act=nn.ReLU)))
        self.blocks = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.conv_head = nn.Conv2d(out, 1280, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(self.dropout(x.view(x.size(0), -1)))


# ---------------------------------------------------------------- PP-LCNet (PaddleClas / timm lcnet)

class _LCNetBlock(nn.Module):
    """PP-LCNet DepthwiseSeparable: depthwise k x k + BN + hardswish, SE (reduce 4, ReLU, hardsigmoid),
    pointwise + BN + hardswish; no residual."""

    def __init__(self, cin, cout, k, stride, use_se):
        super().__init__()
        self.dw_conv = _conv_bn(cin, cin, k, stride, groups=cin, act=nn.Hardswish)
        self.se = SqueezeExcitation(cin, cin // 4, nn.ReLU, nn.Hardsigmoid) if use_se else nn.Identity()
        self.pw_conv = _conv_bn(cin, cout, 1, act=nn.Hardswish)

    def forward(self, x):
        return self.pw_conv(self.se(self.dw_conv(x)))


class PPLCNet(nn.Module):
    """PP-LCNet (Cui et al. 2021): NET_CONFIG blocks2..blocks6, 5x5 depthwise in the last stages, SE only
    in the last two blocks, pool then last_conv 1x1 -> 1280 (no BN) + hardswish."""

    # kernel, in, out, stride, SE (at scale 1.0)
    NET_CONFIG = [(3, 16, 32, 1, False), (3, 32, 64, 2, False), (3, 64, 64, 1, False), (3, 64, 128, 2, False),
                  (3, 128, 128, 1, False), (3, 128, 256, 2, False), *[(5, 256, 256, 1, False)] * 5,
                  (5, 256, 512, 2, True), (5, 512, 512, 1, True)]

    def __init__(self, scale=1.0, num_classes=1000, class_expand=1280, dropout=0.2):
        super().__init__()
        ch = lambda c: _make_divisible(c * scale)  # noqa: E731
        self.conv1 = _conv_bn(3, ch(16), 3, 2, act=nn.Hardswish)
        self.blocks = nn.Sequential(*[_LCNetBlock(ch(i), ch(o), k, s, se) for k, i, o, s, se in self.NET_CONFIG])
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.last_conv = nn.Conv2d(ch(512), class_expand, 1, bias=False)
        self.hardswish = nn.Hardswish()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(class_expand, num_classes)

    def forward(self, x):
        x = self.avg_pool(self.blocks(self.conv1(x)))
        x = self.dropout(self.hardswish(self.last_conv(x)))
        return self.fc(torch.flatten(x, 1))


# ---------------------------------------------------------------- SqueezeNet 1.1 (torchvision)

class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand1x1, expand3x3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    """torchvision.models.squeezenet1_1: no batch norm, ceil-mode max pools, a 1x1 conv classifier;
    torchvision's init (kaiming uniform, final conv N(0, 0.01)), biases seeded small instead of 0."""

    def __init__(self, num_classes=1000, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
        final_conv = nn.Conv2d(512, num_classes, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.normal_(m.bias, 0.0, 0.05)   # torchvision zeroes them; small seeded values test the bias path

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# ---------------------------------------------------------------- MobileNetV4-Conv-Small (timm)

class _UIR(nn.Module):
    """timm's UniversalInvertedResidual: optional start depthwise (BN, no act; stride here when there is no
    middle depthwise), pointwise expand + BN + act, optional middle depthwise + BN + act (the stride),
    pointwise project + BN; skip when stride 1 and in == out."""

    def __init__(self, cin, cout, k_start, k_mid, stride, exp, act=nn.ReLU):
        super().__init__()
        mid = _make_divisible(cin * exp)
        self.has_skip = stride == 1 and cin == cout
        self.dw_start = (_conv_bn(cin, cin, k_start, stride if not k_mid else 1, groups=cin, act=None)
                         if k_start else nn.Identity())
        self.pw_exp = _conv_bn(cin, mid, 1, act=act)
        self.dw_mid = _conv_bn(mid, mid, k_mid, stride, groups=mid, act=act) if k_mid else nn.Identity()
        self.pw_proj = _conv_bn(mid, cout, 1, act=None)

    def forward(self, x):
        y = self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x))))
        return y + x if self.has_skip else y


class MobileNetV4ConvSmall(nn.Module):
    """timm mobilenetv4_conv_small (_gen_mobilenet_v4 'small'): ReLU, stem 32, conv / UIR stages, the
    MobileNetV3 'efficient head' (pool, conv_head 1x1 -> 1280 without bias, BN, ReLU)."""

    # 'cn' (conv, kernel, stride, out) or 'uir' (start k, mid k, stride, expansion, out); timm's arch_def
    STAGES = [("cn", 3, 2, 32), ("cn", 1, 1, 32), ("cn", 3, 2, 96), ("cn", 1, 1, 64),
              ("uir", 5, 5, 2, 3.0, 96), *[("uir", 0, 3, 1, 2.0, 96)] * 4, ("uir", 3, 0, 1, 4.0, 96),
              ("uir", 3, 3, 2, 6.0, 128), ("uir", 5, 5, 1, 4.0, 128), ("uir", 0, 5, 1, 4.0, 128),
              ("uir", 0, 5, 1, 3.0, 128), *[("uir", 0, 3, 1, 4.0, 128)] * 2, ("cn", 1, 1, 960)]

    def __init__(self, width=1.0, num_classes=1000, num_features=1280, dropout=0.0):
        super().__init__()
        ch = (lambda c: _make_divisible(c * width)) if width != 1.0 else (lambda c: c)
        stem = 32  # fix_stem when width < 1.0, as timm does
        self.conv_stem = _conv_bn(3, stem, 3, 2)
        blocks, cin = [], stem
        for spec in self.STAGES:
            if spec[0] == "cn":
                _, k, s, c = spec
                cout = c if c == 960 and width == 1.0 else ch(c)
                blocks.append(_conv_bn(cin, cout, k, s))
            else:
                _, ks, km, s, e, c = spec
                cout = ch(c)
                blocks.append(_UIR(cin, cout, ks, km, s, e))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(cin, num_features, 1, bias=False)
        self.norm_head = nn.BatchNorm2d(num_features)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x):
        x = self.global_pool(self.blocks(self.conv_stem(x)))
        x = self.act(self.norm_head(self.conv_head(x)))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


# ---------------------------------------------------------------- registry

def _entry(name, ctor, size, seed, family, source, description, classes) -> MobileEntry:
    shape = (1, 3, size, size)

    def make():
        return ctor()
    make.__name__ = name
    return MobileEntry(name, _seeded(seed, shape)(make), shape, family, source, description, classes)


MOBILE: dict[str, MobileEntry] = {e.name: e for e in [
    _entry("mobilenet_v2_035_96", lambda: MobileNetV2(0.35, 1000), 96, 101, "MobileNetV2", "torchvision",
           "width 0.35 @ 96x96, 1000 classes (ImageNet head)", 1000),
    _entry("mobilenet_v2_050_128", lambda: MobileNetV2(0.5, 100), 128, 102, "MobileNetV2", "torchvision",
           "width 0.5 @ 128x128, 100-class head (with 1000 classes: 1.96 M params, over 2 MB of model flash with biases and kernels)", 100),
    _entry("mobilenet_v3_small_100_96", lambda: MobileNetV3Small(1.0, 100), 96, 103, "MobileNetV3-Small",
           "torchvision", "width 1.0 @ 96x96, 100-class head (with 1000 classes: 2.54 M params)", 100),
    _entry("mobilenet_v3_small_075_128", lambda: MobileNetV3Small(0.75, 100), 128, 104, "MobileNetV3-Small",
           "torchvision", "width 0.75 @ 128x128, 100-class head", 100),
    _entry("mobilenet_v3_small_050_96", lambda: MobileNetV3Small(0.5, 1000), 96, 112, "MobileNetV3-Small",
           "torchvision", "width 0.5 @ 96x96, 1000 classes (8- and 16-channel early layers)", 1000),
    _entry("mnasnet_b1_050_96", lambda: MnasNetB1(0.5, 100), 96, 105, "MnasNet-B1", "torchvision mnasnet0_5",
           "alpha 0.5 @ 96x96, 100-class head (no SE, ReLU, 1280 head)", 100),
    _entry("mnasnet_a1_050_96", lambda: mnasnet_a1(0.5, 100), 96, 106, "MnasNet-A1", "timm mnasnet_a1",
           "width 0.5 @ 96x96, 100-class head (SE + sigmoid in 3 stages, 5x5 depthwise)", 100),
    _entry("ghostnet_050_96", lambda: GhostNet(0.5, 100), 96, 107, "GhostNet", "CV-Backbones / timm ghostnet_050",
           "width 0.5 @ 96x96, 100-class head (ghost modules: cat + slice, SE + hard sigmoid)", 100),
    _entry("lcnet_050_128", lambda: PPLCNet(0.5, 1000), 128, 108, "PP-LCNet", "PaddleClas / timm lcnet_050",
           "scale 0.5 @ 128x128, 1000 classes (hardswish everywhere, SE in the last two blocks)", 1000),
    _entry("lcnet_035_96", lambda: PPLCNet(0.35, 1000), 96, 113, "PP-LCNet", "PaddleClas / timm lcnet_035",
           "scale 0.35 @ 96x96, 1000 classes (8- to 24-channel early layers)", 1000),
    _entry("tinynet_e_106", lambda: tinynet(0.51, 0.6, 100), 106, 109, "TinyNet-E", "timm tinynet_e",
           "TinyNet-E as published (width 0.51, depth 0.6, 106x106), 100-class head (MBConv + SE, SiLU)", 100),
    _entry("squeezenet_11_96", lambda: SqueezeNet11(1000), 96, 110, "SqueezeNet 1.1", "torchvision squeezenet1_1",
           "as published @ 96x96, 1000 classes (no BN, fire modules: cat, ceil-mode max pool)", 1000),
    _entry("mobilenet_v4_conv_small_050_96", lambda: MobileNetV4ConvSmall(0.5, 100), 96, 111,
           "MobileNetV4-Conv-Small", "timm mobilenetv4_conv_small",
           "width 0.5 @ 96x96, 100-class head (UIR: ExtraDW / IR / ConvNeXt blocks, 1280 head)", 100),
]}


def names() -> list[str]:
    return list(MOBILE)


def get(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The seeded model (eval mode) and a seeded example input of its shape."""
    if name not in MOBILE:
        from tinyc.errors import TinycError
        raise TinycError(f"unknown mobile zoo model {name!r}", hint=f"available: {', '.join(MOBILE)}")
    entry = MOBILE[name]
    gen = torch.Generator().manual_seed(2000 + list(MOBILE).index(name))
    return entry.build(), torch.randn(entry.input_shape, generator=gen)


def macs_of(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of conv and linear layers in one forward pass of `model` (forward hooks)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def params_of(model: nn.Module) -> int:
    """Parameters with BN folded away: conv/linear weights and biases plus one bias per BN channel."""
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm2d):
            n += m.num_features
    return n


@functools.lru_cache(maxsize=None)
def count_macs(name: str) -> int:
    return macs_of(MOBILE[name].build(), MOBILE[name].input_shape)


@functools.lru_cache(maxsize=None)
def count_params(name: str) -> int:
    return params_of(MOBILE[name].build())
