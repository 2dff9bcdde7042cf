from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pointalign.errors import ConfigError
from pointalign.training.config import load_train_config
from pointalign.training.words import caption_words, word_loss

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"


class WordTokenizer:
    """One token id per word (ids in order of first sight)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [self.ids.setdefault(w, len(self.ids)) for w in text.split()]}


def test_caption_words_skip_frequent_tokens():
    captions = ["A red chair.", "A blue chair.", "A red table."]
    tok = WordTokenizer()
    keep, targets = caption_words(captions, tok, max_df=0.7)
    words = {v: k for k, v in tok.ids.items()}
    assert [words[t] for t in keep] == ["red", "chair.", "blue", "table."]  # "a" is in every caption
    assert [[words[keep[i]] for i in targets[c]] for c in captions] == [
        ["red", "chair."],
        ["chair.", "blue"],
        ["red", "table."],
    ]
    with pytest.raises(ConfigError, match="words.max_df"):
        caption_words(["a a", "a"], WordTokenizer(), max_df=0.5)


def test_word_loss_by_hand():
    vocab = torch.eye(3)  # (W=3, D=3) unit word embeddings
    tokens = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])  # (B=1, Q=2, D): near words 0 and 1
    scores = torch.tensor([1.0, 1.0, 0.0]) / 0.5
    expected = -(scores.log_softmax(-1)[2])
    assert float(word_loss(tokens, vocab, [[2]], 0.5)) == pytest.approx(float(expected))
    both = -(scores.log_softmax(-1)[:2]).mean()
    assert float(word_loss(tokens, vocab, [[0, 1]], 0.5)) == pytest.approx(float(both))
    with pytest.raises(ConfigError, match="no caption in the batch"):
        word_loss(tokens, vocab, [[]], 0.5)


def test_words_stage_trains_the_projector_only_on_cached_qformer_outputs(tiny_data, tmp_path):
    import json

    from pointalign.cli import main
    from pointalign.training.run import run_stage

    common = [f"data.root={tiny_data}"]
    assert main(["train", str(CONFIGS / "stage0.yaml"), "--out", str(tmp_path), *common]) == 0
    losses = {}
    for cache in ("none", "auto"):
        overrides = [
            *common,
            "kind=words",
            "stage=stage1a",
            f"run_name=words-{cache}",
            f"cache.kind={cache}",
            "optim.steps=30",
            "optim.lr=1e-2",
            "data.colour_dropout=0.5",
            "trainable={bridge: frozen, qformer: frozen, query_tokens: frozen, projector: full}",
            "words.max_df=0.5",
        ]
        cfg = load_train_config(CONFIGS / "stage1a.yaml", overrides)
        run_stage(cfg, tmp_path, print_fn=lambda *_: None)
        saved = load_file(str(tmp_path / f"words-{cache}" / "model.safetensors"))
        assert saved and all(k.startswith("projector.") for k in saved)
        log = tmp_path / "logs" / f"words-{cache}" / "metrics.jsonl"
        losses[cache] = [json.loads(line)["loss"] for line in log.open()]
    assert len(losses["none"]) == 30 and sum(losses["none"][-5:]) < sum(losses["none"][:5])
    # the cache (auto: everything before the projector is frozen) changes nothing but the cost
    assert losses["auto"] == pytest.approx(losses["none"], rel=1e-4, abs=1e-5)


def test_words_stage_refuses_a_feature_cache_while_the_qformer_trains(tiny_data, tmp_path, capsys):
    from pointalign.cli import main

    args = ["train", str(CONFIGS / "stage1a.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}", "kind=words"]
    args.append("init_from=null")  # a fresh model: the check needs no parent
    assert main([*args, "cache.kind=memory"]) == 2
    assert "the point encoder, bridge or Q-Former trains in this stage" in capsys.readouterr().err
    assert not (tmp_path / "stage1a").exists()


def test_words_targets_of_a_colourless_cloud_leave_out_its_colour_words(tiny_data, tmp_path):
    from pointalign.data.colour_words import colour_spans
    from pointalign.training.distributed import DistInfo
    from pointalign.training.loop import XYZ_ONLY
    from pointalign.training.words import setup_words

    overrides = [
        f"data.root={tiny_data}",
        "kind=words",
        "init_from=null",
        "data.colour_dropout=0.5",
        "data.hide_dropped_colours=true",
    ]
    run = setup_words(
        load_train_config(CONFIGS / "stage1a.yaml", overrides), tmp_path, DistInfo(0, 1, 0, torch.device("cpu"))
    )
    targets = run.aux["targets"]
    captions = [c for c in targets if not c.endswith(XYZ_ONLY)]
    assert captions and all(c + XYZ_ONLY in targets for c in captions)
    coloured = [c for c in captions if colour_spans(c)]
    assert coloured
    assert all(set(targets[c + XYZ_ONLY]) <= set(targets[c]) for c in captions)  # the same words but the colours
    assert any(set(targets[c + XYZ_ONLY]) < set(targets[c]) for c in coloured)
    off = setup_words(
        load_train_config(CONFIGS / "stage1a.yaml", [*overrides, "data.hide_dropped_colours=false"]),
        tmp_path,
        DistInfo(0, 1, 0, torch.device("cpu")),
    )
    assert not any(c.endswith(XYZ_ONLY) for c in off.aux["targets"])
