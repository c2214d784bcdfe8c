"""Formerly created the collection schedule; `manage.py schedules_ensure` does that now.

Kept, doing nothing, so that databases that applied it keep a valid migration history.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
