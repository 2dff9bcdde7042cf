"""Ask a trained model about point clouds in three lines.

    from pointalign import PointAlignPipeline
    pipe = PointAlignPipeline.from_pretrained("runs/reproduce/stage2-seed0")
    pipe("chair.ply", "What is this?")                      # -> "This is a brown chair with four legs."

Inputs are arrays of N x 3 or N x 6 (xyz, or xyz + rgb in [0, 1] or 0-255) or paths to any file the readers accept
(``.npy``, ``.ply``, ``.off``, ``.obj``, ``.stl``, ``.glb``); they are validated, unit-sphere normalised and reduced
to the model's point count by farthest point sampling. A list of inputs (with one question, or one question each) is
answered as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pointalign.config import GenerationConfig
from pointalign.data.prompts import Turn
from pointalign.data.readers import check_cloud, downsample, load_cloud, normalize
from pointalign.errors import DataError
from pointalign.training.precision import inference_autocast, requested_precision

PointInput = np.ndarray | torch.Tensor | str | Path


class PointAlignPipeline:
    """A loaded model (never with the alignment projector) plus input preparation, decoding settings and the
    precision its forward passes run in: "fp32", "bf16" (autocast, as ``pointalign eval --precision bf16``) or
    "auto" (bf16 where this host measures it faster; ``choice`` says what was chosen and why)."""

    def __init__(self, model, generation: GenerationConfig | None = None, precision: str = "fp32") -> None:
        self.model = model.eval()
        self.generation = generation or GenerationConfig.greedy(max_new_tokens=150)
        self.num_points = model.config.encoder.num_points
        self.min_points = max(model.config.encoder.num_groups, model.config.encoder.group_size)
        self.choice = requested_precision(precision, next(model.parameters()).device)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, generation: GenerationConfig | None = None, precision: str = "fp32"
    ) -> PointAlignPipeline:
        from pointalign.checkpoint import load_model

        model, _ = load_model(path, for_inference=True)
        return cls(model, generation, precision)

    def prepare(self, item: PointInput) -> torch.Tensor:
        """One input as a (P, 6) float32 tensor ready for the model."""
        if isinstance(item, (str, Path)):
            cloud = load_cloud(item, num_points=self.num_points)
            where = str(item)
        else:
            array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
            cloud = normalize(downsample(check_cloud(np.asarray(array), "points"), self.num_points))
            where = "points"
        if cloud.shape[0] < self.min_points:
            raise DataError(f"{where}: {cloud.shape[0]} points; the model needs at least {self.min_points}")
        return torch.from_numpy(np.ascontiguousarray(cloud, dtype=np.float32))

    def __call__(
        self,
        inputs: PointInput | Sequence[PointInput],
        question: str | Sequence[str] = "What is this?",
        history: Sequence[Turn] | Sequence[Sequence[Turn]] | None = None,
        generation: GenerationConfig | None = None,
    ) -> str | list[str]:
        single = isinstance(inputs, (str, Path, np.ndarray, torch.Tensor))
        items = [inputs] if single else list(inputs)
        if not items:
            raise ValueError("PointAlignPipeline: no inputs")
        questions = [question] * len(items) if isinstance(question, str) else list(question)
        if len(questions) != len(items):
            raise ValueError(f"PointAlignPipeline: {len(items)} inputs but {len(questions)} questions")
        histories = None
        if history is not None:
            histories = [list(history)] if single else [list(h) for h in history]
        clouds = [self.prepare(x) for x in items]
        sizes = {c.shape[0] for c in clouds}
        device = next(self.model.parameters()).device
        gen = generation or self.generation
        answers: list[str] = []
        with inference_autocast(self.choice.chosen, device.type, self.model):
            if len(sizes) == 1:
                answers = self.model.generate(torch.stack(clouds).to(device), questions, histories, gen)
            else:  # clouds smaller than the model's point count keep their size: answer them one by one
                for i, c in enumerate(clouds):
                    h = [histories[i]] if histories else None
                    answers += self.model.generate(c[None].to(device), [questions[i]], h, gen)
        return answers[0] if single else answers
