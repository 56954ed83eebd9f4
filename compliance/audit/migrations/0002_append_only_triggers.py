"""Append-only triggers on the audit tables (see compliance/audit/triggers.py)."""

from django.db import migrations

from compliance.audit.triggers import drop_sql, install_sql


def install(apps, schema_editor):  # type: ignore[no-untyped-def]
    for statement in install_sql(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


def remove(apps, schema_editor):  # type: ignore[no-untyped-def]
    for statement in drop_sql(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
