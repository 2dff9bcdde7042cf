"""Projectors: point-token bridge, modality projector and PointAlign's alignment projector.

Notation used for tensor shapes: B batch, T point tokens, Q queries, C / V / D / Dq widths.
"""

from __future__ import annotations

from torch import Tensor, nn

from pointalign.config import BridgeConfig, ProjectorConfig


class Bridge(nn.Module):
    """Point tokens to the Q-Former's cross-attention width: (B, T, C) -> (B, T, V), GELU between Linears."""

    def __init__(self, cfg: BridgeConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        widths = [in_dim, *cfg.hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i > 0:
                layers.append(nn.GELU())
            layers.append(nn.Linear(a, b))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ModalityProjector(nn.Module):
    """Q-Former outputs to LLM point tokens: (B, Q, Dq) -> (B, Q, D). Two Linears, no activation by default.

    With ``output_scale: text`` the tokens are RMS-normalised and scaled by a learned per-channel gain that starts
    at ``text_rms`` (the RMS of the LLM's input embeddings).
    """

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int, text_rms: float | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, cfg.hidden)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.Identity()
        self.fc2 = nn.Linear(cfg.hidden, out_dim)
        self.norm: nn.RMSNorm | None = None
        if cfg.output_scale == "text":
            if text_rms is None or text_rms <= 0:
                raise ValueError("ModalityProjector: output_scale 'text' needs the RMS of the LLM's input embeddings")
            self.norm = nn.RMSNorm(out_dim, eps=1e-6)
            nn.init.constant_(self.norm.weight, text_rms)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc2(self.act(self.fc1(x)))  # (B, Q, D)
        return y if self.norm is None else self.norm(y)


class AlignmentProjector(nn.Module):
    """LLM hidden states to the Q-Former space: (B, Q, D) -> (B, Q, Dq); 3 Linears with SiLU. Training only."""

    def __init__(self, llm_dim: int, qformer_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or (llm_dim + qformer_dim) // 2
        self.net = nn.Sequential(
            nn.Linear(llm_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, qformer_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
