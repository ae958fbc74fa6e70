"""Small seeded PyTorch models: the test and benchmark zoo.

Weights are deterministic (each constructor runs under its own seed and leaves the
caller's RNG alone). Batch-norm layers get non-trivial running statistics, measured
on seeded random batches, plus random affine weights, so BN folding is really tested.

The four MLPerf Tiny models follow the reference architectures (Keras 'same' padding
included, which is asymmetric for even kernels and stride-2 layers):
ds_cnn (keyword spotting), resnet8 (image classification), mobilenet_v1_025
(visual wake words) and fc_autoencoder (anomaly detection).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nn.Module]     # returns the seeded model in eval mode
    input_shape: tuple[int, ...]       # batch included
    description: str
    reference_macs: int | None = None  # published MAC count (MLPerf Tiny models)
    vocab: int | None = None           # token models: int64 ids in [0, vocab) instead of floats


# ---------------------------------------------------------------- helpers

def _same_pads(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Keras/TF 'same' padding (before, after): the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + dilation * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def conv_same(cin: int, cout: int, k, stride: int, size, groups: int = 1) -> nn.Module:
    """Conv2d with TF 'same' padding for an input of spatial `size` (h, w).

    Symmetric padding goes into the conv; asymmetric padding becomes an explicit
    ZeroPad2d in front (PyTorch convs only pad symmetrically), as a port of a
    Keras model would do it.
    """
    kh, kw = (k, k) if isinstance(k, int) else k
    (t, b), (l, r) = _same_pads(size[0], kh, stride), _same_pads(size[1], kw, stride)
    if t == b and l == r:
        return nn.Conv2d(cin, cout, (kh, kw), stride, padding=(t, l), groups=groups)
    return nn.Sequential(nn.ZeroPad2d((l, r, t, b)),
                         nn.Conv2d(cin, cout, (kh, kw), stride, groups=groups))


def conv_bn_relu(cin, cout, k, stride, size, groups=1) -> nn.Sequential:
    return nn.Sequential(conv_same(cin, cout, k, stride, size, groups), nn.BatchNorm2d(cout), nn.ReLU())


def _calibrate_bn(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Give every BN layer data-derived running stats and random affine params.

    Stats measured on random inputs keep activations O(1) through deep stacks (so the
    float comparisons in the tests are meaningful) while being far from the 0/1 defaults.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = 1.0  # running stats := the calibration batch's stats
    # at least ~256 samples per channel (few images, many feature vectors), cheap either way
    batch = max(4, -(-256 // math.prod(input_shape[2:])))
    model.train()
    with torch.no_grad():
        model(torch.randn((batch,) + tuple(input_shape[1:])))
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.momentum = 0.1
    model.eval()


def _seeded(seed: int, input_shape: tuple[int, ...]):
    """Decorator: build the model under `seed` without touching the caller's RNG."""
    def wrap(ctor):
        def build() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = ctor()
                _calibrate_bn(model, input_shape)
            return model.eval()
        build.__name__ = ctor.__name__
        build.__doc__ = ctor.__doc__
        return build
    return wrap


# ---------------------------------------------------------------- models

class MLP(nn.Module):
    def __init__(self, sizes=(64, 32, 16, 10)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class CnnBn(nn.Module):
    """Digits-sized CNN: two conv-bn-relu blocks, max pool, linear."""

    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(self.block2(self.block1(x)))
        return self.fc(torch.flatten(x, 1))


class DSCNN(nn.Module):
    """MLPerf Tiny keyword spotting DS-CNN (49x10 MFCC input, 12 classes)."""

    def __init__(self, channels=64, blocks=4, classes=12):
        super().__init__()
        size = (25, 5)  # after the stride-2 first conv on 49x10
        self.conv1 = conv_bn_relu(1, channels, (10, 4), 2, (49, 10))
        self.drop1 = nn.Dropout(0.2)
        self.blocks = nn.Sequential(*[
            nn.Sequential(conv_bn_relu(channels, channels, 3, 1, size, groups=channels),
                          conv_bn_relu(channels, channels, 1, 1, size))
            for _ in range(blocks)])
        self.drop2 = nn.Dropout(0.4)
        self.pool = nn.AvgPool2d(size)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.blocks(self.drop1(self.conv1(x)))
        x = self.pool(self.drop2(x))
        return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, stride, size):
        super().__init__()
        out = (size[0] // stride, size[1] // stride)
        self.conv1 = conv_same(cin, cout, 3, stride, size)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv_same(cout, cout, 3, 1, out)
        self.bn2 = nn.BatchNorm2d(cout)
        # The reference projects with a plain 1x1 conv (no BN) when the shape changes.
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny image classification ResNet-8 (CIFAR-10, 32x32x3)."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = conv_bn_relu(3, 16, 3, 1, (32, 32))
        self.stack1 = ResBlock(16, 16, 1, (32, 32))
        self.stack2 = ResBlock(16, 32, 2, (32, 32))
        self.stack3 = ResBlock(32, 64, 2, (16, 16))
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        return F.softmax(self.fc(torch.flatten(self.pool(x), 1)), dim=1)


class MobileNetV1(nn.Module):
    """MLPerf Tiny visual wake words MobileNetV1 (alpha 0.25, 96x96x3, 2 classes)."""

    # (output channels at alpha=1, stride) of the 13 depthwise-separable blocks
    BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, alpha=0.25, size=96, classes=2):
        super().__init__()
        cin = int(32 * alpha)
        layers = [conv_bn_relu(3, cin, 3, 2, (size, size))]
        size //= 2
        for cout, stride in self.BLOCKS:
            cout = int(cout * alpha)
            layers.append(conv_bn_relu(cin, cin, 3, stride, (size, size), groups=cin))
            size = math.ceil(size / stride)
            layers.append(conv_bn_relu(cin, cout, 1, 1, (size, size)))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(size)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.pool(self.features(x))
        return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class FCAutoencoder(nn.Module):
    """MLPerf Tiny anomaly detection autoencoder (640 log-mel features, 8-d bottleneck)."""

    def __init__(self, dims=(640, 128, 128, 128, 128, 8, 128, 128, 128, 128)):
        super().__init__()
        self.hidden = nn.Sequential(*[
            nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU())
            for a, b in zip(dims, dims[1:])])
        self.out = nn.Linear(dims[-1], dims[0])

    def forward(self, x):
        return self.out(self.hidden(x))


class Conv1dNet(nn.Module):
    """1-D CNN over 3-axis sensor windows (1x3x128)."""

    def __init__(self, classes=6):
        super().__init__()
        self.conv1 = nn.Conv1d(3, 16, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(16)
        self.pool1 = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(32)
        self.pool2 = nn.AvgPool1d(2)
        self.conv3 = nn.Conv1d(32, 32, 3, stride=2)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool2(F.relu(self.bn2(self.conv2(x))))
        x = self.gap(F.relu(self.conv3(x)))
        return self.fc(x.flatten(1))


class KitchenSink(nn.Module):
    """Exercises every supported op the other zoo models do not (input 1x3x16x16)."""

    def __init__(self):
        super().__init__()
        self.dilated = nn.Conv2d(3, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.drop = nn.Dropout(0.5)
        self.ident = nn.Identity()
        self.scale = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.register_buffer("shift", torch.randn(1, 16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        a = F.leaky_relu(self.dilated(x), 0.2)                      # 8x16x16
        b = F.hardswish(self.grouped(a))
        c = torch.cat([torch.sigmoid(a), torch.tanh(b)], dim=1)      # 16x16x16
        c = F.pad(c, (1, 2, 0, 1), value=0.25)                       # asymmetric: 16x17x19
        c = F.avg_pool2d(c, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        c = F.relu6(c * self.scale - 0.5) + F.hardtanh(c, -0.3, 0.3)  # broadcast [16,1,1]
        c = self.ident(self.drop(c))                                 # 16x9x10
        t = c.flatten(2).transpose(1, 2)                             # tokens: 1x90x16
        s = torch.softmax(torch.matmul(t, t.permute(0, 2, 1)) / 4.0, dim=-1)
        t = (s @ t).permute(0, 2, 1).contiguous()                    # 1x16x90
        m = t.unsqueeze(1).mean(dim=(1, 3)).squeeze(0)               # 16
        m = (1.0 - m) / (self.shift.squeeze(0).abs() + 1.0) * 2      # rsub, div by tensor
        m = torch.sub(m.unsqueeze(0), self.shift, alpha=0.5)         # sub with alpha: 1x16
        y = self.fc(torch.clamp(-m, min=-2.0, max=2.0).view(1, 16))
        return torch.softmax(y, dim=1), F.relu(y)


# ---------------------------------------------------------------- beyond convnets
# Recurrent, attention, normalization, upsampling, channel shuffle and token models, written the
# way their usual sources write them (torchvision's ShuffleNetV2 unit, MobileViT's block, a U-Net,
# nn.TransformerEncoderLayer, an embedding classifier).

class TransformerEncoderNet(nn.Module):
    """One post-norm nn.TransformerEncoderLayer over 16 tokens of 64 features (1x16x64): learned
    positions, 4 heads, GELU feed-forward, mean-pooled tokens, linear head."""

    def __init__(self, tokens=16, dim=64, heads=4, classes=10):
        super().__init__()
        self.pos = nn.Parameter(0.1 * torch.randn(1, tokens, dim))
        self.encoder = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                                  activation="gelu", batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.encoder(x + self.pos).mean(dim=1))


def _double_conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetSmall(nn.Module):
    """A two-level U-Net for 1x1x32x32 segmentation (2 classes): max-pool down, one ConvTranspose2d
    and one bilinear upsampling up, skip connections by concatenation."""

    def __init__(self, base=8, classes=2):
        super().__init__()
        self.inc = _double_conv(1, base)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), _double_conv(base, 2 * base))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), _double_conv(2 * base, 4 * base))
        self.up1 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2)
        self.conv1 = _double_conv(4 * base, 2 * base)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv2 = _double_conv(3 * base, base)
        self.outc = nn.Conv2d(base, classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        y = self.conv1(torch.cat([x2, self.up1(x3)], dim=1))
        y = self.conv2(torch.cat([x1, self.up2(y)], dim=1))
        return self.outc(y)


def _channel_shuffle(x, groups: int):
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual (stride 1: chunk + shuffle; stride 2: two branches)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        mid = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else mid, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _channel_shuffle(out, 2)


class ShuffleNetV2Block(nn.Module):
    """A ShuffleNetV2 stage on 1x3x32x32: stem conv + max-pool, a stride-2 unit and two stride-1
    units (chunk, channel shuffle), 1x1 conv, global pool, linear head."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.stage = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 48, 1))
        self.conv5 = nn.Sequential(nn.Conv2d(48, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.conv5(self.stage(self.stem(x)))
        return self.fc(x.mean([2, 3]))


class _MViTTransformer(nn.Module):
    """Pre-norm transformer layer of MobileViT (LayerNorm, nn.MultiheadAttention, SiLU MLP)."""

    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.SiLU(), nn.Linear(mlp, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    """A MobileViT block on 1x16x16x16: local 3x3 conv, 1x1 to 32 dims, unfold into 2x2 patches,
    one transformer layer across patches, fold, 1x1 back, concatenate with the input, fuse with a
    3x3 conv; global pool and a linear head."""

    def __init__(self, cin=16, dim=32, patch=2, classes=10):
        super().__init__()
        self.patch = patch
        self.local = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.SiLU(),
                                   nn.Conv2d(cin, dim, 1, bias=False))
        self.transformer = _MViTTransformer(dim, 2, 2 * dim)
        self.proj = nn.Sequential(nn.Conv2d(dim, cin, 1, bias=False), nn.BatchNorm2d(cin), nn.SiLU())
        self.fusion = nn.Sequential(nn.Conv2d(2 * cin, cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.SiLU())
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        y = self.local(x)
        n, d, h, w = y.shape
        p = self.patch
        # unfold: [N, D, H, W] -> [N * p * p, (H / p) * (W / p), D]
        y = y.reshape(n, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(n * p * p, -1, d)
        y = self.transformer(y)
        y = y.reshape(n, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(n, d, h, w)
        y = self.fusion(torch.cat([x, self.proj(y)], dim=1))
        return self.fc(y.mean([2, 3]))


class TokenClassifier(nn.Module):
    """Intent classification over 16 int64 tokens of a 100-word vocabulary: embedding + learned
    positions, LayerNorm, a GELU MLP per token, mean over tokens, linear head (4 classes)."""

    def __init__(self, vocab=100, tokens=16, dim=32, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.1 * torch.randn(1, tokens, dim))
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        x = self.norm(self.embed(tokens) + self.pos)
        x = x + self.mlp(x)
        return self.head(x.mean(dim=1))


class GRUKeywordSpotter(nn.Module):
    """Keyword spotting on 49 frames x 10 MFCC (1x49x10): one GRU(64) layer, batch first, the last
    hidden state h_n into a linear head over 12 keywords (the GRU KWS of 'Hello Edge')."""

    def __init__(self, features=10, hidden=64, classes=12):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        _, h_n = self.gru(x)
        return self.fc(h_n[-1])


class LSTMActivity(nn.Module):
    """Activity recognition on 32-step windows of 6 IMU channels (1x32x6): LSTM(32), batch first,
    the last step of the output sequence into a linear head over 6 activities."""

    def __init__(self, features=6, hidden=32, classes=6):
        super().__init__()
        self.lstm = nn.LSTM(input_size=features, hidden_size=hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


# ---------------------------------------------------------------- registry

def _entry(name, ctor, shape, seed, description, macs=None, vocab=None) -> ZooEntry:
    return ZooEntry(name, _seeded(seed, shape)(ctor), shape, description, macs, vocab)


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    _entry("mlp", MLP, (1, 64), 1, "MLP 64-32-16-10 with ReLU"),
    _entry("cnn_bn", CnnBn, (1, 1, 8, 8), 2, "digits-sized CNN: conv-bn-relu x2, maxpool, linear"),
    _entry("ds_cnn", DSCNN, (1, 1, 49, 10), 3, "MLPerf Tiny KWS DS-CNN", 2_656_768),
    _entry("resnet8", ResNet8, (1, 3, 32, 32), 4, "MLPerf Tiny IC ResNet-8", 12_501_632),
    _entry("mobilenet_v1_025", MobileNetV1, (1, 3, 96, 96), 5, "MLPerf Tiny VWW MobileNetV1 0.25", 7_489_664),
    _entry("fc_autoencoder", FCAutoencoder, (1, 640), 6, "MLPerf Tiny AD FC autoencoder", 264_192),
    _entry("conv1d", Conv1dNet, (1, 3, 128), 7, "1-D CNN: conv1d, maxpool1d, avgpool1d, adaptive pool"),
    _entry("kitchen_sink", KitchenSink, (1, 3, 16, 16), 8, "every other supported op"),
    _entry("gru_kws", GRUKeywordSpotter, (1, 49, 10), 9, "GRU keyword spotter on 49x10 MFCC"),
    _entry("lstm_imu", LSTMActivity, (1, 32, 6), 10, "LSTM activity recognition on 32x6 IMU windows"),
    _entry("transformer_encoder", TransformerEncoderNet, (1, 16, 64), 11,
           "one nn.TransformerEncoderLayer (4 heads, GELU FFN) over 16x64 tokens"),
    _entry("unet_small", UNetSmall, (1, 1, 32, 32), 12, "two-level U-Net: ConvTranspose2d and bilinear upsampling"),
    _entry("shufflenet_v2_block", ShuffleNetV2Block, (1, 3, 32, 32), 13,
           "ShuffleNetV2 stage: chunk and channel shuffle"),
    _entry("mobilevit_block", MobileViTBlock, (1, 16, 16, 16), 14,
           "MobileViT block: unfold to patches, LayerNorm + multi-head attention, fold"),
    _entry("token_classifier", TokenClassifier, (1, 16), 15, "int64 tokens: Embedding + LayerNorm + GELU MLP",
           vocab=100),
]}


def names() -> list[str]:
    return list(ZOO)


def get(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The seeded model (eval mode) and a seeded example input of its shape."""
    if name not in ZOO:
        from tinyc.errors import TinycError
        raise TinycError(f"unknown zoo model {name!r}", hint=f"available: {', '.join(ZOO)}")
    entry = ZOO[name]
    model = entry.build()
    gen = torch.Generator().manual_seed(1000 + list(ZOO).index(name))
    if entry.vocab is not None:
        return model, torch.randint(0, entry.vocab, entry.input_shape, generator=gen)
    return model, torch.randn(entry.input_shape, generator=gen)
