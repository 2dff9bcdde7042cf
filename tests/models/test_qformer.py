import pytest
import torch

from pointalign.config import QFormerConfig
from pointalign.models.qformer import QFormer, _read_bert_state, load_bert_weights, minilm_folder

CFG = QFormerConfig(num_queries=3, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32, encoder_width=12)


def test_shapes_and_cross_attention_every_kth_layer():
    qf = QFormer(CFG).eval()
    out = qf(torch.rand(2, 7, 12))
    assert out.shape == (2, 3, 16)
    assert [layer.crossattention is not None for layer in qf.encoder.layer] == [True, False, True]
    assert qf.encoder.layer[0].crossattention.self.key.in_features == 12


def test_output_depends_on_points():
    qf = QFormer(CFG).eval()
    a, b = qf(torch.rand(1, 7, 12)), qf(torch.rand(1, 7, 12))
    assert not torch.allclose(a, b)


def test_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"expected \(B, T, 12\)"):
        QFormer(CFG)(torch.rand(1, 7, 10))


def test_minilm_initialisation():
    cfg = QFormerConfig(
        num_queries=4,
        hidden_size=384,
        num_layers=2,
        num_heads=12,
        intermediate_size=1536,
        encoder_width=8,
        init_from="minilm",
    )
    qf = QFormer(cfg)
    load_bert_weights(qf, "minilm")
    bert = _read_bert_state(minilm_folder())
    layer = qf.encoder.layer[1]
    assert torch.equal(layer.attention.self.query.weight, bert["encoder.layer.1.attention.self.query.weight"])
    assert torch.equal(layer.intermediate_query.dense.weight, bert["encoder.layer.1.intermediate.dense.weight"])
    assert torch.equal(layer.output_query.LayerNorm.bias, bert["encoder.layer.1.output.LayerNorm.bias"])
    assert torch.equal(qf.embeddings.LayerNorm.weight, bert["embeddings.LayerNorm.weight"])


def test_bert_size_mismatch_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="hidden_size=384 but the Q-Former has 16"):
        load_bert_weights(QFormer(CFG), "minilm")
    with pytest.raises(FileNotFoundError, match="no BERT folder"):
        load_bert_weights(QFormer(CFG), str(tmp_path))
