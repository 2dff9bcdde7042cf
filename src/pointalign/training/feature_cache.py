"""Feature cache: the frozen part of the vision side, computed once per cloud and reused.

Everything before the modality projector (point encoder, bridge, Q-Former, query experts) is frozen in stage 2 and,
on cpu-small, from stage 1a on; its outputs, the Q-Former outputs (Q, Dq) of each cloud, are cached, and the
projector runs on them at every step (it is two Linears, and trains in stages 1a-1c). The key hashes every tensor of
the cached parts and the point preprocessing, so a changed checkpoint or setting never reads stale features. Each
cloud is encoded on its own, so its features are the same whatever batch it first appeared in (which keeps resumed
runs exact). ``prefill`` encodes many clouds at once instead, in batches fixed by the sorted keys of every cloud the
stage can draw, which is as exact.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

from pointalign.models.pointalign import PointAlignModel

CACHED_PARTS = ("point_encoder", "bridge", "qformer", "query_experts")  # everything before the modality projector


def _cached_parts(model: PointAlignModel) -> list[tuple[str, torch.nn.Module]]:
    return [(part, getattr(model, part)) for part in CACHED_PARTS if getattr(model, part) is not None]


def encoder_side_frozen(model: PointAlignModel) -> bool:
    """Whether every part before the modality projector is frozen (its outputs can be cached)."""
    return all(not p.requires_grad for _, module in _cached_parts(model) for p in module.parameters())


def vision_key(model: PointAlignModel, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for part, module in _cached_parts(model):
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{part}.{name}".encode())
            h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


class FeatureCache:
    """Memory or disk cache of the Q-Former outputs (Q, Dq) per cloud key."""

    def __init__(
        self,
        model: PointAlignModel,
        kind: str,
        extra: str,
        disk_dir: Path | None = None,
        precision: Literal["fp32", "bf16"] = "fp32",
    ) -> None:
        if not encoder_side_frozen(model):
            raise ValueError("the feature cache needs a frozen point encoder, bridge, Q-Former and query experts")
        self.model, self.kind, self.precision = model, kind, precision
        self.key = vision_key(model, extra)
        self.memory: dict[str, torch.Tensor] = {}
        self.dir = (disk_dir / self.key) if (kind == "disk" and disk_dir is not None) else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _load(self, object_id: str) -> torch.Tensor | None:
        if object_id in self.memory:
            return self.memory[object_id]
        if self.dir is not None and (self.dir / f"{object_id}.safetensors").is_file():
            self.memory[object_id] = load_file(str(self.dir / f"{object_id}.safetensors"))["qformer_out"]
            return self.memory[object_id]
        return None

    @contextlib.contextmanager
    def _inference(self, device_type: str) -> Iterator[None]:
        """The cached parts in eval mode (no dropout, BatchNorm's running statistics) and in the cache's precision
        (bf16 autocast, or none even inside a caller's autocast) while they encode; their modes are restored after."""
        modes = [(m, m.training) for _, part in _cached_parts(self.model) for m in part.modules()]
        for m, _ in modes:
            m.eval()
        try:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                yield
        finally:
            for m, training in modes:
                m.training = training

    def _encode(self, keys: list[str], points: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """(n, Q, Dq) Q-Former outputs of ``points(keys)``, computed as every cached feature is (``_inference``)."""
        device = next(self.model.point_encoder.parameters()).device
        with self._inference(device.type):
            return self.model.query_outputs(points(keys).to(device)).detach().cpu()

    def _store(self, object_id: str, features: torch.Tensor) -> None:
        self.memory[object_id] = features
        if self.dir is not None:
            tmp = self.dir / f".{object_id}.tmp"
            save_file({"qformer_out": features.contiguous()}, str(tmp))
            tmp.rename(self.dir / f"{object_id}.safetensors")

    @torch.no_grad()
    def qformer_outputs(self, object_ids: list[str], points: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """(B, Q, Dq) Q-Former outputs for ``object_ids``; ``points(ids)`` gives (n, P, F) clouds for the ones not
        cached yet."""
        out = []
        for oid in object_ids:
            got = self._load(oid)
            if got is None:
                self.misses += 1
                got = self._encode([oid], points)[0]  # (Q, Dq)
                self._store(oid, got)
            else:
                self.hits += 1
            out.append(got)
        return torch.stack(out)

    @torch.no_grad()
    def prefill(
        self,
        keys: list[str],
        points: Callable[[list[str]], torch.Tensor],
        batch_size: int,
        part: tuple[int, int] = (0, 1),
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Encode ``keys`` in batches of ``batch_size`` over their sorted order (the batches do not depend on what is
        cached already, so a cloud's features are the same whichever process or run computed them); a batch whose
        keys are all cached is skipped. ``part = (rank, world)`` takes every world-th batch, for processes that share
        a disk cache. ``progress(n)`` is called with each batch's size. Returns the number of clouds encoded."""
        ordered = sorted(set(keys))
        encoded = 0
        rank, world = part
        for i, start in enumerate(range(0, len(ordered), batch_size)):
            chunk = ordered[start : start + batch_size]
            if i % world == rank and any(self._load(k) is None for k in chunk):
                for k, got in zip(chunk, self._encode(chunk, points)):  # (Q, Dq) each
                    self._store(k, got.clone())
                encoded += len(chunk)
            if progress is not None:
                progress(len(chunk))
        return encoded
