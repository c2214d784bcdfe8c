"""Create the hourly check for scheduled snapshots."""

from django.db import migrations


def create(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="portal-snapshots",
        defaults={"func": "vms.tasks.snapshots_scheduled", "schedule_type": "H",
                  "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="portal-snapshots").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0003_vm_operations"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(create, remove)]
