import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pointalign.checkpoint import load_model
from pointalign.cli import main
from pointalign.training.config import load_train_config
from pointalign.training.distributed import DistInfo
from pointalign.training.loop import setup, train_step
from pointalign.training.precision import PrecisionChoice
from pointalign.training.run import run_stage

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
STAGES = ["stage0", "stage1a", "stage1b", "stage1c", "stage2", "stage2-baseline"]


@pytest.fixture(scope="module")
def chain(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    for stage in STAGES:
        assert main(["train", str(CONFIGS / f"{stage}.yaml"), "--out", str(out), f"data.root={tiny_data}"]) == 0
    return out


def test_stages_chain_through_out(chain):
    for stage in STAGES:
        meta = (chain / stage / "config.yaml").read_text()
        assert "complete: true" in meta
    assert "parent: null" in (chain / "stage0" / "config.yaml").read_text()
    assert f"parent: {(chain / 'stage1c').resolve()}" in (chain / "stage2" / "config.yaml").read_text()


def test_each_stage_saves_what_it_trained(chain):
    s1a = load_file(str(chain / "stage1a" / "model.safetensors"))
    assert s1a and all(k.startswith(("bridge.", "qformer.")) for k in s1a)
    s2 = load_file(str(chain / "stage2" / "model.safetensors"))
    assert any(k.startswith("align_projector.") for k in s2)
    assert all(k.startswith(("llm.", "align_projector.")) for k in s2)
    base = load_file(str(chain / "stage2-baseline" / "model.safetensors"))
    assert not any(k.startswith("align_projector.") for k in base)
    s0 = load_file(str(chain / "stage0" / "model.safetensors"))  # the chain's root holds the whole model
    assert any(k.startswith("point_encoder.") for k in s0) and any(k.startswith("qformer.") for k in s0)


def test_metrics_and_zero_shot_logs(chain):
    lines = [json.loads(x) for x in (chain / "logs" / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    for key in ("loss", "ntp_loss", "align_loss", "lr", "samples_per_s", "tokens_per_s"):
        assert key in lines[-1]
    base = json.loads((chain / "logs" / "stage2-baseline" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "align_loss" not in base
    zs = json.loads((chain / "logs" / "stage0" / "zero_shot.json").read_text())
    assert 0.0 <= zs["zero_shot_accuracy"] <= 100.0


def test_trained_stage_loads_for_inference(chain):
    model, cfg = load_model(chain / "stage2", for_inference=True)
    assert cfg.align.enabled  # trained with the alignment loss ...
    assert model.align_projector is None  # ... but inference builds no alignment projector


def test_finished_stage_is_skipped_and_unfinished_needs_resume(chain, tiny_data, capsys):
    assert main(["train", str(CONFIGS / "stage2.yaml"), "--out", str(chain), f"data.root={tiny_data}"]) == 0
    assert "already complete" in capsys.readouterr().out
    state = json.loads((chain / "stage2" / "trainer_state.json").read_text())
    state["complete"] = False
    (chain / "stage2" / "trainer_state.json").write_text(json.dumps(state))
    assert main(["train", str(CONFIGS / "stage2.yaml"), "--out", str(chain), f"data.root={tiny_data}"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    state["complete"] = True
    (chain / "stage2" / "trainer_state.json").write_text(json.dumps(state))


def test_missing_previous_stage(tiny_data, tmp_path, capsys):
    assert main(["train", str(CONFIGS / "stage1b.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]) == 2
    assert "init_from='stage1a': no checkpoint" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_feature_cache_gives_the_same_losses(chain, tiny_data, tmp_path):
    losses = {}
    for kind in ("none", "memory", "disk"):
        cfg = load_train_config(
            CONFIGS / "stage2.yaml", [f"data.root={tiny_data}", f"cache.kind={kind}", f"cache.dir={tmp_path / 'fc'}"]
        )
        run = setup(cfg, chain, DistInfo(0, 1, 0, torch.device("cpu")))
        run.model.train()
        losses[kind] = [train_step(run, run.model) for _ in range(3)]
        assert (run.cache is None) == (kind == "none")
    for kind in ("memory", "disk"):
        for a, b in zip(losses["none"], losses[kind]):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
            assert a["align_loss"] == pytest.approx(b["align_loss"], rel=1e-5, abs=1e-6)
    assert len(list((tmp_path / "fc").rglob("*.safetensors"))) > 0


def test_feature_cache_trains_the_projector_as_the_points_path(chain, tiny_data, tmp_path):
    """Everything before the projector frozen, the projector and the LLM's LoRA training (cpu-small's stages 1b-1c):
    the cache is on by default and the projector learns from the cached Q-Former outputs as from the clouds."""
    frozen = "trainable={bridge: frozen, qformer: frozen, query_tokens: frozen, projector: full}"
    losses, projectors = {}, {}
    for kind in ("none", "auto"):
        cfg = load_train_config(
            CONFIGS / "stage1b.yaml", [f"data.root={tiny_data}", f"init_from={chain / 'stage1a'}", frozen]
        )
        cfg.cache.kind = kind
        run = setup(cfg, tmp_path / kind, DistInfo(0, 1, 0, torch.device("cpu")))
        assert (run.cache is None) == (kind == "none")
        start = run.model.projector.fc1.weight.detach().clone()
        run.model.train()
        losses[kind] = [train_step(run, run.model)["loss"] for _ in range(3)]
        projectors[kind] = {k: v.clone() for k, v in run.model.projector.state_dict().items()}
    assert losses["auto"] == pytest.approx(losses["none"], rel=1e-5, abs=1e-6)
    for k, v in projectors["none"].items():
        assert torch.allclose(projectors["auto"][k], v, rtol=1e-4, atol=1e-6)
    assert not torch.equal(projectors["auto"]["fc1.weight"], start)  # it did train


def test_cache_refused_when_vision_trains(chain, tiny_data, capsys):
    assert (
        main(
            [
                "train",
                str(CONFIGS / "stage1b.yaml"),
                "--out",
                str(chain / "x"),
                f"data.root={tiny_data}",
                f"init_from={chain / 'stage1a'}",
                "cache.kind=memory",
            ]
        )
        == 2
    )
    assert "the point encoder, bridge or Q-Former trains in this stage" in capsys.readouterr().err


def test_run_stage_returns_folder(chain, tiny_data):
    cfg = load_train_config(CONFIGS / "stage2.yaml", [f"data.root={tiny_data}"])
    assert run_stage(cfg, chain, print_fn=lambda *_: None) == chain / "stage2"


def test_the_feature_cache_key_holds_the_resolved_precision(chain, tiny_data):
    def key(precision, resolved=None):
        cfg = load_train_config(CONFIGS / "stage2.yaml", [f"data.root={tiny_data}", f"precision={precision}"])
        given = PrecisionChoice(resolved, 1.0, 1.0, "test") if resolved else None
        return setup(cfg, chain, DistInfo(0, 1, 0, torch.device("cpu")), given).cache.key

    assert key("auto", "bf16") == key("bf16") != key("fp32") == key("auto", "fp32")


def test_data_fraction_flag(chain, tiny_data, tmp_path):
    out = tmp_path / "frac"
    assert (
        main(
            [
                "train",
                str(CONFIGS / "stage1b.yaml"),
                "--out",
                str(out),
                "--data-fraction",
                "0.25",
                f"data.root={tiny_data}",
                f"init_from={chain / 'stage1a'}",
                "optim.steps=2",
            ]
        )
        == 0
    )
    state = json.loads((out / "stage1b" / "trainer_state.json").read_text())
    assert state["train_config"]["data"]["fraction"] == 0.25


def test_unknown_cli_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", str(CONFIGS / "stage2.yaml"), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_bf16_precision_runs_the_forward_under_autocast(chain, tiny_data, monkeypatch):
    """precision=bf16: the forward runs in bfloat16, the trainable weights and their updates stay fp32."""
    cfg = load_train_config(CONFIGS / "stage2.yaml", [f"data.root={tiny_data}", "precision=bf16", "cache.kind=none"])
    run = setup(cfg, chain, DistInfo(0, 1, 0, torch.device("cpu")))
    run.model.train()
    seen = []
    hook = run.model.projector.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
    metrics = train_step(run, run.model)
    hook.remove()
    assert seen == [torch.bfloat16]
    assert torch.isfinite(torch.tensor([metrics["loss"], metrics["align_loss"]])).all()
    after = dict(run.model.named_parameters())
    assert all(after[n].dtype == torch.float32 for n in before)
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_unknown_precision_is_refused(tiny_data, tmp_path, capsys):
    args = ["train", str(CONFIGS / "stage1a.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}", "precision=fp8"]
    assert main(args) == 2
    assert "precision" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cloud_keys_mark_xyz_only_clouds(tiny_data):
    from pointalign.data.readers import PointLLMFolder
    from pointalign.training.data import PointStore
    from pointalign.training.loop import XYZ_ONLY, cloud_keys, clouds_for

    ids = [f"o{i}" for i in range(200)]
    assert cloud_keys(ids, 0.0) == ids
    torch.manual_seed(0)
    keys = cloud_keys(ids, 0.5)
    marked = sum(k.endswith(XYZ_ONLY) for k in keys)
    assert 60 < marked < 140 and [k.removesuffix(XYZ_ONLY) for k in keys] == ids
    assert all(k.endswith(XYZ_ONLY) for k in cloud_keys(ids, 1.0))
    store = PointStore(PointLLMFolder(tiny_data, 256), 256, "fps")
    oid = next(p.name.split("_")[0] for p in (tiny_data / "objaverse_data").iterdir())
    plain, xyz = clouds_for(store, [oid, oid + XYZ_ONLY])
    assert plain[:, 3:].abs().sum() > 0 and torch.equal(xyz[:, 3:], torch.zeros_like(xyz[:, 3:]))
    assert torch.equal(plain[:, :3], xyz[:, :3])
    assert store.get(oid)[:, 3:].abs().sum() > 0  # the stored cloud keeps its colours


def test_colour_dropout_with_the_feature_cache_gives_the_same_losses(chain, tiny_data, tmp_path):
    losses = {}
    for kind in ("none", "memory"):
        torch.manual_seed(0)
        cfg = load_train_config(
            CONFIGS / "stage2.yaml", [f"data.root={tiny_data}", f"cache.kind={kind}", "data.colour_dropout=0.5"]
        )
        run = setup(cfg, chain, DistInfo(0, 1, 0, torch.device("cpu")))
        run.model.train()
        losses[kind] = [train_step(run, run.model)["loss"] for _ in range(4)]
    assert losses["none"] == pytest.approx(losses["memory"], rel=1e-5, abs=1e-6)


def test_bad_colour_dropout_is_refused(tiny_data, tmp_path, capsys):
    args = ["train", str(CONFIGS / "stage1a.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]
    assert main([*args, "data.colour_dropout=1.5"]) == 2
    assert "data.colour_dropout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_disk_cache_is_shared_by_stages_with_the_same_encoder_side(chain, tiny_data, tmp_path):
    """cpu-small's stages after stage 0 share ``<out>/feature_cache``: a later stage reads what an earlier one wrote."""
    frozen = "trainable={bridge: frozen, qformer: frozen, query_tokens: frozen, projector: full}"
    caches = []
    for stage in ("stage1b", "stage1c"):
        cfg = load_train_config(
            CONFIGS / f"{stage}.yaml",
            [
                f"data.root={tiny_data}",
                f"init_from={chain / 'stage1a'}",
                frozen,
                "cache.kind=disk",
                "data.mixture={brief: {batch_size: 2}}",
            ],
        )
        run = setup(cfg, tmp_path, DistInfo(0, 1, 0, torch.device("cpu")))
        run.model.train()
        for _ in range(3):
            train_step(run, run.model)
        caches.append(run.cache)
    assert caches[0].key == caches[1].key and caches[0].misses > 0
    assert caches[1].misses == 0 and caches[1].hits == caches[0].hits + caches[0].misses


def test_a_colourless_cloud_trains_no_colour_words(chain, tiny_data):
    """With every cloud's colours dropped, no colour word of an answer carries a label (unless the option is off)."""
    from pointalign.data.colour_words import colour_spans
    from pointalign.data.prompts import IGNORE_INDEX

    supervised = {}
    for hide in (True, False):
        torch.manual_seed(0)
        overrides = [f"data.root={tiny_data}", "data.colour_dropout=1.0", f"data.hide_dropped_colours={hide}"]
        run = setup(
            load_train_config(CONFIGS / "stage2.yaml", overrides), chain, DistInfo(0, 1, 0, torch.device("cpu"))
        )
        builder, batches = run.model.builder, []
        collate = builder.collate
        builder.collate = lambda items, padding_side: batches.append(collate(items, padding_side)) or batches[-1]
        run.model.train()
        for _ in range(4):
            train_step(run, run.model)
        tok = run.model.tokenizer
        supervised[hide] = [
            tok.decode([t for t, lab in zip(row.tolist(), labels.tolist()) if lab != IGNORE_INDEX])
            for b in batches
            for row, labels in zip(b.input_ids, b.labels)
        ]
    assert sum(len(colour_spans(text)) for text in supervised[False]) > 0
    assert all(colour_spans(text) == [] for text in supervised[True])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_prefilled_cache_holds_every_drawable_cloud_and_trains_as_the_lazy_one(chain, tiny_data, tmp_path, precision):
    """``cache.prefill``: every object and its xyz-only copy encoded before the first step, in fixed batches and in
    the run's precision; the steps then only hit, and give the losses of the cache filled one cloud at a time."""
    from pointalign.training.loop import XYZ_ONLY

    losses, runs = {}, {}
    for prefill in (False, True):
        torch.manual_seed(0)
        overrides = [
            f"data.root={tiny_data}",
            f"precision={precision}",
            "cache.kind=disk",
            f"cache.dir={tmp_path / str(prefill)}",
            f"cache.prefill={prefill}",
            "cache.prefill_batch=3",
            "data.colour_dropout=0.5",
        ]
        run = setup(
            load_train_config(CONFIGS / "stage2.yaml", overrides), chain, DistInfo(0, 1, 0, torch.device("cpu"))
        )
        stored = {p.stem for p in (tmp_path / str(prefill)).rglob("*.safetensors")}
        if prefill:
            ids = {r.object_id for _, records in run.data.sources for r in records}
            assert stored == ids | {i + XYZ_ONLY for i in ids}
        else:
            assert stored == set()
        run.model.train()
        losses[prefill] = [train_step(run, run.model)["loss"] for _ in range(3)]
        runs[prefill] = run
    assert runs[True].cache.misses == 0 and runs[True].cache.hits > 0
    # Under bf16 the encoder's matmuls round by the batch they are given (the prefill's 3 clouds, the step's batch
    # there) and by the kernel the host picks: equal to 1e-5 on one host, 2.2e-5 apart on an AMX one, where bf16
    # itself resolves about 4e-3. What the cache holds is checked exactly above (every cloud stored, no misses).
    rel = 1e-5 if precision == "fp32" else 1e-3
    assert losses[True] == pytest.approx(losses[False], rel=rel, abs=1e-6)


def test_a_stage_that_adds_xyz_only_clouds_to_a_prefilled_cache_encodes_only_those(
    chain, tiny_data, tmp_path, monkeypatch
):
    """Stage 1a without colour dropout fills the cache with the coloured clouds; a later stage with dropout encodes
    the xyz-only copies in batches of their own and not one coloured cloud again."""
    from pointalign.training.feature_cache import FeatureCache
    from pointalign.training.loop import XYZ_ONLY

    encoded: list[list[str]] = []
    original = FeatureCache._encode

    def recording(self, keys, points):
        encoded.append(list(keys))
        return original(self, keys, points)

    monkeypatch.setattr(FeatureCache, "_encode", recording)
    base = [f"data.root={tiny_data}", "cache.kind=disk", f"cache.dir={tmp_path}", "cache.prefill=true"]
    cpu = DistInfo(0, 1, 0, torch.device("cpu"))
    run = setup(load_train_config(CONFIGS / "stage2.yaml", [*base, "data.colour_dropout=0"]), chain, cpu)
    ids = sorted({r.object_id for _, records in run.data.sources for r in records})
    assert sorted(k for batch in encoded for k in batch) == ids
    encoded.clear()
    setup(load_train_config(CONFIGS / "stage2.yaml", [*base, "data.colour_dropout=0.5"]), chain, cpu)
    assert encoded and all(k.endswith(XYZ_ONLY) for batch in encoded for k in batch)
    assert sorted(k for batch in encoded for k in batch) == sorted(i + XYZ_ONLY for i in ids)


def test_prefill_batches_are_fixed_by_the_keys_and_split_by_process(chain, tiny_data):
    from pointalign.training.loop import clouds_for

    cfg = load_train_config(CONFIGS / "stage2.yaml", [f"data.root={tiny_data}", "cache.kind=memory"])
    run = setup(cfg, chain, DistInfo(0, 1, 0, torch.device("cpu")))
    cache, store = run.cache, run.store
    keys = sorted({r.object_id for _, records in run.data.sources for r in records})[:7]
    seen = []

    def points(ks):
        seen.append(list(ks))
        return clouds_for(store, ks)

    run.model.point_encoder.train()  # the cache encodes in eval mode whatever the mode, and leaves it as it was
    modes = [m.training for m in run.model.modules()]
    assert cache.prefill(keys[::-1], points, 3, part=(1, 2)) == 3
    assert seen == [keys[3:6]]  # batches [0:3], [3:6], [6:7] over the sorted keys; process 1 of 2 takes the second
    assert [m.training for m in run.model.modules()] == modes and run.model.point_encoder.training
    assert cache.prefill(keys, points, 3) == 4  # the batches with a miss; [3:6] is cached
    assert seen[1:] == [keys[0:3], keys[6:7]]
    assert cache.prefill(keys, points, 3) == 0
    lazy = setup(cfg, chain, DistInfo(0, 1, 0, torch.device("cpu"))).cache
    one_by_one = lazy.qformer_outputs(keys, lambda ks: clouds_for(store, ks))
    assert torch.allclose(cache.qformer_outputs(keys, points), one_by_one, rtol=1e-5, atol=1e-6)
    # the cache encodes in its own precision (fp32 here), whatever autocast its caller runs under
    inside = setup(cfg, chain, DistInfo(0, 1, 0, torch.device("cpu"))).cache
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(inside.qformer_outputs(keys, lambda ks: clouds_for(store, ks)), one_by_one)


def test_bad_prefill_batch_is_refused(tiny_data, tmp_path, capsys):
    args = ["train", str(CONFIGS / "stage1a.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]
    assert main([*args, "cache.prefill_batch=0"]) == 2
    assert "cache.prefill_batch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
