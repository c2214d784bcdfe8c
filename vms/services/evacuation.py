"""Evacuating a host: maintenance that moves every VM it holds to other hosts.

One host-scoped `EVACUATE` operation (the parent) plans a destination for each VM
(`migration.migration_destination_plan`: best fit, its own host excluded, counting the room
already promised to the VMs planned before it), then asks for one `MIGRATE` child per VM
(`parent=` the evacuation; running or suspended VMs move live, shut off ones cold) and runs
the children itself, `PORTAL["EVACUATE_PARALLEL"]` at a time in its own threads: they are
never handed to the task queue, so an evacuation holds one worker however many VMs it moves
(see *Evacuation* in docs/ARCHITECTURE.md). A VM that cannot move stays; the parent lists
each with its reason and fails when any stays.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections, transaction

from core.errors import PortalError
from hosts.models import Host, HostStatus
from operations.admission import operation_after_run
from operations.models import Operation, OperationKind, OperationStatus
from operations.registry import handles
from operations.requests import operation_request
from operations.runner import operation_progress, operation_run

from ..models import VirtualMachine
from .migration import MIGRATE_STATES, migration_destination_plan

logger = logging.getLogger(__name__)

EVACUATE_PERMISSION = "hosts.manage_host"

Move = tuple[VirtualMachine, Host]
Stay = tuple[VirtualMachine, str]


def evacuation_plan(host: Host) -> tuple[list[Move], list[Stay]]:
    """Return where each of the host's VMs goes, and those that stay with the reason why.

    Destinations are chosen one VM after the other (largest first), each counting the room
    promised to those planned before it, so two moves never overfill one host. Call inside a
    transaction: the candidate hosts' rows stay locked until it ends.
    """
    vms = (VirtualMachine.objects.live().filter(host=host)
           .select_related("datastore", "template", "host")
           .order_by("-memory_mib", "-vcpus", "name"))
    reserved: dict[int, tuple[int, int]] = {}
    moves: list[Move] = []
    stays: list[Stay] = []
    for vm in vms:
        if vm.state not in MIGRATE_STATES:
            stays.append((vm, f"{vm.name} is {vm.get_state_display().lower()}; only running, "
                              "suspended or shut off VMs are moved."))
            continue
        try:
            dest = migration_destination_plan(vm, reserved=reserved)
        except PortalError as exc:
            stays.append((vm, str(exc)))
            continue
        cpus, mib = reserved.get(dest.pk, (0, 0))
        reserved[dest.pk] = (cpus + vm.vcpus, mib + vm.memory_mib)
        moves.append((vm, dest))
    return moves, stays


def _in_maintenance(host: Host) -> None:
    if host.status != HostStatus.MAINTENANCE:
        raise PortalError(f"{host.name} is not in maintenance; put it into maintenance first.")


def evacuation_request(*, host: Host, actor) -> Operation | None:  # noqa: ANN001
    """Ask for one evacuation of a host in maintenance; None when no VM is left on it."""
    if not VirtualMachine.objects.live().filter(host=host).exists():
        return None
    return operation_request(kind=OperationKind.EVACUATE, actor=actor, host=host,
                             doing="evacuate", check=_in_maintenance)


def _parallel() -> int:
    return max(1, int(settings.PORTAL.get("EVACUATE_PARALLEL") or 1))


def _reason(vm: VirtualMachine, text: str) -> str:
    return text if text.startswith(vm.name) else f"{vm.name}: {text}"


class _Evacuation:
    """One run of an evacuation: its children, its count of VMs moved, its progress."""

    def __init__(self, op: Operation, total: int) -> None:
        self.op, self.total, self.moved = op, total, 0
        self.lock = threading.Lock()
        self.failures: list[str] = []

    def progress(self) -> None:
        with self.lock:
            operation_progress(self.op, f"{self.moved} of {self.total} moved")

    def move(self, vm: VirtualMachine, dest: Host, *, threaded: bool) -> None:
        """Ask for and run the child moving one VM; count it or note why it stayed."""
        try:
            child = operation_request(
                kind=OperationKind.MIGRATE, actor=self.op.requested_by, vm=vm, host=dest,
                parent=self.op, doing="migrate", enqueue=False,
                arguments={"source": vm.host_id, "destination": dest.pk})
            ran = operation_run(operation_id=child.pk, admit=False)
            operation_after_run(ran)
            if ran is None or ran.status != OperationStatus.SUCCEEDED:
                words = ran.message if ran is not None else "it did not run"
                with self.lock:
                    self.failures.append(
                        f"{vm.name}: its move to {dest.name} failed: {words}")
                return
            with self.lock:
                self.moved += 1
            self.progress()
        except PortalError as exc:
            with self.lock:
                self.failures.append(_reason(vm, str(exc)))
        finally:
            if threaded:
                connections.close_all()  # this thread's own connections


@handles(OperationKind.EVACUATE, target="host", scope=("host",),
         permission=EVACUATE_PERMISSION)
def host_evacuate(op: Operation) -> str:
    """Move every VM off the operation's host; fail, listing those that stayed, if any did."""
    host = Host.objects.get(pk=op.host_id)
    with transaction.atomic():
        moves, stays = evacuation_plan(host)
    total = len(moves) + len(stays)
    if total == 0:
        return f"No VM was left on {host.name}."
    # The plan, for the host page: the moves not begun yet and the VMs that stay, with why.
    op.arguments = {**op.arguments,
                    "plan": [{"vm": vm.pk, "name": vm.name, "to": dest.name}
                             for vm, dest in moves],
                    "stays": [{"vm": vm.pk, "name": vm.name, "why": _reason(vm, why)}
                              for vm, why in stays]}
    Operation.objects.filter(pk=op.pk).update(arguments=op.arguments)
    run = _Evacuation(op, total)
    run.progress()
    parallel = _parallel()
    if parallel == 1 or len(moves) <= 1:
        for vm, dest in moves:
            run.move(vm, dest, threaded=False)
    else:
        with ThreadPoolExecutor(max_workers=parallel,
                                thread_name_prefix=f"evacuate-{op.pk}") as pool:
            futures = [pool.submit(run.move, vm, dest, threaded=True) for vm, dest in moves]
            for future in futures:
                future.result()
    stayed = [_reason(vm, why) for vm, why in stays] + sorted(run.failures)
    if stayed:
        raise PortalError(f"{run.moved} of {total} VMs moved off {host.name}; "
                          f"{len(stayed)} stay: " + " — ".join(stayed))
    return f"All {total} VMs moved off {host.name}."
