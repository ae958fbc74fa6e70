"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import zoo_model


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

