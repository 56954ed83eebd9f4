"""The public audit-log API over HTTP, without login: the checkpoint, inclusion and consistency
proofs verify with the project's pure verifiers (proofs.checkpoint / merkle, which the
offline certificate verifier uses) against the signed checkpoint, and bad input is a clear 400."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from compliance.audit.models import AuditLeaf
from compliance.audit.services import audit_append, checkpoint_create
from proofs import merkle
from proofs.checkpoint import Checkpoint, verify_checkpoint
from proofs.keys import KeyRing

pytestmark = pytest.mark.django_db

CHECKPOINT = "/api/v1/audit/checkpoint"
INCLUSION = "/api/v1/audit/proof/inclusion"
CONSISTENCY = "/api/v1/audit/proof/consistency"
SUBJECT_REF = "5f0c6a1e2b3d4c5e6f708192a3b4c5d6"


def _append(n: int) -> None:
    for i in range(n):
        audit_append(
            event_type="test.event", actor="system", outcome="ok", request_id=uuid.uuid4(), subject_ref=SUBJECT_REF, details={"i": i}
        )  # fmt: skip


def _fetch_checkpoint(client: Client) -> Checkpoint:
    """What an outside verifier does: fetch the published keys and the note, verify the signature."""
    ring = KeyRing.from_json(client.get("/audit/keys/").content)
    response = client.get(CHECKPOINT)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    return verify_checkpoint(response.content, ring.public_keys(), origin=settings.AUDIT_LOG_ORIGIN)


def _leaf_hashes() -> list[bytes]:
    # Computed here from the leaf bytes (what a certificate holder has), not taken from the server.
    return [merkle.leaf_hash(bytes(raw)) for raw in AuditLeaf.objects.order_by("seq").values_list("leaf_bytes", flat=True)]


def _hashes(values: list[str]) -> list[bytes]:
    return [base64.b64decode(value, validate=True) for value in values]


def test_checkpoint_is_a_signed_note_anyone_can_fetch_and_verify() -> None:
    _append(5)
    checkpoint_create()
    client = Client()  # no login, no token
    checkpoint = _fetch_checkpoint(client)
    assert checkpoint.size == 5
    assert checkpoint.root == merkle.root_of(_leaf_hashes())
    # C2SP: the signing key is named by the origin.
    assert all(key.name == settings.AUDIT_LOG_ORIGIN for key in checkpoint.verified_by)
    # A client asking for the note by its media type gets it too.
    assert client.get(CHECKPOINT, HTTP_ACCEPT="text/plain").content == client.get(CHECKPOINT).content


def test_no_checkpoint_yet_is_a_404_problem_whatever_the_client_accepts() -> None:
    for accept in ("application/json", "text/plain", "*/*"):
        response = Client().get(CHECKPOINT, HTTP_ACCEPT=accept)
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["detail"] == "No checkpoint has been signed yet."


def test_inclusion_proofs_over_http_verify_against_the_signed_root() -> None:
    _append(4)
    checkpoint_create()
    _append(9)
    checkpoint_create()
    _append(2)  # an unsigned tail: not served
    client = Client()
    checkpoint = _fetch_checkpoint(client)
    assert checkpoint.size == 13
    hashes = _leaf_hashes()
    for index in range(checkpoint.size):
        response = client.get(INCLUSION, {"index": index, "size": checkpoint.size})
        assert response.status_code == 200, response.content
        body = response.json()
        # Hashes and sizes only: never the leaf bytes (request ids, subject references).
        assert set(body) == {"index", "size", "leaf_hash", "proof"}
        assert SUBJECT_REF not in response.content.decode()
        assert (body["index"], body["size"]) == (index, checkpoint.size)
        assert base64.b64decode(body["leaf_hash"]) == hashes[index]
        merkle.verify_inclusion(hashes[index], index, checkpoint.size, _hashes(body["proof"]), checkpoint.root)
    # A proof is for the size asked: the leaf is under the older signed size 4 as well.
    older = client.get(INCLUSION, {"index": 3, "size": 4}).json()
    merkle.verify_inclusion(hashes[3], 3, 4, _hashes(older["proof"]), merkle.root_of(hashes[:4]))
    # A proof does not verify for another leaf.
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(hashes[1], 0, checkpoint.size, _hashes(client.get(INCLUSION, {"index": 0, "size": 13}).json()["proof"]), checkpoint.root)


def test_consistency_proof_over_http_links_two_signed_checkpoints() -> None:
    client = Client()
    _append(6)
    checkpoint_create()
    first = _fetch_checkpoint(client)  # the verifier keeps the checkpoint it saw
    _append(11)
    checkpoint_create()
    second = _fetch_checkpoint(client)
    response = client.get(CONSISTENCY, {"first": first.size, "second": second.size})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"first", "second", "proof"} and (body["first"], body["second"]) == (6, 17)
    merkle.verify_consistency(first.size, second.size, _hashes(body["proof"]), first.root, second.root)
    # Every earlier size, against roots the verifier computes from the leaves itself.
    hashes = _leaf_hashes()
    for size in range(1, second.size + 1):
        proof = _hashes(client.get(CONSISTENCY, {"first": size, "second": second.size}).json()["proof"])
        merkle.verify_consistency(size, second.size, proof, merkle.root_of(hashes[:size]), second.root)
    # The proof does not verify against a root of a different log.
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(first.size, second.size, _hashes(body["proof"]), merkle.root_of(hashes[1:7]), second.root)
    assert client.get(CONSISTENCY, {"first": 17, "second": 17}).json()["proof"] == []


@pytest.mark.parametrize(
    ("url", "query", "detail"),
    [
        (INCLUSION, {"size": "5"}, "index is required: a non-negative integer."),
        (INCLUSION, {"index": "0"}, "size is required: a non-negative integer."),
        (INCLUSION, {"index": "", "size": "5"}, "index is required: a non-negative integer."),
        (INCLUSION, {"index": "-1", "size": "5"}, "index must not be negative."),
        (INCLUSION, {"index": "0", "size": "-5"}, "size must not be negative."),
        (INCLUSION, {"index": "abc", "size": "5"}, "index must be a non-negative integer in decimal digits."),
        (INCLUSION, {"index": "1.5", "size": "5"}, "index must be a non-negative integer in decimal digits."),
        (INCLUSION, {"index": "+1", "size": "5"}, "index must be a non-negative integer in decimal digits."),
        (INCLUSION, {"index": " 1", "size": "5"}, "index must be a non-negative integer in decimal digits."),
        (INCLUSION, {"index": "\u0663", "size": "5"}, "index must be a non-negative integer in decimal digits."),
        (INCLUSION, {"index": "0", "size": "1e3"}, "size must be a non-negative integer in decimal digits."),
        (INCLUSION, {"index": "0", "size": "9" * 40}, "size is too large."),
        (INCLUSION, {"index": ["0", "1"], "size": "5"}, "index is given more than once."),
        (INCLUSION, {"index": "5", "size": "5"}, "index 5 is not less than size 5: the leaf is not in that tree."),
        (INCLUSION, {"index": "7", "size": "3"}, "index 7 is not less than size 3: the leaf is not in that tree."),
        (INCLUSION, {"index": "0", "size": "0"}, "index 0 is not less than size 0: the leaf is not in that tree."),
        (
            INCLUSION,
            {"index": "0", "size": "6"},
            "size 6 is beyond the newest signed checkpoint (size 5); proofs are served for signed sizes only.",
        ),
        (CONSISTENCY, {"second": "5"}, "first is required: a non-negative integer."),
        (CONSISTENCY, {"first": "1"}, "second is required: a non-negative integer."),
        (CONSISTENCY, {"first": "-2", "second": "5"}, "first must not be negative."),
        (CONSISTENCY, {"first": "two", "second": "5"}, "first must be a non-negative integer in decimal digits."),
        (CONSISTENCY, {"first": "4", "second": "3"}, "first (4) is larger than second (3): a log only grows."),
        (
            CONSISTENCY,
            {"first": "1", "second": "6"},
            "second 6 is beyond the newest signed checkpoint (size 5); proofs are served for signed sizes only.",
        ),
        (
            CONSISTENCY,
            {"first": "0", "second": "5"},
            "first must be at least 1: every tree extends the empty one, and RFC 9162 defines no proof for it.",
        ),
    ],
)
def test_bad_input_is_a_400_problem_that_says_what_is_wrong(url: str, query: dict[str, Any], detail: str) -> None:
    _append(5)
    checkpoint_create()
    _append(3)  # leaves 5-7 exist but no checkpoint covers them
    response = Client().get(url, query)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body == {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": detail}


def test_before_any_checkpoint_every_size_is_beyond_the_signed_log() -> None:
    _append(3)
    response = Client().get(INCLUSION, {"index": 0, "size": 1})
    assert response.status_code == 400
    assert "beyond the newest signed checkpoint (size 0)" in response.json()["detail"]


def test_reads_are_rate_limited_per_address(settings: Any) -> None:
    settings.RATE_LIMIT_AUDIT_READ_PER_IP = 3
    _append(2)
    checkpoint_create()
    client = Client(REMOTE_ADDR="198.51.100.7")
    for url, query in ((CHECKPOINT, {}), (INCLUSION, {"index": 0, "size": 2}), (CONSISTENCY, {"first": 1, "second": 2})):
        assert client.get(url, query).status_code == 200
    limited = client.get(INCLUSION, {"index": 1, "size": 2})
    assert limited.status_code == 429
    assert limited["Content-Type"] == "application/problem+json"
    assert int(limited["Retry-After"]) > 0
    # Another address is not affected.
    assert Client(REMOTE_ADDR="198.51.100.8").get(CHECKPOINT).status_code == 200


def test_schema_documents_the_public_audit_endpoints() -> None:
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    schema = response.content.decode()
    for path in (CHECKPOINT, INCLUSION, CONSISTENCY):
        assert f"{path}:" in schema
    assert "text/plain" in schema and "InclusionProof" in schema and "ConsistencyProof" in schema
