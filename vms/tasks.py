"""Thin django-q2 tasks: they take ids and call a service."""

from __future__ import annotations

from django_q.tasks import async_task

from hosts.health import WORKING_STATUSES, host_is_working
from hosts.models import Host
from hosts.services import host_reconcile
from vms.models import Operation
from vms.services.operations import (
    operation_after_run,
    operation_run,
    operations_reconcile,
    operations_start_waiting,
)


def run_operation(operation_id: int) -> str:
    """Carry out one queued operation, then start what waits for a slot on its host."""
    op = None
    try:
        op = operation_run(operation_id=operation_id)
    finally:
        # Also after a run cut short (the time limit): its slot on the host is free again.
        operation_after_run(op or Operation.objects.filter(pk=operation_id).first())
    return f"{op.status}: {op.message}" if op else "no such operation"


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
