"""The append step as one PostgreSQL function (see compliance/audit/pgappend.py); nothing on SQLite."""

from django.db import migrations

from compliance.audit.pgappend import drop_sql, install_sql


def install(apps, schema_editor):  # type: ignore[no-untyped-def]
    for statement in install_sql(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


def remove(apps, schema_editor):  # type: ignore[no-untyped-def]
    for statement in drop_sql(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_witness_cosignatures")]
    operations = [migrations.RunPython(install, remove)]
