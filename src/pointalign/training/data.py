"""Training data: a resumable, sharded mixture of PointLLM-layout datasets.

Each step draws ONE dataset with probability proportional to its ``ratio`` (the same draw on every process) and
takes a homogeneous batch of that dataset's ``batch_size`` from it, as the reference does. Within a dataset, every
epoch is a seeded permutation; process ``r`` of ``W`` reads positions ``r, r + W, ...`` of it, so the shards of one
epoch never overlap. The whole position (the mixture generator and each dataset's epoch and offset) is a small
JSON-able state, so a resumed run reads exactly the batches the uninterrupted run would have read.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointalign.data.readers import PointLLMFolder, Record, downsample
from pointalign.errors import DataError
from pointalign.models.point_encoder import reduce_points
from pointalign.training.config import DATASET_FILES, DataConfig


def fraction_subset(records: list[Record], fraction: float, seed: int) -> list[Record]:
    """Records of a deterministic ``fraction`` of the objects (the same objects for the same seed)."""
    if fraction >= 1.0:
        return records
    objects = sorted({r.object_id for r in records})
    keep_n = max(1, math.ceil(fraction * len(objects)))
    order = np.random.default_rng(seed).permutation(len(objects))
    keep = {objects[i] for i in order[:keep_n]}
    return [r for r in records if r.object_id in keep]


class PointStore:
    """Loads clouds by object id and reduces them to the encoder's point count; keeps recent ones in memory."""

    def __init__(self, folder: PointLLMFolder, num_points: int, resample: str, capacity: int = 20000) -> None:
        self.folder, self.num_points, self.resample, self.capacity = folder, num_points, resample, capacity
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, object_id: str) -> torch.Tensor:
        if object_id in self._cache:
            self._cache.move_to_end(object_id)
            return self._cache[object_id]
        cloud = self.folder.cloud(object_id)
        if cloud.shape[0] > self.num_points:
            if self.resample == "fps":
                cloud = reduce_points(torch.from_numpy(cloud), self.num_points).numpy()
            else:
                cloud = downsample(cloud, self.num_points, "random", seed=0)
        elif cloud.shape[0] < self.num_points:
            raise DataError(
                f"{self.folder.cloud_path(object_id)}: {cloud.shape[0]} points, the model needs {self.num_points}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(cloud, dtype=np.float32))
        self._cache[object_id] = tensor
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return tensor

    def batch(self, object_ids: list[str]) -> torch.Tensor:
        """(B, P, 6) clouds."""
        return torch.stack([self.get(o) for o in object_ids])


class MixtureData:
    """The stage's dataset mixture for one process (see the module docstring)."""

    def __init__(self, cfg: DataConfig, seed: int, rank: int = 0, world: int = 1) -> None:
        self.cfg, self.seed, self.rank, self.world = cfg, seed, rank, world
        self.folder = PointLLMFolder(Path(cfg.root).expanduser(), cfg.file_points)
        self.sources = []
        for src in cfg.mixture:
            file, types = DATASET_FILES[src.name]
            records = fraction_subset(self.folder.annotations(file, types), cfg.fraction, cfg.fraction_seed)
            if len(records) < world:
                raise DataError(
                    f"{self.folder.root / 'anno_data' / file}: {len(records)} {src.name} records for {world} processes"
                )
            self.sources.append((src, records))
        ratios = np.array([s.ratio for s, _ in self.sources], dtype=np.float64)
        self.probs = ratios / ratios.sum()
        self.rng = np.random.default_rng([seed, 7])
        self.positions = {s.name: [0, 0] for s, _ in self.sources}  # name -> [epoch, offset within the shard]

    def _shard(self, name: str, n: int, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch, sum(map(ord, name))]).permutation(n)
        return order[self.rank :: self.world]

    def next_batch(self) -> tuple[str, list[Record]]:
        """The next (dataset name, records) batch of this process."""
        k = int(self.rng.choice(len(self.sources), p=self.probs))
        src, records = self.sources[k]
        out: list[Record] = []
        while len(out) < src.batch_size:
            epoch, offset = self.positions[src.name]
            shard = self._shard(src.name, len(records), epoch)
            take = shard[offset : offset + src.batch_size - len(out)]
            out += [records[i] for i in take]
            offset += len(take)
            self.positions[src.name] = [epoch + 1, 0] if offset >= len(shard) else [epoch, offset]
        return src.name, out

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "positions": {k: list(v) for k, v in self.positions.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.positions = {k: list(v) for k, v in state["positions"].items()}
