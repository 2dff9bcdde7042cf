import numpy as np
import pytest
import torch
from benchmarks.point_encoder import conv1d_forward  # Point-BERT's Conv1d formulation

from pointalign.config import PointEncoderConfig
from pointalign.models.point_encoder import (
    MiniPointNet,
    PointEncoder,
    farthest_point_sample,
    group_points,
    knn,
    load_point_bert_checkpoint,
    reduce_points,
)

B, N, G, K = 2, 64, 8, 5
CFG = PointEncoderConfig(num_points=N, num_groups=G, group_size=K, encoder_dims=16, trans_dim=24, depth=2, num_heads=2)


def brute_fps(xyz: np.ndarray, s: int, start: int = 0) -> list[int]:
    chosen = [start]
    for _ in range(s - 1):
        d = np.min(((xyz[:, None, :] - xyz[None, chosen, :]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


def test_fps_matches_brute_force():
    xyz = torch.rand(B, N, 3, dtype=torch.float64)
    idx = farthest_point_sample(xyz, G)
    assert idx.shape == (B, G)
    for b in range(B):
        assert idx[b].tolist() == brute_fps(xyz[b].numpy(), G)


def test_fps_deterministic_and_random_start():
    xyz = torch.rand(B, N, 3)
    assert torch.equal(farthest_point_sample(xyz, G), farthest_point_sample(xyz, G))
    gen = torch.Generator().manual_seed(3)
    rnd = farthest_point_sample(xyz, G, start="random", generator=gen)
    assert rnd.shape == (B, G) and len(set(rnd[0].tolist())) == G


def test_reduce_points_keeps_the_fps_subset_with_every_channel():
    cloud = torch.rand(N, 6, dtype=torch.float64)  # (N, xyz + rgb)
    small = reduce_points(cloud, G)
    assert small.shape == (G, 6)
    assert torch.equal(small, cloud[brute_fps(cloud[:, :3].numpy(), G)])
    assert reduce_points(cloud, N) is cloud and reduce_points(cloud, N + 5) is cloud  # nothing to reduce


def test_fps_too_many_centres():
    with pytest.raises(ValueError, match="asked for"):
        farthest_point_sample(torch.rand(1, 4, 3), 5)


def test_knn_matches_brute_force():
    pts = torch.rand(B, N, 3, dtype=torch.float64)
    q = pts[:, :G]
    idx = knn(q, pts, K)
    assert idx.shape == (B, G, K)
    for b in range(B):
        for g in range(G):
            d = ((pts[b] - q[b, g]) ** 2).sum(-1)
            assert idx[b, g].tolist() == torch.argsort(d)[:K].tolist()


def test_groups_are_relative_xyz_and_raw_rgb():
    pts = torch.rand(B, N, 6)
    groups, centres = group_points(pts, G, K)
    assert groups.shape == (B, G, K, 6) and centres.shape == (B, G, 3)
    # the nearest neighbour of a centre is the centre itself: relative xyz 0, rgb its own colour
    assert torch.allclose(groups[:, :, 0, :3], torch.zeros(B, G, 3))
    idx = farthest_point_sample(pts[..., :3], G)
    assert torch.equal(groups[:, :, 0, 3:], pts[torch.arange(B)[:, None], idx][..., 3:])


def test_encoder_shape_and_determinism():
    enc = PointEncoder(CFG).eval()
    x = torch.rand(B, N, 6)
    out = enc(x)
    assert out.shape == (B, G + 1, 24)
    assert torch.equal(out, enc(x))


def test_encoder_rejects_bad_input():
    enc = PointEncoder(CFG)
    with pytest.raises(ValueError, match=r"expected \(B, N, 6\)"):
        enc(torch.rand(B, N, 3))
    with pytest.raises(ValueError, match="fewer than num_groups"):
        enc(torch.rand(B, 4, 6))


def test_parameter_names_are_point_berts():
    names = set(PointEncoder(CFG).state_dict())
    for key in (
        "encoder.first_conv.0.weight",
        "encoder.first_conv.1.running_mean",
        "encoder.first_conv.3.weight",
        "encoder.second_conv.0.weight",
        "encoder.second_conv.3.weight",
        "reduce_dim.weight",
        "cls_token",
        "cls_pos",
        "pos_embed.0.weight",
        "pos_embed.2.weight",
        "blocks.blocks.0.norm1.weight",
        "blocks.blocks.0.attn.qkv.weight",
        "blocks.blocks.1.attn.proj.bias",
        "blocks.blocks.1.mlp.fc1.weight",
        "blocks.blocks.1.mlp.fc2.bias",
        "norm.weight",
    ):
        assert key in names
    assert "blocks.blocks.0.attn.qkv.bias" not in names  # qkv without bias, as Point-BERT


def test_loads_ulip_style_checkpoint(tmp_path):
    src = PointEncoder(CFG)
    state = {f"module.point_encoder.{k}": v for k, v in src.state_dict().items()}
    state["module.pc_projection"] = torch.zeros(3)  # another tower's key: ignored
    torch.save({"state_dict": state}, tmp_path / "ulip.pt")
    dst = PointEncoder(CFG)
    load_point_bert_checkpoint(dst, tmp_path / "ulip.pt")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_loads_base_model_checkpoint_and_rejects_mismatch(tmp_path):
    src = PointEncoder(CFG)
    torch.save({"base_model": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "pb.pth")
    load_point_bert_checkpoint(PointEncoder(CFG), tmp_path / "pb.pth")
    torch.save({"base_model": {"reduce_dim.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a matching Point-BERT checkpoint"):
        load_point_bert_checkpoint(PointEncoder(CFG), tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        load_point_bert_checkpoint(PointEncoder(CFG), tmp_path / "missing.pth")


@pytest.mark.parametrize("training", [True, False])
def test_minipointnet_rows_equal_point_berts_conv1d(training):
    torch.manual_seed(0)
    ours = MiniPointNet(6, 24, (8, 16, 32))
    ref = MiniPointNet(6, 24, (8, 16, 32))
    ref.load_state_dict(ours.state_dict())
    ours.train(training), ref.train(training)
    groups = torch.randn(2, 5, 7, 6, requires_grad=True)
    ref_groups = groups.detach().clone().requires_grad_(True)
    out, expected = ours(groups), conv1d_forward(ref, ref_groups)  # (B, G, E)
    assert out.shape == (2, 5, 24)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out.square().sum().backward(), expected.square().sum().backward()
    torch.testing.assert_close(groups.grad, ref_groups.grad, atol=1e-4, rtol=1e-4)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=name)
    for (name, a), c in zip(ours.named_buffers(), ref.buffers()):  # BatchNorm's running statistics
        torch.testing.assert_close(a, c, msg=name)


def test_attention_under_cpu_autocast_takes_explicit_scores_with_the_fused_result(monkeypatch):
    from pointalign.models.point_encoder import Attention

    torch.manual_seed(0)
    attn = Attention(16, 4)
    x = torch.randn(3, 9, 16)
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a: calls.append(1) or original(*a))
    fused = attn(x)  # fp32: the fused kernel
    assert calls == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explicit = attn(x)
    assert calls == [1] and explicit.dtype == torch.bfloat16 and explicit.shape == (3, 9, 16)
    torch.testing.assert_close(explicit.float(), fused, atol=3e-2, rtol=3e-2)
