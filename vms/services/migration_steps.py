"""The steps a migration records, and how any process gives them back.

A migration records each thing it takes on the destination before taking it (`operation_step`):
the VNC port held there (`migration_vnc_port`), the VM's DHCP entry there (`migration_dhcp`)
and the move itself (`migration_destination`: the domain, the volumes a datastore that is not
shared needs copied there, and the snapshots' metadata dropped here for the move). The worker
gives them back when the move fails; the reconciler does when the worker died half-way.

None is given back once the VM is recorded on the destination (they are its own then); and
when its domain runs on the destination while the portal still records it on its source,
nothing is touched: the step is left for an administrator, who is told where the VM really is.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from core.errors import PortalError
from hosts.models import Host
from hosts.virt import Hypervisor
from hosts.virt.migration import SnapshotMetadata
from networking.models import PrivateIP
from networking.services import dhcp_backend, dhcp_entry
from operations.models import Operation
from operations.undo import Step, step_register

from ..models import VirtualMachine
from .steps import given_back

logger = logging.getLogger(__name__)


def migration_given_back(op: Operation, vm: VirtualMachine) -> AbstractContextManager[None]:
    """Give back every step recorded by the body if it fails, then re-raise; the VM keeps
    its state (it stays on its source)."""

    def arguments_reread() -> None:
        # The port's step gave it back in the row; the runner records this very object.
        op.arguments = Operation.objects.filter(pk=op.pk).values_list(
            "arguments", flat=True).first() or op.arguments

    return given_back(op, vm, after=arguments_reread)


def _destination(vm: VirtualMachine, step: Step) -> Host | None:
    """Return the step's destination, or None when the VM is recorded there (nothing to undo).

    Raise when the VM's domain runs there while the portal records it on its source: what
    the move took there is the VM's now, and an administrator must settle where it is.
    """
    dest = Host.objects.get(pk=step["host"])
    vm = VirtualMachine.objects.select_related("host").get(pk=vm.pk)
    if vm.host_id == dest.pk:
        return None
    there = Hypervisor(dest.uri).find_domain(vm.domain_name)
    here = Hypervisor(vm.host.uri).find_domain(vm.domain_name) if vm.host else None
    if there is not None and there.uuid == str(vm.uuid) and here is None:
        raise PortalError(f"{vm.name} runs on {dest.name} although the portal records it on "
                          f"{vm.host.name if vm.host else 'no host'}; nothing was removed there")
    return dest


def _release_port(vm: VirtualMachine, step: Step) -> None:
    op = Operation.objects.filter(pk=step["operation_id"]).first()
    if op is not None and "vnc_port" in op.arguments:
        op.arguments = {k: v for k, v in op.arguments.items() if k != "vnc_port"}
        Operation.objects.filter(pk=op.pk).update(arguments=op.arguments)


def _remove_dhcp(vm: VirtualMachine, step: Step) -> None:
    dest = _destination(vm, step)
    if dest is None:
        return
    ip = PrivateIP.objects.select_related("vlan").get(address=step["address"])
    ip.mac = str(step["mac"])  # the entry written named this MAC
    dhcp_backend().remove(dest.uri, dhcp_entry(vm, ip))


def _clear_destination(vm: VirtualMachine, step: Step) -> None:
    dest = _destination(vm, step)
    if dest is None:
        return
    dest_hv, name = Hypervisor(dest.uri), str(step["name"])
    there = dest_hv.find_domain(name)
    if there is not None and there.uuid == str(vm.uuid):
        if there.state != "shutoff":
            dest_hv.destroy(name)
        dest_hv.undefine_domain(name)
    for pool, volume in reversed(step.get("volumes") or []):
        dest_hv.delete_volume(str(pool), str(volume))
    xmls = tuple(step.get("snapshots") or ())
    if xmls and vm.host is not None:
        source_hv = Hypervisor(vm.host.uri)
        if source_hv.find_domain(name) is not None:
            source_hv.snapshot_metadata_define(
                name, SnapshotMetadata(xmls, step.get("current") or None))


def _where(step: Step) -> str:
    return f"on host {step.get('host_name')}"


def migration_steps_register() -> None:
    """Register with the engine how each step a migration records is given back."""
    step_register("migration_vnc_port", _release_port,
                  lambda s: f"the VNC port held {_where(s)}")
    step_register("migration_dhcp", _remove_dhcp, lambda s: (
        f"DHCP entry {s['address']} ({s['mac']}) {_where(s)}"))
    step_register("migration_destination", _clear_destination, lambda s: (
        f"domain {s['name']} and its copied volumes {_where(s)}"))
