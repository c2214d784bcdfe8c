"""The Operation runner: load the row, mark it running, call the service, record the outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hosts.virt import VirtError
from portal.accounts.models import Role
from portal.errors import PortalError

from ..models import Operation, OperationKind, OperationStatus
from .notify import absolute_url, notify

logger = logging.getLogger(__name__)

Handler = Callable[[Operation], str]
HANDLERS: dict[str, Handler] = {}

# What a VM's owner reads when the host could not do something; the raw text is for admins.
_OWNER_FAILED = {
    OperationKind.INSTALL: "could not be installed and started on its host",
    OperationKind.START: "could not be started on its host",
    OperationKind.SHUTDOWN: "did not shut down (its system may not have answered the power "
                            "button); use Force off if it must stop now",
    OperationKind.DESTROY: "could not be forced off",
    OperationKind.REBOOT: "could not be rebooted",
    OperationKind.SUSPEND: "could not be suspended",
    OperationKind.RESUME: "could not be resumed",
    OperationKind.DELETE: "could not be removed from its host",
    OperationKind.NETWORK_MOVE: "could not be moved to the other security domain; if it is "
                                "running, shut it down and retry",
    OperationKind.DISK_DETACH: "could not let go of the disk; if it is running, shut it down "
                               "and retry",
    OperationKind.PUBLIC_IP_ATTACH: "could not be given a public IP: the NAT box did not "
                                    "take the mapping",
    OperationKind.PUBLIC_IP_RELEASE: "could not give its public IP back: the NAT box did not "
                                     "remove the mapping",
    OperationKind.SSH_PORT_ATTACH: "could not be given an SSH port: the NAT box did not take "
                                   "the forwarding",
    OperationKind.SSH_PORT_RELEASE: "could not give its SSH port back: the NAT box did not "
                                    "remove the forwarding",
}


def handles(kind: OperationKind) -> Callable[[Handler], Handler]:
    """Register the function that carries out operations of this kind."""

    def register(func: Handler) -> Handler:
        HANDLERS[kind] = func
        return func

    return register


def operation_enqueue(operation: Operation) -> None:
    """Hand the operation's id to the task queue once the current transaction commits."""
    from django_q.tasks import async_task

    Operation.objects.filter(pk=operation.pk).update(enqueued_at=timezone.now())
    op_id = operation.pk
    transaction.on_commit(
        lambda: async_task("vms.tasks.run_operation", op_id, task_name=f"operation-{op_id}")
    )


def operation_create(*, kind: OperationKind, requested_by=None, vm=None, host=None,  # noqa: ANN001
                     arguments: dict | None = None) -> Operation:
    """Record a new queued operation and enqueue it."""
    op = Operation(kind=kind, vm=vm, host=host, requested_by=requested_by,
                   arguments=arguments or {})
    op.full_clean()
    op.save()
    operation_enqueue(op)
    return op


def operation_progress(operation: Operation, text: str) -> None:
    """Record the step under way, for the owner's progress view."""
    operation.progress = text[:200]
    Operation.objects.filter(pk=operation.pk).update(progress=operation.progress,
                                                     updated_at=timezone.now())


def failure_message(operation: Operation) -> str:
    """Return what went wrong in words a VM's owner can act on, without the host's own text."""
    if operation.vm_id is None:
        target = f" of host {operation.host}" if operation.host_id else ""
        return (f"{operation.get_kind_display()}{target} failed; the details below say why. "
                "Retry once the cause is fixed.")
    kind = OperationKind(operation.kind)
    what = _OWNER_FAILED.get(kind, f"could not be changed: “{kind.label}” did not complete "
                                   "on its host")
    return (f"The VM {operation.vm.name} {what}; an administrator has been told. "
            "Try again later, or ask an administrator for help if it keeps failing.")


def _tell_admins(operation: Operation, detail: str) -> None:
    admins = get_user_model().objects.filter(
        Q(role=Role.ADMIN) | Q(is_superuser=True), is_active=True,
    ).values_list("email", flat=True)
    target = operation.vm or operation.host or "-"
    notify(recipients=admins, subject=f"{operation.get_kind_display()} of {target} failed",
           body=(f"Operation #{operation.pk} ({operation.get_kind_display()} of {target}) "
                 f"failed:\n\n{detail}\n\n{absolute_url('vms:operation_list')}?attention=1"))


def operation_run(*, operation_id: int) -> Operation | None:
    """Carry out a queued operation once; a redelivered or finished one is left alone."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None or op.status != OperationStatus.QUEUED:
            return op
        op.status = OperationStatus.RUNNING
        op.attempts += 1
        op.started_at = timezone.now()
        op.finished_at = None
        op.message = op.detail = ""
        op.save(update_fields=["status", "attempts", "started_at", "finished_at", "message",
                               "detail", "updated_at"])
    handler = HANDLERS.get(op.kind)
    detail = ""
    try:
        if handler is None:
            raise PortalError(f"No worker knows how to do '{op.kind}'.")
        message = handler(op)
        status = OperationStatus.SUCCEEDED
    except PortalError as exc:
        # Written for the people who asked; it says what to do.
        message, status = str(exc), OperationStatus.FAILED
    except VirtError as exc:
        logger.error("operation %s (%s) failed on the hypervisor: %s", op.pk, op.kind, exc)
        message, detail, status = failure_message(op), str(exc), OperationStatus.FAILED
    except Exception as exc:
        logger.exception("operation %s failed unexpectedly", op.pk)
        message, status = failure_message(op), OperationStatus.FAILED
        detail = f"Unexpected error: {exc.__class__.__name__}: {exc}"
    if detail:
        _tell_admins(op, detail)
    op.status = status
    op.message = message or ""
    op.detail = detail
    op.progress = "" if status == OperationStatus.SUCCEEDED else op.progress
    op.finished_at = timezone.now()
    op.save(update_fields=["status", "message", "detail", "progress", "finished_at",
                           "updated_at"])
    return op


def operation_retry(*, operation: Operation, actor) -> Operation:  # noqa: ANN001
    """Queue a failed operation again."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation.pk)
        if op.status != OperationStatus.FAILED:
            raise PortalError("Only a failed operation can be retried.")
        if op.vm_id and Operation.objects.filter(
            vm_id=op.vm_id, status__in=[OperationStatus.QUEUED, OperationStatus.RUNNING]
        ).exclude(pk=op.pk).exists():
            raise PortalError(f"Another operation on {op.vm} is under way; retry it later.")
        op.status = OperationStatus.QUEUED
        op.dismissed = False
        op.message = f"Retry asked by {actor.get_username()}."
        op.detail = op.progress = ""
        op.save(update_fields=["status", "dismissed", "message", "detail", "progress",
                               "updated_at"])
        operation_enqueue(op)
    return op


def operation_dismiss(*, operation: Operation, actor) -> Operation:  # noqa: ANN001
    """Hide a failed operation from the lists of things needing attention."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation.pk)
        if op.status != OperationStatus.FAILED:
            raise PortalError("Only a failed operation can be dismissed.")
        op.dismissed = True
        op.save(update_fields=["dismissed", "updated_at"])
    return op


def operations_reconcile() -> dict[str, int]:
    """Re-enqueue operations queued too long and fail those running past their timeout."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.PORTAL["QUEUED_STALE_AFTER"])
    overdue = now - timedelta(seconds=settings.OPERATION_TIMEOUT)
    requeued = failed = 0
    for op in Operation.objects.filter(status=OperationStatus.QUEUED, enqueued_at__lt=stale):
        with transaction.atomic():
            operation_enqueue(op)
        requeued += 1
    for op in Operation.objects.filter(status=OperationStatus.RUNNING, started_at__lt=overdue):
        updated = Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
            status=OperationStatus.FAILED, finished_at=now, updated_at=now,
            message=(f"The worker did not finish within {settings.OPERATION_TIMEOUT} s "
                     "(it may have stopped); retry when the cause is fixed."),
        )
        failed += updated
    return {"requeued": requeued, "failed": failed}
