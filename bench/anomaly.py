"""A trained FC autoencoder for the svd evidence: MLPerf Tiny's anomaly-detection architecture
(640 -> 128x4 -> 8 -> 128x4 -> 640) trained in seconds on synthetic machine-sound spectra.

Real ToyADMOS/MIMII clips cannot be downloaded here, so the data imitate their structure: 5 frames
of 128 log-mel bins of a machine whose spectrum is a few harmonic bumps with slowly drifting gains,
plus noise. Like real machine sound it lies near a low-dimensional set, which is what makes a
trained autoencoder's weights compressible by low-rank factorization (random weights are not).
"""
from __future__ import annotations

import numpy as np
import torch

BINS, FRAMES = 128, 5


def machine_spectra(n: int, seed: int = 0, harmonics: int = 6, base: float = 6.0) -> np.ndarray:
    """n x 640 float32 log-mel-like vectors, standardised (with the normal machine's statistics).
    A different `base` (harmonic spacing) makes the sound of a faulty machine."""
    rng = np.random.default_rng(seed)
    bins = np.arange(BINS)
    templates = np.stack([np.exp(-0.5 * ((bins - base * (k + 1) * 2.7) / (1.5 + k)) ** 2) for k in range(harmonics)])
    gains = rng.lognormal(0.0, 0.4, size=(n, 1, harmonics))
    drift = 1.0 + 0.1 * np.cumsum(rng.standard_normal((n, FRAMES, harmonics)), axis=1) / np.sqrt(FRAMES)
    frames = np.einsum("nfk,kb->nfb", gains * drift, templates)
    x = np.log1p(10.0 * frames) + 0.05 * rng.standard_normal((n, FRAMES, BINS))
    x = (x - NORMAL_MEAN) / NORMAL_STD
    return x.reshape(n, FRAMES * BINS).astype(np.float32)


NORMAL_MEAN, NORMAL_STD = 1.40, 0.98   # of the normal machine's log spectra, fixed so anomalies share them


def anomalous_spectra(n: int, seed: int = 1) -> np.ndarray:
    """A machine whose harmonics moved (a worn bearing, say): what the detector must flag."""
    return machine_spectra(n, seed, base=6.1)


def auc(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """Area under the ROC curve of anomaly score (probability an anomaly outscores a normal sample)."""
    diff = anomaly_scores[:, None] - normal_scores[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def detection_auc(outputs_normal: np.ndarray, x_normal: np.ndarray,
                  outputs_anomaly: np.ndarray, x_anomaly: np.ndarray) -> float:
    """AUC of reconstruction error as the anomaly score."""
    err = lambda y, x: np.mean((y.reshape(x.shape) - x) ** 2, axis=1)
    return auc(err(outputs_normal, x_normal), err(outputs_anomaly, x_anomaly))


def train_autoencoder(seed: int = 0, samples: int = 2048, epochs: int = 8):
    """(trained zoo fc_autoencoder in eval mode, (x_train, x_test))."""
    from bench import zoo

    torch.manual_seed(seed)
    module, _ = zoo.get("fc_autoencoder")
    x = machine_spectra(samples + 256, seed)
    x_train, x_test = x[:samples], x[samples:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # deterministic
    try:
        module.train()
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
        data = torch.from_numpy(x_train)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(samples, generator=gen).split(64):
                opt.zero_grad()
                loss = torch.mean((module(data[idx]) - data[idx]) ** 2)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return module.eval(), (x_train, x_test)
