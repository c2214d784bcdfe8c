"""Create the collection schedule every deployment needs."""

from django.conf import settings
from django.db import migrations


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="portal-collect",
        defaults={
            "func": "monitoring.tasks.collect_all",
            "schedule_type": "I",
            "minutes": max(1, settings.PORTAL_MONITOR["PERIOD"] // 60),
            "repeats": -1,
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="portal-collect").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(create, remove)]
