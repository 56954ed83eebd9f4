"""Checkpoints form a chain: each row keeps the previous checkpoint's size and the consistency proof.

Both columns are nullable with no default so that SQLite adds them with ALTER TABLE ADD COLUMN
instead of rebuilding the table, which would drop its append-only triggers. Existing rows keep
NULL: they were signed before the chain existed and audit_verify reports them as unlinked.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_head_frontier")]

    operations = [
        migrations.AddField(
            model_name="auditcheckpoint",
            name="previous_size",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="consistency_proof",
            field=models.BinaryField(blank=True, null=True),
        ),
    ]
