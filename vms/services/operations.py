"""The Operation runner: load the row, mark it running, call the service, record the outcome."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from hosts.health import host_after_operation
from hosts.models import Host, HostStatus
from hosts.virt import Hypervisor, VirtError
from portal.errors import PortalError

from ..models import (
    ACTIVE_STATUSES,
    AdminAlert,
    Operation,
    OperationKind,
    OperationStatus,
    VirtualMachine,
    VMState,
)
from .domain import LIBVIRT_STATE
from .notify import alerts_flush_quietly, owner_tell_failure
from .undo import Step, recorded_steps_undo, step_label

logger = logging.getLogger(__name__)

Handler = Callable[[Operation], str]
HANDLERS: dict[str, Handler] = {}
# The VM states in which an operation of a kind still makes sense (checked before a retry),
# and any further check of a kind: a reason to refuse the retry, or None.
RETRY_STATES: dict[str, tuple[str, ...]] = {}
RETRY_CHECKS: dict[str, Callable[[Operation], str | None]] = {}
# Kinds whose handlers record each step before taking it (`operation_step`): when one dies,
# its recorded steps say exactly what is left; of other kinds, only the VM's state is known.
RECORDS_STEPS: set[str] = set()
# Kinds that make the VM: when one dies half-way, the VM is left as a failed install.
MAKES_THE_VM = (OperationKind.INSTALL, OperationKind.CLONE)
# Power actions: a later one that succeeded leaves a failed one nothing to do.
POWER_KINDS = (OperationKind.START, OperationKind.SHUTDOWN, OperationKind.DESTROY,
               OperationKind.REBOOT, OperationKind.SUSPEND, OperationKind.RESUME,
               OperationKind.SNAPSHOT_REVERT)


class RunFenced(BaseException):  # noqa: N818 - not an error: this run was taken over
    """This run's operation was failed by the reconciler or retried: stop, record nothing.

    A BaseException so that handlers' `except Exception` clean-ups do not give back what the
    run took: whoever took the operation over owns it now (the reconciler's undo, the retry).
    """

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
    OperationKind.SNAPSHOT_REVERT: "could not be returned to the snapshot",
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


def handles(kind: OperationKind, *, states: Sequence[str] | None = None,
            retry_check: Callable[[Operation], str | None] | None = None,
            records_steps: bool = False) -> Callable[[Handler], Handler]:
    """Register the function that carries out operations of this kind.

    `states` are the VM states in which the operation still makes sense and `retry_check`
    any further reason to refuse a retry; both are checked before a failed one is retried.
    `records_steps` says the handler records every step it takes with `operation_step`.
    """

    def register(func: Handler) -> Handler:
        HANDLERS[kind] = func
        if records_steps:
            RECORDS_STEPS.add(kind)
        if states is not None:
            RETRY_STATES[kind] = tuple(states)
        if retry_check is not None:
            RETRY_CHECKS[kind] = retry_check
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


def operation_steps_undo(operation: Operation, vm: VirtualMachine) -> list[Step]:
    """Give back this run's recorded steps now (the worker's own clean-up); return the rest."""
    left = recorded_steps_undo(vm, operation.steps)
    operation.steps = left
    _this_run(operation).update(steps=left, updated_at=timezone.now())
    return left


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


def failure_message(operation: Operation) -> str:
    """Return what went wrong in words a VM's owner can act on, without the host's own text."""
    if operation.vm_id is None:
        target = f" of host {operation.host}" if operation.host_id else ""
        return (f"{operation.get_kind_display()}{target} failed; the details below say why. "
                "Retry once the cause is fixed.")
    kind = OperationKind(operation.kind)
    what = _OWNER_FAILED.get(kind, f"could not be changed: “{kind.label}” did not complete "
                                   "on its host")
    now = ""
    if kind in POWER_KINDS:
        # The handler observed the domain after the failure: say what the VM is now.
        state = VirtualMachine.objects.filter(pk=operation.vm_id).values_list(
            "state", flat=True).first()
        if state:
            now = f" It is {VMState(state).label.lower()} now."
    return (f"The VM {operation.vm.name} {what}; an administrator has been told.{now} "
            "Try again later, or ask an administrator for help if it keeps failing.")


def _record_failure(op: Operation, *, message: str, detail: str = "",
                    alert_admins: bool = False, now=None) -> bool:  # noqa: ANN001
    """Record this run's failure if it still owns the operation; return whether it did."""
    now = now or timezone.now()
    fields = {"status": OperationStatus.FAILED, "message": message, "detail": detail,
              "finished_at": now, "updated_at": now}
    if alert_admins:
        fields["admin_alert"] = AdminAlert.PENDING
    if not _this_run(op).update(**fields):
        return False
    for name, value in fields.items():
        setattr(op, name, value)
    return True


def _tell(op: Operation) -> None:
    """Tell the owner (plain words) and, when the failure needs them, the admins."""
    try:
        owner_tell_failure(op)
    except Exception:  # a mail outage must not hide the failure itself
        logger.exception("could not tell the owner of operation %s it failed", op.pk)
    if op.admin_alert == AdminAlert.PENDING:
        alerts_flush_quietly()


def _late(op: Operation) -> Operation:
    logger.warning("operation %s attempt %s finished after it was taken over (failed by the "
                   "reconciler or retried); its outcome is not recorded", op.pk, op.attempts)
    return Operation.objects.get(pk=op.pk)


# -- per-host admission: a busy or hung host holds at most its cap of workers ----------------

# The progress of an operation waiting for a free slot on its host; a finishing operation of
# that host starts the oldest of them (and the reconciler does, as a safety net).
WAITING_FOR_HOST = "Waiting: its host is busy with other operations."


def operation_host_id(operation: Operation) -> int | None:
    """Return the host the operation acts on: its own, or its VM's (None before placement)."""
    if operation.host_id:
        return operation.host_id
    if operation.vm_id:
        return VirtualMachine.objects.filter(pk=operation.vm_id).values_list(
            "host_id", flat=True).first()
    return None


def host_operations_cap() -> int:
    """Return how many operations may run at once on one host (PORTAL_HOST_MAX_OPERATIONS)."""
    cap = int(settings.PORTAL.get("HOST_MAX_OPERATIONS") or 0)
    if cap > 0:
        return cap
    workers = int(settings.Q_CLUSTER.get("workers") or 1)
    if Host.objects.filter(status=HostStatus.UP).count() > 1:
        return max(1, workers - 1)  # always a worker left for the rest of the fleet
    return workers


def _running_on(host_id: int) -> int:
    return Operation.objects.filter(status=OperationStatus.RUNNING).filter(
        Q(host_id=host_id) | Q(vm__host_id=host_id)).count()


def operation_admit(operation: Operation) -> bool:
    """Return whether a queued operation may start now; else mark it waiting for its host.

    Called with the operation's row locked; the host's row is locked too (PostgreSQL; SQLite
    serialises writers), so two workers never both take a host's last slot.
    """
    host_id = operation_host_id(operation)
    if host_id is None:
        return True
    list(Host.objects.select_for_update().filter(pk=host_id).values_list("pk", flat=True))
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
    waiting = Operation.objects.filter(status=OperationStatus.QUEUED, progress=WAITING_FOR_HOST)
    if host_ids is None:
        host_ids = {operation_host_id(op) for op in waiting.only("host_id", "vm_id")} - {None}
    started = 0
    cap = host_operations_cap()
    for host_id in host_ids:
        with transaction.atomic():
            # Under the host's lock: an operation being put to wait right now has either
            # seen the slot free or is committed as waiting and is found here.
            list(Host.objects.select_for_update().filter(pk=host_id).values_list("pk",
                                                                                flat=True))
            free = cap - _running_on(host_id)
            if free <= 0:
                continue
            for op in waiting.filter(Q(host_id=host_id) | Q(vm__host_id=host_id)).order_by(
                    "created_at", "id")[:free]:
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
    host = Host.objects.filter(pk=host_id).first()
    if host is not None and operation.status in (OperationStatus.SUCCEEDED,
                                                 OperationStatus.FAILED):
        host_after_operation(host=host,
                             succeeded=operation.status == OperationStatus.SUCCEEDED)
    operations_start_waiting(host_ids=[host_id])


def operation_run(*, operation_id: int) -> Operation | None:
    """Carry out a queued operation once; a redelivered or finished one is left alone.

    The run holds a token, its attempt number: every write of its progress and outcome
    applies only while the row is still running under that attempt, so a run that the
    reconciler gave up on, or that a retry replaced, records nothing when it ends late.
    """
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None or op.status != OperationStatus.QUEUED:
            return op
        if not operation_admit(op):
            return op  # its host runs its cap of operations: it waits, queued, for a slot
        now = timezone.now()
        op.status = OperationStatus.RUNNING
        op.attempts += 1
        op.started_at = op.heartbeat_at = now
        op.finished_at = None
        op.message = op.detail = ""
        op.steps = []
        op.admin_alert = AdminAlert.NONE
        op.save(update_fields=["status", "attempts", "started_at", "heartbeat_at",
                               "finished_at", "message", "detail", "steps", "admin_alert",
                               "updated_at"])
    if op.vm_id and VirtualMachine.objects.filter(pk=op.vm_id, state=VMState.DELETED).exists():
        # A deleted VM is never acted on again (nor shown again as if it were alive).
        _record_failure(op, message=f"{op.vm} was deleted; nothing was done.")
        return op
    handler = HANDLERS.get(op.kind)
    heartbeat = _Heartbeat(op)
    heartbeat.start()
    detail = ""
    try:
        if handler is None:
            raise PortalError(f"No worker knows how to do '{op.kind}'.")
        message = handler(op)
        status = OperationStatus.SUCCEEDED
    except RunFenced:
        heartbeat.stop()
        return _late(op)
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
        if op.vm_id:
            # The VM is in a state an operation just observed: nothing is left half-done.
            VirtualMachine.objects.filter(pk=op.vm_id).exclude(attention="").update(
                attention="")
        return op
    if not _record_failure(op, message=message or "", detail=detail,
                           alert_admins=bool(detail), now=now):
        return _late(op)
    _tell(op)
    return op


def _interrupted(op: Operation, exc: BaseException) -> None:
    """Record that the worker was stopped in the middle of the operation, and what is left."""
    limit = settings.OPERATION_TIMEOUT
    what = (f"The worker was stopped before it finished (it may have reached its {limit} s "
            "limit)")
    try:
        fresh = Operation.objects.filter(pk=op.pk).values_list("steps", flat=True).first()
        left = [step_label(step) for step in (fresh or [])]
        if not _record_failure(
                op, message=f"{what}; {_left_words(op, left)}", alert_admins=True,
                detail=f"Interrupted: {exc.__class__.__name__}: {exc}"):
            return
        if op.vm_id:
            _mark_attention(op, left)
        # Admins hear at the next digest (flushed by the reconciler): the worker is going.
        owner_tell_failure(op)
    except Exception:  # the reconciler finds the operation by its stopped heartbeat instead
        logger.exception("could not record that operation %s was interrupted", op.pk)


def _left_words(op: Operation, left: list[str]) -> str:
    then = " Retry it, or delete the VM." if op.vm_id else " Retry it once the cause is fixed."
    if left:
        return ("these could not be given back and are left: " + "; ".join(left) + "."
                + then)
    if op.kind in RECORDS_STEPS:
        return "what it had taken was given back." + then
    return "it may have left its work half-done." + then


def _mark_attention(op: Operation, left: list[str], state_note: str = "") -> None:
    """Mark the operation's VM as needing attention, saying what happened and what is left."""
    kind = OperationKind(op.kind).label
    text = f"{kind} (operation #{op.pk}) stopped half-way"
    if op.progress:
        text += f" while “{op.progress}”"
    text += f". {state_note}" if state_note else ". "
    if left:
        text += "Left behind: " + "; ".join(left) + "."
    elif op.kind in RECORDS_STEPS:
        text += "Everything it had taken was given back."
    else:
        text += "It may have left its work half-done; check the VM before using it."
    VirtualMachine.objects.filter(pk=op.vm_id).exclude(state=VMState.DELETED).update(
        attention=text)


def operation_retry_refusal(operation: Operation) -> str | None:
    """Return why a failed operation may not be retried now, or None when it may."""
    op = operation
    if op.status != OperationStatus.FAILED:
        return "Only a failed operation can be retried."
    if op.vm_id is None:
        return None
    vm = VirtualMachine.objects.get(pk=op.vm_id)
    if vm.state == VMState.DELETED:
        return f"{vm.name} has been deleted; there is nothing to retry."
    if vm.state == VMState.DELETING and op.kind != OperationKind.DELETE:
        return f"{vm.name} is being deleted; there is nothing to retry."
    later = Operation.objects.filter(vm_id=vm.pk, status=OperationStatus.SUCCEEDED,
                                     created_at__gt=op.created_at)
    kinds = POWER_KINDS if op.kind in POWER_KINDS else (op.kind,)
    superseded = later.filter(kind__in=kinds).order_by("created_at").first()
    if superseded is not None:
        return (f"A later {superseded.get_kind_display().lower()} of {vm.name} succeeded "
                f"(operation #{superseded.pk}); ask for what is wanted now instead.")
    states = RETRY_STATES.get(op.kind)
    if states is not None and vm.state not in states:
        return (f"{vm.name} is {vm.get_state_display().lower()} now; "
                f"“{op.get_kind_display()}” no longer applies.")
    check = RETRY_CHECKS.get(op.kind)
    return check(op) if check else None


def operation_retry(*, operation: Operation, actor) -> Operation:  # noqa: ANN001
    """Queue a failed operation again, unless it no longer makes sense."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation.pk)
        if op.vm_id:
            # Lock the VM too: a delete or another action asked for now waits for this.
            VirtualMachine.objects.select_for_update().filter(pk=op.vm_id).first()
        refusal = operation_retry_refusal(op)
        if refusal:
            raise PortalError(refusal)
        if op.vm_id and Operation.objects.filter(
            vm_id=op.vm_id, status__in=ACTIVE_STATUSES
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


def operations_reconcile(*, now=None) -> dict[str, int]:  # noqa: ANN001
    """Re-enqueue stale queued operations, fail dead running ones and give back their steps.

    A running operation is dead when its worker's heartbeat stopped for
    HEARTBEAT_STALE_AFTER seconds, or when it outlived the workers' time limit; a slow one
    that still beats is left to finish. VMs left installing or deleting with no operation
    under way are marked as needing attention. Then the admins' digest is flushed.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.PORTAL["QUEUED_STALE_AFTER"])
    silent = now - timedelta(seconds=settings.PORTAL["HEARTBEAT_STALE_AFTER"])
    # The worker's own time limit, plus a minute for its clean-up after SystemExit.
    overdue = now - timedelta(seconds=settings.OPERATION_TIMEOUT + 60)
    requeued = failed = stuck = 0
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
    for vm in VirtualMachine.objects.filter(
            state__in=[VMState.INSTALLING, VMState.DELETING], attention="").exclude(
            operations__status__in=ACTIVE_STATUSES):
        vm_stuck_mark(vm)
        stuck += 1
    alerted = alerts_flush_quietly()
    return {"requeued": requeued, "failed": failed, "stuck": stuck, "alerted": alerted}


def operation_abandon(op: Operation, *, why: str, now=None) -> bool:  # noqa: ANN001
    """Fail a dead run, give back its recorded steps and record what is left on its VM.

    Returns False when the run finished (or was taken over) meanwhile: nothing is done then.
    """
    if not _record_failure(op, message=why, alert_admins=True, now=now):
        return False
    vm = (VirtualMachine.objects.select_related("host").filter(pk=op.vm_id).first()
          if op.vm_id else None)
    left_steps = recorded_steps_undo(vm, op.steps) if vm is not None and op.steps else op.steps
    Operation.objects.filter(pk=op.pk, attempts=op.attempts).update(steps=left_steps)
    left = [step_label(step) for step in left_steps]
    message = f"{why}; {_left_words(op, left)}"
    Operation.objects.filter(pk=op.pk, attempts=op.attempts).update(message=message)
    op.message, op.steps = message, left_steps
    if vm is not None:
        _mark_attention(op, left, state_note=_settle_state(op, vm))
    _tell(op)
    return True


def _settle_state(op: Operation, vm: VirtualMachine) -> str:
    """Put the VM of a dead operation in the state it is really in; return it in words."""
    if op.kind in MAKES_THE_VM:
        VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.FAILED)
        return "The VM was not installed."
    if op.kind == OperationKind.DELETE:
        return "The VM may be partly removed; delete it again."
    if vm.host is None:
        return ""
    try:
        facts = Hypervisor(vm.host.uri).find_domain(vm.domain_name)
    except VirtError as exc:
        logger.warning("could not read the state of %s after operation %s died: %s", vm,
                       op.pk, exc)
        state = VMState.UNKNOWN
    else:
        state = LIBVIRT_STATE.get(facts.state, VMState.UNKNOWN) if facts else VMState.UNKNOWN
    VirtualMachine.objects.filter(pk=vm.pk).exclude(state=VMState.DELETED).update(
        state=state, state_checked_at=timezone.now())
    return f"The VM is {VMState(state).label.lower()} now."


def vm_stuck_mark(vm: VirtualMachine) -> None:
    """Mark a VM left installing or deleting with nothing under way as needing attention."""
    last = vm.operations.order_by("-created_at", "-id").first()
    if last is not None and last.steps:
        left_steps = recorded_steps_undo(vm, last.steps)
        Operation.objects.filter(pk=last.pk).update(steps=left_steps)
        left = [step_label(step) for step in left_steps]
    else:
        left = []
    if vm.state == VMState.INSTALLING:
        VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.FAILED)
        what = "The install stopped half-way and nothing is under way now."
    else:
        what = "The deletion stopped half-way and nothing is under way now; delete it again."
    text = what + (" Left behind: " + "; ".join(left) + "." if left else "")
    VirtualMachine.objects.filter(pk=vm.pk).update(attention=text)
