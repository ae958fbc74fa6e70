"""Real data no one in the project chose, offline, and the models the compression evidence uses.

- `mnist1d` (Greydanus 2020, PyPI `mnist1d`): a published 1-D benchmark of 10 digit-like templates,
  padded, scaled, sheared, translated and noised into 40-sample signals. Generated procedurally by
  the package (`make_dataset`, default arguments, seed 42: 4,000 training and 1,000 test signals);
  its download is never called.
- scikit-learn's digits (1,797 images of 8 x 8, no download), upsampled to 28 x 28 for the LeNet
  rows of Deep Compression (bilinear; the paper used MNIST's 60,000 native 28 x 28 images).

Models, as their sources define them: the mnist1d paper's CNN (three Conv1d of 25 channels,
stride 2), LeNet-300-100 (784-300-100-10, ReLU) and LeNet-5 (Caffe's variant that Deep Compression
prunes: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Half of digits is the test set: the budget contract needs evaluation samples (a 1-point budget on
# 180 images is a 2-image budget), and the held-out half must measure a drop of 1.5 points.
TEST_FRACTION = 0.5
Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]   # x_train, y_train, x_test, y_test


def load_mnist1d(seed: int = 42) -> Data:
    """mnist1d as [N, 1, 40] float32 signals and int64 labels (the package's own split)."""
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    f = lambda x: np.ascontiguousarray(x, np.float32)[:, None, :]
    return f(d["x"]), d["y"].astype(np.int64), f(d["x_test"]), d["y_test"].astype(np.int64)


def load_digits28(seed: int = 0, test_fraction: float = TEST_FRACTION) -> Data:
    """scikit-learn digits, bilinearly upsampled to [N, 1, 28, 28] in [0, 1]; a seeded stratified
    split, half for the test set (898 training, 899 test images)."""
    from bench.digits import load_digits
    x_train, y_train, x_test, y_test = load_digits(seed, test_fraction)
    up = lambda x: F.interpolate(torch.from_numpy(x), size=(28, 28), mode="bilinear",
                                 align_corners=False).clamp(0, 1).numpy()
    return up(x_train), y_train, up(x_test), y_test


class Mnist1dCNN(nn.Module):
    """The mnist1d paper's ConvBase: 3 x (Conv1d 25, stride 2, ReLU), linear over the flattened map."""

    def __init__(self, channels: int = 25, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(channels * 5, classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.linear(x.flatten(1))


class LeNet300100(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(50 * 4 * 4, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def load_synthetic_kws(seed: int = 0, per_class: int = 200, classes: int = 12) -> Data:
    """SYNTHETIC keyword-spotting-shaped data (no speech): [N, 1, 49, 10] "MFCC frames", 12 classes.
    Each class is a seeded smooth random template (a few Gaussian blobs over time x coefficient);
    a sample is its template shifted by up to 6 frames, scaled by 0.7-1.3, plus noise of 0.9 x the
    template's spread. Half for training, half for testing. Labelled synthetic wherever
    it is reported: it exercises the DS-CNN architecture, it says nothing about speech."""
    rng = np.random.default_rng(seed)
    t, c = np.meshgrid(np.arange(49), np.arange(10), indexing="ij")
    templates = []
    for _ in range(classes):
        z = np.zeros((49, 10))
        for _ in range(4):
            t0, c0, st, sc, a = rng.uniform(8, 41), rng.uniform(0, 9), rng.uniform(2, 6), rng.uniform(1, 3), rng.normal()
            z += a * np.exp(-((t - t0) / st) ** 2 - ((c - c0) / sc) ** 2)
        templates.append(z / z.std())
    xs, ys = [], []
    for k, z in enumerate(templates):
        for _ in range(per_class):
            x = np.roll(z, rng.integers(-6, 7), axis=0) * rng.uniform(0.7, 1.3) + 0.9 * rng.standard_normal(z.shape)
            xs.append(x)
            ys.append(k)
    x = np.asarray(xs, np.float32)[:, None]
    y = np.asarray(ys, np.int64)
    perm = rng.permutation(len(y))
    tr, te = perm[: len(y) // 2], perm[len(y) // 2:]
    return x[tr], y[tr], x[te], y[te]


class _LogProbs(nn.Module):
    """log of a model's softmax output, for training a model that ends in softmax."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.log(self.model(x).clamp_min(1e-12))


def ds_cnn() -> nn.Module:
    from bench.zoo import DSCNN
    return DSCNN()


MODELS = {
    "mnist1d_cnn": (Mnist1dCNN, load_mnist1d, 30),
    "lenet_300_100": (LeNet300100, load_digits28, 30),
    "lenet5": (LeNet5, load_digits28, 15),
    "ds_cnn_synthetic": (ds_cnn, load_synthetic_kws, 8),
}
# what each model's rows are measured on (the auto_results table's data column)
DATA = {"mnist1d_cnn": "mnist1d (real benchmark)", "lenet_300_100": "digits 28x28 (real)", "lenet5": "digits 28x28 (real)",
        "ds_cnn_synthetic": "**synthetic** KWS-shaped", "digits_mlp": "digits 8x8 (real; project's model)",
        "digits_cnn": "digits 8x8 (real; project's model)"}
# the project's own digits models (8 x 8 scikit-learn digits, the checked-in weights)
PROJECT_MODELS = ("digits_mlp", "digits_cnn")


def train(name: str, seed: int = 0) -> tuple[nn.Module, Data]:
    """The model trained with Adam (seeded, one thread: the same weights on a given CPU); the
    project's digits models load their checked-in weights (bench.compression_eval.pretrained)."""
    from bench.digits import train as fit
    if name in PROJECT_MODELS:
        from bench.compression_eval import pretrained
        return pretrained(name.split("_")[1])
    ctor, load, epochs = MODELS[name]
    if name == "ds_cnn_synthetic":      # ends in softmax: trained on its log
        data = load()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ctor()
        fit(_LogProbs(model), data, seed, epochs)
        return model.eval(), data
    data = load()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = fit(ctor(), data, seed, epochs)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), data
