"""Thin django-q2 tasks: they take ids and call a service."""

from __future__ import annotations

from hosts.models import Host, HostStatus
from hosts.services import host_reconcile
from vms.services.operations import operation_run, operations_reconcile


def run_operation(operation_id: int) -> str:
    """Carry out one queued operation."""
    op = operation_run(operation_id=operation_id)
    return f"{op.status}: {op.message}" if op else "no such operation"


def reconcile() -> dict:
    """Re-enqueue stale operations, fail overdue ones, compare hosts with the database."""
    result: dict = operations_reconcile()
    for host in Host.objects.exclude(status=HostStatus.DOWN):
        result[host.name] = host_reconcile(host=host)
    return result


def snapshots_scheduled() -> int:
    """Take the snapshots that schedules are due for."""
    from vms.services.snapshots import snapshots_scheduled_take

    return snapshots_scheduled_take()
