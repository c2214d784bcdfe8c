"""Periodic tasks come from `manage.py schedules_ensure`, built from the settings now."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django_q.models import Schedule

pytestmark = pytest.mark.django_db

NAMES = {"portal-reconcile", "portal-collect", "portal-snapshots", "portal-host-health"}


def _ensure() -> str:
    out = StringIO()
    call_command("schedules_ensure", stdout=out)
    return out.getvalue()


def _rows() -> dict[str, Schedule]:
    return {s.name: s for s in Schedule.objects.filter(name__in=NAMES)}


def test_migrations_create_no_schedule():
    assert not Schedule.objects.exists()


def test_the_command_creates_every_schedule_from_the_settings(settings):
    settings.PORTAL = {**settings.PORTAL, "RECONCILE_EVERY_MINUTES": 3}
    settings.PORTAL_MONITOR = {**settings.PORTAL_MONITOR, "PERIOD": 600}
    assert "Schedules created" in _ensure()
    rows = _rows()
    assert set(rows) == NAMES
    assert (rows["portal-reconcile"].func, rows["portal-reconcile"].schedule_type,
            rows["portal-reconcile"].minutes) == ("vms.tasks.reconcile", "I", 3)
    assert (rows["portal-collect"].func, rows["portal-collect"].schedule_type,
            rows["portal-collect"].minutes) == ("monitoring.tasks.collect_all", "I", 10)
    assert (rows["portal-snapshots"].func, rows["portal-snapshots"].schedule_type) == (
        "vms.tasks.snapshots_scheduled", "H")
    assert (rows["portal-host-health"].func, rows["portal-host-health"].minutes) == (
        "hosts.tasks.health_check_all", settings.PORTAL_HOST_HEALTH["EVERY_MINUTES"])
    assert all(row.repeats == -1 for row in rows.values())


def test_running_it_again_changes_nothing():
    _ensure()
    before = {name: (row.pk, row.next_run) for name, row in _rows().items()}
    assert _ensure().strip() == "Schedules are up to date."
    assert {name: (row.pk, row.next_run) for name, row in _rows().items()} == before
    assert Schedule.objects.count() == len(NAMES)


def test_a_changed_setting_updates_the_interval_and_keeps_the_row(settings):
    _ensure()
    before = _rows()["portal-reconcile"]
    settings.PORTAL = {**settings.PORTAL, "RECONCILE_EVERY_MINUTES": 7}
    assert "Schedules updated: portal-reconcile" in _ensure()
    after = _rows()["portal-reconcile"]
    assert (after.pk, after.next_run, after.minutes) == (before.pk, before.next_run, 7)


def test_a_schedule_edited_by_hand_is_set_back():
    _ensure()
    Schedule.objects.filter(name="portal-collect").update(func="nothing.here", repeats=0)
    assert "Schedules updated: portal-collect" in _ensure()
    row = _rows()["portal-collect"]
    assert (row.func, row.repeats) == ("monitoring.tasks.collect_all", -1)
