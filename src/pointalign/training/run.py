"""``run_stage``: train a stage of any kind, the one place that knows them all.

The loop (``training/loop.py``) runs any ``StageKind`` and never imports stage 0; stage 0
(``training/contrastive.py``) builds on the loop. This module imports both and picks the kind from ``cfg.kind``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pointalign.training.config import TrainConfig
from pointalign.training.contrastive import CONTRASTIVE
from pointalign.training.loop import INSTRUCT, StageKind, train_stage
from pointalign.training.words import WORDS

KINDS: dict[str, StageKind] = {"contrastive": CONTRASTIVE, "instruct": INSTRUCT, "words": WORDS}


def stage_kind(cfg: TrainConfig) -> StageKind:
    """The stage kind named by ``cfg.kind``: stage 0's contrastive one, the instruction stages', or ``words``."""
    return KINDS[cfg.kind]


def run_stage(cfg: TrainConfig, out: str | Path, resume: bool = False, print_fn: Callable[[str], Any] = print) -> Path:
    """Train one stage into ``<out>/<stage>/`` (see ``training/loop.py``); returns that folder."""
    return train_stage(stage_kind(cfg), cfg, out, resume=resume, print_fn=print_fn)
