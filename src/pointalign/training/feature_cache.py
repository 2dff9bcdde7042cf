"""Feature cache: the frozen part of the vision side, computed once per cloud and reused.

Everything before the modality projector (point encoder, bridge, Q-Former, query experts) is frozen in stage 2 and,
on cpu-small, from stage 1a on; its outputs, the Q-Former outputs (Q, Dq) of each cloud, are cached, and the
projector runs on them at every step (it is two Linears, and trains in stages 1a-1c). The key hashes every tensor of
the cached parts and the point preprocessing, so a changed checkpoint or setting never reads stale features. Each
cloud is encoded on its own, so its features are the same whatever batch it first appeared in (which keeps resumed
runs exact).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

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

    def __init__(self, model: PointAlignModel, kind: str, extra: str, disk_dir: Path | None = None) -> None:
        if not encoder_side_frozen(model):
            raise ValueError("the feature cache needs a frozen point encoder, bridge, Q-Former and query experts")
        self.model, self.kind = model, kind
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

    @torch.no_grad()
    def qformer_outputs(self, object_ids: list[str], points: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """(B, Q, Dq) Q-Former outputs for ``object_ids``; ``points(ids)`` gives (n, P, F) clouds for the ones not
        cached yet."""
        out = []
        for oid in object_ids:
            got = self._load(oid)
            if got is None:
                self.misses += 1
                device = next(self.model.point_encoder.parameters()).device
                got = self.model.query_outputs(points([oid]).to(device))[0].detach().cpu()  # (Q, Dq)
                self.memory[oid] = got
                if self.dir is not None:
                    tmp = self.dir / f".{oid}.tmp"
                    save_file({"qformer_out": got.contiguous()}, str(tmp))
                    tmp.rename(self.dir / f"{oid}.safetensors")
            else:
                self.hits += 1
            out.append(got)
        return torch.stack(out)
