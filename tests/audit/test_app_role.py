"""The application's PostgreSQL role (manage.py db_app_role): rows only. It cannot drop or disable the
audit log's append-only triggers, edit or truncate the audit tables, create tables, or switch triggers
off with session_replication_role; it can do what the service does (read and write its rows)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def app_role() -> Iterator[Any]:
    if connection.vendor != "postgresql":
        pytest.skip("roles need PostgreSQL")
    import psycopg

    name = f"app_{secrets.token_hex(4)}"
    call_command("db_app_role", name)
    settings = connection.settings_dict
    conn = psycopg.connect(host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432, user=name,
                           dbname=settings["NAME"], autocommit=True)
    try:
        yield conn
    finally:
        conn.close()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {name}")
            cursor.execute(f"DROP ROLE {name}")


REFUSED = [
    "ALTER TABLE audit_auditleaf DISABLE TRIGGER ALL",
    "ALTER TABLE audit_auditleaf DISABLE TRIGGER audit_auditleaf_no_change",
    "DROP TRIGGER audit_auditleaf_no_change ON audit_auditleaf",
    "DROP FUNCTION audit_reject_change() CASCADE",
    "UPDATE audit_auditleaf SET event_type = 'x'",
    "DELETE FROM audit_auditcheckpoint",
    "TRUNCATE audit_auditnode",
    "CREATE TABLE evil (x int)",
    "DROP TABLE erasure_erasurerequest",
    "SET session_replication_role = replica",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_the_app_role_cannot(app_role: Any, statement: str) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_role.execute(statement)


def test_the_app_role_reads_and_writes_its_rows(app_role: Any) -> None:
    app_role.execute("SELECT count(*) FROM audit_auditleaf").fetchone()
    app_role.execute("UPDATE jobs_unlearningjob SET phase = phase WHERE false")
    app_role.execute("DELETE FROM django_session WHERE false")
    with app_role.transaction():
        app_role.execute("INSERT INTO django_session (session_key, session_data, expire_date) VALUES ('k', 'd', now())")
        app_role.execute("DELETE FROM django_session WHERE session_key = 'k'")
    flags = app_role.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
    assert flags == (False, False, False)


def test_bad_role_names_and_the_owner_are_refused() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("roles need PostgreSQL")
    with pytest.raises(CommandError, match="lower case"):
        call_command("db_app_role", "Robert'); DROP TABLE x;--")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        owner = cursor.fetchone()[0]
    with pytest.raises(CommandError, match="must not be the owner"):
        call_command("db_app_role", owner)
