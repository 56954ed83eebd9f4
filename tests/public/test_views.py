import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from compliance.erasure import services
from compliance.erasure.models import ErasureRequest, Status
from tests import factories

pytestmark = pytest.mark.django_db

VALID = {
    "full_name": "Ada Quartermaine",
    "email": "ada.quartermaine@example.com",
    "phone": "+44 20 7946 0018",
    "other_identifiers": "AQ-7788-XZ",
    "details": "Forum biography",
    "ground": "17(1)(b)",
    "confirm": "on",
}


def test_form_page_renders(client: Client) -> None:
    response = client.get(reverse("public:request"))
    assert response.status_code == 200 and b"Request erasure" in response.content


def test_submit_then_confirm_then_status(client: Client, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("public:request"), VALID)
    assert response.status_code == 302 and response.url == reverse("public:sent")
    confirm_url = next(line for line in mail.outbox[0].body.splitlines() if "/confirm/" in line).split("testserver")[-1]
    confirm_url = confirm_url[confirm_url.index("/confirm/"):]
    assert client.get(confirm_url).status_code == 200  # GET only shows the button
    assert ErasureRequest.objects.get().status == Status.RECEIVED
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(confirm_url)
    assert response.status_code == 302 and "/status/" in response.url
    page = client.get(response.url)
    assert page.status_code == 200 and b"Your e-mail address is confirmed" in page.content
    assert b"ada.quartermaine" not in response.url.encode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("email", ""),
        ("full_name", ""),
        ("full_name", "x" * 201),
        ("full_name", "Ada\x00Q"),
        ("phone", "call me maybe"),
        ("ground", "17(1)(z)"),
        ("details", "d" * 2001),
        ("other_identifiers", "\n".join(f"id{i}" for i in range(11))),
        ("confirm", ""),
    ],
)
def test_bad_fields_get_a_400_page_and_change_nothing(client: Client, field: str, value: str) -> None:
    data = dict(VALID)
    data[field] = value
    response = client.post(reverse("public:request"), data)
    assert response.status_code == 400
    assert b"errorlist" in response.content
    assert ErasureRequest.objects.count() == 0


def test_oversized_body_is_refused(client: Client) -> None:
    data = dict(VALID, details="x" * 200_000)
    response = client.post(reverse("public:request"), data)
    assert response.status_code == 413
    assert ErasureRequest.objects.count() == 0


def test_missing_csrf_is_refused(django_capture_on_commit_callbacks) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("public:request"), VALID)
    assert response.status_code == 403 and b"security token" in response.content
    assert ErasureRequest.objects.count() == 0


def test_rate_limit_gives_429_with_retry_after(client: Client, settings) -> None:
    settings.RATE_LIMIT_SUBMIT_PER_IP = 2
    for i in range(2):
        client.post(reverse("public:request"), dict(VALID, email=f"p{i}@example.com"))
    response = client.post(reverse("public:request"), dict(VALID, email="p9@example.com"))
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert ErasureRequest.objects.count() == 2


@pytest.mark.parametrize("token", ["forged", "eyJhbGciOi.forged.sig", "a" * 300])
def test_forged_status_link_reveals_nothing(client: Client, token: str) -> None:
    request = factories.submit(factories.ADA)
    response = client.get(reverse("public:status", args=[token]))
    assert response.status_code == 404
    assert request.reference.encode() not in response.content


def test_tampered_status_link_of_another_request_is_refused(client: Client) -> None:
    mine = factories.submit()
    token = services.status_token(mine)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get(reverse("public:status", args=[tampered])).status_code == 404


def test_withdraw_from_status_page(client: Client) -> None:
    request = factories.submit()
    token = services.status_token(request)
    response = client.post(reverse("public:withdraw", args=[token]))
    assert response.status_code == 302
    request.refresh_from_db()
    assert request.status == Status.WITHDRAWN
    again = client.post(reverse("public:withdraw", args=[token]))
    assert again.status_code == 409


def test_withdraw_needs_post(client: Client) -> None:
    request = factories.submit()
    assert client.get(reverse("public:withdraw", args=[services.status_token(request)])).status_code == 405


def test_reused_confirmation_link_shows_error(client: Client, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("public:request"), VALID)
    line = next(line for line in mail.outbox[0].body.splitlines() if "/confirm/" in line)
    url = line[line.index("/confirm/"):]
    with django_capture_on_commit_callbacks(execute=False):
        client.post(url)
    response = client.post(url)
    assert response.status_code == 400 and b"already been used" in response.content


def test_healthz_answers_ok_and_names_a_failed_dependency(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = client.get("/healthz")
    assert ok.status_code == 200 and ok.json() == {"ok": True, "failed": []} and ok["Cache-Control"] == "no-store"

    class Down:
        def set(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("redis is down")

    monkeypatch.setattr("django.core.cache.cache", Down())
    bad = client.get("/healthz")
    assert bad.status_code == 503 and bad.json() == {"ok": False, "failed": ["cache"]}
    assert b"redis is down" not in bad.content
