"""The scikit-learn digits set (1797 8x8 images, 10 classes; ships with scikit-learn, no
download) and two small models trained on it in seconds, seeded: a real-data accuracy
check for the int8 pipeline, reused by the tests, the benchmark and the docs."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]   # x_train, y_train, x_test, y_test


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Data:
    """Images as float32 N x 1 x 8 x 8 in [0, 1], labels int64; a seeded stratified split."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split
    digits = sk_load()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target.astype(np.int64), test_size=test_fraction, random_state=seed, stratify=digits.target)
    return x_train, y_train, x_test, y_test


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, max pool, linear (as a Keras user would write it)."""

    def __init__(self, c1: int = 16, c2: int = 32):
        super().__init__()
        block = lambda cin, cout: [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*block(1, c1), *block(c1, c2), nn.MaxPool2d(2))
        self.fc = nn.Linear(c2 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)


def train(model: nn.Module, data: Data, seed: int, epochs: int, lr: float = 3e-3, batch: int = 64) -> nn.Module:
    """Adam with a cosine schedule; returns the model in eval mode. Seeded and single-threaded,
    so the weights do not depend on the machine's core count (the caller's RNG and thread
    count are left alone)."""
    x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
            model.train()
            for _ in range(epochs):
                for idx in torch.randperm(len(x)).split(batch):
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                    opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _trained(ctor, seed: int, epochs: int) -> tuple[nn.Module, Data]:
    data = load_digits(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ctor()
    return train(model, data, seed, epochs), data


def train_digits_cnn(seed: int = 0, epochs: int = 15) -> tuple[nn.Module, Data]:
    """The trained DigitsCNN and its (x_train, y_train, x_test, y_test)."""
    return _trained(DigitsCNN, seed, epochs)


def train_digits_mlp(seed: int = 0, epochs: int = 40) -> tuple[nn.Module, Data]:
    """The trained DigitsMLP and its (x_train, y_train, x_test, y_test)."""
    return _trained(DigitsMLP, seed, epochs)


# ---- checked-in weights -------------------------------------------------------------------------
# Float32 training is not bit-reproducible across CPUs (vector width, summation order), so every
# figure downstream of a freshly trained model moves a little from machine to machine. Tests and
# docs therefore start from weights trained once and checked in (tests/data/digits_*.npz, with the
# machine they were trained on beside them); only the code under test can move their results.

CTORS = {"cnn": DigitsCNN, "mlp": DigitsMLP}
TRAINERS = {"cnn": train_digits_cnn, "mlp": train_digits_mlp}


def save_weights(module: nn.Module, path) -> None:
    """The module's state dict as an .npz of float32 arrays (no pickle)."""
    np.savez(path, **{k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})


def load_weights(which: str, path) -> nn.Module:
    """A DigitsCNN / DigitsMLP in eval mode with the weights of `path` (an .npz of save_weights)."""
    module = CTORS[which]()
    with np.load(path, allow_pickle=False) as f:
        state = {k: torch.from_numpy(f[k]) for k in f.files}
    module.load_state_dict(state)
    return module.eval()


def machine() -> str:
    """The CPU, core count and library versions, for figures that come out of training."""
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import os
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, numpy {np.__version__}"


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(100.0 * np.mean(np.argmax(logits, axis=-1) == labels))
