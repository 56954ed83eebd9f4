"""The transparency-dev RFC 6962 proof test suite: every case, accepted or rejected as published."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from proofs import merkle

VECTORS = Path(__file__).parent / "testdata" / "rfc6962"
INCLUSION = sorted((VECTORS / "inclusion").glob("*/*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").glob("*/*.json"))


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_the_suite_is_present() -> None:
    # Guards against a silently empty parametrisation if the data folder moves.
    assert len(INCLUSION) == 86 and len(CONSISTENCY) == 98


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    try:
        merkle.verify_inclusion(
            _b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"])
        )
    except merkle.ProofError as exc:
        assert case["wantErr"], f"{case['desc']}: valid proof rejected: {exc}"
    else:
        assert not case["wantErr"], f"{case['desc']}: invalid proof accepted"


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    try:
        merkle.verify_consistency(
            case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"])
        )
    except merkle.ProofError as exc:
        assert case["wantErr"], f"{case['desc']}: valid proof rejected: {exc}"
    else:
        assert not case["wantErr"], f"{case['desc']}: invalid proof accepted"
