import pytest

from pointalign.config import (
    PRESETS,
    AlignConfig,
    ConfigError,
    ModelConfig,
    PointEncoderConfig,
    apply_overrides,
    preset,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_dicts(name):
    cfg = preset(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_is_named():
    data = preset("tiny").to_dict()
    data["align"]["lyer"] = 3
    with pytest.raises(ConfigError, match=r"align\.lyer: unknown key"):
        ModelConfig.from_dict(data)


def test_ill_typed_value_is_named():
    data = preset("tiny").to_dict()
    data["qformer"]["num_queries"] = "many"
    with pytest.raises(ConfigError, match=r"qformer\.num_queries: expected an integer"):
        ModelConfig.from_dict(data)


def test_literal_is_checked():
    with pytest.raises(ConfigError, match=r"align\.span: must be one of"):
        preset("tiny", ["align.span=shifted"])


def test_validation_names_field():
    with pytest.raises(ConfigError, match="PointEncoderConfig.trans_dim"):
        PointEncoderConfig(trans_dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="AlignConfig.layer"):
        AlignConfig(layer=0)


def test_overrides_parse_yaml_values():
    cfg = preset("tiny", ["align.layer=3", "align.weight=0.5", "bridge.hidden=[16, 8]", "llm.lora_r=0"])
    assert cfg.align.layer == 3 and cfg.align.weight == 0.5
    assert cfg.bridge.hidden == (16, 8) and cfg.llm.lora_r == 0


def test_override_without_equals():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["align.layer"])


def test_paper_preset_values_match_reference():
    cfg = preset("paper")
    assert (cfg.encoder.num_points, cfg.encoder.num_groups, cfg.encoder.group_size) == (8192, 512, 32)
    assert (cfg.encoder.trans_dim, cfg.encoder.depth, cfg.encoder.num_heads) == (384, 12, 6)
    assert (cfg.qformer.num_queries, cfg.qformer.hidden_size, cfg.qformer.encoder_width) == (32, 768, 1408)
    assert (cfg.align.layer, cfg.align.weight, cfg.llm.lora_r, cfg.llm.lora_alpha) == (15, 0.1, 64, 16)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown"):
        preset("huge")


def test_exponent_without_dot_is_a_number():
    cfg = preset("tiny", ["align.weight=5e-1"])
    assert cfg.align.weight == 0.5
    with pytest.raises(ConfigError, match="align.weight: expected a number"):
        preset("tiny", ["align.weight=lots"])
