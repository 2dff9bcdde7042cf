import csv

import pytest
import torch

from pointalign.analysis.probe import (
    ProbeSettings,
    decode_loss,
    knn_accuracy,
    labelled_train_objects,
    layer_features,
    point_states,
    probe,
    prompt_forward,
)
from pointalign.checkpoint import save_checkpoint
from pointalign.errors import ConfigError
from tests.conftest import clouds


def test_knn_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    train_y = torch.tensor([0, 0, 1, 1, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.7, 0.7]])
    test_y = torch.tensor([0, 1, 0])
    assert knn_accuracy(train, train_y, test, test_y, k=1) == pytest.approx(100 * 2 / 3)
    # K=3: (0.7, 0.7) sees 0.9/0.1 (class 0), 0.2/0.8 and 0.1/0.9 (class 1): majority 1 -> wrong
    assert knn_accuracy(train, train_y, test, test_y, k=3) == pytest.approx(100 * 2 / 3)
    assert knn_accuracy(train, train_y, test[:2], test_y[:2], k=5) == pytest.approx(50.0)  # 3 of 5 are class 1


def test_layer_features_shape(tiny_model):
    feats = layer_features(tiny_model, clouds(3, 256), batch_size=2)
    n_layers = len(tiny_model.llm.get_base_model().model.layers)
    assert feats.shape == (n_layers + 1, 3, tiny_model.llm.get_base_model().config.hidden_size)
    assert torch.allclose(feats[:, :1], layer_features(tiny_model, clouds(1, 256)), atol=1e-5)  # batch-independent


def test_point_states_shapes(tiny_model):
    pooled, kept, queries = point_states(tiny_model, clouds(3, 256), layers=(0, 2), batch_size=2)
    n_layers = len(tiny_model.llm.get_base_model().model.layers)
    d = tiny_model.llm.get_base_model().config.hidden_size
    q, dq = queries.shape[1:]
    assert pooled.shape == (n_layers + 1, 3, d)
    assert kept.shape == (2, 3, q, d) and queries.shape == (3, q, dq)
    assert torch.allclose(kept.mean(dim=2), pooled[[0, 2]], atol=1e-5)


def test_prompt_forward_through_points_keeps_the_point_states(tiny_model):
    """Cutting the prompt after the point tokens changes no state at or before them (the decoder is causal)."""
    pts = clouds(2, 256)
    tiny_model.eval()  # no dropout: both passes see the same point tokens
    batch, _, full = prompt_forward(tiny_model, pts, output_hidden_states=True)
    _, _, cut = prompt_forward(tiny_model, pts, through_points=True, output_hidden_states=True)
    end = int(batch.point_positions.max()) + 1
    assert end < batch.input_ids.shape[1]  # the question and the assistant's header follow the point tokens
    assert cut.hidden_states[0].shape[1] == end
    for h_full, h_cut in zip(full.hidden_states, cut.hidden_states):
        assert torch.allclose(h_full[:, :end], h_cut, atol=1e-5)


def test_point_states_in_bf16_are_float32_and_close_to_fp32(tiny_model):
    pts = clouds(3, 256)
    fp32 = point_states(tiny_model, pts, layers=(1,), batch_size=2)
    bf16 = point_states(tiny_model, pts, layers=(1,), batch_size=2, precision="bf16")
    for a, b in zip(fp32, bf16):
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert not torch.equal(a, b)  # the forward passes ran under bf16 autocast
        assert torch.allclose(a, b, rtol=0.1, atol=0.1 * float(a.abs().max()))


def test_probe_settings_reject_an_unknown_precision():
    with pytest.raises(ConfigError, match="probe precision 'fp16': use 'fp32' or 'bf16'"):
        ProbeSettings(precision="fp16")


def test_decode_loss_tells_recoverable_from_unrelated_targets():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(64, 4, 12, generator=gen)  # (N, Q, D)
    mix = torch.randn(12, 6, generator=gen)
    q = h @ mix  # (N, Q, Dq): a function of the tokens
    unrelated = torch.randn(64, 4, 6, generator=gen)
    recoverable = decode_loss(h[:48], q[:48], h[48:], q[48:], steps=1000)
    lost = decode_loss(h[:48], unrelated[:48], h[48:], unrelated[48:], steps=300)
    assert recoverable < 0.05 and lost > 0.8
    assert decode_loss(h[:48], q[:48], h[48:], q[48:], steps=1000) == recoverable  # seeded: reproducible


def test_probe_writes_csv_and_png(tiny_model, tiny_config, tiny_data, tmp_path):
    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    rows = probe(
        [ckpt, ckpt],
        tiny_data,
        tmp_path / "probe",
        ProbeSettings(train_per_class=1, test_limit=6, file_points=256, decode_layers=(0, -1), decode_steps=5),
        names=["a", "b"],
        print_fn=lambda *_: None,
    )
    n_layers = len(tiny_model.llm.get_base_model().model.layers) + 1
    assert len(rows) == 2 * 2 * n_layers
    with open(tmp_path / "probe" / "probe.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert (tmp_path / "probe" / "probe.png").read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "probe" / "decode.csv") as f:
        decode = list(csv.DictReader(f))
    assert [(r["checkpoint"], int(r["layer"])) for r in decode] == [
        ("a", 0),
        ("a", n_layers - 1),
        ("b", 0),
        ("b", n_layers - 1),
    ]
    assert all(0.0 <= float(r["alignment_loss"]) <= 2.0 for r in decode)
    assert len(labelled_train_objects(tiny_data, 1)) == 40


def test_probe_cli_with_decode_layers(tiny_model, tiny_config, tiny_data, tmp_path, capsys):
    from pointalign.cli import main

    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    out = tmp_path / "probe"
    args = ["probe", "--checkpoint", str(ckpt), "--data-root", str(tiny_data), "--out", str(out)]
    args += ["--train-per-class", "1", "--test-limit", "4", "--file-points", "256", "--k", "1"]
    assert main([*args, "--decode-layers", "0", "-1"]) == 0
    assert "decode.csv" in capsys.readouterr().out
    with open(out / "decode.csv") as f:
        assert [int(r["layer"]) for r in csv.DictReader(f)] == [0, len(tiny_model.llm.get_base_model().model.layers)]


def test_probe_cli_missing_checkpoint_writes_nothing(tiny_data, tmp_path, capsys):
    from pointalign.cli import main

    out = tmp_path / "probe"
    args = ["probe", "--checkpoint", str(tmp_path / "nowhere"), "--data-root", str(tiny_data), "--out", str(out)]
    assert main(args) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()
