"""Abuse controls and secure defaults: the client address behind trusted proxies, login lockout on the
portal and the admin, the Content-Security-Policy and no-store on pages with personal data."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from compliance.common.net import client_ip
from compliance.common.ratelimit import RateLimited, hit
from tests import factories

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple 9"


def _request(remote: str, forwarded: str | None = None) -> Any:
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def test_without_trusted_proxies_x_forwarded_for_is_ignored(settings: Any) -> None:
    settings.TRUSTED_PROXIES = []
    assert client_ip(_request("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


def test_behind_a_trusted_proxy_the_client_is_the_nearest_untrusted_hop(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_ip(_request("10.0.0.2", "198.51.100.1")) == "198.51.100.1"
    # Two proxies in the chain: both skipped.
    assert client_ip(_request("10.0.0.2", "198.51.100.1, 10.0.0.7")) == "198.51.100.1"
    # A client that writes its own X-Forwarded-For cannot choose its bucket: the proxy appends the real one.
    assert client_ip(_request("10.0.0.2", "1.2.3.4, 198.51.100.1")) == "198.51.100.1"
    # A peer that is not a trusted proxy is the client, whatever it claims.
    assert client_ip(_request("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    # A malformed hop falls back to the proxy, never to text the client chose.
    assert client_ip(_request("10.0.0.2", "not-an-ip")) == "10.0.0.2"


def test_two_clients_behind_one_trusted_proxy_get_separate_buckets(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.1"]
    alice, bob = _request("10.0.0.1", "198.51.100.1"), _request("10.0.0.1", "198.51.100.2")
    for _ in range(3):
        hit("login-ip", client_ip(alice), limit=3, window_s=900)
    with pytest.raises(RateLimited):
        hit("login-ip", client_ip(alice), limit=3, window_s=900)
    hit("login-ip", client_ip(bob), limit=3, window_s=900)  # not limited by Alice's attempts


@pytest.fixture
def officer() -> Any:
    user = factories.user("officer", username="lockout.officer")
    user.set_password(PASSWORD)
    user.is_staff = True
    user.save()
    return user


@pytest.mark.parametrize("url", ["/portal/login/", "/admin/login/"])
def test_a_login_locks_after_the_failure_limit_even_for_the_right_password(client: Client, settings: Any, officer: Any, url: str) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    settings.RATE_LIMIT_LOGIN_PER_IP = 1000
    for _ in range(3):
        response = client.post(url, {"username": officer.username, "password": "wrong"})
        assert response.status_code in (200, 429)
    locked = client.post(url, {"username": officer.username, "password": PASSWORD})
    assert locked.status_code == 429 and b"Too many failed logins" in locked.content
    assert officer.username.encode() not in locked.content
    assert "_auth_user_id" not in client.session
    # Another account from the same address is not locked (lockout is per account and address).
    other = factories.user("officer", username="other.officer")
    other.set_password(PASSWORD)
    other.save()
    assert client.post("/portal/login/", {"username": "other.officer", "password": PASSWORD}).status_code == 302


def test_a_successful_login_resets_the_count(client: Client, settings: Any, officer: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        client.post("/portal/login/", {"username": officer.username, "password": "wrong"})
    assert client.post("/portal/login/", {"username": officer.username, "password": PASSWORD}).status_code == 302
    client.logout()
    for _ in range(2):
        client.post("/portal/login/", {"username": officer.username, "password": "wrong"})
    assert client.post("/portal/login/", {"username": officer.username, "password": PASSWORD}).status_code == 302


def test_every_page_carries_a_content_security_policy(client: Client) -> None:
    for url in ("/", "/request/", "/portal/login/", "/verify/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy


def test_pages_with_personal_data_are_not_stored_and_public_documents_keep_their_caching(client: Client, officer: Any) -> None:
    from compliance.erasure import services as erasure_services

    request = factories.submit()
    assert client.get(f"/status/{erasure_services.status_token(request)}/")["Cache-Control"] == "no-store"
    client.force_login(officer)
    assert client.get(reverse("portal:detail", args=[request.reference]))["Cache-Control"] == "no-store"
    assert client.get("/portal/")["Cache-Control"] == "no-store"
    assert client.get("/audit/keys/")["Cache-Control"].startswith("public")
