import pytest

from compliance.audit.models import AuditLeaf
from compliance.erasure.models import ALLOWED_TRANSITIONS, ErasureRequest, Status
from compliance.erasure.transitions import TransitionNotAllowed, transition
from tests import factories

pytestmark = pytest.mark.django_db


def test_every_status_has_a_row_in_the_table() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(Status.values)


def test_allowed_move_saves_and_appends_audit_event_together() -> None:
    request = factories.submit()
    before = AuditLeaf.objects.count()
    transition(request, Status.VERIFIED, actor="subject")
    request.refresh_from_db()
    assert request.status == Status.VERIFIED
    leaf = AuditLeaf.objects.order_by("-seq").first()
    assert AuditLeaf.objects.count() == before + 1
    assert leaf.event_type == "request.verified" and leaf.request_id == request.id


@pytest.mark.parametrize("target", [Status.APPROVED, Status.COMPLETED, Status.PURGED, Status.UNLEARNING, Status.REFUSED])
def test_disallowed_move_changes_nothing(target: str) -> None:
    request = factories.submit()
    leaves = AuditLeaf.objects.count()
    with pytest.raises(TransitionNotAllowed):
        transition(request, target, actor="system")
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.RECEIVED
    assert AuditLeaf.objects.count() == leaves


def test_stale_copy_is_checked_against_the_locked_row() -> None:
    request = factories.submit()
    stale = ErasureRequest.objects.get(pk=request.pk)
    transition(request, Status.WITHDRAWN, actor="subject")
    with pytest.raises(TransitionNotAllowed):
        transition(stale, Status.VERIFIED, actor="subject")  # the stale object still says "received"


def test_audit_failure_rolls_back_the_status_change() -> None:
    request = factories.submit()
    with pytest.raises(ValueError):
        transition(request, Status.VERIFIED, actor="not a valid actor")
    assert ErasureRequest.objects.get(pk=request.pk).status == Status.RECEIVED


def test_expect_from_narrows_the_precondition() -> None:
    request = factories.request_in(Status.VERIFIED)
    with pytest.raises(TransitionNotAllowed):
        transition(request, Status.WITHDRAWN, actor="subject", expect_from=frozenset({Status.TRIAGED}))
