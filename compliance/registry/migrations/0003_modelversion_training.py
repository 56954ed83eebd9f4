from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("registry", "0002_model_eval_set")]

    operations = [
        migrations.AddField(model_name="modelversion", name="training", field=models.JSONField(blank=True, default=dict)),
    ]
