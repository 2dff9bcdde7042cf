import json
import pickle

import numpy as np
import pytest

from pointalign.data.readers import (
    PointLLMFolder,
    downsample,
    load_cloud,
    modelnet_cloud,
    normalize,
    read_annotations,
    read_modelnet_dat,
)
from pointalign.errors import DataError
from tests.test_points import brute_fps


def test_npy_xyz_only_gets_documented_colour_and_unit_sphere(tmp_path):
    np.save(tmp_path / "c.npy", np.random.default_rng(0).normal(size=(100, 3)) * 5 + 3)
    cloud = load_cloud(tmp_path / "c.npy")
    assert cloud.shape == (100, 6) and cloud.dtype == np.float32
    assert np.all(cloud[:, 3:] == 0.0)
    assert np.abs(cloud[:, :3].mean(0)).max() < 1e-5
    assert np.linalg.norm(cloud[:, :3], axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_colour_scaling(tmp_path):
    xyz = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "u8.npy", np.concatenate([xyz, np.full((50, 3), 255.0)], axis=1))
    np.save(tmp_path / "unit.npy", np.concatenate([xyz, np.full((50, 3), 0.5)], axis=1))
    assert np.allclose(load_cloud(tmp_path / "u8.npy")[:, 3:], 1.0)
    assert np.allclose(load_cloud(tmp_path / "unit.npy")[:, 3:], 0.5)


def test_ply_cloud_with_colours(tmp_path):
    import trimesh

    xyz = np.random.default_rng(0).normal(size=(64, 3))
    colours = np.tile([255, 0, 0, 255], (64, 1)).astype(np.uint8)
    trimesh.PointCloud(xyz, colors=colours).export(tmp_path / "c.ply")
    cloud = load_cloud(tmp_path / "c.ply")
    assert cloud.shape == (64, 6) and np.allclose(cloud[:, 3:], [1, 0, 0])


def test_oversized_clouds_are_downsampled_by_fps_of_the_whole_cloud(tmp_path):
    big = np.random.default_rng(0).uniform(-1, 1, size=(300_000, 6)).astype(np.float32)
    big[:, 3:] = (big[:, 3:] + 1) / 2
    np.save(tmp_path / "big.npy", big)
    cloud = load_cloud(tmp_path / "big.npy", num_points=128)
    picked = brute_fps(big[:, :3], 128)  # no random pre-subset: the plain loop over all 300,000 points
    assert np.array_equal(downsample(big, 128), big[picked])
    assert np.allclose(cloud, normalize(big[picked]))
    assert downsample(big, 128, "random").shape == (128, 6)
    small = big[:10]
    assert downsample(small, 128) is small


def test_downsample_uses_the_shared_fps():
    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    cloud = np.concatenate([xyz, np.zeros_like(xyz)], axis=1)
    assert np.array_equal(downsample(cloud, 3), cloud[[0, 2, 3]])


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("shape.npy", lambda p: np.save(p, np.zeros((10, 4))), r"expected shape \(N, 3\) or \(N, 6\)"),
        ("nan.npy", lambda p: np.save(p, np.full((10, 3), np.nan)), "NaN or infinite"),
        ("inf.npy", lambda p: np.save(p, np.full((10, 6), np.inf)), "NaN or infinite"),
        ("empty.npy", lambda p: p.write_bytes(b""), "the file is empty"),
        ("nopoints.npy", lambda p: np.save(p, np.zeros((0, 3))), "the cloud is empty"),
        ("dtype.npy", lambda p: np.save(p, np.array([["a", "b", "c"]])), "expected numbers"),
        (
            "objects.npy",
            lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
            "not a readable .npy",
        ),
        ("kind.xyz", lambda p: p.write_text("1 2 3\n"), "unsupported file type"),
    ],
)
def test_bad_clouds(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError, match=message) as exc:
        load_cloud(path)
    assert str(path) in str(exc.value)


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((100, 6), dtype=np.float32))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable .npy"):
        load_cloud(tmp_path / "t.npy")


def test_unreadable_mesh(tmp_path):
    (tmp_path / "bad.stl").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(DataError, match="bad.stl"):
        load_cloud(tmp_path / "bad.stl")


def test_modelnet_dat_round_trip(tmp_path):
    pts = [np.random.default_rng(i).normal(size=(32, 6)).astype(np.float32) for i in range(3)]
    labels = [np.array([i], dtype=np.int32) for i in (4, 0, 39)]
    for protocol in (2, 4):
        with open(tmp_path / f"m{protocol}.dat", "wb") as f:
            pickle.dump((pts, labels), f, protocol=protocol)
        got, labs = read_modelnet_dat(tmp_path / f"m{protocol}.dat")
        assert labs == [4, 0, 39] and all(np.array_equal(a, b) for a, b in zip(got, pts))
    cloud = modelnet_cloud(got[0])
    assert cloud.shape == (32, 6) and np.all(cloud[:, 3:] == 0)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_malicious_dat_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.dat").write_bytes(pickle.dumps(([_Boom()], [np.array([1])])))
    with pytest.raises(DataError, match=r"refused to load (posix|os|nt)\.system"):
        read_modelnet_dat(tmp_path / "evil.dat")
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_bad_dat_files(tmp_path):
    (tmp_path / "empty.dat").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_modelnet_dat(tmp_path / "empty.dat")
    good = pickle.dumps(([np.zeros((4, 6), np.float32)], [np.array([1])]))
    (tmp_path / "cut.dat").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a readable ModelNet40 file"):
        read_modelnet_dat(tmp_path / "cut.dat")
    (tmp_path / "shape.dat").write_bytes(pickle.dumps(([np.zeros((4, 2))], [np.array([1])])))
    with pytest.raises(DataError, match=r"object 0: expected an \(N, 3\|6\) array"):
        read_modelnet_dat(tmp_path / "shape.dat")
    (tmp_path / "count.dat").write_bytes(pickle.dumps(([np.zeros((4, 6))], [])))
    with pytest.raises(DataError, match="1 point sets but 0 labels"):
        read_modelnet_dat(tmp_path / "count.dat")


def _records(tmp_path, data, text=None):
    path = tmp_path / "anno.json"
    path.write_text(text if text is not None else json.dumps(data))
    return path


GOOD = {
    "object_id": "abc",
    "conversations": [{"from": "human", "value": "<point>\nWhat?"}, {"from": "gpt", "value": "A chair."}],
}


@pytest.mark.parametrize(
    "data, text, message",
    [
        (None, "{not json", "not valid JSON"),
        ({"a": 1}, None, "expected a list of records"),
        ([GOOD, {"conversations": GOOD["conversations"]}], None, "record 1: missing or empty object_id"),
        ([{"object_id": "x", "conversations": GOOD["conversations"][:1]}], None, "human/gpt pairs"),
        (
            [{"object_id": "x", "conversations": [GOOD["conversations"][1], GOOD["conversations"][0]]}],
            None,
            "message 0 must be",
        ),
        (
            [{"object_id": "x", "conversations": [{"from": "human", "value": "What?"}, GOOD["conversations"][1]]}],
            None,
            "no <point> placeholder",
        ),
    ],
)
def test_bad_annotations(tmp_path, data, text, message):
    with pytest.raises(DataError, match=message):
        read_annotations(_records(tmp_path, data, text))


def test_annotation_type_filter_is_exact(tmp_path):
    recs = [dict(GOOD, conversation_type="single_round"), dict(GOOD, conversation_type="multi_round"), GOOD]
    path = _records(tmp_path, recs)
    assert [r.conversation_type for r in read_annotations(path, ("single_round",))] == ["single_round"]
    assert read_annotations(path, ("round",)) == []  # no substring matching
    assert read_annotations(path)[2].conversation_type == "simple_description"
    assert read_annotations(path)[0].turns == [("What?", "A chair.")]


def test_missing_object_id_in_folder(tmp_path):
    (tmp_path / "objaverse_data").mkdir()
    with pytest.raises(DataError, match="missing point cloud for object id 'nope'"):
        PointLLMFolder(tmp_path).cloud("nope")
    with pytest.raises(DataError, match="no objaverse_data folder"):
        PointLLMFolder(tmp_path / "objaverse_data")
