import math

import pytest
import torch

from pointalign.losses import alignment_loss, gather_positions, next_token_loss


def test_alignment_loss_by_hand():
    p = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (1, 2, 2)
    a = torch.tensor([[[1.0, 1.0], [0.0, -3.0]]])
    # cos = 1/sqrt(2) and -1  ->  mean(1 - cos) = (1 - 1/sqrt(2) + 2) / 2
    assert alignment_loss(p, a).item() == pytest.approx((3 - 1 / math.sqrt(2)) / 2)


def test_alignment_loss_does_not_reach_anchor():
    p = torch.rand(2, 3, 4, requires_grad=True)
    a = torch.rand(2, 3, 4, requires_grad=True)
    alignment_loss(p, a).backward()
    assert p.grad is not None and a.grad is None


def test_alignment_loss_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        alignment_loss(torch.rand(1, 2, 3), torch.rand(1, 2, 4))


def test_next_token_loss_by_hand():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 2.0
    labels = torch.tensor([[-100, 2, -100]])
    expected = -torch.log_softmax(logits[0, 0], -1)[2]
    assert next_token_loss(logits, labels).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="no supervised token"):
        next_token_loss(logits, torch.full((1, 3), -100))


def test_gather_positions():
    h = torch.arange(2 * 5 * 1).reshape(2, 5, 1).float()
    out = gather_positions(h, torch.tensor([[1, 2], [3, 4]]))
    assert out.squeeze(-1).tolist() == [[1.0, 2.0], [8.0, 9.0]]
