"""Exact erasure in the certificate (schema v3): a real proof built with the pure library (sorted-set
commitments over K=3 shards, adapter files named by their SHA-256), issued, signed and checked by the
offline verifier; each forgery is refused with its reason; v2 certificates still verify. The last
tests go through the service (the job's stored proof), the PDF and the public verify page."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import copy
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from proofs import merkle
from proofs.datacommit import SortedSet
from proofs.envelope import SCHEMA_V2, SCHEMA_V5, CertificateError, validate_certificate_payload
from proofs.issuing import exact_proof_text, recipe_sha256
from proofs.keys import KeyRing
from proofs.offline import main, verify_certificate
from proofs.pdf import exact_facts
from proofs.pdf_render import render_certificate_pdf_bytes
from proofs.pdfsign import generate_pdf_signing_key, sign_certificate_pdf
from tests.certificates.factory import (
    EXACT_RECIPE,
    V2_CERTIFICATE,
    ExactWorld,
    Issued,
    exact_world,
    fixed_signer,
    issue,
    put_adapter,
)
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    isolated_files,
    officer,
    verifying_request,
)

EXACT = "exact-shard-retrain"


@pytest.fixture
def world(tmp_path: Path) -> ExactWorld:
    return exact_world(tmp_path / "shards")


@pytest.fixture
def model_dir(tmp_path: Path, world: ExactWorld) -> Path:
    directory = tmp_path / "model-v7"
    directory.mkdir()
    (directory / "sharding.json").write_text(json.dumps(world.manifest(), indent=2, sort_keys=True))
    return directory


def certify(proof: dict[str, Any], method: str = EXACT) -> Issued:
    """Issue (validate, canonicalise, sign with the legitimate key) a certificate carrying `proof`:
    for a forged proof, an insider forgery that only the proof checks can catch."""
    return issue(method=method, exact=proof)


def failure(issued: Issued, **options: Path) -> tuple[str, str]:
    result = verify_certificate(issued.envelope, issued.ring, **options)
    assert not result.ok
    assert result.checks and not result.checks[-1].ok, "verification must stop at the failed check"
    assert [c.ok for c in result.checks[:-1]] == [True] * (len(result.checks) - 1)
    return result.checks[-1].name, result.checks[-1].detail


# --- a valid proof -------------------------------------------------------------------------------------


def test_valid_exact_proof_verifies_every_named_check(world: ExactWorld, model_dir: Path) -> None:
    issued = certify(world.proof)
    result = verify_certificate(issued.envelope, issued.ring, shards=world.store, model_dir=model_dir)
    assert result.ok, result.reason
    names = [c.name for c in result.checks]
    assert names[names.index("timeline") + 1 :] == [
        "exact recipe", "exact shards", "exact slices", "absence[0]", "absence[1]",
        "adapter[0]", "adapter[1]", "adapter[2]", "model dir",
    ]  # fmt: skip
    details = {c.name: c.detail for c in result.checks}
    assert details["exact recipe"].startswith(f"exact recipe {EXACT_RECIPE.sha256()[:16]}")
    assert details["exact shards"].startswith("2 of 3 shards retrained (shards 1, 2), 1 reused unchanged")
    assert details["exact slices"] == "6 of 12 slice trainings redone"  # (4 - 2) + (4 - 0)
    assert details["absence[1]"].endswith("is absent from the training data of all 3 shards")
    assert result.summary.endswith("exact erasure: 2 removed records proven absent from all 3 shards")
    # Without the files, the proof's own checks still run.
    bare = verify_certificate(issued.envelope, issued.ring)
    assert (
        bare.ok
        and "absence[1]" in [c.name for c in bare.checks]
        and "adapter[0]" not in [c.name for c in bare.checks]
    )


def test_the_certificate_carries_the_proof_with_floats_as_exact_text(world: ExactWorld) -> None:
    payload = certify(world.proof).payload
    assert payload["schema"] == SCHEMA_V5
    exact = payload["unlearning"]["exact"]
    assert exact["recipe"]["lr"] == "3e-05" and exact["train_seconds"] == "12.345"
    # The text gives back the float the worker hashed: the recipe hash is the worker's.
    assert recipe_sha256(exact["recipe"]) == EXACT_RECIPE.sha256() == exact["recipe_sha256"]
    assert [row["commitment"] for row in exact["removed"]] == sorted(c.hex() for c in world.removed)
    assert exact_proof_text(exact) == exact  # idempotent
    assert world.proof["recipe"]["lr"] == 3e-05  # the stored proof is not modified


def test_cli_checks_the_adapter_store_and_the_model_directory(
    world: ExactWorld, model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    issued = certify(world.proof)
    cert = tmp_path / "certificate.json"
    cert.write_bytes(issued.envelope)
    key = issued.signer.public_key.to_vkey()
    assert main([str(cert), "--key", key, "--shards", str(world.store), "--model-dir", str(model_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "ok  6 of 12 slice trainings redone" in out
    assert sum(line.startswith("ok  shard ") and "hashes to its name" in line for line in out) == 3
    assert out[-1].endswith("2 removed records proven absent from all 3 shards")

    world.adapter_path(world.proof["shards"][2]["after"]["adapter"]).write_bytes(b"not the trained adapter")
    assert main([str(cert), "--key", key, "--shards", str(world.store)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("certificate NOT verified: shard 2's adapter file ")
    assert out[-1].endswith("not to its name: the file was altered")

    assert main([str(cert), "--key", key, "--shards", str(tmp_path / "nowhere")]) == 2  # usage error
    assert "adapter store" in capsys.readouterr().err


# --- forgeries, each refused with its reason -------------------------------------------------------------


def test_a_shard_whose_training_data_still_holds_a_removed_record_is_refused(world: ExactWorld) -> None:
    # Shard 1 "retrained" on data that still holds the subject's record: its tree head includes it.
    kept = world.removed[0]
    assert kept in world.records[1]
    still_holding = SortedSet.of(c for c in world.records[1] if c != world.removed[1])
    assert kept in still_holding
    with pytest.raises(ValueError, match="no absence proof exists"):
        still_holding.absence_proof(kept)
    proof = copy.deepcopy(world.proof)
    proof["shards"][1]["after"].update(records=still_holding.size, data_root=still_holding.root().hex())
    # (1) The forger takes the absence proof from a different tree (the honest one without the record).
    name, detail = failure(certify(proof))
    row = sorted(c.hex() for c in world.removed).index(kept.hex())
    assert name == f"absence[{row}]"
    assert (
        detail.startswith(f"removed record {row} (commitment {kept.hex()[:16]}")
        and "is not proven absent from shard 1" in detail
    )
    assert "is not a leaf of the tree" in detail
    # (2) ...or takes the real leaves on either side of the record in this tree: they are not adjacent.
    index = still_holding.leaves.index(kept)
    tree = merkle.InMemoryNodeStore(merkle.leaf_hash(leaf) for leaf in still_holding.leaves)
    around = [
        {
            "index": j,
            "leaf": still_holding.leaves[j].hex(),
            "path": [h.hex() for h in merkle.inclusion_proof(j, still_holding.size, tree)],
        }
        for j in (index - 1, index + 1)
    ]
    forged = copy.deepcopy(proof)
    entry = next(r for r in forged["removed"] if r["commitment"] == kept.hex())
    entry["shards"][1] = around
    name, detail = failure(certify(forged))
    assert name == f"absence[{row}]" and "not adjacent leaves on either side of the commitment" in detail


def test_a_tampered_or_missing_adapter_file_is_refused(world: ExactWorld) -> None:
    issued = certify(world.proof)
    adapter = world.proof["shards"][1]["after"]["adapter"]
    path = world.adapter_path(adapter)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01  # one flipped bit in the stored tensor bytes
    path.write_bytes(bytes(data))
    name, detail = failure(issued, shards=world.store)
    assert name == "adapter[1]"
    assert detail == (
        f"shard 1's adapter file {path} hashes to {hashlib.sha256(bytes(data)).hexdigest()[:16]}\u2026, "
        "not to its name: the file was altered"
    )
    path.unlink()
    name, detail = failure(issued, shards=world.store)
    assert name == "adapter[1]" and f"adapter {adapter[:16]}\u2026 is not in the adapter store" in detail


def test_a_reused_shard_whose_adapter_changed_is_refused(world: ExactWorld) -> None:
    proof = copy.deepcopy(world.proof)
    other = put_adapter(world.store, b"an adapter trained on something else")
    reused = proof["shards"][0]
    assert reused["retrained_from_slice"] is None
    reused["after"]["checkpoints"][-1] = reused["after"]["adapter"] = other
    name, detail = failure(certify(proof), shards=world.store)
    assert name == "exact shards"
    assert detail.startswith("shard 0 is marked reused (retrained_from_slice null) but its adapter changed")
    # Its data too: a reused shard keeps its training data, so its tree head cannot move.
    proof = copy.deepcopy(world.proof)
    proof["shards"][0]["after"]["data_root"] = proof["shards"][1]["after"]["data_root"]
    name, detail = failure(certify(proof))
    assert (
        name == "exact shards" and "shard 0 is marked reused" in detail and "its data_root changed" in detail
    )


def test_a_wrong_recipe_hash_is_refused(world: ExactWorld) -> None:
    proof = copy.deepcopy(world.proof)
    proof["recipe_sha256"] = hashlib.sha256(b"another recipe").hexdigest()
    name, detail = failure(certify(proof))
    assert name == "exact recipe"
    assert detail == (
        f"exact recipe: the recipe hashes to {EXACT_RECIPE.sha256()[:16]}\u2026, not the stated recipe_sha256 "
        f"{proof['recipe_sha256'][:16]}\u2026"
    )
    # A recipe changed under the same hash (another learning rate): the hash gives it away.
    proof = copy.deepcopy(world.proof)
    proof["recipe"]["lr"] = 3e-04
    name, detail = failure(certify(proof))
    assert name == "exact recipe" and "not the stated recipe_sha256" in detail


@pytest.mark.parametrize(
    ("mutate", "name", "reason"),
    [
        (lambda p: p.update(retrained_slices=5), "exact slices", "retrained_slices is 5, but the retrained shards account for 6"),
        (lambda p: p.update(total_slices=9), "exact slices", "total_slices is 9, but the recipe makes 3 x 4 = 12"),
        (lambda p: p["shards"][1].update(retrained_from_slice=4), "exact shards", "retrained from slice 4, outside the recipe's slices 0..3"),
        (lambda p: p["shards"][2]["after"]["checkpoints"].pop(0), "exact shards", "shard 2 lists 3 checkpoints, the recipe has 4 slices"),
        (lambda p: p["shards"][2]["after"].update(adapter=p["shards"][2]["after"]["checkpoints"][0]), "exact shards", "shard 2's adapter"),
    ],
)  # fmt: skip
def test_inconsistent_shard_bookkeeping_is_refused(
    world: ExactWorld, mutate: Any, name: str, reason: str
) -> None:
    proof = copy.deepcopy(world.proof)
    mutate(proof)
    found, detail = failure(certify(proof))
    assert found == name and reason in detail, detail


def test_a_model_directory_built_from_other_adapters_is_refused(world: ExactWorld, model_dir: Path) -> None:
    issued = certify(world.proof)
    manifest = world.manifest()
    manifest["shards"][1]["adapter"] = world.proof["shards"][1]["before"]["adapter"]  # the old adapter
    (model_dir / "sharding.json").write_text(json.dumps(manifest))
    name, detail = failure(issued, model_dir=model_dir)
    assert name == "model dir" and "sharding.json shard 1 adapter is " in detail
    (model_dir / "sharding.json").unlink()
    name, detail = failure(issued, model_dir=model_dir)
    assert name == "model dir" and "no readable sharding.json" in detail


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda e: e["recipe"].update(lr=3e-05), r"exact\.recipe\.lr: must be a decimal number"),
        (lambda e: e["recipe"].update(lr="0.000030"), r"exact\.recipe\.lr: must be a float written as its shortest"),
        (lambda e: e.update(train_seconds=12.345), r"exact\.train_seconds"),
        (lambda e: e["removed"][0]["shards"].pop(), r"exact\.removed\[0\]\.shards: holds 2 absence proofs"),
        (lambda e: e["removed"].reverse(), r"exact\.removed: must be sorted by commitment"),
        (lambda e: e["shards"].pop(), r"exact\.shards: lists 2 shards, the recipe has 3"),
        (lambda e: e["shards"][1].update(index=2), r"exact\.shards\[1\]\.index: must be 1"),
        (lambda e: e["shards"][0]["after"].update(adapter="A" * 64), r"exact\.shards\[0\]\.after\.adapter"),
        (lambda e: e["shards"][0]["before"].update(checkpoints=[]), r"exact\.shards\[0\]\.before: unexpected checkpoints"),
        (lambda e: e["removed"][0]["shards"][0].extend(copy.deepcopy(e["removed"][0]["shards"][0]) * 2), r"at most two"),
        (lambda e: e["environment"].pop("peft"), r"exact\.environment: missing peft"),
        (lambda e: e["recipe"].update(dropout=0), r"exact\.recipe: unexpected dropout"),
        (lambda e: e.update(method="retrain-everything"), r"exact\.method"),
    ],
)  # fmt: skip
def test_schema_refuses_malformed_proofs_naming_the_path(world: ExactWorld, mutate: Any, path: str) -> None:
    payload = copy.deepcopy(certify(world.proof).payload)
    mutate(payload["unlearning"]["exact"])
    with pytest.raises(CertificateError, match=path):
        validate_certificate_payload(payload)


def test_method_and_proof_must_agree(world: ExactWorld) -> None:
    with pytest.raises(CertificateError, match=r"\$\.unlearning\.method: must be 'exact-shard-retrain'"):
        certify(world.proof, method="gradient_difference")
    with pytest.raises(CertificateError, match=r"\$\.unlearning\.exact: is null, but the method"):
        issue(method=EXACT)
    both = certify(world.proof, method=f"{EXACT}+gradient_difference")  # records also sat elsewhere
    assert verify_certificate(both.envelope, both.ring).ok


# --- earlier schemas -----------------------------------------------------------------------------------


def test_a_v2_certificate_still_verifies_and_has_no_exact_proof_to_check(world: ExactWorld) -> None:
    ring = KeyRing.of([fixed_signer("erasure.example.org/audit-2025", 1).public_key])
    result = verify_certificate(V2_CERTIFICATE.read_bytes(), ring)
    assert result.ok, result.reason
    assert result.payload is not None and result.payload["schema"] == SCHEMA_V2
    assert not any(c.name.startswith(("exact", "absence", "adapter")) for c in result.checks)
    # Asked to check adapter files, the verifier says the certificate states no exact erasure.
    asked = verify_certificate(V2_CERTIFICATE.read_bytes(), ring, shards=world.store)
    assert not asked.ok and asked.checks[-1].name == "exact erasure"
    assert asked.reason.startswith("--shards was given, but the certificate states no exact erasure")


# --- the PDF ---------------------------------------------------------------------------------------------


def test_pdf_has_a_short_exact_erasure_section(world: ExactWorld) -> None:
    issued = certify(world.proof, method=f"{EXACT}+gradient_difference")
    data = render_certificate_pdf_bytes(issued.payload, issued.envelope)
    reader = PdfReader(io.BytesIO(data))
    assert 1 <= len(reader.pages) <= 2
    text = "\n".join(page.extract_text() for page in reader.pages)
    section = text[text.index("Exact erasure") : text.index("Verification of the erasure")]
    assert (
        "exact-shard-retrain: the shard adapters that held the records were retrained without them; then "
        "gradient_difference for the records in other training data"
    ) in " ".join(section.split())  # the cell wraps
    for expected in (
        "Shards retrained\n2 of 3 (shards 1, 2)",
        "Slices retrained\n6 of 12",
        "Records proven absent\n2 records, from the training data of every shard",
        f"Recipe SHA-256\n{EXACT_RECIPE.sha256()}",
        f"Corpus before\n{'c' * 64}",
        f"Corpus after\n{'d' * 64}",
    ):
        assert expected in section, expected
    # The PDF embeds the certificate with its proof; signed, it verifies as a document too.
    key = generate_pdf_signing_key("Example Language Models GmbH")
    signed = sign_certificate_pdf(data, key, reason="exact", signer_name="Example Language Models GmbH")
    result = verify_certificate(signed, issued.ring, pdf_certificates=[key.certificate])
    assert result.ok, result.reason
    # An approximate certificate has no such section.
    plain = issue()
    assert "Exact erasure" not in "\n".join(
        page.extract_text()
        for page in PdfReader(io.BytesIO(render_certificate_pdf_bytes(plain.payload, plain.envelope))).pages
    )


# --- through the service and the public verify page (Django) ---------------------------------------------


def _exact_job(request: Any, proof: dict[str, Any] | None) -> None:
    """The job the worker finished on the exact path (unlearning_worker.execution._exact_with)."""
    from compliance.jobs.models import UnlearningJob

    UnlearningJob.objects.filter(requests=request).update(
        method=EXACT, stop_reason=EXACT, exact_proof=proof or {}
    )


@pytest.mark.django_db
def test_service_certifies_the_jobs_exact_proof_and_the_verify_page_shows_it(
    officer: Any, world: ExactWorld, client: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from compliance.audit import signing
    from compliance.certificates.services import certificate_issue

    request = verifying_request(ADA, officer)
    _exact_job(request, world.proof)
    certificate = certificate_issue(request=request, officer=officer)
    payload = json.loads(bytes(certificate.payload))
    assert payload["schema"] == SCHEMA_V5 and payload["unlearning"]["method"] == EXACT
    assert payload["unlearning"]["exact"] == exact_proof_text(world.proof)
    result = verify_certificate(bytes(certificate.envelope), signing.keyring(), shards=world.store)
    assert result.ok, result.reason
    assert "Exact erasure" in "\n".join(page.extract_text() for page in PdfReader(certificate.pdf_file).pages)

    response = client.post(
        reverse("public:verify"), {"certificate": SimpleUploadedFile("c.json", bytes(certificate.envelope))}
    )
    html = response.content.decode()
    assert response.status_code == 200 and 'id="verdict">Verified</span>' in html
    card = html[html.index('id="exact-erasure"') :]
    assert "<dt>Shards retrained</dt><dd>2 of 3 (shards 1, 2)</dd>" in card
    assert "<dt>Slices retrained</dt><dd>6 of 12</dd>" in card
    assert f'<dt>Recipe SHA-256</dt><dd class="mono">{EXACT_RECIPE.sha256()}</dd>' in card
    assert [f.label for f in exact_facts(payload["unlearning"])] == [
        "Method", "Shards retrained", "Slices retrained", "Records proven absent", "Recipe SHA-256",
        "Corpus before", "Corpus after",
    ]  # fmt: skip


@pytest.mark.django_db
def test_service_refuses_an_exact_job_without_a_valid_proof(officer: Any, world: ExactWorld) -> None:
    from compliance.certificates.evidence import CertificateBuildError
    from compliance.certificates.models import Certificate
    from compliance.certificates.services import certificate_issue
    from compliance.erasure.models import Status

    request = verifying_request(ADA, officer)
    _exact_job(request, None)
    with pytest.raises(CertificateBuildError, match="recorded no exact-erasure proof"):
        certificate_issue(request=request, officer=officer)
    broken = copy.deepcopy(world.proof)
    broken["recipe"]["extra"] = {"warmup": 0.1}  # a float the recipe hash covers: no exact text for it
    _exact_job(request, broken)
    with pytest.raises(
        CertificateBuildError, match=r"exact-erasure proof cannot be certified: .*extra\.warmup"
    ):
        certificate_issue(request=request, officer=officer)
    request.refresh_from_db()
    assert request.status == Status.VERIFYING and not Certificate.objects.filter(request=request).exists()
