import pytest

from pointalign.data.synth import synthesize


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small embedded dataset at the tiny preset's 256 points: 80 train, 40 val, 40 test objects."""
    root = tmp_path_factory.mktemp("tinydata") / "data"
    synthesize(root, objects_per_class=4, points=256, seed=0, val_per_class=1, test_per_class=1)
    return root
