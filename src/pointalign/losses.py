"""Losses. Neither is ever wrapped in try/except: a failure stops training with its own error.

Notation used for tensor shapes: B batch, L tokens, V vocabulary, Q point tokens, D / Dq widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pointalign.data.prompts import IGNORE_INDEX


def next_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Shifted cross-entropy averaged over all supervised (non -100) targets of the batch.

    Args:
        logits: (B, L, V).
        labels: (B, L), IGNORE_INDEX where not supervised.
    """
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # (B*(L-1), V)
    shift_labels = labels[:, 1:].reshape(-1)  # (B*(L-1),)
    if not (shift_labels != IGNORE_INDEX).any():
        raise ValueError("next_token_loss: the batch has no supervised token")
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)


def gather_positions(hidden: Tensor, positions: Tensor) -> Tensor:
    """Pick per-sample positions: (B, L, D) and (B, Q) -> (B, Q, D)."""
    batch = torch.arange(hidden.shape[0], device=hidden.device)[:, None]  # (B, 1)
    return hidden[batch, positions]


def alignment_loss(projected: Tensor, anchor: Tensor) -> Tensor:
    """PointAlign's consistency loss: mean over B x Q of 1 - cos(projected, anchor), anchor detached.

    Args:
        projected: (B, Q, Dq) alignment-projector outputs at the point-token positions.
        anchor: (B, Q, Dq) Q-Former outputs (gradients never flow into them).
    """
    if projected.shape != anchor.shape:
        raise ValueError(f"alignment_loss: shapes differ, {tuple(projected.shape)} vs {tuple(anchor.shape)}")
    cos = F.cosine_similarity(projected.float(), anchor.detach().float(), dim=-1)  # (B, Q)
    return (1.0 - cos).mean()
