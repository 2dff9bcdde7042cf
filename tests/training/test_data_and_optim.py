import math
from collections import Counter

import pytest

from pointalign.training.config import DataConfig, DataSource, OptimConfig
from pointalign.training.data import MixtureData, fraction_subset
from pointalign.training.optim import lr_at, param_groups


def mixture(root, **kw):
    return DataConfig(
        root=str(root), file_points=256, mixture=(DataSource("brief", 3, 1.0), DataSource("single_round", 2, 3.0)), **kw
    )


def test_mixture_draws_by_ratio_and_is_reproducible(tiny_data):
    a, b = MixtureData(mixture(tiny_data), seed=1), MixtureData(mixture(tiny_data), seed=1)
    names = []
    for _ in range(200):
        (na, ra), (nb, rb) = a.next_batch(), b.next_batch()
        assert na == nb and [r.object_id for r in ra] == [r.object_id for r in rb]
        assert len(ra) == (3 if na == "brief" else 2)
        names.append(na)
    share = Counter(names)["single_round"] / len(names)
    assert 0.65 < share < 0.85  # ratio 3 : 1


def test_resumed_position_reads_the_same_batches(tiny_data):
    a = MixtureData(mixture(tiny_data), seed=2)
    for _ in range(17):
        a.next_batch()
    state = a.state_dict()
    expected = [[r.object_id for r in a.next_batch()[1]] for _ in range(30)]
    b = MixtureData(mixture(tiny_data), seed=2)
    b.load_state_dict(state)
    assert [[r.object_id for r in b.next_batch()[1]] for _ in range(30)] == expected


def test_shards_do_not_overlap_and_cover_an_epoch(tiny_data):
    cfg = DataConfig(root=str(tiny_data), file_points=256, mixture=(DataSource("brief", 4),))
    ranks = [MixtureData(cfg, seed=0, rank=r, world=2) for r in range(2)]
    n = len(ranks[0].sources[0][1])
    seen = [[], []]
    for _ in range(n // 8):
        for r in range(2):
            seen[r] += [x.object_id for x in ranks[r].next_batch()[1]]
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == len(seen[0]) + len(seen[1])


def test_data_fraction_is_a_deterministic_subset(tiny_data):
    full = MixtureData(DataConfig(root=str(tiny_data), file_points=256), seed=0).sources[0][1]
    part = fraction_subset(full, 0.3, seed=5)
    assert len({r.object_id for r in part}) == math.ceil(0.3 * len({r.object_id for r in full}))
    assert [r.object_id for r in part] == [r.object_id for r in fraction_subset(full, 0.3, seed=5)]
    assert {r.object_id for r in part} != {r.object_id for r in fraction_subset(full, 0.3, seed=6)}


def test_lr_schedule():
    cfg = OptimConfig(steps=110, lr=1e-3, warmup_steps=10, warmup_lr=1e-5, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-5)
    assert lr_at(5, cfg) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # continuous where warmup ends
    assert lr_at(109, cfg) == pytest.approx(1e-4)
    values = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_weight_decay_skips_norms_biases_and_vectors(tiny_model):
    for p in tiny_model.parameters():
        p.requires_grad_(True)
    decay, no_decay = param_groups(tiny_model, 0.05)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "point_encoder.norm.weight" in nd and "point_encoder.reduce_dim.bias" in nd
    assert "point_encoder.cls_token" not in nd  # 3-d parameter, decayed
