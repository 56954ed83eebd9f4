import pytest
from django.test import Client
from django.urls import reverse

from compliance.erasure.models import ErasureRequest, Status
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def officer_client(client: Client) -> Client:
    client.force_login(factories.user("officer"))
    return client


def test_queue_requires_login(client: Client) -> None:
    response = client.get(reverse("portal:queue"))
    assert response.status_code == 302 and "/portal/login/" in response.url


def test_outsider_without_role_is_refused(client: Client) -> None:
    client.force_login(factories.user(None))
    assert client.get(reverse("portal:queue")).status_code == 403


def test_queue_lists_and_filters(officer_client: Client) -> None:
    triaged = factories.request_in(Status.TRIAGED)
    received = factories.submit()
    page = officer_client.get(reverse("portal:queue"))
    assert page.status_code == 200
    assert triaged.reference.encode() in page.content and received.reference.encode() in page.content
    filtered = officer_client.get(reverse("portal:queue"), {"status": "triaged"})
    assert triaged.reference.encode() in filtered.content and received.reference.encode() not in filtered.content


def test_queue_says_how_long_each_request_has_been_at_its_stage_and_what_it_waits_for(officer_client: Client) -> None:
    from datetime import timedelta

    from django.utils import timezone

    triaged = factories.request_in(Status.TRIAGED)
    received = factories.submit()
    ErasureRequest.objects.filter(pk=triaged.pk).update(status_changed_at=timezone.now() - timedelta(days=3, hours=1))
    html = officer_client.get(reverse("portal:queue")).content.decode()
    rows = {ref: html[html.index(ref):html.index("</tr>", html.index(ref))] for ref in (triaged.reference, received.reference)}
    assert "for 3\xa0days" in rows[triaged.reference] and "an officer&#x27;s decision" in rows[triaged.reference]
    assert "the subject to confirm the e-mail address" in rows[received.reference]


def test_status_changed_at_moves_with_the_status_only(officer_client: Client) -> None:
    request = factories.request_in(Status.TRIAGED)
    before = ErasureRequest.objects.get(pk=request.pk).status_changed_at
    officer_client.post(reverse("portal:assign", args=[request.reference]), {"assignee": ""})
    assert ErasureRequest.objects.get(pk=request.pk).status_changed_at == before
    officer_client.post(reverse("portal:approve", args=[request.reference]), {"reason": "ok", "confirm": "on"})
    assert ErasureRequest.objects.get(pk=request.pk).status_changed_at > before


def test_detail_shows_timeline_and_decision_forms(officer_client: Client) -> None:
    request = factories.request_in(Status.TRIAGED, factories.ADA)
    page = officer_client.get(reverse("portal:detail", args=[request.reference]))
    assert page.status_code == 200
    assert b"request.received" in page.content and b"approve-button" in page.content
    assert b"Ada Quartermaine" in page.content  # officers see the sealed identifiers


def test_officer_approves(officer_client: Client) -> None:
    request = factories.request_in(Status.TRIAGED)
    response = officer_client.post(reverse("portal:approve", args=[request.reference]), {"reason": "ok", "confirm": "on"})
    assert response.status_code == 302
    request.refresh_from_db()
    assert request.status == Status.APPROVED


def test_approve_without_the_confirmation_changes_nothing(officer_client: Client) -> None:
    request = factories.request_in(Status.TRIAGED)
    response = officer_client.post(reverse("portal:approve", args=[request.reference]), {"reason": "ok"}, follow=True)
    assert b"Tick the confirmation box" in response.content
    request.refresh_from_db()
    assert request.status == Status.TRIAGED


def test_a_second_approval_is_refused_and_records_nothing(officer_client: Client) -> None:
    from compliance.audit.models import AuditLeaf

    request = factories.request_in(Status.TRIAGED)
    officer_client.post(reverse("portal:approve", args=[request.reference]), {"reason": "ok", "confirm": "on"})
    leaves = AuditLeaf.objects.count()
    again = officer_client.post(reverse("portal:approve", args=[request.reference]), {"reason": "ok", "confirm": "on"}, follow=True)
    assert b"cannot move from approved to approved" in again.content
    assert AuditLeaf.objects.count() == leaves


def test_reviewer_cannot_approve(client: Client) -> None:
    request = factories.request_in(Status.TRIAGED)
    client.force_login(factories.user("reviewer"))
    assert client.get(reverse("portal:detail", args=[request.reference])).status_code == 200
    response = client.post(reverse("portal:approve", args=[request.reference]), {"reason": "ok", "confirm": "on"})
    assert response.status_code == 403
    request.refresh_from_db()
    assert request.status == Status.TRIAGED


def test_refuse_without_code_shows_error_and_changes_nothing(officer_client: Client) -> None:
    request = factories.request_in(Status.TRIAGED)
    response = officer_client.post(reverse("portal:refuse", args=[request.reference]), {"legal_code": "", "reason": "x"}, follow=True)
    assert response.status_code == 200 and b"This field is required" in response.content
    request.refresh_from_db()
    assert request.status == Status.TRIAGED


def test_disallowed_transition_shows_error(officer_client: Client) -> None:
    request = factories.request_in(Status.VERIFIED)
    response = officer_client.post(reverse("portal:approve", args=[request.reference]), {"reason": "", "confirm": "on"}, follow=True)
    assert b"cannot move from verified to approved" in response.content
    request.refresh_from_db()
    assert request.status == Status.VERIFIED


def test_second_extension_is_refused(officer_client: Client) -> None:
    request = factories.request_in(Status.TRIAGED)
    officer_client.post(reverse("portal:extend", args=[request.reference]), {"reason": "complex"})
    response = officer_client.post(reverse("portal:extend", args=[request.reference]), {"reason": "again"}, follow=True)
    assert b"already been extended" in response.content


def test_unknown_reference_is_404(officer_client: Client) -> None:
    assert officer_client.get(reverse("portal:detail", args=["ER-1999-000001"])).status_code == 404


def test_actions_need_post(officer_client: Client) -> None:
    request = factories.request_in(Status.TRIAGED)
    assert officer_client.get(reverse("portal:approve", args=[request.reference])).status_code == 405
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.TRIAGED


def test_audit_page_lists_request_events(officer_client: Client) -> None:
    from compliance.audit.services import checkpoint_create

    request = factories.request_in(Status.TRIAGED)
    checkpoint_create()
    page = officer_client.get(reverse("portal:audit"), {"reference": request.reference})
    assert page.status_code == 200 and b"proof ok" in page.content and b"request.triaged" in page.content


def test_login_is_throttled(client: Client, settings) -> None:
    settings.RATE_LIMIT_LOGIN_PER_IP = 3
    for _ in range(3):
        client.post(reverse("portal:login"), {"username": "x", "password": "y"})
    assert client.post(reverse("portal:login"), {"username": "x", "password": "y"}).status_code == 429
