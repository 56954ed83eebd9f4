# ruff: noqa: F811 - pytest fixtures imported from tests.integration.conftest and named as arguments
"""The compose stack, started as local processes: each service's own command and environment from
docker-compose.yml (and the .env scripts/compose-init writes), the same start order and the same
health checks, against the local PostgreSQL and Redis. A request filed through the web process goes
all the way to a certificate, and the portal's CSS is served.

This project's development machines have the Docker client but no Docker engine, so the test runs what
the containers would run: host names (postgres, redis, witness) become 127.0.0.1, container paths
(/srv/..., /run/secrets/...) a temporary directory, fixed ports free ones. What it cannot show is the
image build itself. Speed-ups for the tiny model (batch window, checkpoint interval, a short unlearning
spec and the integration tests' attack policy) are plain environment variables a deployment may set.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import DEMO_CONFIG, POLICY, SPEC, demo_model_dir  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("compose")]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
APP_SERVICES = ("web", "worker-cpu", "worker-gpu", "beat", "witness")
PASSWORD = "correct horse battery staple 7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(self, tmp: Path, owner_url: str, app_url: str, app_role: str, redis_base: str) -> None:
        self.tmp = tmp
        self.web_port, self.witness_port = _free_port(), _free_port()
        self.site = f"http://127.0.0.1:{self.web_port}"
        self.replacements = [
            ("postgres://compliance@postgres:5432/compliance", owner_url),
            ("postgres://compliance_app@postgres:5432/compliance", app_url),
            ("compliance_app", app_role),
            ("redis://redis:6379/0", f"{redis_base}/14"),
            ("redis://redis:6379/1", f"{redis_base}/13"),
            ("http://witness:8380", f"http://127.0.0.1:{self.witness_port}"),
            ("0.0.0.0:8380", f"127.0.0.1:{self.witness_port}"),
            ("127.0.0.1:8380", f"127.0.0.1:{self.witness_port}"),
            ("0.0.0.0:8000", f"127.0.0.1:{self.web_port}"),
            ("127.0.0.1:8000", f"127.0.0.1:{self.web_port}"),
            ("/srv/compliance", str(tmp / "data")),
            ("/srv/artifacts", str(tmp / "artifacts")),
            ("/srv/witness", str(tmp / "witness")),
            ("/srv/keystore", str(tmp / "keystore")),
            ("/srv/keys", str(tmp / "keys")),
            ("/run/secrets/", str(tmp / "secrets") + "/"),
            ("$$HOSTNAME", socket.gethostname()),
        ]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def translate(self, value: Any) -> str:
        text = str(value)
        for old, new in self.replacements:
            text = text.replace(old, new)
        return text

    def env(self, service: dict[str, Any], dot_env: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "REDIS_", "COMPLIANCE_", "AUDIT_", "PDF_"))}
        env.update({k: self.translate(v) for k, v in dot_env.items()})
        env.update({k: self.translate(v) for k, v in (service.get("environment") or {}).items()})
        env.update(
            HOSTNAME=socket.gethostname(), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", DATABASE_CONN_MAX_AGE="0",
            # The tiny model's speed-ups (see the module doc).
            JOB_BATCH_WAIT_S="1", AUDIT_CHECKPOINT_INTERVAL_S="2", JOB_HEARTBEAT_TIMEOUT_S="60",
            VERIFICATION_POLICY_FILE=str(POLICY), UNLEARNING_SPEC_DEFAULTS=json.dumps(SPEC), UNLEARNING_DEVICE="cpu",
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        )
        return env

    def argv(self, command: list[Any]) -> list[str]:
        words = [self.translate(word) for word in command]
        if words[0] == "python":
            return [sys.executable, *words[1:]]
        if words[0] in ("gunicorn", "celery"):
            return [sys.executable, "-m", words[0], *words[1:]]
        return words

    def start(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        process = subprocess.Popen(self.argv(COMPOSE["services"][name]["command"]), cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def healthy(self, name: str, env: dict[str, str]) -> bool:
        test = COMPOSE["services"][name]["healthcheck"]["test"]
        words = shlex.split(self.translate(test[1])) if test[0] == "CMD-SHELL" else [self.translate(w) for w in test[1:]]
        argv = self.argv(words)
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=60).returncode == 0

    def logs(self) -> str:
        out = []
        for name in self.processes:
            text = (self.tmp / f"{name}.log").read_text(errors="replace")
            out.append(f"--- {name} (last 40 lines)\n" + "\n".join(text.splitlines()[-40:]))
        return "\n".join(out)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _wait(predicate: Callable[[], Any], *, timeout: float, what: str, stack: Stack, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for name, process in stack.processes.items():
            if name != "migrate" and process.poll() is not None:
                pytest.fail(f"{name} exited ({process.returncode}) while waiting for {what}\n{stack.logs()}")
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{stack.logs()}")


@pytest.fixture
def stack(tmp_path: Path, demo_model_dir: Path) -> Iterator[tuple[Stack, dict[str, str], str]]:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the stack needs PostgreSQL (DATABASE_URL=postgres://...)")
    import psycopg
    import redis

    redis_base = "redis://127.0.0.1:6379"
    try:
        redis.Redis.from_url(f"{redis_base}/13", socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no Redis: {type(exc).__name__}")
    name = f"compose_stack_{secrets.token_hex(4)}"
    app_role = f"stack_app_{secrets.token_hex(4)}"  # roles are cluster-wide: one per run
    admin = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    server = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    url = f"postgres://{db['USER']}@{server}"
    app_url = f"postgres://{app_role}@{server}"
    for n in (13, 14):
        redis.Redis.from_url(f"{redis_base}/{n}").flushdb()

    from scripts import compose_init

    compose_init.ensure_secrets(tmp_path / "secrets")
    s = Stack(tmp_path, url, app_url, app_role, redis_base)
    example = (ROOT / ".env.example").read_text()
    local = compose_init.local_env(example, site_url=s.site, vkey=compose_init.witness_vkey(tmp_path / "secrets"))
    dot_env = dict(line.split("=", 1) for line in local.splitlines() if line and not line.startswith("#") and "=" in line)
    try:
        yield s, dot_env, url
    finally:
        s.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {app_role}")
        for n in (13, 14):
            redis.Redis.from_url(f"{redis_base}/{n}").flushdb()


def _row(url: str, sql: str, *params: Any) -> Any:
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://")) as conn:
        return conn.execute(sql, params).fetchone()


def _form(session: Any, url: str, data: dict[str, str]) -> Any:
    page = session.get(url)
    assert page.status_code == 200, (url, page.status_code)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, url
    return session.post(url, data={**data, "csrfmiddlewaretoken": token.group(1)}, headers={"Referer": url}, allow_redirects=False)


def _mail(stack: Stack, marker: str) -> str:
    folder = stack.tmp / "data" / "mail"
    texts = [p.read_text() for p in sorted(folder.glob("*"), key=lambda p: p.stat().st_mtime)] if folder.exists() else []
    links = [m for text in texts for m in re.findall(r"https?://\S+", text) if marker in m]
    return links[-1] if links else ""


def test_the_stack_comes_up_healthy_and_certifies_a_request(stack: tuple[Stack, dict[str, str], str], demo_model_dir: Path) -> None:
    import requests

    s, dot_env, url = stack
    services = COMPOSE["services"]
    # 1. The one-shot preparation, then every app service once it has completed (depends_on).
    migrate = s.start("migrate", s.env(services["migrate"], dot_env))
    assert migrate.wait(timeout=300) == 0, s.logs()
    envs = {name: s.env(services[name], dot_env) for name in APP_SERVICES}
    for name in APP_SERVICES:
        s.start(name, envs[name])
    for name in APP_SERVICES:
        _wait(lambda name=name: s.healthy(name, envs[name]), timeout=180, what=f"{name} to be healthy", stack=s, every=2.0)

    # 2. A model and corpus registered, an officer account (what an operator does after the first start).
    from unlearning_worker.demo.trainer import DemoModelConfig

    person = DemoModelConfig(**DEMO_CONFIG).corpus().people[0]
    setup = (
        "from pathlib import Path\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.contrib.auth.models import Group\n"
        "from compliance.demo.registration import register_demo\n"
        "from unlearning_worker.demo.trainer import DemoModelConfig\n"
        f"register_demo(config=DemoModelConfig(**{DEMO_CONFIG!r}), cache_dir=Path({str(demo_model_dir.parent)!r}), retain_people=4)\n"
        f"u = get_user_model().objects.create_user('officer.compose', password={PASSWORD!r})\n"
        "u.groups.add(Group.objects.get(name='officer'))\n"
    )
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", setup], cwd=ROOT, env=envs["web"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    # 3. The person files the request on the public form and follows the e-mailed link.
    subject = requests.Session()
    sent = _form(subject, f"{s.site}/request/", {
        "full_name": person.name, "email": person.email, "phone": person.phone, "ground": "17(1)(b)",
        "details": "My contact details in your training data.", "confirm": "on", "other_identifiers": "",
    })
    assert sent.status_code == 302, sent.text[:2000]
    confirm = _wait(lambda: _mail(s, "/confirm/"), timeout=30, what="the confirmation e-mail", stack=s)
    assert _form(subject, confirm, {}).status_code == 302
    reference = _row(url, "SELECT reference FROM erasure_erasurerequest")[0]
    # The scan runs on worker-cpu.
    _wait(lambda: _row(url, "SELECT status FROM erasure_erasurerequest")[0] == "triaged", timeout=120,
          what="the corpus scan (worker-cpu)", stack=s)

    # 4. The officer approves in the portal; beat dispatches; worker-gpu unlearns and attacks the result.
    officer = requests.Session()
    login = _form(officer, f"{s.site}/portal/login/", {"username": "officer.compose", "password": PASSWORD})
    assert login.status_code == 302, login.text[:2000]
    detail = f"{s.site}/portal/requests/{reference}/"
    page = officer.get(detail)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    approved = officer.post(f"{detail}approve/", data={"csrfmiddlewaretoken": token, "reason": "Valid.", "confirm": "on"},
                            headers={"Referer": detail}, allow_redirects=False)
    assert approved.status_code == 302
    status = _wait(lambda: (lambda st: st if st in ("verifying", "needs_decision") else None)(
        _row(url, "SELECT status FROM erasure_erasurerequest")[0]), timeout=400, what="unlearning and verification (beat, worker-gpu)", stack=s,
        every=2.0)
    assert status == "verifying", s.logs()

    # 5. Sign-off: the certificate is issued once the witness has cosigned a checkpoint (beat).
    page = officer.get(detail)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    officer.post(f"{detail}sign-off/", data={"csrfmiddlewaretoken": token}, headers={"Referer": detail}, allow_redirects=False)
    _wait(lambda: _row(url, "SELECT count(*) FROM certificates_certificate")[0] == 1, timeout=120,
          what="the certificate (witness cosignature, beat)", stack=s, every=2.0)
    assert _row(url, "SELECT status FROM erasure_erasurerequest")[0] == "completed"
    assert _row(url, "SELECT count(*) FROM audit_auditcosignature")[0] >= 1

    # 6. The subject's status page offers the certificate; the portal's CSS is served by the web process.
    status_link = _wait(lambda: _mail(s, "/status/") if "certificate" in " ".join(
        p.read_text() for p in (s.tmp / "data" / "mail").glob("*")) else "", timeout=30, what="the completion e-mail", stack=s)
    page = subject.get(status_link)
    assert page.status_code == 200 and 'id="certificate-json"' in page.text
    css = re.search(r'<link rel="stylesheet" href="([^"]+)"', page.text)
    assert css, page.text[:500]
    sheet = subject.get(s.site + css.group(1))
    assert sheet.status_code == 200 and sheet.headers["Content-Type"].startswith("text/css") and ".badge" in sheet.text
