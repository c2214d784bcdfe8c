"""The reconciler's part of the engine: stale queued operations, dead runs, half-done targets."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .alerts import alerts_flush_quietly
from .models import Operation, OperationStatus
from .registry import all_target_hooks, target_hooks
from .requests import operation_enqueue
from .runner import operation_failure_record, operation_left_words, operation_tell
from .undo import step_label


def operations_reconcile(*, now=None) -> dict[str, int]:  # noqa: ANN001
    """Re-enqueue stale queued operations, fail dead running ones and give back their steps.

    A running operation is dead when its worker's heartbeat stopped for
    HEARTBEAT_STALE_AFTER seconds, or when it outlived the workers' time limit; a slow one
    that still beats is left to finish. Targets left half-done with no operation under way
    (VMs left installing or deleting) are marked as needing attention. Then the admins'
    digest is flushed.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.PORTAL["QUEUED_STALE_AFTER"])
    silent = now - timedelta(seconds=settings.PORTAL["HEARTBEAT_STALE_AFTER"])
    # The worker's own time limit, plus a minute for its clean-up after SystemExit.
    overdue = now - timedelta(seconds=settings.OPERATION_TIMEOUT + 60)
    requeued = failed = 0
    for op in Operation.objects.filter(status=OperationStatus.QUEUED, enqueued_at__lt=stale):
        with transaction.atomic():
            operation_enqueue(op)
        requeued += 1
    dead = Operation.objects.filter(status=OperationStatus.RUNNING).filter(
        Q(heartbeat_at__lt=silent) | Q(heartbeat_at__isnull=True, started_at__lt=silent)
        | Q(started_at__lt=overdue)).select_related("vm", "host")
    for op in dead:
        if op.started_at and op.started_at < overdue:
            why = (f"The worker did not finish within {settings.OPERATION_TIMEOUT} s "
                   "(the workers' time limit)")
        else:
            why = ("The worker stopped answering (no heartbeat for "
                   f"{settings.PORTAL['HEARTBEAT_STALE_AFTER']} s); it may have been killed")
        if operation_abandon(op, why=why, now=now):
            failed += 1
    stuck = sum(hooks.reconcile() for hooks in all_target_hooks())
    alerted = alerts_flush_quietly()
    return {"requeued": requeued, "failed": failed, "stuck": stuck, "alerted": alerted}


def operation_abandon(op: Operation, *, why: str, now=None) -> bool:  # noqa: ANN001
    """Fail a dead run, give back its recorded steps and record what is left on its target.

    Returns False when the run finished (or was taken over) meanwhile: nothing is done then.
    """
    if not operation_failure_record(op, message=why, alert_admins=True, now=now):
        return False
    hooks = target_hooks(op)
    left_steps = hooks.steps_undo(op, op.steps) if op.steps else op.steps
    Operation.objects.filter(pk=op.pk, attempts=op.attempts).update(steps=left_steps)
    left = [step_label(step) for step in left_steps]
    message = f"{why}; {operation_left_words(op, left)}"
    Operation.objects.filter(pk=op.pk, attempts=op.attempts).update(message=message)
    op.message, op.steps = message, left_steps
    hooks.attention(op, left, state_note=hooks.settle(op))
    operation_tell(op)
    return True
