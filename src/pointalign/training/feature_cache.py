"""Stage-2 feature cache: the frozen vision side's outputs, computed once per object and reused.

The key hashes every vision-side tensor (point encoder, bridge, Q-Former, projector) and the point preprocessing,
so a changed checkpoint or setting never reads stale features. Each object is encoded on its own, so the features
are the same whatever batch it first appeared in (which keeps resumed runs exact).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pointalign.models.pointalign import PointAlignModel, PointFeatures

VISION_PARTS = ("point_encoder", "bridge", "qformer", "query_experts", "projector")


def _vision_parts(model: PointAlignModel) -> list[tuple[str, torch.nn.Module]]:
    return [(part, getattr(model, part)) for part in VISION_PARTS if getattr(model, part) is not None]


def vision_is_frozen(model: PointAlignModel) -> bool:
    return all(not p.requires_grad for _, module in _vision_parts(model) for p in module.parameters())


def vision_key(model: PointAlignModel, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for part, module in _vision_parts(model):
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{part}.{name}".encode())
            h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


class FeatureCache:
    """Memory or disk cache of ``PointFeatures`` per object id."""

    def __init__(self, model: PointAlignModel, kind: str, extra: str, disk_dir: Path | None = None) -> None:
        if not vision_is_frozen(model):
            raise ValueError(
                "the feature cache needs a frozen vision side (point encoder, bridge, Q-Former, projector)"
            )
        self.model, self.kind = model, kind
        self.key = vision_key(model, extra)
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.dir = (disk_dir / self.key) if (kind == "disk" and disk_dir is not None) else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _load(self, object_id: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if object_id in self.memory:
            return self.memory[object_id]
        if self.dir is not None and (self.dir / f"{object_id}.safetensors").is_file():
            t = load_file(str(self.dir / f"{object_id}.safetensors"))
            self.memory[object_id] = (t["qformer_out"], t["point_tokens"])
            return self.memory[object_id]
        return None

    @torch.no_grad()
    def features(self, object_ids: list[str], points: Callable[[list[str]], torch.Tensor]) -> PointFeatures:
        """Features for ``object_ids``; ``points(ids)`` gives (n, P, 6) clouds for the ones not cached yet."""
        out = []
        for oid in object_ids:
            got = self._load(oid)
            if got is None:
                self.misses += 1
                device = next(self.model.point_encoder.parameters()).device
                f = self.model.encode_points(points([oid]).to(device))
                got = (f.qformer_out[0].detach().cpu(), f.point_tokens[0].detach().cpu())
                self.memory[oid] = got
                if self.dir is not None:
                    tmp = self.dir / f".{oid}.tmp"
                    save_file({"qformer_out": got[0].contiguous(), "point_tokens": got[1].contiguous()}, str(tmp))
                    tmp.rename(self.dir / f"{oid}.safetensors")
            else:
                self.hits += 1
            out.append(got)
        return PointFeatures(torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out]))
