"""MiniGPT-3D's mixture of query experts (its stage 4): several sets of Q-Former queries, mixed per point cloud.

Notation used for tensor shapes:
    B batch, T point tokens (cls + G patches), C encoder width, V bridge width, E experts, K selected experts,
    Q queries, D Q-Former width.

Expert 0 is the Q-Former's own ``query_tokens``; this module holds experts 1..E-1 (``experts.{i}``, named as the
reference's ``query_expert_dict.{i}``) and the router (``router.0`` / ``router.2``, the reference's ``query_router``):
the encoder's cls output concatenated with the max-pool of its patch outputs, then Linear -> GELU -> Linear -> softmax
over the experts. Routers (REFERENCE_SPEC §1.8):
    - ``sparse``: the top-k experts, in increasing expert id, weighted by their raw softmax probabilities (not
      renormalised: the weights sum to less than 1);
    - ``soft``: every expert, weighted by the softmax;
    - ``constant``: every expert, weight 1/E.
Each selected expert's queries run through the same Q-Former over the same point features; the outputs are summed
with those weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointalign.config import QueryExpertsConfig


class QueryExperts(nn.Module):
    def __init__(self, cfg: QueryExpertsConfig, encoder_width: int, num_queries: int, width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.experts = nn.ParameterDict(
            {str(i): nn.Parameter(torch.randn(1, num_queries, width) * 0.02) for i in range(1, cfg.num_experts)}
        )
        self.router = nn.Sequential(
            nn.Linear(2 * encoder_width, cfg.router_hidden), nn.GELU(), nn.Linear(cfg.router_hidden, cfg.num_experts)
        )

    @torch.no_grad()
    def copy_queries(self, query_tokens: Tensor) -> None:
        """Start every expert from ``query_tokens`` (a stage that adds the experts to a trained model)."""
        for expert in self.experts.values():
            expert.copy_(query_tokens)

    def route(self, tokens: Tensor) -> Tensor:
        """The router's softmax over the experts: (B, T, C) encoder outputs -> (B, E)."""
        pooled = torch.cat([tokens[:, 0], tokens[:, 1:].max(dim=1).values], dim=-1)  # (B, 2C)
        return self.router(pooled).softmax(dim=-1)  # (B, E)

    def selection(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        """The experts each sample uses and their weights: (B, K) ids in increasing order and (B, K) weights."""
        b, e = probs.shape
        if self.cfg.router == "sparse":
            ids = probs.topk(self.cfg.top_k, dim=-1).indices.sort(dim=-1).values  # (B, K)
            return ids, probs.gather(1, ids)
        ids = torch.arange(e, device=probs.device).expand(b, -1)  # (B, E)
        return ids, probs if self.cfg.router == "soft" else torch.full_like(probs, 1.0 / e)

    def forward(self, tokens: Tensor, features: Tensor, qformer: nn.Module) -> Tensor:
        """Mixed Q-Former outputs: encoder outputs (B, T, C) and bridge outputs (B, T, V) -> (B, Q, D)."""
        ids, weights = self.selection(self.route(tokens))  # (B, K), (B, K)
        bank = torch.cat([qformer.query_tokens, *self.experts.values()])  # (E, Q, D)
        mixed = None
        for k in range(ids.shape[1]):
            out = qformer(features, queries=bank[ids[:, k]])  # (B, Q, D)
            term = weights[:, k, None, None] * out
            mixed = term if mixed is None else mixed + term
        return mixed
