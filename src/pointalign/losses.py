"""Losses. Neither is ever wrapped in try/except: a failure stops training with its own error.

Notation used for tensor shapes: B batch, L tokens, V vocabulary, Q point tokens, D / Dq widths.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pointalign.data.prompts import IGNORE_INDEX


def next_token_loss(hidden: Tensor, labels: Tensor, head: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Shifted cross-entropy averaged over all supervised (non -100) targets of the batch, running the output head
    only at the positions that predict one (the prompt and the point tokens, most of a sequence, never reach it).

    Args:
        hidden: (B, L, D) final hidden states.
        labels: (B, L), IGNORE_INDEX where not supervised.
        head: the LLM's output layer, (S, D) -> (S, V).

    Returns:
        The loss and the (S, V) logits of the S supervised targets (row-major over batch and position).
    """
    targets = labels[:, 1:]  # (B, L-1): position t predicts token t + 1
    keep = targets != IGNORE_INDEX  # (B, L-1)
    if not keep.any():
        raise ValueError("next_token_loss: the batch has no supervised token")
    logits = head(hidden[:, :-1][keep])  # (S, V)
    return F.cross_entropy(logits.float(), targets[keep]), logits


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
