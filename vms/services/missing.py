"""VMs whose domain is missing from their host: recreate them from their disk, or mark them lost."""

from __future__ import annotations

from pathlib import PurePosixPath

from django.db import transaction
from django.utils import timezone

from core.errors import PortalError
from hosts.models import Host
from hosts.virt import Hypervisor
from hosts.virt.domain_xml import build_domain_xml
from hosts.vnc import vnc_port_allocate, vnc_port_release
from networking.allocation import ip_release, public_ip_release
from networking.models import NATMapping, SSHPort
from networking.services import nat_detach, ssh_port_detach
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request
from operations.runner import operation_progress

from ..models import VirtualMachine, VMState
from ..signals import vm_deleted
from .domain import APPLY_CHANGE, vm_observe, vm_spec
from .notify import absolute_url, notify

MISSING_STATES = (VMState.UNKNOWN,)


def _missing_check(vm: VirtualMachine) -> None:
    if vm.host_id is None or vm.name not in Host.objects.get(pk=vm.host_id).missing_domains:
        raise PortalError(f"The last reconcile did not find {vm.name}'s domain missing; "
                          "refresh the host first.")


def vm_lost_request(*, vm: VirtualMachine, actor) -> Operation:  # noqa: ANN001
    """Ask for a VM whose domain is missing to be marked lost."""
    return operation_request(kind=OperationKind.VM_LOST, actor=actor, vm=vm,
                             check=_missing_check, doing="mark as lost")


def vm_recreate_request(*, vm: VirtualMachine, actor, start: bool) -> Operation:  # noqa: ANN001
    """Ask for a VM whose domain is missing to be defined again from its disk."""

    def check(locked: VirtualMachine) -> None:
        _missing_check(locked)
        if locked.datastore_id is None:
            raise PortalError(f"{locked.name} has no datastore recorded, so no disk to "
                              "recreate it from; mark it lost instead.")

    return operation_request(kind=OperationKind.VM_RECREATE, actor=actor, vm=vm, check=check,
                             doing="recreate", arguments={"start": bool(start)})


def _forget_missing(vm: VirtualMachine) -> None:
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=vm.host_id)
        host.missing_domains = [n for n in host.missing_domains if n != vm.name]
        host.save(update_fields=["missing_domains"])


@handles(OperationKind.VM_LOST, states=MISSING_STATES, permission=APPLY_CHANGE)
def vm_mark_lost(op: Operation) -> str:
    """Record a VM whose domain is gone as deleted; give back its addresses and port."""
    vm = VirtualMachine.objects.select_related("host", "owner").get(pk=op.vm_id)
    if Hypervisor(vm.host.uri).find_domain(vm.domain_name) is not None:
        raise PortalError(f"The domain of {vm.name} is back on {vm.host.name}; it was not "
                          "marked lost. Refresh the host to see its state.")
    operation_progress(op, "Giving back its addresses")
    if NATMapping.objects.filter(vm=vm).exists():
        nat_detach(vm=vm)
    if SSHPort.objects.filter(vm=vm).exists():
        ssh_port_detach(vm=vm)
    with transaction.atomic():
        ip_release(vm=vm)
        public_ip_release(vm=vm)
        vnc_port_release(vm=vm)
        # Its volumes, if any are left, are reported as orphan volumes from now on.
        vm.extra_disks.all().delete()
        vm.snapshots.all().delete()
        vm.snapshot_schedules.all().delete()
        vm_deleted.send(sender=VirtualMachine, vm=vm)
        vm.state = VMState.DELETED
        vm.deleted_at = timezone.now()
        vm.password_once = ""
        vm.attention = (f"Marked lost: its domain was gone from host {vm.host.name}.")
        vm.save(update_fields=["state", "deleted_at", "password_once", "attention"])
    _forget_missing(vm)
    notify(recipients=[vm.owner.email], subject=f"Your VM {vm.name} was lost",
           body=(f"The virtual machine {vm.name} was no longer on its host {vm.host.name}, "
                 "and an administrator has marked it lost: it is gone, and its addresses "
                 "were given back. Ask for a new VM if you still need one.\n\n"
                 f"{absolute_url('vms:vm_list')}"))
    return f"{vm.name} marked lost; its IP, MAC and VNC port were given back."


def vm_define_from_disk(vm: VirtualMachine, hv: Hypervisor, *, then: str = "") -> None:
    """Define the VM's domain on `hv` (its host's adapter) from its disk and the portal's data.

    The disk must be in the VM's datastore as that host sees it; the cloud-init seed and the
    extra disks found there are attached again. The VM must hold its VNC port on that host.
    `then` ends a refusal (what to do instead).
    """
    pool = vm.datastore.pool_name
    disk = str(PurePosixPath(vm.datastore.path) / vm.volume_name)
    if not hv.volume_exists(pool, vm.volume_name):
        raise PortalError(f"The disk of {vm.name} ({disk}) is gone from datastore "
                          f"{vm.datastore.name} as {vm.host.name} sees it; it cannot be "
                          f"defined from it. {then}".strip())
    ip = vm.private_ip
    if ip is None:
        raise PortalError(f"{vm.name} holds no private address to define it with. "
                          f"{then}".strip())
    seed = (str(PurePosixPath(vm.datastore.path) / vm.seed_volume_name)
            if hv.volume_exists(pool, vm.seed_volume_name) else None)
    hv.ensure_network_active(ip.vlan.network_name)
    hv.define_domain(build_domain_xml(vm_spec(vm, disk, ip, seed_path=seed)))
    for extra in vm.extra_disks.select_related("datastore").exclude(target=""):
        path = str(PurePosixPath(extra.datastore.path) / extra.volume_name)
        if hv.volume_exists(extra.datastore.pool_name, extra.volume_name):
            hv.attach_disk(vm.domain_name, path, extra.target)


@handles(OperationKind.VM_RECREATE, states=MISSING_STATES, permission=APPLY_CHANGE)
def vm_recreate(op: Operation) -> str:
    """Define the VM's domain again from the portal's data on its disk; start it if told."""
    vm = VirtualMachine.objects.select_related(
        "host", "datastore", "owner", "organisation").get(pk=op.vm_id)
    hv = Hypervisor(vm.host.uri)
    if hv.find_domain(vm.domain_name) is None:
        if vm.vnc_port is None:
            vnc_port_allocate(vm=vm, avoid=hv.vnc_ports_in_use())
        operation_progress(op, "Defining the domain again")
        vm_define_from_disk(vm, hv, then="Mark it lost.")
    facts = hv.domain(vm.domain_name)
    if op.arguments.get("start") and facts.state != "running":
        operation_progress(op, "Starting it")
        facts = hv.start(vm.domain_name)
    vm_observe(vm, facts)
    _forget_missing(vm)
    return f"{vm.name} defined again from its disk on {vm.host.name}" + (
        " and started." if op.arguments.get("start") else ".")
