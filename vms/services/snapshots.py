"""Snapshots of VMs: taken, reverted and deleted as operations; schedules keep the newest N."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.errors import PortalError
from core.validators import free_text_problem
from hosts.models import HostStatus
from hosts.virt import Hypervisor, power_state
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request

from ..models import (
    Snapshot,
    SnapshotKind,
    SnapshotSchedule,
    SnapshotState,
    VirtualMachine,
    VMState,
)
from .domain import OPERATE, vm_hypervisor, vm_observe

logger = logging.getLogger(__name__)

SNAPSHOT_STATES = (VMState.RUNNING, VMState.SHUTOFF, VMState.PAUSED)
FREQUENCY_DAYS = {SnapshotKind.DAILY: 1, SnapshotKind.WEEKLY: 7, SnapshotKind.MONTHLY: 30}


def _limit() -> int:
    return settings.PORTAL["MAX_SNAPSHOTS"]


def _check_host_up(vm: VirtualMachine, doing: str) -> None:
    if vm.host is None or vm.host.status != HostStatus.UP:
        raise PortalError(f"Cannot {doing} {vm.name}: its host is down.")


def _snapshot_check(snapshot: Snapshot, doing: str) -> Callable[[VirtualMachine], None]:
    """Return the check, run on the locked VM, that its host is up and the snapshot ready."""

    def check(vm: VirtualMachine) -> None:
        _check_host_up(vm, doing)
        if snapshot.state != SnapshotState.READY:
            raise PortalError(f"Snapshot {snapshot.name} is {snapshot.get_state_display()}.")

    return check


def snapshot_take(*, vm: VirtualMachine, actor, name: str, description: str = "",  # noqa: ANN001
                  kind: SnapshotKind = SnapshotKind.MANUAL) -> Snapshot:
    """Queue a snapshot of the VM; at most N manual snapshots per VM."""
    name = " ".join(name.split())
    if not name:
        raise ValidationError({"name": "Give the snapshot a name."})
    if len(name) > 64 or len(description) > 500:
        raise ValidationError({"name": "Keep the name under 64 and the description under "
                                       "500 characters."})
    errors = {field: problem for field, problem in (
        ("name", free_text_problem(name, what="name")),
        ("description", free_text_problem(description, what="description", multiline=True)),
    ) if problem}
    if errors:
        raise ValidationError(errors)

    def room(locked: VirtualMachine) -> None:
        _check_host_up(locked, "snapshot")
        if kind == SnapshotKind.MANUAL and locked.snapshots.filter(
                kind=SnapshotKind.MANUAL).count() >= _limit():
            raise PortalError(f"{locked.name} already has {_limit()} snapshots, the most a VM "
                              "may keep; delete one first.")

    with transaction.atomic():
        # The VM row stays locked until commit, so the snapshot row joins its operation.
        op = operation_request(kind=OperationKind.SNAPSHOT_CREATE, actor=actor, vm=vm,
                               doing="snapshot", check=room)
        snap = Snapshot(vm=op.vm, name=name, description=description.strip(), kind=kind,
                        created_by=actor if actor and actor.is_authenticated else None,
                        vm_state=op.vm.state)
        snap.full_clean()
        snap.save()
        op.arguments = {"snapshot": snap.pk}
        Operation.objects.filter(pk=op.pk).update(arguments=op.arguments)
    return snap


def snapshot_revert(*, snapshot: Snapshot, actor) -> Operation:  # noqa: ANN001
    """Queue the return of the VM to a snapshot."""
    return operation_request(
        kind=OperationKind.SNAPSHOT_REVERT, actor=actor, vm=snapshot.vm, doing="revert",
        arguments={"snapshot": snapshot.pk}, check=_snapshot_check(snapshot, "revert"))


def snapshot_delete(*, snapshot: Snapshot, actor) -> Operation:  # noqa: ANN001
    """Queue the deletion of a snapshot."""
    with transaction.atomic():
        op = operation_request(
            kind=OperationKind.SNAPSHOT_DELETE, actor=actor, vm=snapshot.vm,
            doing="delete a snapshot of", arguments={"snapshot": snapshot.pk},
            check=_snapshot_check(snapshot, "delete a snapshot of"))
        Snapshot.objects.filter(pk=snapshot.pk).update(state=SnapshotState.DELETING)
    return op


def snapshot_schedule_set(*, vm: VirtualMachine, actor, frequencies: set[str]) -> None:  # noqa: ANN001
    """Make the VM's snapshot schedules exactly the given frequencies."""
    if not actor.has_perm("vms.operate_vm", vm):
        raise PortalError(f"You may not change {vm.name}.")
    allowed = {k.value for k in FREQUENCY_DAYS}
    if not frequencies <= allowed:
        raise ValidationError({"frequencies": "Choose daily, weekly or monthly."})
    with transaction.atomic():
        vm.snapshot_schedules.exclude(frequency__in=frequencies).delete()
        for frequency in frequencies:
            SnapshotSchedule.objects.get_or_create(vm=vm, frequency=frequency)


def _vm_and_snapshot(op: Operation) -> tuple[VirtualMachine, Snapshot, Hypervisor]:
    vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
    snap = Snapshot.objects.get(pk=op.arguments["snapshot"])
    return vm, snap, vm_hypervisor(vm)


def _snapshot_gone(op: Operation) -> str | None:
    """Refuse the retry of a snapshot operation whose snapshot is gone."""
    if not Snapshot.objects.filter(pk=op.arguments.get("snapshot")).exists():
        return "That snapshot no longer exists; take or choose another one."
    return None


@handles(OperationKind.SNAPSHOT_CREATE, states=SNAPSHOT_STATES, retry_check=_snapshot_gone,
         permission=OPERATE)
def snapshot_create_run(op: Operation) -> str:
    """Take the snapshot; a failure leaves no snapshot behind, here or on the host."""
    vm, snap, hv = _vm_and_snapshot(op)
    try:
        hv.snapshot_create(vm.domain_name, snap.libvirt_name, snap.description)
    except Exception:
        try:
            hv.snapshot_delete(vm.domain_name, snap.libvirt_name)
        except Exception:
            logger.exception("could not remove the failed snapshot %s", snap.libvirt_name)
        snap.delete()
        raise
    Snapshot.objects.filter(pk=snap.pk).update(state=SnapshotState.READY)
    message = f"Snapshot '{snap.name}' of {vm.name} taken."
    if snap.kind != SnapshotKind.MANUAL:
        dropped = _keep_newest(vm, hv, SnapshotKind(snap.kind))
        if dropped:
            message += f" Dropped the oldest {snap.get_kind_display().lower()}: {dropped}."
    return message


def _keep_newest(vm: VirtualMachine, hv: Hypervisor, kind: SnapshotKind) -> str:
    old = list(vm.snapshots.filter(kind=kind, state=SnapshotState.READY)
               .order_by("-created_at", "-id")[_limit():])
    for snap in old:
        hv.snapshot_delete(vm.domain_name, snap.libvirt_name)
        snap.delete()
    return ", ".join(s.name for s in old)


@handles(OperationKind.SNAPSHOT_REVERT, states=SNAPSHOT_STATES, retry_check=_snapshot_gone,
         permission=OPERATE)
def snapshot_revert_run(op: Operation) -> str:
    """Return the VM to the snapshot and record the state it comes back in."""
    vm, snap, hv = _vm_and_snapshot(op)
    try:
        state = hv.snapshot_revert(vm.domain_name, snap.libvirt_name)
    except Exception:
        # Half a revert is not "nothing happened": record the state the domain is really in
        # and mark the VM, so its page does not show it as if it were untouched.
        try:
            vm_observe(vm, hv.find_domain(vm.domain_name))
        except Exception:
            logger.exception("could not read the state of %s after a failed revert", vm)
            VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.UNKNOWN)
        vm.refresh_from_db(fields=["state"])
        VirtualMachine.objects.filter(pk=vm.pk).update(attention=(
            f"A revert to snapshot '{snap.name}' failed half-way; the VM is "
            f"{vm.get_state_display().lower()} now and its disk may not match the "
            "snapshot. Revert again, or ask an administrator."))
        raise
    VirtualMachine.objects.filter(pk=vm.pk).update(
        state=power_state(state), state_checked_at=timezone.now())
    return f"{vm.name} is back at snapshot '{snap.name}' ({state})."


@handles(OperationKind.SNAPSHOT_DELETE, retry_check=_snapshot_gone,
         request_states=SNAPSHOT_STATES, permission=OPERATE)
def snapshot_delete_run(op: Operation) -> str:
    """Delete the snapshot on the host and here."""
    vm, snap, hv = _vm_and_snapshot(op)
    try:
        hv.snapshot_delete(vm.domain_name, snap.libvirt_name)
    except Exception:
        Snapshot.objects.filter(pk=snap.pk).update(state=SnapshotState.READY)
        raise
    snap.delete()
    return f"Snapshot '{snap.name}' of {vm.name} deleted."


def snapshots_scheduled_take(*, now=None) -> int:  # noqa: ANN001
    """Take every snapshot a schedule is due for; a busy or stopped VM waits for next time."""
    now = now or timezone.now()
    taken = 0
    for schedule in SnapshotSchedule.objects.select_related("vm", "vm__owner"):
        days = FREQUENCY_DAYS[SnapshotKind(schedule.frequency)]
        if schedule.last_taken_at and now - schedule.last_taken_at < timedelta(days=days):
            continue
        stamp = now.strftime("%Y-%m-%d")
        try:
            snapshot_take(vm=schedule.vm, actor=schedule.vm.owner, kind=schedule.frequency,
                          name=f"{schedule.get_frequency_display()} {stamp}")
        except PortalError as exc:
            logger.info("scheduled snapshot of %s waits: %s", schedule.vm, exc)
            continue
        SnapshotSchedule.objects.filter(pk=schedule.pk).update(last_taken_at=now)
        taken += 1
    return taken
