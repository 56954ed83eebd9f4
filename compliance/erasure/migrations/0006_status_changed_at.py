import django.utils.timezone
from django.db import migrations, models
from django.db.models import F


def backfill(apps, schema_editor):
    # The best estimate for rows that predate the field: their last update.
    apps.get_model("erasure", "ErasureRequest").objects.update(status_changed_at=F("updated_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("erasure", "0005_escalation"),
    ]

    operations = [
        migrations.AddField(
            model_name="erasurerequest",
            name="status_changed_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
