"""The two portal roles: officers decide, reviewers read."""

from django.db import migrations


def create_roles(apps, schema_editor):  # type: ignore[no-untyped-def]
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.get(codename="view_erasurerequest", content_type__app_label="erasure")
    decide = Permission.objects.get(codename="decide_erasurerequest", content_type__app_label="erasure")
    add = Permission.objects.get(codename="add_erasurerequest", content_type__app_label="erasure")
    officer, _ = Group.objects.get_or_create(name="officer")
    officer.permissions.add(view, decide, add)
    reviewer, _ = Group.objects.get_or_create(name="reviewer")
    reviewer.permissions.add(view)
    api_client, _ = Group.objects.get_or_create(name="api-client")
    api_client.permissions.add(add)


class Migration(migrations.Migration):
    dependencies = [("erasure", "0002_initial"), ("auth", "0012_alter_user_first_name_max_length"), ("contenttypes", "0002_remove_content_type_name")]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
