from pathlib import Path

import pytest

from pointalign.config import preset
from pointalign.errors import ConfigError
from pointalign.training.config import load_train_config
from pointalign.training.loop import stage_model_config
from pointalign.training.stages import STAGES

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGE_ORDER = ["stage0", "stage1a", "stage1b", "stage1c", "stage2", "stage2-baseline"]
PREVIOUS = {
    "stage0": None,
    "stage1a": "stage0",
    "stage1b": "stage1a",
    "stage1c": "stage1b",
    "stage2": "stage1c",
    "stage2-baseline": "stage1c",
}


@pytest.mark.parametrize("preset_name", ["tiny", "cpu-small", "paper"])
@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_every_shipped_config_parses_and_chains(preset_name, stage):
    cfg = load_train_config(CONFIGS / preset_name / f"{stage}.yaml")
    # the paper's stage 1a starts, as the reference's, from the released weights imported into <out>/released
    released = preset_name == "paper" and stage == "stage1a"
    assert cfg.stage == stage and cfg.init_from == ("released" if released else PREVIOUS[stage])
    words = preset_name == "cpu-small" and stage == "stage1a"  # cpu-small pre-aligns the projector to words
    assert cfg.kind == ("contrastive" if stage == "stage0" else "words" if words else "instruct")
    if stage == "stage0":
        assert cfg.preset == preset_name
    assert cfg.loss.align == (stage == "stage2")


def test_stage2_and_baseline_differ_only_in_the_loss():
    for name in ("tiny", "cpu-small", "paper"):
        a = load_train_config(CONFIGS / name / "stage2.yaml").to_dict()
        b = load_train_config(CONFIGS / name / "stage2-baseline.yaml").to_dict()
        diff = {k for k in a if a[k] != b[k]}
        assert diff == {"stage", "loss", "trainable"}, (name, diff)
        assert a["trainable"] == {**b["trainable"], "align_projector": "full"}


def test_paper_values_are_the_references():
    s1 = load_train_config(CONFIGS / "paper" / "stage1a.yaml")
    assert (s1.optim.steps, s1.optim.warmup_steps, s1.optim.lr, s1.optim.min_lr) == (70000, 7000, 3e-5, 1e-5)
    assert s1.data.mixture[0].batch_size == 9 and s1.trainable.bridge == "full" and s1.trainable.qformer == "frozen"
    s2 = load_train_config(CONFIGS / "paper" / "stage2.yaml")
    assert [(m.name, m.batch_size, m.ratio) for m in s2.data.mixture] == [
        ("detailed_description", 6, 2.0),
        ("single_round", 10, 3.0),
        ("multi_round", 4, 3.0),
    ]
    assert (s2.optim.lr, s2.optim.warmup_lr, s2.loss.layer, s2.loss.weight) == (3e-6, 1e-7, 15, 0.1)
    assert s2.trainable == STAGES["stage2"]


def test_overrides_and_errors(tmp_path):
    path = CONFIGS / "tiny" / "stage2.yaml"
    cfg = load_train_config(path, ["optim.steps=7", "data.root=/x", "loss.weight=0.5", "data.fraction=0.3"])
    assert (cfg.optim.steps, cfg.data.root, cfg.loss.weight, cfg.data.fraction) == (7, "/x", 0.5, 0.3)
    with pytest.raises(ConfigError, match="optim.stpes: unknown key"):
        load_train_config(path, ["optim.stpes=7"])
    with pytest.raises(ConfigError, match="optim.steps: expected an integer"):
        load_train_config(path, ["optim.steps=many"])
    with pytest.raises(ConfigError, match="data.fraction: must be in"):
        load_train_config(path, ["data.fraction=0"])
    (tmp_path / "bad.yaml").write_text("stage: stage2\ndata: {mixture: {pictures: {batch_size: 2}}}\n")
    with pytest.raises(ConfigError, match="data.mixture\\[0\\].name: must be one of"):
        load_train_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError):
        load_train_config(tmp_path / "none.yaml")


def test_stage_model_config_applies_loss_settings():
    cfg = load_train_config(CONFIGS / "tiny" / "stage2.yaml", ["loss.weight=0.3", "loss.span=legacy", "preset=tiny"])
    model_cfg = stage_model_config(cfg, None)
    assert model_cfg.align.enabled and model_cfg.align.weight == 0.3 and model_cfg.align.span == "legacy"
    assert model_cfg.align.layer == preset("tiny").align.layer


def test_trainable_in_a_config_changes_only_the_parts_it_names(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("stage: stage0\nkind: contrastive\ntrainable: {qformer: full}\n")
    cfg = load_train_config(path, ["trainable.bridge=full"])
    assert cfg.trainable.point_encoder == "full"  # stage 0's default, kept
    assert (cfg.trainable.qformer, cfg.trainable.bridge, cfg.trainable.llm) == ("full", "full", "frozen")


def test_cpu_small_stage1a_is_the_words_kind():
    cfg = load_train_config(CONFIGS / "cpu-small" / "stage1a.yaml")
    assert cfg.kind == "words" and cfg.stage == "stage1a" and cfg.init_from == "stage0"
    assert cfg.cache.kind == "disk"  # everything before the projector is frozen: its outputs are cached, for all stages
    assert cfg.model_set == {"projector.output_scale": "text", "projector.activation": "gelu"}
    assert cfg.trainable.projector == "full" and cfg.trainable.qformer == "frozen" and cfg.trainable.llm == "frozen"


def test_cpu_small_keeps_the_words_projector_and_colours_in_stage1a():
    """After the `words` stage only the LLM's LoRA and norms train (as in stage 2); 1a sees every colour, and 1b
    adds the xyz-only copies to the feature cache before its first step."""
    s1a = load_train_config(CONFIGS / "cpu-small" / "stage1a.yaml")
    assert s1a.data.colour_dropout == 0.0 and s1a.cache.prefill
    for stage in ("stage1b", "stage1c"):
        cfg = load_train_config(CONFIGS / "cpu-small" / f"{stage}.yaml")
        assert cfg.trainable == STAGES["stage2-baseline"], stage
        assert cfg.data.colour_dropout == 0.5 and cfg.cache.kind == "disk"
    assert load_train_config(CONFIGS / "cpu-small" / "stage1b.yaml").cache.prefill
