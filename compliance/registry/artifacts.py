"""Immutable artifacts on disk: model and corpus version directories under settings.ARTIFACT_ROOT.

Invariants:
- A version directory appears under its final name complete or not at all: it is written under a
  hidden temporary name in the same parent directory, every file is fsynced, its SHA-256 is computed
  and only then is it renamed into place (rename is atomic within one file system). A crash leaves at
  most a `.tmp-*` directory, which `sweep_temporaries` removes and nothing ever loads.
- A final directory is never written again: `atomic_directory` refuses an existing target.
- Whoever loads a version first checks its SHA-256 against the registry (`verify_tree`), so a
  truncated, swapped or edited weight file is refused instead of served.

The digest covers file names and bytes, in sorted relative-path order, so renaming a file changes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

_TMP_PREFIX = ".tmp-"
_BLOCK = 1 << 20


class ArtifactError(Exception):
    """An artifact that cannot be written or trusted. Messages name paths and hashes only."""


class ArtifactCorrupted(ArtifactError):
    pass


def artifact_root() -> Path:
    root = Path(settings.ARTIFACT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return root


def within_root(path: Path) -> Path:
    """`path` resolved, refused unless it lies under ARTIFACT_ROOT (no registry entry escapes the root)."""
    resolved = Path(path).resolve()
    root = artifact_root().resolve()
    if resolved != root and root not in resolved.parents:
        raise ArtifactError(f"{resolved} is outside the artifact root")
    return resolved


def _files(path: Path) -> list[tuple[str, Path]]:
    path = Path(path)
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise ArtifactError(f"{path} does not exist")
    found = [(p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file()]
    return sorted(found)


def tree_sha256(path: Path) -> str:
    """SHA-256 over (relative name, size, bytes) of every file under `path` (or of one file), sorted."""
    digest = hashlib.sha256()
    for name, file in _files(path):
        encoded = name.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as fh:
            for block in iter(functools.partial(fh.read, _BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def tree_bytes(path: Path) -> int:
    return sum(file.stat().st_size for _name, file in _files(path))


def verify_tree(path: Path, expected_sha256: str) -> None:
    """Raise ArtifactCorrupted unless the artifact at `path` hashes to `expected_sha256`."""
    try:
        actual = tree_sha256(path)
    except ArtifactError as exc:
        raise ArtifactCorrupted(str(exc)) from exc
    if actual != expected_sha256:
        raise ArtifactCorrupted(f"{path}: sha256 {actual} does not match the registered {expected_sha256}")


def fsync_tree(path: Path) -> None:
    path = Path(path)
    for _name, file in _files(path):
        with file.open("rb") as fh:
            os.fsync(fh.fileno())
    dirs = [path] if path.is_dir() else []
    dirs += [p for p in path.rglob("*") if p.is_dir()] if path.is_dir() else []
    for directory in dirs:
        _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_sibling(final: Path) -> Path:
    """A fresh hidden directory next to `final` (same file system, so the final rename is atomic)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    return tmp


def publish(tmp: Path, final: Path) -> str:
    """fsync `tmp`, hash it, rename it to `final`; return the digest. `final` must not exist."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        raise ArtifactError(f"{final} already exists; versions are never overwritten")
    fsync_tree(tmp)
    digest = tree_sha256(tmp)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    return digest


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Write a version directory atomically:

        with atomic_directory(root / "corpora" / "x" / "v2") as tmp:
            (tmp / "data.jsonl").write_bytes(...)
        # here: fsynced, hashed and renamed; digest via tree_sha256(final)

    On any exception the temporary directory is removed and `final` is untouched.
    """
    final = Path(final)
    if final.exists():
        raise ArtifactError(f"{final} already exists; versions are never overwritten")
    tmp = temporary_sibling(final)
    try:
        yield tmp
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(final: Path, document: object) -> None:
    """Write one JSON file atomically (temporary sibling, fsync, rename): readers see all of it or none."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(document, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def sweep_temporaries(parent: Path, *, older_than_s: float = 3600.0) -> int:
    """Remove `.tmp-*` directories left under `parent` by crashed writers. Returns how many."""
    parent = Path(parent)
    if not parent.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_s
    for entry in parent.iterdir():
        if entry.name.startswith(_TMP_PREFIX) and entry.is_dir() and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


# A random suffix: a number allocated in a transaction that later rolled back may already have a
# directory on disk, and versions are never overwritten.
def model_version_dir(model_name: str, number: int) -> Path:
    return artifact_root() / "models" / model_name / f"v{number}-{uuid.uuid4().hex[:8]}"


def corpus_version_dir(corpus_name: str, number: int) -> Path:
    return artifact_root() / "corpora" / corpus_name / f"v{number}-{uuid.uuid4().hex[:8]}"
