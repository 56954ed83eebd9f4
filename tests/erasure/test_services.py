import hashlib
from datetime import date, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from compliance.audit.models import AuditLeaf
from compliance.common.models import DataKey
from compliance.common.ratelimit import RateLimited
from compliance.erasure import services
from compliance.erasure.deadlines import first_deadline
from compliance.erasure.models import ErasureRequest, IdentityCheck, Status
from compliance.erasure.transitions import TransitionNotAllowed
from tests import factories

pytestmark = pytest.mark.django_db


def _token_from_mail() -> str:
    body = mail.outbox[-1].body
    url = next(line for line in body.splitlines() if "/confirm/" in line)
    return url.rstrip("/").split("/confirm/")[1]


def test_submit_seals_identifiers_and_starts_the_clock(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        request = factories.submit(factories.ADA)
    row = ErasureRequest.objects.get(pk=request.pk)
    raw = bytes(row.identifiers_sealed)
    assert b"Quartermaine" not in raw and b"ada.quartermaine" not in raw
    assert row.identifiers()["email"] == factories.ADA.email
    assert row.reference.startswith(f"ER-{timezone.localdate().year}-")
    assert row.clock_started_at == timezone.localdate(row.received_at)
    assert row.due_at == first_deadline(row.clock_started_at)
    assert row.status == Status.RECEIVED
    assert len(row.subject_ref) == 32 and row.subject_ref not in factories.ADA.email
    assert len(mail.outbox) == 1 and "/confirm/" in mail.outbox[0].body


def test_subject_refs_are_random_not_derived_from_pii() -> None:
    a = factories.submit(factories.ADA)
    ErasureRequest.objects.filter(pk=a.pk).update(received_at=timezone.now() - timedelta(days=30))
    b = factories.submit(factories.ADA)
    assert a.pk != b.pk and a.subject_ref != b.subject_ref


def test_same_person_within_window_gets_the_existing_request() -> None:
    first = services.erasure_request_submit(subject=factories.ADA, ground="17(1)(a)", channel="web", client_ip="1.1.1.1")
    second = services.erasure_request_submit(
        subject=services.SubjectInput(full_name="ada quartermaine", email="ADA.Quartermaine@Example.com"),
        ground="17(1)(a)", channel="web", client_ip="2.2.2.2",
    )
    assert first.created and not second.created
    assert second.request.pk == first.request.pk
    assert ErasureRequest.objects.count() == 1


def test_confirmation_token_is_single_use_and_hashed(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        request = factories.submit()
    token = _token_from_mail()
    assert not IdentityCheck.objects.filter(token_hash=token).exists()
    assert IdentityCheck.objects.filter(token_hash=hashlib.sha256(token.encode()).hexdigest()).exists()
    with django_capture_on_commit_callbacks(execute=False):
        services.identity_confirm(token=token)
    request.refresh_from_db()
    assert request.status == Status.VERIFIED and request.verified_at is not None
    leaves = AuditLeaf.objects.count()
    with pytest.raises(services.TokenInvalid, match="already been used"):
        services.identity_confirm(token=token)
    assert AuditLeaf.objects.count() == leaves


def test_expired_token_is_refused(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        request = factories.submit()
    token = _token_from_mail()
    IdentityCheck.objects.filter(request=request).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(services.TokenInvalid, match="expired"):
        services.identity_confirm(token=token)
    request.refresh_from_db()
    assert request.status == Status.RECEIVED


@pytest.mark.parametrize("token", ["", "forged-token", "x" * 500])
def test_forged_tokens_are_refused(token: str) -> None:
    factories.submit()
    with pytest.raises(services.TokenInvalid):
        services.identity_confirm(token=token)


def test_rate_limit_per_email(settings) -> None:
    settings.RATE_LIMIT_SUBMIT_PER_EMAIL = 2
    settings.DUPLICATE_WINDOW_HOURS = 0
    for i in range(2):
        factories.submit(factories.ADA, ip=f"10.0.0.{i}")
    count = ErasureRequest.objects.count()
    with pytest.raises(RateLimited):
        factories.submit(factories.ADA, ip="10.0.0.99")
    assert ErasureRequest.objects.count() == count


def test_rate_limit_per_ip(settings) -> None:
    settings.RATE_LIMIT_SUBMIT_PER_IP = 3
    for _ in range(3):
        factories.submit(ip="10.1.1.1")
    with pytest.raises(RateLimited):
        factories.submit(ip="10.1.1.1")
    assert ErasureRequest.objects.count() == 3


def test_refusal_requires_legal_code_and_reason() -> None:
    request = factories.request_in(Status.TRIAGED)
    officer = factories.user("officer")
    with pytest.raises(services.ErasureError, match="legal code"):
        services.erasure_request_refuse(request=request, officer=officer, legal_code="", reason="because")
    with pytest.raises(services.ErasureError, match="Unknown legal code"):
        services.erasure_request_refuse(request=request, officer=officer, legal_code="17(3)(z)", reason="because")
    with pytest.raises(services.ErasureError, match="reason"):
        services.erasure_request_refuse(request=request, officer=officer, legal_code="17(3)(e)", reason="  ")
    request.refresh_from_db()
    assert request.status == Status.TRIAGED and request.decision == ""


def test_refusal_notice_names_the_right_to_complain(django_capture_on_commit_callbacks) -> None:
    request = factories.request_in(Status.TRIAGED)
    with django_capture_on_commit_callbacks(execute=True):
        services.erasure_request_refuse(
            request=request, officer=factories.user("officer"), legal_code="17(3)(b)", reason="Tax records must be kept."
        )
    notice = mail.outbox[-1]
    assert "Article 77" in notice.body and "supervisory authority" in notice.body
    assert "Art. 17(3)(b)" in notice.body


def test_reviewer_cannot_approve() -> None:
    request = factories.request_in(Status.TRIAGED)
    with pytest.raises(services.PermissionDenied):
        services.erasure_request_approve(request=request, officer=factories.user("reviewer"))
    request.refresh_from_db()
    assert request.status == Status.TRIAGED


def test_approve_only_from_triaged() -> None:
    request = factories.request_in(Status.VERIFIED)
    with pytest.raises(TransitionNotAllowed):
        services.erasure_request_approve(request=request, officer=factories.user("officer"))


def test_extension_once_before_first_deadline_with_notice(django_capture_on_commit_callbacks) -> None:
    request = factories.request_in(Status.TRIAGED)
    officer = factories.user("officer")
    with django_capture_on_commit_callbacks(execute=True):
        services.erasure_request_extend(request=request, officer=officer, reason="Many corpora to search.")
    assert request.extended_due_at is not None and request.extended_due_at > request.due_at
    assert "Article 12(3)" in mail.outbox[-1].body
    with pytest.raises(services.ErasureError, match="already been extended"):
        services.erasure_request_extend(request=request, officer=officer, reason="again")


def test_extension_after_first_deadline_is_refused() -> None:
    request = factories.request_in(Status.TRIAGED)
    with pytest.raises(services.ErasureError, match="first deadline has passed"):
        services.erasure_request_extend(
            request=request, officer=factories.user("officer"), reason="late", today=request.due_at + timedelta(days=1)
        )
    request.refresh_from_db()
    assert request.extended_due_at is None


def test_extension_requires_reason() -> None:
    request = factories.request_in(Status.TRIAGED)
    with pytest.raises(services.ErasureError):
        services.erasure_request_extend(request=request, officer=factories.user("officer"), reason="")


def test_withdraw_then_no_more_moves() -> None:
    request = factories.request_in(Status.VERIFIED)
    services.erasure_request_withdraw(request=request)
    assert request.status == Status.WITHDRAWN
    with pytest.raises(TransitionNotAllowed):
        services.erasure_request_withdraw(request=request)


def test_purge_shreds_the_data_key() -> None:
    request = factories.request_in(Status.REFUSED)
    key_id = request.data_key_id
    services.erasure_request_purge(request=request)
    request.refresh_from_db()
    assert request.status == Status.PURGED
    key = DataKey.objects.get(pk=key_id)
    assert bytes(key.wrapped) == b"" and key.destroyed_at is not None
    with pytest.raises(Exception, match="destroyed"):
        request.identifiers()


def test_assign_records_an_audit_event() -> None:
    request = factories.request_in(Status.TRIAGED)
    officer = factories.user("officer")
    reviewer = factories.user("reviewer")
    services.erasure_request_assign(request=request, officer=officer, assignee=reviewer)
    assert request.assignee == reviewer
    assert AuditLeaf.objects.filter(request_id=request.id, event_type="request.assigned").exists()
    with pytest.raises(services.ErasureError):
        services.erasure_request_assign(request=request, officer=officer, assignee=factories.user(None))


def test_queue_puts_overdue_first_and_filters() -> None:
    from compliance.erasure import selectors

    late = factories.request_in(Status.TRIAGED)
    ErasureRequest.objects.filter(pk=late.pk).update(due_at=date(2020, 1, 1))
    factories.request_in(Status.TRIAGED)
    ordered = list(selectors.queue())
    assert ordered[0].pk == late.pk
    assert [r.pk for r in selectors.queue(overdue=True)] == [late.pk]


def test_purge_leaves_no_trace_of_the_person_in_the_rows_or_the_mail_spool(settings, tmp_path, django_capture_on_commit_callbacks) -> None:
    """Searched for every identifier in every form: plain, the e-mail digest (brute-forceable), and
    the mail spool the embedded set-up writes."""
    from compliance.erasure.models import ErasureRequest

    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = tmp_path / "mail"
    other = factories.submit(factories.subject(7))
    with django_capture_on_commit_callbacks(execute=True):
        request = factories.request_in(Status.REFUSED, person=factories.ADA)
    spool = list((tmp_path / "mail").glob("*"))
    assert any(factories.ADA.email.encode() in p.read_bytes() for p in spool)  # the notices were spooled
    digest = ErasureRequest.objects.get(pk=request.pk).email_digest
    services.erasure_request_purge(request=request)
    row = ErasureRequest.objects.filter(pk=request.pk).values().get()
    text = repr(row).lower()
    for value in (factories.ADA.email, factories.ADA.full_name, digest, "pending litigation"):
        assert value.lower() not in text, value
    for path in (tmp_path / "mail").glob("*"):
        body = path.read_bytes()
        assert factories.ADA.email.encode() not in body and request.reference.encode() not in body
    assert ErasureRequest.objects.get(pk=other.pk).identifiers()["email"] == factories.subject(7).email  # others untouched
