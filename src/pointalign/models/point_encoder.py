"""Point-BERT-style point cloud encoder.

Notation used for tensor shapes:
    B: batch, N: points per cloud, F: point features (xyz + rgb = 6), G: groups (FPS centres),
    K: points per group, E: mini-PointNet width, C: transformer width.

Parameter names follow Point-BERT's ``PointTransformer`` one to one (``encoder.first_conv.0.weight``,
``reduce_dim``, ``cls_token``, ``cls_pos``, ``pos_embed.0``, ``blocks.blocks.{i}.attn.qkv``, ``norm`` ...), so a
ULIP/PointLLM Point-BERT checkpoint loads with ``load_point_bert_checkpoint``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointalign import points as point_ops
from pointalign.config import PointEncoderConfig
from pointalign.errors import CheckpointError
from pointalign.models.released import read_torch_file


def farthest_point_sample(xyz: Tensor, num_samples: int, start: str = "first", generator=None) -> Tensor:
    """Farthest point sampling (``pointalign.points``: a compiled exact FPS on CPU, torch on GPU).

    Args:
        xyz: (B, N, 3) coordinates.
        num_samples: S centres to pick (S <= N).
        start: "first" starts every cloud at point 0 (deterministic); "random" at a random point.
        generator: optional torch.Generator for the random start.

    Returns:
        (B, S) long indices into N.
    """
    b, n, _ = xyz.shape
    if num_samples > n:
        raise ValueError(f"farthest_point_sample: asked for {num_samples} centres from {n} points")
    if start == "first":
        first = torch.zeros(b, dtype=torch.long)
    elif start == "random":
        first = torch.randint(0, n, (b,), generator=generator, device="cpu")
    else:
        raise ValueError(f"farthest_point_sample: start must be 'first' or 'random', got {start!r}")
    return point_ops.farthest_point_sample(xyz, num_samples, first)


def reduce_points(cloud: Tensor, num_points: int) -> Tensor:
    """A cloud (N, C) with N > ``num_points`` reduced to (num_points, C) by farthest point sampling on xyz from point
    0 (deterministic); smaller clouds are returned as they are. Training, evaluation and the probe all use it."""
    if cloud.shape[0] > num_points:
        cloud = cloud[farthest_point_sample(cloud[None, :, :3], num_points)[0]]
    return cloud


def knn(query: Tensor, points_: Tensor, k: int) -> Tensor:
    """Indices of the k nearest ``points_`` to each ``query`` (euclidean), nearest first (``pointalign.points.knn``).

    Args:
        query: (B, S, 3).
        points_: (B, N, 3).
        k: neighbours per query (k <= N).

    Returns:
        (B, S, k) long indices into N.
    """
    return point_ops.knn(query, points_, k)


def group_points(points: Tensor, num_groups: int, group_size: int, fps_start: str = "first") -> tuple[Tensor, Tensor]:
    """FPS centres and their kNN neighbourhoods; xyz made relative to the centre, other features copied raw.

    Args:
        points: (B, N, F) with xyz in the first 3 features.

    Returns:
        neighbourhoods (B, G, K, F) and centres (B, G, 3).
    """
    xyz = points[..., :3]
    b = points.shape[0]
    centre_idx = farthest_point_sample(xyz, num_groups, fps_start)  # (B, G)
    batch = torch.arange(b, device=points.device)[:, None]
    centres = xyz[batch, centre_idx]  # (B, G, 3)
    nbr_idx = knn(centres, xyz, group_size)  # (B, G, K)
    groups = points[batch[:, :, None], nbr_idx]  # (B, G, K, F)
    rel = groups[..., :3] - centres[:, :, None, :]
    return torch.cat([rel, groups[..., 3:]], dim=-1), centres


class MiniPointNet(nn.Module):
    """Shared PointNet over each group: (B, G, K, F) -> (B, G, E). Named as Point-BERT's ``Encoder``.

    Invariant to the order of the K points inside a group (to float rounding): the 1x1 convolutions act per point,
    BatchNorm pools its statistics over all points, and both halves end in a max over K. So only the kNN *set*
    reaches the tokens (``tests/test_points.py::test_minipointnet_ignores_order_within_group``)."""

    def __init__(self, point_dims: int, encoder_dims: int, widths: tuple[int, ...] = (128, 256, 512)) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.first_conv = nn.Sequential(
            nn.Conv1d(point_dims, w0, 1), nn.BatchNorm1d(w0), nn.ReLU(inplace=True), nn.Conv1d(w0, w1, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * w1, w2, 1), nn.BatchNorm1d(w2), nn.ReLU(inplace=True), nn.Conv1d(w2, encoder_dims, 1)
        )

    def forward(self, groups: Tensor) -> Tensor:
        b, g, k, f = groups.shape
        x = self._pointwise(self.first_conv, groups.reshape(b * g * k, f)).view(b * g, k, -1)  # (BG, K, w1)
        glob = x.max(dim=1, keepdim=True).values  # (BG, 1, w1)
        x = torch.cat([glob.expand(-1, k, -1), x], dim=2).view(b * g * k, -1)  # (BGK, 2 w1)
        x = self._pointwise(self.second_conv, x).view(b * g, k, -1)  # (BG, K, E)
        return x.max(dim=1).values.reshape(b, g, -1)  # (B, G, E)

    @staticmethod
    def _pointwise(block: nn.Sequential, x: Tensor) -> Tensor:
        """conv(1x1) -> BatchNorm -> ReLU -> conv(1x1) on (N, C) rows, one row per point: the convolutions' own
        weights applied as matrix products (same parameters and state dict; on a 2-core CPU forward + backward is
        1.4-1.5x faster than Conv1d's in fp32 and bf16, ``benchmarks/point_encoder.py``)."""
        conv1, norm, relu, conv2 = block
        x = relu(norm(F.linear(x, conv1.weight.squeeze(-1), conv1.bias)))  # BatchNorm1d reads (N, C) as (N, C, 1)
        return F.linear(x, conv2.weight.squeeze(-1), conv2.bias)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, h, T, c/h)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # Explicit scores: under bf16 autocast torch's fused CPU kernel takes about 4x as long forward + backward
            # at cpu-small's shapes (`python benchmarks/attention.py`); softmax in fp32, as the fused kernel does.
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, h, T, T)
            y = scores.float().softmax(dim=-1).to(v.dtype) @ v  # (B, h, T, c/h)
        else:
            y = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, c/h)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """Blocks with the positional embedding re-added before every block."""

    def __init__(self, cfg: PointEncoderConfig) -> None:
        super().__init__()
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(cfg.trans_dim, cfg.num_heads, cfg.mlp_ratio, r) for r in rates)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class PointEncoder(nn.Module):
    """(B, N, F) point clouds -> (B, G + 1, C) tokens: cls token first, then one token per FPS group."""

    def __init__(self, cfg: PointEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = MiniPointNet(cfg.point_dims, cfg.encoder_dims, cfg.tokenizer_widths)
        self.reduce_dim = nn.Linear(cfg.encoder_dims, cfg.trans_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.trans_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, cfg.trans_dim) * 0.02)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, cfg.trans_dim))
        self.blocks = TransformerEncoder(cfg)
        self.norm = nn.LayerNorm(cfg.trans_dim)

    @property
    def out_dim(self) -> int:
        return self.cfg.trans_dim

    def forward(self, points: Tensor) -> Tensor:
        if points.dim() != 3 or points.shape[-1] != self.cfg.point_dims:
            raise ValueError(f"PointEncoder: expected (B, N, {self.cfg.point_dims}) points, got {tuple(points.shape)}")
        n = points.shape[1]
        if n < max(self.cfg.num_groups, self.cfg.group_size):
            raise ValueError(
                f"PointEncoder: {n} points is fewer than num_groups={self.cfg.num_groups} / "
                f"group_size={self.cfg.group_size}"
            )
        groups, centres = group_points(points, self.cfg.num_groups, self.cfg.group_size, self.cfg.fps_start)
        tokens = self.reduce_dim(self.encoder(groups))  # (B, G, C)
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)  # (B, G+1, C)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centres)], dim=1)  # (B, G+1, C)
        return self.norm(self.blocks(x, pos))  # (B, G+1, C)


_CHECKPOINT_PREFIXES = ("module.point_encoder.", "point_encoder.", "module.", "base_model.")


def read_point_bert_state(path: str | Path) -> dict[str, Tensor]:
    """The Point-BERT tensors of a checkpoint (ULIP / PointLLM release), named as ``PointEncoder``'s.

    Accepts ``.safetensors`` or a torch file (read with ``weights_only=True``: nothing in it runs) holding the state
    dict directly or under ``base_model`` / ``state_dict`` / ``model``. A whole ULIP model keeps only its point tower;
    classification-head keys (``cls_head_finetune``) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Point-BERT checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        raw = read_torch_file(path)
        for key in ("base_model", "state_dict", "model"):
            if isinstance(raw, dict) and key in raw and isinstance(raw[key], dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: not a Point-BERT checkpoint (no state dict of tensors)")
    if any("point_encoder." in k for k in raw):  # a whole ULIP model: keep only its point tower
        raw = {k: v for k, v in raw.items() if "point_encoder." in k}
    state = {}
    for k, v in raw.items():
        for prefix in _CHECKPOINT_PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        if not k.startswith("cls_head_finetune"):
            state[k] = v
    return state


def load_point_bert_checkpoint(encoder: PointEncoder, path: str | Path) -> None:
    """Load a Point-BERT checkpoint (``read_point_bert_state``) into ``encoder``; any missing or unexpected key, or
    a shape that does not fit, is an error."""
    state = read_point_bert_state(path)
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: not a matching Point-BERT checkpoint; missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {wrong[:5]} (check encoder sizes in the config)"
        )
    encoder.load_state_dict(state)
