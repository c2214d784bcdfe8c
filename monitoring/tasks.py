"""Thin django-q2 tasks of monitoring: one collection task per active host."""

from __future__ import annotations

from django_q.tasks import async_task

from hosts.health import WORKING_STATUSES, host_is_working
from hosts.models import Host

from .collector import host_collect


def collect_all() -> int:
    """Enqueue one collection task per host that is up (not down, not in maintenance)."""
    hosts = list(Host.objects.filter(status__in=WORKING_STATUSES).exclude(accel="")
                 .values_list("pk", flat=True))
    for pk in hosts:
        async_task("monitoring.tasks.collect_host", pk, task_name=f"collect-host-{pk}")
    return len(hosts)


def collect_host(host_id: int) -> dict:
    """Collect one host's and its VMs' utilisation, unless it went down since it was queued."""
    host = Host.objects.filter(pk=host_id).first()
    return host_collect(host=host) if host and host_is_working(host) else {}
