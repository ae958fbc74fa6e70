"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import zoo_model


def pytest_configure(config):
    """TINYC_TEST_THREADS=N runs torch (training, distillation) on N threads: the suite must pass
    whatever the thread count, since float32 training results depend on it (issue 14)."""
    import os
    threads = os.environ.get("TINYC_TEST_THREADS")
    if threads:
        import torch
        torch.set_num_threads(int(threads))


@pytest.fixture(scope="session")
def zoo_archive(tmp_path_factory):
    """Path of a zoo model saved with torch.export.save (made once per name)."""
    import torch
    root = tmp_path_factory.mktemp("zoo")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            module, example = zoo_model(name)
            path = root / f"{name}.pt2"
            torch.export.save(torch.export.export(module.eval(), (example,)), str(path))
            cache[name] = path
        return cache[name]
    return get

