"""Create the reconcile schedule every deployment needs."""

from django.conf import settings
from django.db import migrations


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="portal-reconcile",
        defaults={
            "func": "vms.tasks.reconcile",
            "schedule_type": "I",
            "minutes": settings.PORTAL["RECONCILE_EVERY_MINUTES"],
            "repeats": -1,
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="portal-reconcile").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(create, remove)]
