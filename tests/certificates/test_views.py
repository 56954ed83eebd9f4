"""Sign-off, downloads and the public verify page, end to end through HTTP; the offline verifier
run as a separate process that cannot import Django."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, TestCase
from django.urls import reverse

from compliance.audit import signing
from compliance.audit.models import AuditCheckpoint, AuditLeaf
from compliance.certificates import pdfkeys
from compliance.certificates.models import Certificate
from compliance.erasure.models import Status
from proofs.dsse import envelope_bytes, sign_envelope
from proofs.keys import Signer
from proofs.pdfsign import (
    certificate_fingerprint,
    generate_pdf_signing_key,
    load_pdf_certificates,
    read_pdf_signature,
    sign_certificate_pdf,
)
from tests import factories
from tests.certificates import pdftamper
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    isolated_files,
    officer,
    outsider,
    reviewer,
    verifying_request,
)

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]

# A sitecustomize that makes `import django` fail: the verifier must not need it.
NO_DJANGO = '''
import sys
class _NoDjango:
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            raise ImportError("django is not available to the offline verifier")
        return None
sys.meta_path.insert(0, _NoDjango())
'''


def _offline_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "no_django_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_DJANGO)
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH"}}
    env["PYTHONPATH"] = f"{site}{os.pathsep}{REPO}"
    return env


def _offline(path: Path, keyring: Path, env: dict[str, str], pdf_certs: Path | None = None) -> subprocess.CompletedProcess[str]:
    pins = ["--pdf-cert", str(pdf_certs)] if pdf_certs is not None else []
    return subprocess.run(
        [sys.executable, "-m", "proofs", str(path), "--keyring", str(keyring), *pins],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _sign_off(client: Client, reference: str) -> Any:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(reverse("portal:sign_off", args=[reference]), follow=True)


def _upload(client: Client, name: str, data: bytes) -> Any:
    return client.post(reverse("public:verify"), {"certificate": SimpleUploadedFile(name, data)})




def test_sign_off_to_offline_verification(officer: Any, client: Client, tmp_path: Path) -> None:
    request = verifying_request(ADA, officer)
    anonymous = Client()

    # 1. The officer signs off from the portal.
    client.force_login(officer)
    mail.outbox.clear()
    with TestCase.captureOnCommitCallbacks(execute=True):
        detail = client.post(reverse("portal:sign_off", args=[request.reference]))
    assert detail.status_code == 302 and detail["Location"] == reverse("portal:detail", args=[request.reference])
    request.refresh_from_db()
    assert request.status == Status.COMPLETED
    certificate = Certificate.objects.get(request=request)

    # 2. The subject's e-mail (sent after commit) carries the private status link.
    assert len(mail.outbox) == 1
    notice = mail.outbox[0]
    assert notice.to == [ADA.email]
    link = re.search(r"https://privacy\.example\.org(/status/[^\s]+/)", notice.body)
    assert link is not None

    # 3. The status page offers both downloads; they are the issued bytes.
    status_page = anonymous.get(link.group(1))
    assert status_page.status_code == 200
    html = status_page.content.decode()
    token = link.group(1).split("/")[2]
    pdf_url, json_url = reverse("public:certificate_pdf", args=[token]), reverse("public:certificate_json", args=[token])
    assert pdf_url in html and json_url in html
    pdf = anonymous.get(pdf_url)
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content == certificate.pdf_file.read_bytes()
    signed_json = anonymous.get(json_url)
    assert signed_json["Content-Type"] == "application/json"
    assert signed_json.content == bytes(certificate.envelope)
    assert "no-store" in signed_json["Cache-Control"]

    # 4. The offline verifier, in a process where Django cannot be imported, accepts both files
    #    against the key ring and the PDF signing certificates the site publishes, and rejects a
    #    tampered copy.
    keyring = tmp_path / "keys.json"
    keyring.write_bytes(anonymous.get(reverse("public:audit_keys")).content)
    pdf_certs = tmp_path / "pdf-signing.pem"
    pdf_certs.write_bytes(anonymous.get(reverse("public:pdf_signing_certificates")).content)
    (tmp_path / "certificate.json").write_bytes(signed_json.content)
    (tmp_path / "certificate.pdf").write_bytes(pdf.content)
    (tmp_path / "tampered.json").write_bytes(factories.tampered_certificate(signed_json.content))
    env = _offline_env(tmp_path)
    blocked = subprocess.run([sys.executable, "-c", "import django"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "not available to the offline verifier" in blocked.stderr
    for name in ("certificate.json", "certificate.pdf"):
        run = _offline(tmp_path / name, keyring, env, pdf_certs)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "FAIL" not in run.stdout and "verified" in run.stdout.splitlines()[-1]
        assert "timeline backed by the log" in run.stdout
    assert "printed text agrees" in run.stdout  # the PDF was checked as a document too
    run = _offline(tmp_path / "tampered.json", keyring, env)
    assert run.returncode == 1 and "NOT verified" in run.stdout


def test_sign_off_mails_the_subject_after_commit(officer: Any, client: Client) -> None:
    request = verifying_request(ADA, officer)
    client.force_login(officer)
    mail.outbox.clear()
    response = _sign_off(client, request.reference)
    assert response.status_code == 200
    assert "Certificate" in response.content.decode() and "was issued" in response.content.decode()
    assert [m.to for m in mail.outbox] == [[ADA.email]]
    assert "/status/" in mail.outbox[0].body


def _world(request: Any) -> tuple[Any, ...]:
    request.refresh_from_db()
    return request.status, AuditLeaf.objects.count(), AuditCheckpoint.objects.count(), Certificate.objects.count()


def test_get_on_sign_off_is_refused_and_changes_nothing(officer: Any, client: Client) -> None:
    request = verifying_request(ADA, officer)
    client.force_login(officer)
    before = _world(request)
    response = client.get(reverse("portal:sign_off", args=[request.reference]))
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert "sign-off button" in response.content.decode()
    assert _world(request) == before


def test_reviewer_cannot_sign_off(officer: Any, reviewer: Any, client: Client) -> None:
    request = verifying_request(ADA, officer)
    client.force_login(reviewer)
    before = _world(request)
    response = client.post(reverse("portal:sign_off", args=[request.reference]))
    assert response.status_code == 403
    assert "Only privacy officers" in response.content.decode()
    assert _world(request) == before


def test_sign_off_before_a_pass_verdict_explains_and_changes_nothing(officer: Any, client: Client) -> None:
    request = verifying_request(ADA, officer, verdict="fail")
    client.force_login(officer)
    before = _world(request)
    with TestCase.captureOnCommitCallbacks(execute=True) as callbacks:
        response = client.post(reverse("portal:sign_off", args=[request.reference]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("portal:detail", args=[request.reference])
    assert "needs a passing verdict" in response.content.decode()
    assert _world(request) == before
    assert callbacks == []  # no e-mail queued


def test_downloads_need_a_valid_token_and_a_certificate(officer: Any, client: Client) -> None:
    from compliance.erasure.services import status_token

    request = verifying_request(ADA, officer)
    token = status_token(request)
    response = client.get(reverse("public:certificate_pdf", args=[token]))
    assert response.status_code == 404 and "No certificate yet" in response.content.decode()
    response = client.get(reverse("public:certificate_json", args=[token[:-2] + "xx"]))
    assert response.status_code == 404 and "not valid" in response.content.decode()


def test_officer_downloads_and_roles(officer: Any, reviewer: Any, outsider: Any, client: Client) -> None:
    from compliance.certificates.services import certificate_issue

    request = verifying_request(ADA, officer)
    certificate = certificate_issue(request=request, officer=officer)
    url = reverse("portal:certificate_json", args=[request.reference])
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    client.force_login(reviewer)
    response = client.get(reverse("portal:certificate_pdf", args=[request.reference]))
    assert response.status_code == 200 and response.content[:5] == b"%PDF-"
    assert client.get(url).content == bytes(certificate.envelope)


def test_damaged_pdf_is_not_served(officer: Any, client: Client) -> None:
    from compliance.certificates.services import certificate_issue
    from compliance.erasure.services import status_token

    request = verifying_request(ADA, officer)
    certificate = certificate_issue(request=request, officer=officer)
    certificate.pdf_file.write_bytes(certificate.pdf_file.read_bytes() + b"%% appended\n")
    response = client.get(reverse("public:certificate_pdf", args=[status_token(request)]))
    assert response.status_code == 500 and "signed JSON certificate is still available" in response.content.decode()


# --- the public verify page -----------------------------------------------------------------------


@pytest.fixture
def issued(officer: Any) -> Certificate:
    from compliance.certificates.services import certificate_issue

    return certificate_issue(request=verifying_request(ADA, officer), officer=officer)


def _check_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="check">.*?<span class="badge (pass|fail)">', html, flags=re.S)


def test_verify_page_shows_every_check_ok_for_json_and_pdf(issued: Certificate, client: Client) -> None:
    assert client.get(reverse("public:verify")).status_code == 200
    for name, data in (("c.json", bytes(issued.envelope)), ("c.pdf", issued.pdf_file.read_bytes())):
        response = _upload(client, name, data)
        html = response.content.decode()
        assert response.status_code == 200
        assert '<span class="badge pass" id="verdict">Verified</span>' in html
        rows = _check_rows(html)
        payload = json.loads(bytes(issued.payload))
        # envelope, payload, signing key, published keys, checkpoint, timeline + 2 per leaf;
        # a PDF adds pdf signature, pdf coverage, pdf signer and pdf text
        pdf_checks = 4 if name.endswith(".pdf") else 0
        assert len(rows) == 6 + 2 * len(payload["audit"]["leaves"]) + pdf_checks
        assert set(rows) == {"pass"}
        assert issued.request.reference in html
        assert signing.keyring().entries[0].public_key.to_vkey() in html  # the trust anchor is shown
        assert 'id="exact-erasure"' not in html  # an approximate erasure: no exact-erasure card


def test_verify_page_shows_the_failing_check_for_a_tampered_certificate(issued: Certificate, client: Client) -> None:
    response = _upload(client, "tampered.json", factories.tampered_certificate(bytes(issued.envelope)))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<span class="badge fail" id="verdict">Not verified</span>' in html
    assert _check_rows(html) == ["fail"]
    assert "does not verify" in html


def test_verify_page_rejects_a_certificate_signed_by_another_key(issued: Certificate, client: Client) -> None:
    payload = base64.b64decode(json.loads(bytes(issued.envelope))["payload"])
    forged = envelope_bytes(sign_envelope(payload, Signer.from_seed("erasure.example.org", b"\x07" * 32)))
    html = _upload(client, "forged.json", forged).content.decode()
    assert "Not verified" in html and "no valid signature by a pinned key" in html


def _failed_checks(html: str) -> list[str]:
    return re.findall(r'<tr class="check"><td class="small">([^<]+)</td><td><span class="badge fail">', html)


def test_issued_pdf_is_signed_with_the_published_certificate(issued: Certificate, client: Client) -> None:
    signature = read_pdf_signature(issued.pdf_file.read_bytes())
    assert signature is not None and signature.covers_whole_file and signature.intact
    published = client.get(reverse("public:pdf_signing_certificates"))
    assert published.status_code == 200 and published["Content-Type"] == "application/x-pem-file"
    assert load_pdf_certificates(published.content) == [signature.signer] == [pdfkeys.pdf_signing_key().certificate]
    assert certificate_fingerprint(signature.signer) in client.get(reverse("public:verify")).content.decode()


def test_verify_page_rejects_a_pdf_whose_visible_text_was_edited(issued: Certificate, client: Client) -> None:
    pdf = issued.pdf_file.read_bytes()
    reference = issued.request.reference.encode()
    # Another last digit (the reference may already end in 9: the edit must change something).
    rewritten = pdftamper.rewrite_text(pdf, reference, reference[:-1] + (b"8" if reference.endswith(b"9") else b"9"))
    appended = pdftamper.edit_text_incrementally(pdf, b"Verdict: PASS", b"Verdict: FAIL")
    for data, failing, message in (
        (rewritten, ["pdf signature", "pdf text"], "the PDF was edited after it was signed"),
        (appended, ["pdf coverage", "pdf text"], "the PDF was changed after it was signed"),
    ):
        response = _upload(client, "edited.pdf", data)
        html = response.content.decode()
        assert response.status_code == 200
        assert '<span class="badge fail" id="verdict">Not verified</span>' in html
        assert _failed_checks(html) == failing
        assert message in html
        assert "What the certificate states" not in html  # nothing of an unverified PDF is vouched for


def test_verify_page_rejects_a_pdf_signed_by_another_certificate(issued: Certificate, client: Client) -> None:
    stranger = generate_pdf_signing_key("Demo Organisation Ltd")
    resigned = sign_certificate_pdf(
        pdftamper.strip_signature(issued.pdf_file.read_bytes()), stranger, reason="x", signer_name="x"
    )
    html = _upload(client, "resigned.pdf", resigned).content.decode()
    assert "Not verified" in html and _failed_checks(html) == ["pdf signer"]
    assert "not a pinned PDF signing certificate" in html


def test_verify_page_says_no_pdf_signature_for_a_pdf_without_one(issued: Certificate, client: Client) -> None:
    html = _upload(client, "unsigned.pdf", pdftamper.strip_signature(issued.pdf_file.read_bytes())).content.decode()
    assert "Not verified" in html and _failed_checks(html) == ["pdf signature"]
    assert "no PDF signature" in html


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"hello, this is not a certificate", "neither a certificate PDF nor certificate JSON"),
        ("list.json", b"[1, 2, 3]", "not a certificate"),
        ("other.pdf", b"%PDF-1.4\n%garbage\n", "not a certificate of erasure"),
        ("empty.json", b"", "empty"),
    ],
)
def test_verify_page_rejects_wrong_types_with_a_clear_400(client: Client, name: str, data: bytes, message: str) -> None:
    response = _upload(client, name, data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'id="verify-result"' not in response.content.decode()


def test_verify_page_rejects_oversized_upload(client: Client, settings: Any) -> None:
    settings.CERTIFICATE_UPLOAD_MAX_BYTES = 4096
    response = _upload(client, "big.json", b"{" + b" " * 50_000 + b"}")
    assert response.status_code == 413
    assert "larger than 4 KB" in response.content.decode()


def test_verify_page_without_a_file_asks_for_one(client: Client) -> None:
    response = client.post(reverse("public:verify"), {"other": "x"})
    assert response.status_code == 400 and "Choose the certificate file" in response.content.decode()


def test_sign_off_card_offers_the_button_then_the_downloads(officer: Any) -> None:
    from django.template.loader import render_to_string

    from compliance.certificates.services import certificate_issue

    request = verifying_request(ADA, officer)
    before = render_to_string("certificate/sign_off.html", {"req": request, "can_decide": True, "certificate": None})
    assert reverse("portal:sign_off", args=[request.reference]) in before and 'id="sign-off-button"' in before
    hidden = render_to_string("certificate/sign_off.html", {"req": request, "can_decide": False, "certificate": None})
    assert "sign-off-button" not in hidden
    certificate = certificate_issue(request=request, officer=officer)
    request.refresh_from_db()
    after = render_to_string("certificate/sign_off.html", {"req": request, "can_decide": True, "certificate": certificate})
    assert "sign-off-button" not in after
    assert reverse("portal:certificate_pdf", args=[request.reference]) in after and certificate.envelope_sha256 in after
