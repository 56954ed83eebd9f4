"""Shared fixtures: personas, request factories, and the audit-trigger-aware flush for transactional tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Tests must never reach the network for models (transformers / huggingface_hub honour these).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Property tests check behaviour, not speed: on 2 shared cores (the two-process FSDP tests run beside
# them) one slow draw of a few milliseconds' work took 1.2 s and failed Hypothesis's timing health
# check. Wall-clock limits are off for every property test; speed is the benchmarks' business.
settings.register_profile("shared-cpu", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-cpu")


def _django_active(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.pluginmanager.hasplugin("django"))


@pytest.fixture(scope="session", autouse=True)
def _flush_keeps_audit_triggers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests empty every table between tests (TRUNCATE on PostgreSQL, DELETE on SQLite),
    which the append-only triggers refuse, as they must in production. For the test database only,
    drop the triggers around the flush and reinstall them straight after."""
    if not _django_active(request):  # pure-library runs (`-p no:django`): nothing to patch
        yield
        return
    # Through the backends' base modules: importing an operations module first is a circular import.
    from django.db.backends.postgresql import base as postgresql_base
    from django.db.backends.sqlite3 import base as sqlite_base

    PostgresOperations = postgresql_base.DatabaseOperations
    SqliteOperations = sqlite_base.DatabaseOperations

    from compliance.audit.triggers import drop_sql, install_sql

    # Patched on the classes: every thread (the live server's too) has its own connection objects.
    originals = []
    for ops_class in (PostgresOperations, SqliteOperations):
        original = ops_class.sql_flush

        def sql_flush(self: Any, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False, _o: Any = original) -> list[str]:
            statements = _o(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
            vendor = self.connection.vendor
            return [*drop_sql(vendor), *statements, *install_sql(vendor)]

        ops_class.sql_flush = sql_flush  # type: ignore[method-assign]
        originals.append((ops_class, original))
    yield
    for ops_class, original in originals:
        ops_class.sql_flush = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _isolated_data_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test session writes keys, mail and artifacts under its own temporary folder."""
    if not _django_active(request):
        return
    settings = request.getfixturevalue("settings")
    base = tmp_path_factory.getbasetemp() / "data"
    settings.AUDIT_SIGNING_KEY_FILE = base / "secrets" / "audit_signing.key"
    settings.AUDIT_KEYRING_FILE = base / "secrets" / "audit_keyring.json"
    settings.PDF_SIGNING_KEY_FILE = base / "secrets" / "pdf_signing.key"
    settings.PDF_SIGNING_CERTS_FILE = base / "secrets" / "pdf_signing_certs.pem"
    # The signer's record of its newest checkpoint belongs with the database it signed, and each test
    # has its own database state: a shared record would make the signer refuse the next test's log.
    settings.AUDIT_SIGNED_HEAD_FILE = base / "audit" / f"signed-head-{uuid.uuid4().hex}.note"
    settings.ARTIFACT_ROOT = base / "artifacts"
    settings.KEYSTORE_PATH = base / "keystore" / "keys.sqlite3"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture(autouse=True)
def _clear_rate_limits(request: pytest.FixtureRequest) -> Iterator[None]:
    if not _django_active(request):
        yield
        return
    settings = request.getfixturevalue("settings")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker and settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        # cache.clear() flushes a whole Redis database: give each xdist worker its own.
        base = settings.CACHES["default"]["LOCATION"].rsplit("/", 1)[0]
        settings.CACHES = {
            "default": {"BACKEND": settings.CACHES["default"]["BACKEND"], "LOCATION": f"{base}/{10 + int(worker[2:] or 0)}"}
        }
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
