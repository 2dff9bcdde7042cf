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


def _bad_meshes(root):
    """One of each kind of broken file next to the good ones; name -> the reason the manifest must give."""
    (root / "table" / "broken.stl").write_bytes(b"solid x\nfacet nonsense\n")
    (root / "table" / "empty.off").write_bytes(b"")
    (root / "chair" / "nan.off").write_text("OFF\n3 1 0\nnan 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    (root / "chair" / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (root / "chair" / "notes.txt").write_text("not a mesh")
    return {
        "table/broken.stl": "",
        "table/empty.off": "the file is empty",
        "chair/nan.off": "NaN or infinite",
        "chair/points.obj": "",
        "chair/notes.txt": "unknown extension '.txt'",
    }


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_skips_bad_meshes_and_lists_them(tmp_path, capsys):
    _meshes(tmp_path / "meshes")
    bad = _bad_meshes(tmp_path / "meshes")
    out = tmp_path / "out"
    assert main(["data", "convert", str(tmp_path / "meshes"), "--out", str(out), "--points", "64"]) == 0
    captured = capsys.readouterr()
    assert "5 objects in 2 classes" in captured.out and "5 skipped" in captured.out
    lines = [line for line in captured.out.splitlines() if line.startswith("skipped ")]
    assert len(lines) == len(bad) and "Traceback" not in captured.err
    manifest = json.loads((out / "convert_manifest.json").read_text())
    assert sorted(manifest["skipped"]) == sorted(bad) and len(manifest["converted"]) == 5
    for rel, reason in bad.items():
        assert reason in manifest["skipped"][rel]
        assert sum(rel in line for line in lines) == 1
    assert not (out / ".convert").exists() and len(list((out / "objaverse_data").iterdir())) == 5


def test_convert_strict_stops_at_the_first_bad_mesh_and_writes_nothing(tmp_path, capsys):
    _meshes(tmp_path / "meshes")
    _bad_meshes(tmp_path / "meshes")
    out = tmp_path / "out"
    args = ["data", "convert", str(tmp_path / "meshes"), "--out", str(out), "--points", "64", "--strict"]
    assert main([*args, "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "nan.off" in err and "NaN or infinite" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshes"]


def test_convert_nothing_readable_fails_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "meshes" / "chair").mkdir(parents=True)
    (tmp_path / "meshes" / "chair" / "empty.off").write_bytes(b"")
    assert main(["data", "convert", str(tmp_path / "meshes"), "--out", str(tmp_path / "out")]) == 2
    assert "no mesh could be converted (1 skipped)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshes"]


def test_convert_bad_workers_writes_nothing(tmp_path, capsys):
    _meshes(tmp_path / "meshes")
    assert main(["data", "convert", str(tmp_path / "meshes"), "--out", str(tmp_path / "out"), "--workers", "0"]) == 2
    assert "--workers 0: must be at least 1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshes"]


def test_convert_output_is_byte_identical_whatever_the_workers(tmp_path):
    _meshes(tmp_path / "meshes")
    _bad_meshes(tmp_path / "meshes")
    for n in (1, 2):
        args = ["data", "convert", str(tmp_path / "meshes"), "--out", str(tmp_path / f"w{n}"), "--points", "64"]
        assert main([*args, "--workers", str(n)]) == 0
    assert _tree(tmp_path / "w1") == _tree(tmp_path / "w2")


def test_convert_resumes_after_a_kill(tmp_path, monkeypatch):
    from pointalign.data import convert

    _meshes(tmp_path / "meshes")
    args = ["--points", "64", "--workers", "1"]
    assert main(["data", "convert", str(tmp_path / "meshes"), "--out", str(tmp_path / "whole"), *args]) == 0
    real, calls = convert.sample_mesh, []

    def killed_after_two(path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-run
        return real(path, *a, **k)

    monkeypatch.setattr(convert, "sample_mesh", killed_after_two)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        main(["data", "convert", str(tmp_path / "meshes"), "--out", str(resumed), *args])
    assert not (resumed / "convert_manifest.json").exists() and len(list((resumed / "objaverse_data").iterdir())) == 2
    calls.clear()
    monkeypatch.setattr(convert, "sample_mesh", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    assert main(["data", "convert", str(tmp_path / "meshes"), "--out", str(resumed), *args]) == 0
    assert len(calls) == 3  # the two finished meshes were not sampled again
    assert _tree(resumed) == _tree(tmp_path / "whole")


def test_convert_progress_bar_shows_rate(tmp_path):
    import functools
    import io

    from tqdm import tqdm

    from pointalign.data.convert import convert_meshes

    _meshes(tmp_path / "meshes")
    sink = io.StringIO()
    convert_meshes(tmp_path / "meshes", tmp_path / "out", 64, progress=functools.partial(tqdm, file=sink), workers=1)
    assert "mesh/s" in sink.getvalue() and "5/5" in sink.getvalue()


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
