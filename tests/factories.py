"""Personas and request factories. Requests are made through the real services, never by hand."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

from django.contrib.auth.models import Group, User

from compliance.erasure import services
from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.permissions import ensure_roles
from compliance.erasure.transitions import transition

_counter = itertools.count(1)

# A fictitious data subject used across tests.
ADA = services.SubjectInput(
    full_name="Ada Quartermaine",
    email="ada.quartermaine@example.com",
    phone="+44 20 7946 0018",
    other_identifiers=["AQ-7788-XZ"],
    details="My biography on the community forum, 2019.",
)


def user(role: str | None, username: str | None = None) -> User:
    name = username or f"{role or 'outsider'}{next(_counter)}"
    account = User.objects.create_user(username=name, password="correct horse battery staple 1")
    if role:
        account.groups.add(role_group(role))
    return account


def role_group(role: str) -> Group:
    """The role's group, created again where a transactional test (which empties every table on the
    way out) ran before on the same database."""
    if not Group.objects.filter(name=role).exists():
        ensure_roles()
    return Group.objects.get(name=role)


def subject(n: int | None = None) -> services.SubjectInput:
    i = next(_counter) if n is None else n
    return services.SubjectInput(
        full_name=f"Test Person{i}",
        email=f"person{i}@example.com",
        phone=f"+1 415 555 {1000 + i:04d}",
        other_identifiers=[],
        details="",
    )


def submit(person: services.SubjectInput | None = None, *, ip: str | None = None, channel: str = "web") -> ErasureRequest:
    result = services.erasure_request_submit(
        subject=person or subject(), ground="17(1)(b)", channel=channel, client_ip=ip or f"10.9.{next(_counter) % 250}.1"
    )
    return result.request


def request_in(status: str, person: services.SubjectInput | None = None, officer: User | None = None, **kwargs: Any) -> ErasureRequest:
    """A request walked through the real transitions up to `status` (received, verified, triaged, approved, refused)."""
    request = submit(person)
    path = {
        Status.RECEIVED: [],
        Status.VERIFIED: [Status.VERIFIED],
        Status.TRIAGED: [Status.VERIFIED, Status.TRIAGED],
    }
    if status in path:
        for step in path[status]:
            transition(request, step, actor="system")
        request.refresh_from_db()
        return request
    for step in path[Status.TRIAGED]:
        transition(request, step, actor="system")
    officer = officer or user("officer")
    if status == Status.APPROVED:
        services.erasure_request_approve(request=request, officer=officer, reason="valid consent withdrawal")
    elif status == Status.REFUSED:
        services.erasure_request_refuse(request=request, officer=officer, legal_code="17(3)(e)", reason="pending litigation")
    else:
        raise ValueError(f"request_in does not build {status}")
    request.refresh_from_db()
    return request


def api_client(account: User | None) -> Any:
    """A DRF test client authenticated with a fresh token for `account` (anonymous when None)."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    if account is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=account).key}")
    return client


def tampered_certificate(envelope: bytes) -> bytes:
    """The same DSSE signature over a changed payload: the new model version claims another hash."""
    document = json.loads(envelope)
    payload = json.loads(base64.b64decode(document["payload"]))
    payload["models"][0]["after"]["sha256"] = "0" * 64
    document["payload"] = base64.b64encode(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).decode()
    return json.dumps(document).encode()
