"""Per-host admission: a busy or hung host holds at most its cap of workers."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import Operation, OperationStatus
from .registry import host_hooks

# The progress of an operation waiting for a free slot on its host; a finishing operation of
# that host starts the oldest of them (and the reconciler does, as a safety net).
WAITING_FOR_HOST = "Waiting: its host is busy with other operations."


def operation_host_id(operation: Operation) -> int | None:
    """Return the host the operation acts on: its own, or its VM's (None before placement)."""
    if operation.host_id:
        return operation.host_id
    if operation.vm_id:
        return Operation.objects.filter(pk=operation.pk).values_list(
            "vm__host_id", flat=True).first()
    return None


def host_operations_cap() -> int:
    """Return how many operations may run at once on one host (PORTAL_HOST_MAX_OPERATIONS)."""
    cap = int(settings.PORTAL.get("HOST_MAX_OPERATIONS") or 0)
    if cap > 0:
        return cap
    workers = int(settings.Q_CLUSTER.get("workers") or 1)
    if host_hooks().hosts_up() > 1:
        return max(1, workers - 1)  # always a worker left for the rest of the fleet
    return workers


def _on_host(host_id: int) -> Q:
    return Q(host_id=host_id) | Q(vm__host_id=host_id)


def _host_lock(host_id: int) -> None:
    # Lock the host's row (PostgreSQL; SQLite serialises writers) through the operation's
    # relation, so the engine needs no import of the hosts application.
    host_model = Operation._meta.get_field("host").related_model
    list(host_model.objects.select_for_update().filter(pk=host_id).values_list("pk",
                                                                               flat=True))


def _running_on(host_id: int) -> int:
    return Operation.objects.filter(status=OperationStatus.RUNNING).filter(
        _on_host(host_id)).count()


def operation_admit(operation: Operation) -> bool:
    """Return whether a queued operation may start now; else mark it waiting for its host.

    Called with the operation's row locked; the host's row is locked too (PostgreSQL; SQLite
    serialises writers), so two workers never both take a host's last slot.
    """
    host_id = operation_host_id(operation)
    if host_id is None:
        return True
    _host_lock(host_id)
    if _running_on(host_id) >= host_operations_cap():
        if operation.progress != WAITING_FOR_HOST:
            operation.progress = WAITING_FOR_HOST
            Operation.objects.filter(pk=operation.pk).update(progress=WAITING_FOR_HOST,
                                                             updated_at=timezone.now())
        return False
    if operation.progress == WAITING_FOR_HOST:
        operation.progress = ""
        Operation.objects.filter(pk=operation.pk).update(progress="")
    return True


def operations_start_waiting(*, host_ids: Sequence[int] | None = None) -> int:
    """Enqueue the oldest operations waiting for a slot on these hosts (all hosts: None)."""
    from .requests import operation_enqueue

    waiting = Operation.objects.filter(status=OperationStatus.QUEUED, progress=WAITING_FOR_HOST)
    if host_ids is None:
        host_ids = {operation_host_id(op) for op in waiting.only("host_id", "vm_id")} - {None}
    started = 0
    cap = host_operations_cap()
    for host_id in host_ids:
        with transaction.atomic():
            # Under the host's lock: an operation being put to wait right now has either
            # seen the slot free or is committed as waiting and is found here.
            _host_lock(host_id)
            free = cap - _running_on(host_id)
            if free <= 0:
                continue
            for op in waiting.filter(_on_host(host_id)).order_by("created_at", "id")[:free]:
                operation_enqueue(op)
                started += 1
    return started


def operation_after_run(operation: Operation | None) -> None:
    """Note on its host whether the operation reached it; start what waits for the slot."""
    if operation is None:
        return
    host_id = operation_host_id(operation)
    if host_id is None:
        return
    if operation.status in (OperationStatus.SUCCEEDED, OperationStatus.FAILED):
        host_hooks().after_operation(
            host_id, succeeded=operation.status == OperationStatus.SUCCEEDED)
    operations_start_waiting(host_ids=[host_id])
