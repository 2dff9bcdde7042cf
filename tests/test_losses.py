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
    hidden = torch.zeros(1, 3, 4)
    hidden[0, 0, 2] = 2.0
    labels = torch.tensor([[-100, 2, -100]])
    expected = -torch.log_softmax(hidden[0, 0], -1)[2]
    loss, logits = next_token_loss(hidden, labels, torch.nn.Identity())
    assert loss.item() == pytest.approx(expected.item())
    assert logits.shape == (1, 4)
    with pytest.raises(ValueError, match="no supervised token"):
        next_token_loss(hidden, torch.full((1, 3), -100), torch.nn.Identity())


def test_next_token_loss_equals_the_full_logits_loss():
    """The head runs only at supervised positions; the loss is the one over the full (B, L, V) logits."""
    torch.manual_seed(0)
    hidden, head = torch.randn(3, 7, 5), torch.nn.Linear(5, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :4] = labels[1, :2] = labels[2, 5:] = -100
    full = head(hidden)  # (B, L, V)
    expected = torch.nn.functional.cross_entropy(full[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    loss, logits = next_token_loss(hidden, labels, head)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(logits, full[:, :-1][labels[:, 1:] != -100])


def test_gather_positions():
    h = torch.arange(2 * 5 * 1).reshape(2, 5, 1).float()
    out = gather_positions(h, torch.tensor([[1, 2], [3, 4]]))
    assert out.squeeze(-1).tolist() == [[1.0, 2.0], [8.0, 9.0]]
