"""Database triggers that make the audit tables append-only.

PostgreSQL: row triggers refuse UPDATE and DELETE, a statement trigger refuses TRUNCATE, and each is
set ENABLE ALWAYS so that `session_replication_role = replica` (which silences ordinary triggers)
does not bypass them. SQLite: BEFORE UPDATE / BEFORE DELETE triggers that RAISE(ABORT).
A superuser can still drop the triggers; `audit_verify` is what catches an edit made that way.
"""

from __future__ import annotations

APPEND_ONLY_TABLES = ("audit_auditleaf", "audit_auditnode", "audit_auditcheckpoint")

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def install_sql(vendor: str) -> list[str]:
    statements: list[str] = []
    if vendor == "postgresql":
        statements.append(_PG_FUNCTION)
        for table in APPEND_ONLY_TABLES:
            statements += [
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_reject_change();",
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();",
                f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_change;",
                f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate;",
            ]
    elif vendor == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for op in ("UPDATE", "DELETE"):
                statements.append(
                    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {op} on {table} refused'); END;"
                )
    else:
        raise RuntimeError(f"no append-only triggers for database vendor {vendor!r}")
    return statements


def drop_sql(vendor: str) -> list[str]:
    statements: list[str] = []
    for table in APPEND_ONLY_TABLES:
        if vendor == "postgresql":
            statements += [
                f"DROP TRIGGER IF EXISTS {table}_no_change ON {table};",
                f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};",
            ]
        else:
            statements += [f"DROP TRIGGER IF EXISTS {table}_no_update;", f"DROP TRIGGER IF EXISTS {table}_no_delete;"]
    return statements
