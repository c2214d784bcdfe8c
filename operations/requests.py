"""Asking for operations: one path that locks, checks and creates; retries and dismissals.

Lock scopes. An operation holds the rows its spec's `scope` names while it is queued or
running. A VM-scoped operation holds its VM: one at a time per VM (a partial unique
constraint is the safety net). A host-scoped operation holds its host: while it is under way
no other operation holding that host and no operation on one of the host's VMs may be asked
for, and it may not be asked for while one of them is under way; its own children (`parent`)
are let through. A VM's operation whose spec holds "host" too (a migration) holds its VM and,
the same way, the host it names (its destination). Kinds that only read a host (a refresh)
or act elsewhere (the NAT box) declare no scope and hold nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.db.models import Model, Q
from django.utils import timezone

from core.errors import PortalError

from .models import Operation, OperationKind, OperationStatus
from .registry import SPECS, request_refusal, spec_for, target_hooks

# The task that runs an operation, by name (django-q2 imports it in the worker).
RUN_TASK = "operations.tasks.run_operation"


def operation_enqueue(operation: Operation) -> None:
    """Hand the operation's id to the task queue once the current transaction commits."""
    from django_q.tasks import async_task

    Operation.objects.filter(pk=operation.pk).update(enqueued_at=timezone.now())
    op_id = operation.pk
    transaction.on_commit(
        lambda: async_task(RUN_TASK, op_id, task_name=f"operation-{op_id}")
    )


def operation_create(*, kind: OperationKind, requested_by=None, vm=None, host=None,  # noqa: ANN001
                     arguments: dict | None = None, parent: Operation | None = None,
                     enqueue: bool = True) -> Operation:
    """Record a new queued operation and enqueue it (the caller has checked and locked).

    With `enqueue=False` no worker is handed it: its parent runs it itself (`runner.
    operation_run`); it is never re-enqueued by the reconciler (`enqueued_at` stays empty).
    """
    op = Operation(kind=kind, vm=vm, host=host, requested_by=requested_by,
                   arguments=arguments or {}, parent=parent)
    op.full_clean()
    op.save()
    if enqueue:
        operation_enqueue(op)
    return op


def _host_holding_kinds() -> list[str]:
    return [kind for kind, spec in SPECS.items() if "host" in spec.scope]


def operation_scope_busy(*, vm: Model | None = None, host_id: int | None = None,
                         exclude: Operation | None = None,
                         parent: Operation | None = None) -> bool:
    """Return whether another operation under way holds this VM or host (see the module)."""
    holding = _host_holding_kinds()
    scope = Q(pk__in=[])
    if vm is not None:
        scope |= Q(vm_id=vm.pk)
        if vm.host_id and holding:
            scope |= Q(host_id=vm.host_id, kind__in=holding)
    if host_id is not None:
        scope |= Q(vm__host_id=host_id) | Q(host_id=host_id, kind__in=holding)
    active = Operation.objects.active().filter(scope)
    for mine in (exclude, parent):
        if mine is not None:
            active = active.exclude(pk=mine.pk)
    if parent is not None:
        active = active.exclude(parent_id=parent.pk)  # its siblings
    return active.exists()


def operation_scope_check(*, vm: Model | None = None, host: Model | None = None,
                          exclude: Operation | None = None, parent: Operation | None = None,
                          then: str = "wait for it.") -> None:
    """Refuse when another operation under way holds this VM or host."""
    if operation_scope_busy(vm=vm, host_id=host.pk if host is not None else None,
                            exclude=exclude, parent=parent):
        name = vm.name if vm is not None else host.name
        raise PortalError(f"Another operation on {name} is under way" + (
            f"; {then}" if then else "."))


def _preempt(kind: str, kinds: tuple[str, ...], vm: Model) -> list[Operation]:
    """End the VM's operations of these kinds under way: they give way to `kind`.

    Each is recorded at once as done with the words "<kind> gave way to <other>", so the VM's
    scope is free for the new one; its worker, waiting on the host, sees `superseded_by`
    (set by the caller once the new operation exists) at its next poll and stops.
    """
    ending = list(Operation.objects.select_for_update().filter(vm_id=vm.pk, kind__in=kinds)
                  .active())
    now = timezone.now()
    for op in ending:
        op.status = OperationStatus.SUCCEEDED
        op.message = (f"{op.get_kind_display()} gave way to "
                      f"{OperationKind(kind).label}.")
        op.progress = ""
        op.finished_at = now
        op.save(update_fields=["status", "message", "progress", "finished_at", "updated_at"])
    return ending


def _locked(model_obj: Model | None) -> Model | None:
    if model_obj is None:
        return None
    return type(model_obj).objects.select_for_update().get(pk=model_obj.pk)


def _may(actor, permission, obj) -> bool:  # noqa: ANN001
    if isinstance(permission, str):
        return actor.has_perm(permission, obj)
    return bool(permission(actor, obj))


def operation_request(*, kind: OperationKind, actor=None, vm: Model | None = None,  # noqa: ANN001
                      host: Model | None = None,
                      arguments: dict | Callable[[Model], dict] | None = None,
                      parent: Operation | None = None, doing: str | None = None,
                      check: Callable[[Model], None] | None = None,
                      then: str = "wait for it.", enqueue: bool = True) -> Operation:
    """Ask for an operation: lock its scope, check permission, state and scope; create it.

    `doing` words the refusals ("You may not {doing} lab1", "Cannot {doing} lab1 while it
    is ..."; by default "act on" and the kind's label); `check` is any further test of the
    locked target, run after the state; `then` ends the refusal of a busy scope. A kind whose
    spec `preempts` others ends those under way on the VM first (they give way to it).
    `arguments` may be a function of the locked target, called once every check has passed
    (to record what the operation will make, such as a disk row). The operation is enqueued
    once the transaction commits, unless `enqueue` is False (a child its parent runs itself).
    """
    spec = spec_for(kind)
    if spec is None:
        raise PortalError(f"No worker knows how to do '{kind}'.")
    with transaction.atomic():
        locked_vm, locked_host = _locked(vm), _locked(host)
        target = locked_vm if locked_vm is not None else locked_host
        name = getattr(target, "name", "the portal")
        if actor is not None and spec.permission and not _may(actor, spec.permission, target):
            raise PortalError(f"You may not {doing or 'act on'} {name}.")
        refusal = request_refusal(kind, locked_vm, locked_host, parent)
        if refusal:
            raise PortalError(refusal)
        state = getattr(target, "state", None)
        if spec.request_states is not None and state not in spec.request_states:
            raise PortalError(
                f"Cannot {doing or OperationKind(kind).label.lower()} {name} while it is "
                f"{target.get_state_display().lower()}.")
        if check is not None:
            check(target)
        given_way = _preempt(kind, spec.preempts, locked_vm) if (
            spec.preempts and locked_vm is not None) else []
        if spec.scope:
            operation_scope_check(vm=locked_vm, host=locked_host if locked_vm is None else None,
                                  parent=parent, then=then)
            if locked_vm is not None and locked_host is not None and "host" in spec.scope:
                # A VM's operation that holds a second host (a migration's destination).
                operation_scope_check(host=locked_host, parent=parent, then=then)
        if callable(arguments):
            arguments = arguments(target)
        try:
            with transaction.atomic():
                op = operation_create(kind=kind, vm=locked_vm, host=locked_host,
                                      requested_by=actor, arguments=arguments, parent=parent,
                                      enqueue=enqueue)
        except IntegrityError as exc:
            raise PortalError(f"Another operation on {name} is under way.") from exc
        if given_way:
            Operation.objects.filter(pk__in=[o.pk for o in given_way]).update(superseded_by=op)
        return op


def operation_retry_refusal(operation: Operation) -> str | None:
    """Return why a failed operation may not be retried now, or None when it may."""
    if operation.status != OperationStatus.FAILED:
        return "Only a failed operation can be retried."
    return target_hooks(operation).retry_refusal(operation)


def operation_retry(*, operation: Operation, actor) -> Operation:  # noqa: ANN001
    """Queue a failed operation again, unless it no longer makes sense."""
    with transaction.atomic():
        op = Operation.objects.select_for_update().get(pk=operation.pk)
        # Lock the target too: a delete or another action asked for now waits for this.
        vm = _locked(op.vm) if op.vm_id else None
        refusal = operation_retry_refusal(op) or request_refusal(op.kind, vm, op.host, op.parent)
        if refusal:
            raise PortalError(refusal)
        if vm is not None:
            operation_scope_check(vm=vm, exclude=op, parent=op.parent, then="retry it later.")
        op.status = OperationStatus.QUEUED
        op.dismissed = op.routine = False
        op.message = f"Retry asked by {actor.get_username()}."
        op.detail = op.progress = ""
        op.save(update_fields=["status", "dismissed", "routine", "message", "detail",
                               "progress", "updated_at"])
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
