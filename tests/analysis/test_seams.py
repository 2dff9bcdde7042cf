import json

import pytest
import torch

from pointalign.analysis.seams import (
    SeamSettings,
    attention_to_points,
    class_noun_accuracy,
    diagnose,
    format_report,
    linear_probe_accuracy,
    seam_features,
)
from pointalign.data.synth import FACTS_FILE
from tests.conftest import clouds


def test_linear_probe_separates_a_planted_label_and_not_a_shuffled_one():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(30)  # 4 classes x 30
    x = torch.randn(120, 16, generator=gen) + 6.0 * torch.nn.functional.one_hot(y, 16).float()
    train, test = slice(0, 120, 2), slice(1, 120, 2)
    assert linear_probe_accuracy(x[train], y[train], x[test], y[test]) > 95
    shuffled = y[torch.randperm(120, generator=gen)]
    assert linear_probe_accuracy(x[train], shuffled[train], x[test], shuffled[test]) < 50
    again = linear_probe_accuracy(x[train], y[train], x[test], y[test])
    assert again == linear_probe_accuracy(x[train], y[train], x[test], y[test])  # seeded


def test_seam_features_shapes(tiny_model):
    feats = seam_features(tiny_model, clouds(3, 256), batch_size=2)
    cfg = tiny_model.config
    q, d = cfg.qformer.num_queries, tiny_model.llm.get_input_embeddings().weight.shape[1]
    assert feats["encoder"].shape == (3, cfg.encoder.trans_dim)
    assert feats["Q-Former (all queries)"].shape == (3, q * cfg.qformer.hidden_size)
    assert feats["point tokens"].shape == (3, d)
    assert feats["point tokens (all queries)"].shape == (3, q * d)


def test_attention_shares_are_fractions_and_leave_the_model_as_it_was(tiny_model):
    llm = tiny_model.llm.get_base_model()
    before = llm.config._attn_implementation
    shares = attention_to_points(tiny_model, clouds(2, 256))
    assert len(shares) == len(llm.model.layers)
    assert all(0.0 <= s <= 1.0 for s in shares)
    assert llm.config._attn_implementation == before


def test_class_noun_accuracy_by_hand(tiny_model):
    classes = ["chair", "table", "lamp"]
    table = tiny_model.llm.get_input_embeddings().weight.detach().float()
    first = [tiny_model.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in classes]  # bytes: c, t, l
    noise = torch.randn(3, 4, table.shape[1]) * 1e-3
    tokens = table[first][:, None, :].repeat(1, 4, 1) * 0.0 + noise  # (M=3, Q=4, D): nowhere in particular
    tokens[0, 2] = 5.0 * table[first[0]]  # object 0: one token is "chair"
    tokens[1, 0] = table[first[2]]  # object 1: one token is "lamp" (wrong: it is a table)
    tokens[2, 3] = -table[first[2]] + 3.0 * table[first[2]]  # object 2: along "lamp"
    labels = torch.tensor([0, 1, 2])
    assert class_noun_accuracy(tiny_model, tokens, labels, classes) == pytest.approx(200.0 / 3)


def test_diagnose_on_tiny_data(tiny_model, tiny_data):
    settings = SeamSettings(
        train_per_class=1,
        test_limit=8,
        caption_objects=6,
        llm_layers=(0, 2, -1),
        probe_steps=20,
        file_points=256,
    )
    report = diagnose(tiny_model, tiny_data, settings)
    names = [p[0] for p in report.probes]
    assert names[:2] == ["encoder", "encoder cls"] and "LLM layer 2" in names and "LLM input embeddings" in names
    assert all(0 <= knn <= 100 and 0 <= lin <= 100 for _, knn, lin in report.probes)
    assert report.rms_point_tokens > 0 and report.rms_text_embeddings > 0
    assert -1.0 <= report.mean_cosine_between_objects <= 1.0
    assert report.caption_gap == pytest.approx(report.caption_loss_other_cloud - report.caption_loss_own_cloud)
    text = format_report("tiny", report)
    assert "| encoder | " in text and "caption loss" in text and "own class name" in text
    assert 0.0 <= report.class_noun_accuracy <= 100.0
    coloured, zeroed = report.class_noun_val  # the embedded dataset names val classes; its val clouds have colour
    assert 0.0 <= coloured <= 100.0 and 0.0 <= zeroed <= 100.0
    assert f"with the colours zeroed (%) | {coloured:.1f} / {zeroed:.1f} |" in text


def test_class_noun_by_colour_needs_classes_and_colours(tiny_model, tiny_data, tmp_path, monkeypatch):
    import shutil

    import pointalign.analysis.seams as seams

    classes = sorted({v["class"] for v in json.loads((tiny_data / "anno_data" / FACTS_FILE).read_text()).values()})
    seen = []
    real = seams.class_noun_accuracy
    monkeypatch.setattr(seams, "class_noun_accuracy", lambda m, t, y, c: seen.append(t.clone()) or real(m, t, y, c))
    assert seams.class_noun_by_colour(tiny_model, tiny_data, classes, 256, 256) is not None
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])  # the colours reach the point tokens
    assert seams.class_noun_by_colour(tiny_model, tiny_data, ["no such class"], 256, 256) is None
    bare = tmp_path / "bare"
    shutil.copytree(tiny_data, bare)
    (bare / "anno_data" / FACTS_FILE).unlink()
    assert seams.class_noun_by_colour(tiny_model, bare, classes, 256, 256) is None  # no classes for val objects


def test_diagnose_cli(tiny_model, tiny_config, tiny_data, tmp_path, capsys):
    import json

    from pointalign.checkpoint import save_checkpoint
    from pointalign.cli import main

    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    out = tmp_path / "seams.json"
    args = ["diagnose", "--checkpoint", str(ckpt), "--data-root", str(tiny_data), "--file-points", "256"]
    assert main([*args, "--test-limit", "8", "--train-per-class", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Q-Former | " in printed and "attention share" in printed
    saved = json.loads(out.read_text())[str(ckpt)]
    assert {"probes", "caption_gap", "attention_to_points"} <= set(saved)


def test_diagnose_cli_missing_checkpoint_writes_nothing(tiny_data, tmp_path, capsys):
    from pointalign.cli import main

    out = tmp_path / "seams.json"
    args = ["diagnose", "--checkpoint", str(tmp_path / "nope"), "--data-root", str(tiny_data), "--json", str(out)]
    assert main(args) == 2
    assert "nope" in capsys.readouterr().err
    assert not out.exists()
