"""A VM's first figures: its host is collected as soon as it starts, and two samples make a rate."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest
from django.utils import timezone
from django_q.models import Schedule

from monitoring import tasks
from monitoring.charts import render_svg
from monitoring.collector import host_collect, rrd_store, vm_key
from monitoring.panel import usage_context
from operations.models import OperationKind
from tests.monitoring.test_collector import fake_host, sample  # noqa: F401 - fixture
from tests.vms.test_lifecycle import act, approved_vm, install, run_pending

pytestmark = pytest.mark.django_db
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    sent: list[tuple] = []
    monkeypatch.setattr(tasks, "async_task", lambda *a, **k: sent.append(a))
    return sent


def test_a_successful_install_enqueues_its_hosts_collection_now_and_soon_after(
        site, enqueued, django_capture_on_commit_callbacks):
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        op = run_pending(vm)
    vm.refresh_from_db()

    assert op.status == "succeeded" and vm.state == "running"
    assert ("monitoring.tasks.collect_host", site.host.pk) in enqueued
    follow_ups = Schedule.objects.filter(func="monitoring.tasks.collect_host").order_by(
        "next_run")
    assert len(follow_ups) == 2
    for follow_up in follow_ups:
        assert follow_up.schedule_type == Schedule.ONCE and follow_up.repeats < 0
        assert follow_up.args == repr(site.host.pk)
    waits = [(f.next_run - timezone.now()).total_seconds() for f in follow_ups]
    # Both within the minute, far enough apart to complete several of the hour's 10 s rows.
    assert 5 < waits[0] and waits[1] - waits[0] >= 15 and waits[1] <= 40


def test_a_start_enqueues_the_collection_and_a_suspend_does_not(
        site, enqueued, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    assert enqueued == []  # the install's callbacks were not run here

    def acting(kind):
        with django_capture_on_commit_callbacks(execute=True):
            act(vm, kind, site.admin, django_capture_on_commit_callbacks)
        return [a for a in enqueued if a[0] == "monitoring.tasks.collect_host"]

    assert acting(OperationKind.SUSPEND) == []
    assert acting(OperationKind.RESUME) == []
    assert acting(OperationKind.DESTROY) == []
    assert acting(OperationKind.START) == [("monitoring.tasks.collect_host", site.host.pk)]


def test_a_failure_to_enqueue_does_not_fail_the_install(
        site, monkeypatch, django_capture_on_commit_callbacks):
    def broken(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks, "async_task", broken)
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        op = run_pending(vm)
    assert op.status == "succeeded"


def test_two_samples_twenty_seconds_apart_give_a_cpu_figure_and_a_line(
        site, fake_host, django_capture_on_commit_callbacks):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    # Mid-period: no five-minute row is complete, as right after a VM starts.
    t0 = int(time.time()) // 300 * 300 - 170
    fake_host["domains"] = [sample(vm, cpu_s=1)]
    host_collect(host=site.host, now=t0)
    first = usage_context(vm)
    fake_host["domains"] = [sample(vm, cpu_s=1 + 5)]  # 5 s of CPU in 20 s: 25 %
    host_collect(host=site.host, now=t0 + 20)
    second = usage_context(vm)

    cpu = {row["metric"]: row for row in first["rows"]}["cpu"]
    assert cpu["latest"] == "" and not cpu["has_data"]  # one sample: memory, no rate yet
    cpu = {row["metric"]: row for row in second["rows"]}["cpu"]
    assert (cpu["latest"], cpu["average"], cpu["has_data"]) == ("25.0 %", "25.0 %", True)
    # A fresh VM opens on the hour, where its figures are a line, not a sliver of the day.
    assert second["period"] == "hour"

    root = ET.fromstring(render_svg(rrd_store(), "vm", vm_key(vm), "cpu", "hour", vm.name))
    points = [d.text for d in root.iter(f"{SVG}desc") if d.get("class") == "value"]
    assert len(points) >= 2 and all(p.endswith("25.0 %") for p in points)
    lines = [p for p in root.iter(f"{SVG}path") if "line" in (p.get("class") or "")]
    assert any(len(p.get("d", "").split()) >= 2 for p in lines)


def test_an_older_history_opens_on_the_day(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    now = int(time.time()) // 300 * 300
    rrd_store().update_many({("vm", vm_key(vm)): [
        (now - 5 * 3600 + i * 300, {"cpu": 10.0}) for i in range(60)]})
    assert usage_context(vm)["period"] == "day"
    assert usage_context(vm, "week")["period"] == "week"
