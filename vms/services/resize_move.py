"""A resize its VM's host has no room for: the VM moves to a host with room, then resizes.

The request records the need (`params["move"]`, said in its summary) when it is made, and is
refused only when no host at all has room. It climbs the approval chain like any change; the
admin's final approval queues a migration (`vm_migrate`, to the best fit for the new sizes:
live when the VM runs, with its disk stopped) whose arguments carry the new sizes, applied on
the new host once the VM is there. When the host has room again by then, the resize is done
in place instead.
"""

from __future__ import annotations

from django.db import transaction

from core.errors import PortalError
from hosts.models import Host
from hosts.placement import NoHostAvailable, host_choose
from hosts.selectors import host_usage
from operations.models import Operation, OperationKind
from operations.requests import operation_request

from ..models import VirtualMachine, VMRequest
from .migration import MIGRATE_STATES


def resize_needs_move(vm: VirtualMachine, vcpus: int, memory_mib: int) -> bool:
    """Return whether the VM's host lacks room for the VM at the new sizes."""
    if vm.host_id is None:
        return False
    host = Host.objects.get(pk=vm.host_id)
    used_cpu, used_mem = host_usage(host)
    return (used_cpu - vm.vcpus + vcpus > host.vcpu_capacity
            or used_mem - vm.memory_mib + memory_mib > host.memory_capacity_mib)


def _destination(vm: VirtualMachine, vcpus: int, memory_mib: int) -> Host:
    """Lock and return the best-fit other host for the new sizes (inside a transaction)."""
    try:
        return host_choose(vcpus=vcpus, memory_mib=memory_mib, template=vm.template,
                           datastore=vm.datastore, exclude=(vm.host_id,))
    except NoHostAvailable as exc:
        raise NoHostAvailable(f"{vm.name} cannot grow to {vcpus} vCPUs and {memory_mib} MiB "
                              f"on its host, nor move to another: {exc}") from exc


def resize_move_problem(vm: VirtualMachine, vcpus: int, memory_mib: int) -> str | None:
    """Say why no host could take the VM at the new sizes; None when one can."""
    if vm.datastore_id is None:
        return f"{vm.name} is on no host; it cannot move to one with room."
    with transaction.atomic():
        try:
            _destination(vm, vcpus, memory_mib)
        except NoHostAvailable as exc:
            return str(exc)
    return None


def resize_move_request(*, request: VMRequest, actor, then: str) -> Operation:  # noqa: ANN001
    """Queue the migration that carries out an approved resize: move to room, then resize."""
    vcpus, memory = int(request.params["vcpus"]), int(request.params["memory_mib"])
    with transaction.atomic():
        vm = VirtualMachine.objects.select_related("datastore", "template", "host").get(
            pk=request.target_id)
        if vm.state not in MIGRATE_STATES:
            raise PortalError(f"{vm.name} is {vm.get_state_display().lower()}; it cannot move "
                              "to a host with room now.")
        target = _destination(vm, vcpus, memory)
        return operation_request(
            kind=OperationKind.MIGRATE, actor=actor, vm=vm, host=target, doing="change",
            then=then, arguments={"request": request.pk, "source": vm.host_id,
                                  "destination": target.pk,
                                  "resize": {"vcpus": vcpus, "memory_mib": memory}})
