"""The application's least-privilege PostgreSQL role, created or updated by the owner role.

    manage.py db_app_role NAME [--password-file FILE]

Run as the role that owns the schema (the one migrations run as: compose's one-shot `migrate`). NAME
can log in and read and write rows, and nothing else: no superuser, no CREATE on the schema (no DDL),
not the owner of any table, so it can neither drop nor disable the audit log's append-only triggers
(ALTER TABLE and DROP TRIGGER need ownership) nor TRUNCATE anything (never granted). On the audit
tables it gets SELECT and INSERT only; the head row it updates is a separate table. Default privileges
give it the same rights on tables later migrations create. Idempotent; the password, when given, is set
each time (rotation).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from compliance.audit.triggers import APPEND_ONLY_TABLES

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def app_role_sql(name: str, owner: str, database: str) -> list[str]:
    """The statements, in order (identifiers are checked by the caller against _NAME)."""
    rows = "SELECT, INSERT, UPDATE, DELETE"
    statements = [
        f"ALTER ROLE {name} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN",
        f'GRANT CONNECT ON DATABASE "{database}" TO {name}',
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {name}",
        f"GRANT {rows} ON ALL TABLES IN SCHEMA public TO {name}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {name}",
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public GRANT {rows} ON TABLES TO {name}',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {name}',
    ]
    statements += [f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {name}" for table in APPEND_ONLY_TABLES]
    return statements


class Command(BaseCommand):
    help = "Create or update the application's least-privilege PostgreSQL role (run as the schema owner)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", help="role name (lower case letters, digits, _)")
        parser.add_argument("--password-file", type=Path, help="set the role's password from this file")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if not _NAME.match(name):
            raise CommandError("the role name must be lower case letters, digits and _ (at most 63)")
        if connection.vendor != "postgresql":
            raise CommandError("db_app_role needs PostgreSQL (the embedded SQLite set-up has no roles)")
        password = None
        if options["password_file"] is not None:
            try:
                password = options["password_file"].read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise CommandError(f"cannot read {options['password_file']}: {exc.strerror}") from exc
            if len(password) < 16:
                raise CommandError("the password file holds fewer than 16 characters")
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_database()")
            owner, database = cursor.fetchone()
            if name == owner:
                raise CommandError("the application role must not be the owner role")
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE ROLE {name} LOGIN")
            for statement in app_role_sql(name, owner, database):
                cursor.execute(statement)
            if password is not None:
                # ALTER ROLE takes no bind parameters: the password goes in as a quoted literal.
                from psycopg import sql

                cursor.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        self.stdout.write(f"role {name}: rows only (no DDL, no TRUNCATE, audit tables append-only) in {database}")
