"""Shared fixtures. Everything runs on the CPU, offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


MINIGPT3D_FIXTURE = Path(__file__).parent / "fixtures" / "minigpt3d_tiny"


@pytest.fixture(scope="session")
def split_folder(tmp_path_factory) -> Path:
    """The reference fixture's Phi-2 in today's layout: its config and tokenizer with its q_proj/k_proj/v_proj
    weights (``Phi_2_split_qkv/`` holds only the weights)."""
    folder = tmp_path_factory.mktemp("phi2_split")
    for f in (MINIGPT3D_FIXTURE / "Phi_2").iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, folder / f.name)
    shutil.copy(MINIGPT3D_FIXTURE / "Phi_2_split_qkv" / "model.safetensors", folder / "model.safetensors")
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small embedded dataset at the tiny preset's 256 points: 80 train, 40 val, 40 test objects."""
    from pointalign.data.synth import synthesize

    root = tmp_path_factory.mktemp("tinydata") / "data"
    synthesize(root, objects_per_class=4, points=256, seed=0, val_per_class=1, test_per_class=1)
    return root
