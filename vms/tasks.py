"""Thin django-q2 tasks: they take ids and call a service."""

from __future__ import annotations

from django_q.tasks import async_task

from hosts.health import WORKING_STATUSES, host_is_working
from hosts.models import Host
from operations.admission import operations_start_waiting
from operations.reconcile import operations_reconcile
from vms.services.reconcile import host_reconcile


def reconcile() -> dict:
    """Re-enqueue stale operations, fail overdue ones, queue one host comparison per host."""
    result: dict = operations_reconcile()
    result["started_waiting"] = operations_start_waiting()
    # One task per host: a host that does not answer holds up only its own comparison.
    hosts = list(Host.objects.filter(status__in=WORKING_STATUSES).values_list("pk", "name"))
    for pk, name in hosts:
        async_task("vms.tasks.reconcile_host", pk, task_name=f"reconcile-host-{pk}")
        result[name] = "queued"
    return result


def reconcile_host(host_id: int) -> dict:
    """Compare one host's domains and datastore volumes with the database."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None or not host_is_working(host):
        return {"skipped": host.get_status_display() if host else "no such host"}
    return host_reconcile(host=host)


def snapshots_scheduled() -> int:
    """Take the snapshots that schedules are due for."""
    from vms.services.snapshots import snapshots_scheduled_take

    return snapshots_scheduled_take()
