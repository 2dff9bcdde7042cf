import json

import numpy as np
import pytest

from pointalign.cli import main


def synth_small(out, points: int) -> int:
    """`data synth` of 3 objects per class (1 val, 1 test, 1 train) at ``points`` points; the exit status."""
    args = ["--objects-per-class", "3", "--points", str(points), "--val-per-class", "1", "--test-per-class", "1"]
    return main(["data", "synth", "--out", str(out), *args])


def test_synth_inspect_and_png(tmp_path, capsys):
    out = tmp_path / "ds"
    assert synth_small(out, 128) == 0
    text = capsys.readouterr().out
    assert "objects/s" in text
    card = json.loads((out / "dataset_card.json").read_text())
    assert card["objects"] == {"train": 40, "val": 40, "test": 40} and card["points"] == 128
    assert main(["data", "inspect", str(out), "--png", str(tmp_path / "ds.png")]) == 0
    text = capsys.readouterr().out
    assert "objaverse_data: 80 clouds" in text and "40 classes" in text
    assert (tmp_path / "ds.png").read_bytes()[:4] == b"\x89PNG"
    cloud = next((out / "objaverse_data").iterdir())
    assert main(["data", "inspect", str(cloud)]) == 0
    assert "points: 128" in capsys.readouterr().out


def test_synth_bad_arguments_write_nothing(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--objects-per-class", "2"]) == 2
    err = capsys.readouterr().err
    assert "--objects-per-class 2: needs at least" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p, np.zeros((5, 5))), "expected shape"),
        (lambda p: np.save(p, np.full((5, 3), np.nan)), "NaN"),
        (lambda p: p.write_bytes(b""), "empty"),
    ],
)
def test_inspect_bad_cloud_is_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "bad.npy"
    make(path)
    assert main(["data", "inspect", str(path), "--png", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.png").exists()


def _meshes(root):
    import trimesh

    (root / "chair").mkdir(parents=True)
    (root / "table").mkdir()
    red = trimesh.creation.box(extents=(1, 2, 1))
    red.visual.face_colors = [255, 0, 0, 255]
    red.export(root / "chair" / "red.ply")
    trimesh.creation.cylinder(radius=0.5, height=1.0).export(root / "chair" / "plain.obj")
    trimesh.creation.box(extents=(2, 0.3, 2)).export(root / "table" / "top.stl")
    trimesh.creation.icosphere().export(root / "table" / "ball.off")
    trimesh.creation.cone(radius=0.5, height=1.0).export(root / "table" / "cone.glb")


def test_convert_meshes(tmp_path, capsys):
    _meshes(tmp_path / "meshes")
    out = tmp_path / "out"
    assert main(["data", "convert", str(tmp_path / "meshes"), "--out", str(out), "--points", "256"]) == 0
    assert "5 objects in 2 classes" in capsys.readouterr().out
    index = json.loads((out / "anno_data" / "converted_objects.json").read_text())
    by_source = {v["source"]: k for k, v in index.items()}
    red = np.load(out / "objaverse_data" / f"{by_source['chair/red.ply']}_256.npy")
    plain = np.load(out / "objaverse_data" / f"{by_source['chair/plain.obj']}_256.npy")
    assert red.shape == (256, 6) and np.allclose(red[:, 3:], [1, 0, 0])  # colours from the mesh
    assert np.all(plain[:, 3:] == 0)  # no colours: the documented default
    assert (out / "modelnet40_data" / "modelnet40_shape_names_modified.txt").read_text() == "chair\ntable\n"
    assert main(["data", "inspect", str(out)]) == 0
    assert "5 objects, 2 classes" in capsys.readouterr().out


def test_convert_unreadable_mesh_leaves_nothing(tmp_path, capsys):
    _meshes(tmp_path / "meshes")
    (tmp_path / "meshes" / "table" / "broken.stl").write_bytes(b"solid x\nfacet nonsense\n")
    out = tmp_path / "out"
    assert main(["data", "convert", str(tmp_path / "meshes"), "--out", str(out), "--points", "64"]) == 2
    err = capsys.readouterr().err
    assert "broken.stl" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["meshes"]


def test_convert_empty_folder(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    assert main(["data", "convert", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 2
    assert "no meshes" in capsys.readouterr().err


def test_inspect_dataset_with_missing_cloud_and_bad_record(tmp_path, capsys):
    out = tmp_path / "ds"
    synth_small(out, 64)
    capsys.readouterr()
    victim = sorted((out / "objaverse_data").iterdir())[0]
    victim.unlink()
    assert main(["data", "inspect", str(out)]) == 2
    err = capsys.readouterr().err
    assert victim.name.split("_")[0] in err and "has no cloud" in err
    anno = out / "anno_data" / "PointLLM_complex_instruction_70K.json"
    records = json.loads(anno.read_text())
    del records[3]["conversations"][1]
    anno.write_text(json.dumps(records))
    assert main(["data", "inspect", str(anno)]) == 2
    assert "record 3: conversations must be a non-empty list of human/gpt pairs" in capsys.readouterr().err
