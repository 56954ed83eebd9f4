"""Interop: what the public audit API serves over HTTP verifies with Go's reference code.

The signed checkpoints (C2SP signed notes), the published vkeys, and the RFC 9162 inclusion and
consistency proofs are fetched from a live server exactly as an outside auditor would, then checked
by tests/audit/interop/verify.go, which uses golang.org/x/mod/sumdb/note (note.NewVerifier,
note.Open) and golang.org/x/mod/sumdb/tlog (tlog.RecordHash, tlog.CheckRecord, tlog.CheckTree). The
project's own verifiers are not involved, so a format drift on either side fails here.

Go comes from Debian (golang-go, golang-golang-x-mod-dev), which scripts/services installs with the
other test tools; the program builds offline in GOPATH mode, once per session. Without them the
tests skip with the reason shown, as the Chromium and poppler tests do.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from compliance.audit.models import AuditLeaf
from compliance.audit.services import audit_append, checkpoint_create
from proofs.checkpoint import parse_checkpoint, sign_note
from proofs.keys import Signer

# The live server reads what the test thread committed, so the test cannot run inside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)

GO_SOURCE = Path(__file__).resolve().parent / "interop" / "verify.go"
DEBIAN_GOPATH = Path("/usr/share/gocode")  # where golang-golang-x-mod-dev puts golang.org/x/mod
GO_PACKAGES = "golang-go golang-golang-x-mod-dev"
# Tree sizes signed one after another: powers of two and not, so that proofs take every branch of
# RFC 9162's algorithms (an old size that is a power of two is not sent in a consistency proof).
SIGNED_SIZES = (1, 4, 7, 8, 13, 20)


@pytest.fixture(scope="session")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """verify.go built once per session, offline: GOPATH mode, nothing downloaded."""
    go = shutil.which("go")
    if go is None or not (DEBIAN_GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        pytest.skip(
            f"Go with golang.org/x/mod is not installed (apt-get install {GO_PACKAGES}; scripts/services does)"
        )
    work = tmp_path_factory.mktemp("go-interop")
    binary = work / "verify"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "GO111MODULE": "off",  # GOPATH mode: imports resolve under Debian's /usr/share/gocode
        "GOPATH": f"{DEBIAN_GOPATH}:{work / 'gopath'}",
        "GOFLAGS": "",
        "GOENV": "off",  # no user go.env (it could set GOFLAGS or a proxy)
        "GOPROXY": "off",
        "GOCACHE": str(work / "cache"),
        "CGO_ENABLED": "0",
    }
    built = subprocess.run(
        [go, "build", "-o", str(binary), str(GO_SOURCE)], env=env, capture_output=True, text=True, timeout=300
    )
    if built.returncode != 0:
        pytest.fail(f"go build of {GO_SOURCE.name} failed:\n{built.stdout}{built.stderr}")
    return binary


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (the test's own live server)
        assert response.status == 200, url
        body: bytes = response.read()
        return body


def _get_json(url: str) -> Any:
    return json.loads(_get(url))


def _append(n: int) -> None:
    for i in range(n):
        audit_append(
            event_type="test.event", actor="system", outcome="ok", request_id=uuid.uuid4(), details={"i": i}
        )


def _published_log(base: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Grow the log to each size in turn, signing a checkpoint and fetching it over HTTP each time
    (the API serves only the newest one, so an auditor keeps the ones it saw); then fetch the vkeys,
    an inclusion proof of every leaf under every signed size, and a consistency proof between every
    two signed sizes. Leaf bytes are never served: they come from the database, standing for the
    holder of a certificate, who has the leaf it was given."""
    notes: list[str] = []
    for size in sizes:
        _append(size - AuditLeaf.objects.count())
        assert checkpoint_create() is not None
        notes.append(_get(f"{base}/api/v1/audit/checkpoint").decode("utf-8"))
    assert [parse_checkpoint(note).size for note in notes] == list(sizes)
    leaves = [bytes(raw) for raw in AuditLeaf.objects.order_by("seq").values_list("leaf_bytes", flat=True)]
    inclusion = []
    for size in sizes:
        for index in range(size):
            served = _get_json(f"{base}/api/v1/audit/proof/inclusion?index={index}&size={size}")
            inclusion.append({**served, "leaf": base64.b64encode(leaves[index]).decode("ascii")})
    consistency = [
        _get_json(f"{base}/api/v1/audit/proof/consistency?first={first}&second={second}")
        for position, first in enumerate(sizes)
        for second in sizes[position:]
    ]
    return {
        "origin": settings.AUDIT_LOG_ORIGIN,
        "vkeys": [entry["vkey"] for entry in _get_json(f"{base}/audit/keys/")["keys"]],
        "checkpoints": notes,
        "inclusion": inclusion,
        "consistency": consistency,
    }


def _run_go(binary: Path, artefacts: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary)], input=json.dumps(artefacts), capture_output=True, text=True, timeout=60
    )


def _flip_first_byte(encoded: str) -> str:
    raw = bytearray(base64.b64decode(encoded))
    raw[0] ^= 0x01
    return base64.b64encode(bytes(raw)).decode("ascii")


def test_checkpoints_and_proofs_fetched_over_http_verify_with_go_sumdb(
    live_server: Any, go_verifier: Path
) -> None:
    artefacts = _published_log(live_server.url, SIGNED_SIZES)
    # The vkey is in Go's note format as published, and names the log (C2SP: key name = origin).
    assert all(vkey.startswith(f"{settings.AUDIT_LOG_ORIGIN}+") for vkey in artefacts["vkeys"])
    result = _run_go(go_verifier, artefacts)
    assert result.returncode == 0, result.stderr
    n_inclusion = sum(SIGNED_SIZES)  # every leaf under every signed size: 53
    n_consistency = len(SIGNED_SIZES) * (len(SIGNED_SIZES) + 1) // 2  # every pair, equal sizes too: 21
    assert result.stdout == (
        f"OK: {len(SIGNED_SIZES)} checkpoints, {n_inclusion} inclusion proofs, {n_consistency} consistency proofs\n"
    )


def _flip_inclusion_proof_hash(artefacts: dict[str, Any]) -> None:
    proof = next(p for p in artefacts["inclusion"] if p["size"] == 13 and p["index"] == 5)
    proof["proof"][1] = _flip_first_byte(proof["proof"][1])


def _flip_consistency_proof_hash(artefacts: dict[str, Any]) -> None:
    proof = next(p for p in artefacts["consistency"] if (p["first"], p["second"]) == (7, 13))
    proof["proof"][-1] = _flip_first_byte(proof["proof"][-1])


def _sign_newest_checkpoint_with_another_key(artefacts: dict[str, Any]) -> None:
    # Same log name, same body, a key the log never published.
    body = parse_checkpoint(artefacts["checkpoints"][-1]).body.decode("utf-8")
    artefacts["checkpoints"][-1] = sign_note(body, [Signer.generate(settings.AUDIT_LOG_ORIGIN)])


def _alter_signed_root(artefacts: dict[str, Any]) -> None:
    # The log's own signature line kept under a body whose root changed.
    note = artefacts["checkpoints"][-1]
    root_line = note.split("\n")[2]
    artefacts["checkpoints"][-1] = note.replace(f"\n{root_line}\n", f"\n{_flip_first_byte(root_line)}\n", 1)


def _prove_a_wrong_leaf(artefacts: dict[str, Any]) -> None:
    # Leaf 6's bytes (and their true hash) offered with the proof for leaf 5: only the proof can tell.
    by_position = {(p["size"], p["index"]): p for p in artefacts["inclusion"]}
    wrong = by_position[(13, 6)]
    by_position[(13, 5)].update(leaf=wrong["leaf"], leaf_hash=wrong["leaf_hash"])


def _serve_a_hash_that_is_not_the_leafs(artefacts: dict[str, Any]) -> None:
    proof = next(p for p in artefacts["inclusion"] if (p["size"], p["index"]) == (8, 2))
    proof["leaf_hash"] = _flip_first_byte(proof["leaf_hash"])


def _another_origin(artefacts: dict[str, Any]) -> None:
    artefacts["origin"] = "other.example.org/audit-log"


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        pytest.param(
            _flip_inclusion_proof_hash,
            "FAIL: inclusion[21] (index 5, size 13): tlog.CheckRecord: invalid transparency proof",
            id="flip_inclusion_proof_hash",
        ),
        pytest.param(
            _flip_consistency_proof_hash,
            "FAIL: consistency[6] (7 -> 13): tlog.CheckTree: invalid transparency proof",
            id="flip_consistency_proof_hash",
        ),
        pytest.param(
            _sign_newest_checkpoint_with_another_key,
            "FAIL: checkpoint[3]: note.Open: note has no verifiable signatures",
            id="sign_newest_checkpoint_with_another_key",
        ),
        pytest.param(
            _alter_signed_root,
            "FAIL: checkpoint[3]: note.Open: invalid signature for key ",
            id="alter_signed_root",
        ),
        pytest.param(
            _prove_a_wrong_leaf,
            "FAIL: inclusion[21] (index 5, size 13): tlog.CheckRecord: invalid transparency proof",
            id="prove_a_wrong_leaf",
        ),
        pytest.param(
            _serve_a_hash_that_is_not_the_leafs,
            "FAIL: inclusion[10] (index 2, size 8): served leaf_hash ",
            id="serve_a_hash_that_is_not_the_leafs",
        ),
        pytest.param(_another_origin, "FAIL: checkpoint[0]: origin is ", id="another_origin"),
    ],
)
def test_go_rejects_tampered_artefacts(live_server: Any, go_verifier: Path, tamper: Any, error: str) -> None:
    sizes = (1, 7, 8, 13)  # proof positions in `error` follow from these sizes
    artefacts = _published_log(live_server.url, sizes)
    untouched = _run_go(go_verifier, artefacts)
    assert untouched.returncode == 0, untouched.stderr  # so the failure below is the tampering's
    tamper(artefacts)
    result = _run_go(go_verifier, artefacts)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith(error), result.stderr
