"""Atomic, hashed artifact directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compliance.registry import artifacts


@pytest.fixture
def root(settings: Any, tmp_path: Path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACT_ROOT


def test_atomic_directory_publishes_complete_and_hashes_names_and_bytes(root: Path) -> None:
    final = root / "models" / "m" / "v1"
    with artifacts.atomic_directory(final) as tmp:
        (tmp / "a.bin").write_bytes(b"abc")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.json").write_text("{}")
        assert not final.exists()  # invisible until complete

    digest = artifacts.tree_sha256(final)
    artifacts.verify_tree(final, digest)
    (final / "a.bin").rename(final / "c.bin")
    assert artifacts.tree_sha256(final) != digest  # names count, not only bytes


def test_a_crash_inside_the_block_leaves_nothing_under_the_final_name(root: Path) -> None:
    final = root / "models" / "m" / "v2"
    with pytest.raises(RuntimeError), artifacts.atomic_directory(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_versions_are_never_overwritten(root: Path) -> None:
    final = root / "corpora" / "c" / "v1"
    with artifacts.atomic_directory(final) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(artifacts.ArtifactError, match="never overwritten"), artifacts.atomic_directory(final):
        pass
    assert (final / "x").read_text() == "1"


def test_a_tampered_or_missing_artifact_is_refused(root: Path) -> None:
    final = root / "m"
    with artifacts.atomic_directory(final) as tmp:
        (tmp / "w.bin").write_bytes(b"\x00" * 10)
    digest = artifacts.tree_sha256(final)
    (final / "w.bin").write_bytes(b"\x00" * 9 + b"\x01")

    with pytest.raises(artifacts.ArtifactCorrupted):
        artifacts.verify_tree(final, digest)
    with pytest.raises(artifacts.ArtifactCorrupted):
        artifacts.verify_tree(root / "absent", digest)


def test_paths_outside_the_root_are_refused(root: Path, tmp_path: Path) -> None:
    with pytest.raises(artifacts.ArtifactError, match="outside"):
        artifacts.within_root(tmp_path / "elsewhere")
    with pytest.raises(artifacts.ArtifactError, match="outside"):
        artifacts.within_root(root / ".." / "escape")


def test_sweep_removes_stale_temporaries_only(root: Path) -> None:
    parent = root / "models" / "m"
    stale = artifacts.temporary_sibling(parent / "v9")
    kept = parent / "v1"
    kept.mkdir()
    assert artifacts.sweep_temporaries(parent, older_than_s=-1) == 1
    assert not stale.exists() and kept.exists()
