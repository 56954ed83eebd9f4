"""Deployment artefacts: the compose file validates, production settings pass `check --deploy`,
and settings refuse bad configuration with a message naming the variable."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proofs.cosignature import WitnessKey

ROOT = Path(__file__).resolve().parents[1]
WITNESS_VKEY = WitnessKey.generate("witness.example.org/w1").cosigner.to_vkey()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_compose_file_validates(tmp_path: Path) -> None:
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    (tmp_path / "secrets").mkdir()
    for name in ("django_secret_key", "field_encryption_key", "guard_hmac_key", "postgres_password", "witness_key"):
        (tmp_path / "secrets" / name).write_text("x\n")
    result = subprocess.run(["docker-compose", "config", "--services"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"migrate", "web", "worker-cpu", "worker-gpu", "beat", "witness", "postgres", "redis"}


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a production start: secrets, hosts, a witness (tests/test_demo_isolation.py too)."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(secrets.token_urlsafe(50))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_", "REDIS_URL"))}
    env.update(
        COMPLIANCE_ENV="production",
        COMPLIANCE_DATA_DIR=str(tmp_path / "data"),
        DJANGO_SECRET_KEY_FILE=str(secret_file),
        FIELD_ENCRYPTION_KEY=secrets.token_urlsafe(32),
        GUARD_HMAC_KEY=secrets.token_urlsafe(32),
        DJANGO_ALLOWED_HOSTS="privacy.example.org",
        REDIS_URL="redis://127.0.0.1:6379/15",
        DJANGO_SETTINGS_MODULE="compliance.settings",
        AUDIT_WITNESSES=f"http://witness:8380 {WITNESS_VKEY}",
    )
    env.update(extra)
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=production_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be true or false"),
        ({"FIELD_ENCRYPTION_KEY": ""}, "FIELD_ENCRYPTION_KEY (or FIELD_ENCRYPTION_KEY_FILE) must be set"),
        ({"DJANGO_SECRET_KEY_FILE": "/nonexistent/secret"}, "DJANGO_SECRET_KEY_FILE points to"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL scheme must be postgres or sqlite"),
        ({"JOB_BATCH_MAX_REQUESTS": "many"}, "JOB_BATCH_MAX_REQUESTS must be an integer"),
        ({"COMPLIANCE_ENV": "staging"}, "COMPLIANCE_ENV must be"),
        ({"AUDIT_CHECKPOINT_INTERVAL_S": "0"}, "AUDIT_CHECKPOINT_INTERVAL_S must be at least 1"),
        ({"AUDIT_CHECKPOINT_INTERVAL_S": "3601"}, "AUDIT_CHECKPOINT_INTERVAL_S must be at most 3600"),
        ({"AUDIT_CHECKPOINT_INTERVAL_S": "30s"}, "AUDIT_CHECKPOINT_INTERVAL_S must be an integer"),
        ({"AUDIT_CHECKPOINT_EVERY_S": "300"}, "AUDIT_CHECKPOINT_EVERY_S was renamed AUDIT_CHECKPOINT_INTERVAL_S"),
        ({"AUDIT_LOG_ORIGIN": "privacy.example.org/audit log"}, "AUDIT_LOG_ORIGIN must be a name without white space"),
        ({"AUDIT_LOG_ORIGIN": "privacy.example.org+log"}, "AUDIT_LOG_ORIGIN must be a name without white space"),
        ({"AUDIT_WITNESSES": ""}, "production needs AUDIT_WITNESSES"),
        ({"AUDIT_WITNESSES": "witness:8380 x"}, "AUDIT_WITNESSES entries must be"),
        ({"AUDIT_WITNESSES": "http://witness:8380 not-a-vkey"}, "AUDIT_WITNESSES: witness vkey must look like"),
        ({"AUDIT_WITNESS_QUORUM": "2"}, "AUDIT_WITNESS_QUORUM is 2 but only 1 witnesses are configured"),
        ({"FIELD_ENCRYPTION_KEY": "changeme-changeme-changeme-changeme"}, "FIELD_ENCRYPTION_KEY is too weak"),
        ({"GUARD_HMAC_KEY": "short"}, "GUARD_HMAC_KEY is too weak"),
        ({"REDIS_URL": ""}, "REDIS_URL must be set in production"),
    ],
)
def test_bad_configuration_fails_at_start_naming_the_variable(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    env = production_env(tmp_path, **extra)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
