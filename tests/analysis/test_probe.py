import csv

import pytest
import torch

from pointalign.analysis.probe import knn_accuracy, labelled_train_objects, layer_features, probe
from pointalign.checkpoint import save_checkpoint
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


def test_probe_writes_csv_and_png(tiny_model, tiny_config, tiny_data, tmp_path):
    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    rows = probe(
        [ckpt, ckpt],
        tiny_data,
        tmp_path / "probe",
        train_per_class=1,
        test_limit=6,
        file_points=256,
        names=["a", "b"],
        print_fn=lambda *_: None,
    )
    n_layers = len(tiny_model.llm.get_base_model().model.layers) + 1
    assert len(rows) == 2 * 2 * n_layers
    with open(tmp_path / "probe" / "probe.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert (tmp_path / "probe" / "probe.png").read_bytes()[:4] == b"\x89PNG"
    assert len(labelled_train_objects(tiny_data, 1)) == 40
