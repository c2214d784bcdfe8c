"""VNC ports of VMs: a pool per host, handed out never twice on one host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction

from core.errors import PoolExhausted, PortalError
from operations.models import Operation, OperationKind

from .models import Host

if TYPE_CHECKING:
    from vms.models import VirtualMachine


def vnc_port_range() -> tuple[int, int]:
    """Return the first and last VNC port the portal hands out on each host."""
    first, last = settings.PORTAL["VNC_PORTS"]
    return first, last


def vnc_port_allocate(*, vm: VirtualMachine, avoid: set[int] | frozenset[int] = frozenset()
                      ) -> int:
    """Give the VM the lowest free VNC port on its host, keeping one it already has.

    `avoid` holds ports the host's other domains use that the database does not know of.
    """
    if vm.vnc_port is not None:
        return vm.vnc_port
    if vm.host_id is None:
        raise PortalError(f"{vm.name} has no host to take a VNC port on.")
    # The VM's own model, reached without importing vms: hosts sit below it.
    machines = type(vm).objects
    first, last = vnc_port_range()
    for _ in range(3):
        try:
            with transaction.atomic():
                # The host row serialises allocators of one host; the unique constraint on
                # (host, vnc_port) is the safety net.
                Host.objects.select_for_update().filter(pk=vm.host_id).first()
                used = set(machines.filter(host_id=vm.host_id, vnc_port__isnull=False)
                           .values_list("vnc_port", flat=True)) | set(avoid)
                used |= vnc_ports_reserved(host_id=vm.host_id)
                port = next((p for p in range(first, last + 1) if p not in used), None)
                if port is None:
                    raise PoolExhausted(
                        f"No free VNC port is left on host {vm.host} ({first}-{last})."
                    )
                machines.filter(pk=vm.pk).update(vnc_port=port)
                vm.vnc_port = port
                return port
        except IntegrityError:
            continue
    raise PoolExhausted(f"Could not take a VNC port on host {vm.host}; try again.")


def vnc_ports_reserved(*, host_id: int) -> set[int]:
    """Return the ports held on the host by VMs on their way there (their migration's port)."""
    ports = (Operation.objects.active().filter(kind=OperationKind.MIGRATE, host_id=host_id)
             .values_list("arguments__vnc_port", flat=True))
    return {port for port in ports if isinstance(port, int)}


def vnc_port_reserve(*, operation: Operation, vm: VirtualMachine, host: Host,
                     avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """Hold the lowest free VNC port on the host a VM moves to, on its moving operation.

    The port is recorded as the operation's `vnc_port` argument, so it is held while the
    operation is under way and given back by its end; `vnc_port_allocate` skips it.
    """
    first, last = vnc_port_range()
    with transaction.atomic():
        Host.objects.select_for_update().filter(pk=host.pk).first()
        used = set(type(vm).objects.filter(host_id=host.pk, vnc_port__isnull=False)
                   .values_list("vnc_port", flat=True)) | set(avoid)
        used |= vnc_ports_reserved(host_id=host.pk) - {operation.arguments.get("vnc_port")}
        port = next((p for p in range(first, last + 1) if p not in used), None)
        if port is None:
            raise PoolExhausted(f"No free VNC port is left on host {host} ({first}-{last}).")
        operation.arguments = {**operation.arguments, "vnc_port": port}
        Operation.objects.filter(pk=operation.pk).update(arguments=operation.arguments)
    return port


def vnc_port_release(*, vm: VirtualMachine) -> None:
    """Give back the VM's VNC port."""
    type(vm).objects.filter(pk=vm.pk).update(vnc_port=None)
    vm.vnc_port = None
