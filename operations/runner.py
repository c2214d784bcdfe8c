"""The Operation runner: load the row, mark it running, call the handler, record the outcome."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from core.errors import HostFailure, PortalError

from .admission import operation_admit
from .alerts import alerts_flush_quietly
from .models import AdminAlert, Operation, OperationStatus
from .registry import spec_for, target_hooks
from .undo import Step, recorded_steps_undo, step_label

logger = logging.getLogger(__name__)


class RunFenced(BaseException):  # noqa: N818 - not an error: this run was taken over
    """This run's operation was failed by the reconciler or retried: stop, record nothing.

    A BaseException so that handlers' `except Exception` clean-ups do not give back what the
    run took: whoever took the operation over owns it now (the reconciler's undo, the retry).
    """


def _this_run(operation: Operation):  # noqa: ANN202
    """Return the operation's row only while this run (its attempt number) still owns it."""
    return Operation.objects.filter(pk=operation.pk, attempts=operation.attempts,
                                    status=OperationStatus.RUNNING)


def operation_progress(operation: Operation, text: str) -> None:
    """Record the step under way (and that the worker is alive); stop a run taken over."""
    operation.progress = text[:200]
    now = timezone.now()
    if not _this_run(operation).update(progress=operation.progress, heartbeat_at=now,
                                       updated_at=now):
        raise RunFenced(f"operation {operation.pk} attempt {operation.attempts}")


def operation_step(operation: Operation, step: str, **facts: object) -> None:
    """Record, before it is taken, a step that another process can give back (`undo.UNDO`).

    Facts are plain JSON naming what the step takes (host, pool, volume, ...), so that the
    reconciler can undo it when the worker dies half-way.
    """
    operation.steps = [*operation.steps, {"step": step, **facts}]
    now = timezone.now()
    if not _this_run(operation).update(steps=operation.steps, heartbeat_at=now,
                                       updated_at=now):
        raise RunFenced(f"operation {operation.pk} attempt {operation.attempts}")


def operation_steps_keep(operation: Operation, steps: list[Step]) -> None:
    """Record that only these of the run's steps are still to be given back if it dies.

    A handler that completes one part of its work (one VM of many moved) forgets that part's
    steps, so that a dead run's undo leaves the finished part alone.
    """
    operation.steps = list(steps)
    if not _this_run(operation).update(steps=operation.steps, updated_at=timezone.now()):
        raise RunFenced(f"operation {operation.pk} attempt {operation.attempts}")


def operation_steps_undo(operation: Operation, owner: object) -> list[Step]:
    """Give back this run's recorded steps now (the worker's own clean-up); return the rest."""
    left = recorded_steps_undo(owner, operation.steps)
    operation.steps = left
    _this_run(operation).update(steps=left, updated_at=timezone.now())
    return left


def operation_superseded(operation: Operation) -> bool:
    """Return whether another operation cut this one short (its wait should end now)."""
    return Operation.objects.filter(pk=operation.pk, superseded_by__isnull=False).exists()


def operation_heartbeat(operation: Operation) -> bool:
    """Say that this run is alive; return False once the run no longer owns the operation."""
    return bool(_this_run(operation).update(heartbeat_at=timezone.now()))


class _Heartbeat(threading.Thread):
    """Beat the operation's heartbeat every few seconds while its handler runs."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(name=f"heartbeat-operation-{operation.pk}", daemon=True)
        self.operation = operation
        self.every = float(settings.PORTAL["HEARTBEAT_EVERY"])
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(self.every):
                try:
                    if not operation_heartbeat(self.operation):
                        logger.warning("operation %s attempt %s was taken over; its worker "
                                       "stops beating", self.operation.pk,
                                       self.operation.attempts)
                        return
                except Exception:  # a database hiccup: beat again next time
                    logger.exception("could not beat the heartbeat of operation %s",
                                     self.operation.pk)
        finally:
            connections.close_all()  # this thread's own connections

    def stop(self) -> None:
        """Stop beating and wait for the thread to end."""
        self.done.set()
        self.join(timeout=max(self.every, 5.0))


def operation_failure_record(op: Operation, *, message: str, detail: str = "",
                             alert_admins: bool = False, routine: bool = False,
                             now=None) -> bool:  # noqa: ANN001
    """Record this run's failure if it still owns the operation; return whether it did."""
    now = now or timezone.now()
    fields = {"status": OperationStatus.FAILED, "message": message, "detail": detail,
              "routine": routine, "finished_at": now, "updated_at": now}
    if alert_admins:
        fields["admin_alert"] = AdminAlert.PENDING
    if not _this_run(op).update(**fields):
        return False
    for name, value in fields.items():
        setattr(op, name, value)
    return True


def operation_tell(op: Operation) -> None:
    """Tell the owner (plain words) and, when the failure needs them, the admins."""
    try:
        target_hooks(op).tell_owner(op)
    except Exception:  # a mail outage must not hide the failure itself
        logger.exception("could not tell the owner of operation %s it failed", op.pk)
    if op.admin_alert == AdminAlert.PENDING:
        alerts_flush_quietly()


def _late(op: Operation) -> Operation:
    if operation_superseded(op):
        logger.info("operation %s gave way to operation %s", op.pk,
                    Operation.objects.filter(pk=op.pk).values_list(
                        "superseded_by_id", flat=True).first())
        return Operation.objects.get(pk=op.pk)
    logger.warning("operation %s attempt %s finished after it was taken over (failed by the "
                   "reconciler or retried); its outcome is not recorded", op.pk, op.attempts)
    return Operation.objects.get(pk=op.pk)


def operation_run(*, operation_id: int, admit: bool = True) -> Operation | None:
    """Carry out a queued operation once; a redelivered or finished one is left alone.

    `admit=False` skips the per-host admission: a parent running its children in its own
    threads (an evacuation) holds no further worker and bounds them itself.

    The run holds a token, its attempt number: every write of its progress and outcome
    applies only while the row is still running under that attempt, so a run that the
    reconciler gave up on, or that a retry replaced, records nothing when it ends late.
    """
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None or op.status != OperationStatus.QUEUED:
            return op
        if admit and not operation_admit(op):
            return op  # its host runs its cap of operations: it waits, queued, for a slot
        now = timezone.now()
        op.status = OperationStatus.RUNNING
        op.attempts += 1
        op.started_at = op.heartbeat_at = now
        op.finished_at = None
        op.message = op.detail = ""
        op.steps = []
        op.admin_alert = AdminAlert.NONE
        op.routine = False
        op.save(update_fields=["status", "attempts", "started_at", "heartbeat_at",
                               "finished_at", "message", "detail", "steps", "admin_alert",
                               "routine", "updated_at"])
    hooks = target_hooks(op)
    refusal = hooks.run_refusal(op)
    if refusal:
        # A deleted VM is never acted on again (nor shown again as if it were alive).
        operation_failure_record(op, message=refusal)
        return op
    spec = spec_for(op.kind)
    heartbeat = _Heartbeat(op)
    heartbeat.start()
    detail = ""
    routine = False
    routine_errors = tuple(spec.routine) if spec is not None else ()
    try:
        if spec is None:
            raise PortalError(f"No worker knows how to do '{op.kind}'.")
        message = spec.handler(op)
        status = OperationStatus.SUCCEEDED
    except RunFenced:
        heartbeat.stop()
        return _late(op)
    except routine_errors as exc:
        # The spec says this failure is the user's to act on: their words, no admin alert.
        message, detail, routine = spec.routine_words(op, exc), str(exc), True
        status = OperationStatus.FAILED
    except PortalError as exc:
        # Written for the people who asked; it says what to do.
        message, status = str(exc), OperationStatus.FAILED
    except HostFailure as exc:
        logger.error("operation %s (%s) failed on the hypervisor: %s", op.pk, op.kind, exc)
        message, detail, status = hooks.failure_message(op), str(exc), OperationStatus.FAILED
    except Exception as exc:
        logger.exception("operation %s failed unexpectedly", op.pk)
        message, status = hooks.failure_message(op), OperationStatus.FAILED
        detail = f"Unexpected error: {exc.__class__.__name__}: {exc}"
    except BaseException as exc:
        # django-q's time limit arrives as SystemExit (also a stop of the worker): the
        # handler has given back what it could; record the failure, then let the worker go.
        heartbeat.stop()
        _interrupted(op, exc)
        raise
    heartbeat.stop()
    now = timezone.now()
    if status == OperationStatus.SUCCEEDED:
        if not _this_run(op).update(status=status, message=message or "", detail="",
                                    progress="", steps=[], finished_at=now, updated_at=now):
            return _late(op)
        op.status, op.message, op.detail, op.progress, op.steps, op.finished_at = (
            status, message or "", "", "", [], now)
        hooks.succeeded(op)
        return op
    if not operation_failure_record(op, message=message or "", detail=detail,
                                    alert_admins=bool(detail) and not routine,
                                    routine=routine, now=now):
        return _late(op)
    operation_tell(op)
    return op


def _interrupted(op: Operation, exc: BaseException) -> None:
    """Record that the worker was stopped in the middle of the operation, and what is left."""
    limit = settings.OPERATION_TIMEOUT
    what = (f"The worker was stopped before it finished (it may have reached its {limit} s "
            "limit)")
    try:
        fresh = Operation.objects.filter(pk=op.pk).values_list("steps", flat=True).first()
        left = [step_label(step) for step in (fresh or [])]
        if not operation_failure_record(
                op, message=f"{what}; {operation_left_words(op, left)}", alert_admins=True,
                detail=f"Interrupted: {exc.__class__.__name__}: {exc}"):
            return
        hooks = target_hooks(op)
        hooks.attention(op, left)
        # Admins hear at the next digest (flushed by the reconciler): the worker is going.
        hooks.tell_owner(op)
    except Exception:  # the reconciler finds the operation by its stopped heartbeat instead
        logger.exception("could not record that operation %s was interrupted", op.pk)


def operation_left_words(op: Operation, left: list[str]) -> str:
    """Say what a stopped operation left behind and what to do next."""
    then = " Retry it, or delete the VM." if op.vm_id else " Retry it once the cause is fixed."
    if left:
        return ("these could not be given back and are left: " + "; ".join(left) + "."
                + then)
    spec = spec_for(op.kind)
    if spec is not None and spec.records_steps:
        return "what it had taken was given back." + then
    return "it may have left its work half-done." + then
