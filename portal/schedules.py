"""Periodic tasks: each application declares its own; one command makes them exist.

An application's AppConfig may define `schedules()`, returning django-q `Schedule` fields
(`name`, `func`, `schedule_type`, and `minutes` for intervals) computed from the current
settings. `manage.py schedules_ensure` (run by the setup after `migrate`) creates what is
missing and updates what changed, so a changed setting takes effect on the next run.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import transaction
from django_q.models import Schedule

# Fields a declaration may set; anything else on the row (next_run, the last task) is the
# cluster's own bookkeeping and is left alone.
DECLARED_FIELDS = ("func", "schedule_type", "minutes", "repeats")


def schedules_declared() -> list[dict[str, Any]]:
    """Return every application's periodic tasks, as Schedule fields, from the settings now."""
    declared: dict[str, dict[str, Any]] = {}
    for config in apps.get_app_configs():
        for spec in getattr(config, "schedules", lambda: [])():
            name = spec["name"]
            if name in declared:
                raise ValueError(f"Two applications declare the schedule {name!r}.")
            unknown = set(spec) - {"name", *DECLARED_FIELDS}
            if unknown:
                raise ValueError(f"Schedule {name!r} sets unknown fields: {sorted(unknown)}.")
            declared[name] = {"minutes": None, "repeats": -1, **spec}
    return list(declared.values())


def schedules_ensure() -> dict[str, list[str]]:
    """Create the declared schedules that are missing and update those that differ."""
    outcome: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    for spec in schedules_declared():
        wanted = {field: spec[field] for field in DECLARED_FIELDS}
        with transaction.atomic():
            row = Schedule.objects.select_for_update().filter(name=spec["name"]).first()
            if row is None:
                Schedule.objects.create(name=spec["name"], **wanted)
                outcome["created"].append(spec["name"])
            elif any(getattr(row, field) != value for field, value in wanted.items()):
                Schedule.objects.filter(pk=row.pk).update(**wanted)
                outcome["updated"].append(spec["name"])
            else:
                outcome["unchanged"].append(spec["name"])
    return outcome
