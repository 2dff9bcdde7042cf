import torch

from pointalign.config import BridgeConfig, ProjectorConfig
from pointalign.models.projector import AlignmentProjector, Bridge, ModalityProjector


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_shapes():
    assert Bridge(BridgeConfig(hidden=(8,)), 4, 6)(torch.rand(2, 5, 4)).shape == (2, 5, 6)
    assert Bridge(BridgeConfig(hidden=()), 4, 6)(torch.rand(2, 5, 4)).shape == (2, 5, 6)
    assert ModalityProjector(ProjectorConfig(hidden=8), 4, 10)(torch.rand(2, 3, 4)).shape == (2, 3, 10)
    assert AlignmentProjector(10, 4)(torch.rand(2, 3, 10)).shape == (2, 3, 4)


def test_reference_parameter_counts():
    # REFERENCE_SPEC 1.3, 1.5, 2: bridge 1,378,432; projector 13,638,144; alignment projector 8,310,784
    assert n_params(Bridge(BridgeConfig(hidden=(768,)), 384, 1408)) == 1_378_432
    assert n_params(ModalityProjector(ProjectorConfig(hidden=4096), 768, 2560)) == 13_638_144
    assert n_params(AlignmentProjector(2560, 768)) == 8_310_784
    assert AlignmentProjector(2560, 768).net[0].out_features == 1664
