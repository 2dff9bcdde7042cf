"""Shared fixtures. Everything runs on the CPU, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pointalign.config import ModelConfig, preset  # noqa: E402
from pointalign.data.shapes import sample_shape  # noqa: E402
from pointalign.models.builders import build_model  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_config() -> ModelConfig:
    return preset("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    return build_model(tiny_config)


def clouds(n_clouds: int, num_points: int) -> torch.Tensor:
    """(n_clouds, num_points, 6) distinct coloured primitives."""
    shapes = [("sphere", "red"), ("cube", "blue"), ("cylinder", "green"), ("cone", "yellow")]
    return torch.from_numpy(np.stack([sample_shape(*shapes[i % 4], num_points, seed=i) for i in range(n_clouds)]))
