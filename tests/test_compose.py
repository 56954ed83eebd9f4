"""docker-compose.yml is consistent: every service has what it needs to come up healthy.

Read as YAML (anchors resolved): secrets referenced are defined and created by scripts/compose-init;
every *_FILE under /run/secrets/ names a secret the service mounts; every depends_on target exists with
a condition it can meet (service_healthy: the target has a health check; service_completed_successfully:
the target is a one-shot that does not restart); every long-running service has a health check; the
database uses password authentication; the web port is on the loopback interface unless WEB_BIND says
otherwise; the GPU override adds the reservation to the service that exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
GPU = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ONE_SHOT = {name for name, svc in SERVICES.items() if svc.get("restart") == "no"}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_the_services_of_the_stack() -> None:
    assert set(SERVICES) == {"migrate", "web", "worker-cpu", "worker-gpu", "beat", "witness", "postgres", "redis"}
    assert ONE_SHOT == {"migrate"}


def test_every_secret_is_defined_and_created_by_compose_init() -> None:
    from scripts.compose_init import RANDOM_SECRETS

    defined = set(COMPOSE["secrets"])
    created = {*RANDOM_SECRETS, "witness_key"}
    assert defined == created
    for name, svc in SERVICES.items():
        assert set(svc.get("secrets") or []) <= defined, name
        for file in COMPOSE["secrets"].values():
            assert file["file"].startswith("./secrets/")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_secret_file_a_service_reads_is_mounted(name: str) -> None:
    service = SERVICES[name]
    mounted = set(service.get("secrets") or [])
    command = " ".join(map(str, service.get("command") or []))
    for variable, value in _environment(service).items():
        if value.startswith("/run/secrets/"):
            assert value.removeprefix("/run/secrets/") in mounted, f"{name}: {variable} reads an unmounted secret"
    for path in re.findall(r"/run/secrets/(\w+)", command):
        assert path in mounted, f"{name}: its command reads the unmounted secret {path}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_conditions_can_be_met(name: str) -> None:
    for target, rule in (SERVICES[name].get("depends_on") or {}).items():
        assert target in SERVICES, f"{name} depends on unknown {target}"
        condition = rule["condition"]
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy, which has no health check"
        elif condition == "service_completed_successfully":
            assert target in ONE_SHOT, f"{name} waits for {target} to complete, which restarts"
        else:
            pytest.fail(f"{name}: unexpected condition {condition} on {target}")


def test_app_services_start_after_the_one_shot_preparation() -> None:
    for name in ("web", "worker-cpu", "worker-gpu", "beat", "witness"):
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert SERVICES["migrate"]["command"][:3] == ["python", "manage.py", "deploy_prepare"]


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_every_long_running_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_database_uses_password_authentication_and_the_app_a_least_privilege_role() -> None:
    postgres = _environment(SERVICES["postgres"])
    assert "POSTGRES_HOST_AUTH_METHOD" not in postgres
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    migrate = _environment(SERVICES["migrate"])
    assert migrate["DATABASE_URL"].startswith("postgres://compliance@")  # the owner: migrations, triggers
    assert migrate["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    command = SERVICES["migrate"]["command"]
    assert command[command.index("--app-role") + 1] == "compliance_app"
    for name in ("web", "worker-cpu", "worker-gpu", "beat"):
        env = _environment(SERVICES[name])
        assert env["DATABASE_URL"].startswith("postgres://compliance_app@"), name
        assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_app_password", name
        assert "postgres_password" not in SERVICES[name]["secrets"], f"{name} must not hold the owner's password"
    for name in ("migrate", "web", "worker-cpu", "worker-gpu", "beat"):
        url = _environment(SERVICES[name])["DATABASE_URL"]
        assert ":" not in url.split("//", 1)[1].split("@")[0], "no password in the URL"


def test_web_listens_on_the_loopback_by_default() -> None:
    assert SERVICES["web"]["ports"] == ["${WEB_BIND:-127.0.0.1}:8000:8000"]
    assert not any("ports" in svc for name, svc in SERVICES.items() if name != "web")


def test_gpu_override_reserves_a_gpu_for_the_existing_worker() -> None:
    assert set(GPU["services"]) == {"worker-gpu"}
    reservation = GPU["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert reservation["driver"] == "nvidia" and reservation["capabilities"] == ["gpu"]
    assert "deploy" not in SERVICES["worker-gpu"]  # a host without a GPU starts the base file


def test_compose_init_writes_secrets_once_and_a_local_env(tmp_path: Path) -> None:
    from scripts import compose_init

    assert compose_init.main(["--root", str(tmp_path)]) == 0
    first = {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()}
    assert set(first) == set(COMPOSE["secrets"])
    assert all((tmp_path / "secrets" / n).stat().st_mode & 0o077 == 0 for n in first)
    assert compose_init.main(["--root", str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()} == first  # never overwritten
    env = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines() if line and not line.startswith("#"))
    assert env["BEHIND_TLS_PROXY"] == "false" and env["SITE_URL"] == "http://127.0.0.1:8000"
    assert "EMAIL_HOST" not in env and "EMAIL_HOST_PASSWORD_FILE" not in env  # no secret that is not defined
    assert env["AUDIT_WITNESSES"].startswith("http://witness:8380 witness.local/compose+")
    from proofs.cosignature import WitnessKey

    assert env["AUDIT_WITNESSES"].split(" ", 1)[1] == WitnessKey.load(tmp_path / "secrets" / "witness_key").cosigner.to_vkey()


def test_the_witness_cannot_read_the_signing_keys() -> None:
    """The witness attests the log; a witness able to read the log's signing key could sign a fork itself."""
    env = _environment(SERVICES["web"])
    key_dirs = {str(Path(env[name]).parent) for name in ("AUDIT_SIGNING_KEY_FILE", "PDF_SIGNING_KEY_FILE")}
    witness_mounts = {str(v).split(":")[1] for v in SERVICES["witness"].get("volumes", [])}
    assert key_dirs == {"/srv/keys"}
    assert not any(d == m or d.startswith(m.rstrip("/") + "/") for d in key_dirs for m in witness_mounts), witness_mounts
    assert "/srv/keys" in {str(v).split(":")[1] for v in SERVICES["web"]["volumes"]}
