"""Approved changes to a VM: resize, extra disks, clones, forwarded SSH ports, templates."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from core.errors import PortalError
from core.validators import free_text_check
from hosts.images import disk_image_check
from hosts.models import Template
from hosts.selectors import host_usage
from hosts.virt import Hypervisor, VirtError
from networking.allocation import (
    ssh_port_config,
)
from networking.models import PrivateIP, PublicIP, SSHPort
from networking.services import ssh_port_attach, ssh_port_detach
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request
from operations.runner import operation_progress
from operations.undo import undo_steps

from ..models import DiskState, ExtraDisk, VirtualMachine, VMRequest, VMState
from ..selectors import datastore_with_room, name_in_use
from . import steps
from .domain import APPLY_CHANGE, CHANGEABLE_STATES, vm_hypervisor, vm_observe

T = TypeVar("T")

logger = logging.getLogger(__name__)
GIB = 1024**3
DISK_TARGETS = [f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz"]


# --- applying approved requests ---------------------------------------------------------------
# What each approved change asks of `operation_request`: the arguments of its operation (a
# function of the locked VM, called once every check has passed) and any further check.

def resize_arguments(request: VMRequest) -> Callable[[VirtualMachine], dict]:
    """Return the arguments of the resize an approved request asks for."""
    return lambda vm: {"request": request.pk, **request.params}


def disk_arguments(request: VMRequest) -> Callable[[VirtualMachine], dict]:
    """Return a function that records the extra disk the request asks for and names it."""

    def record(vm: VirtualMachine) -> dict:
        size = int(request.params["size_gib"])
        disk = ExtraDisk.objects.create(vm=vm, datastore=datastore_with_room(vm, size),
                                        size_gib=size)
        return {"request": request.pk, "disk": disk.pk}

    return record


def clones_record(*, request: VMRequest, vm: VirtualMachine) -> list[VirtualMachine]:
    """Record each copy of the VM an approved clone request asks for (to be made by CLONE)."""
    clones = []
    for name in request.params["names"]:
        if name_in_use(name):
            raise PortalError(f"A VM called {name} exists now; ask again with other names.")
        clone = VirtualMachine(
            name=name, owner=vm.owner, organisation=vm.organisation, template=vm.template,
            vcpus=vm.vcpus, memory_mib=vm.memory_mib, disk_gib=vm.disk_gib,
            purpose=f"Copy of {vm.name}. {vm.purpose}"[:2000], clone_of=vm,
            security_domain=vm.security_domain, state=VMState.PENDING,
            # The same login as the original; its own seed gives it its own hostname.
            login_user=vm.login_user, login_keys=vm.login_keys,
            password_hash=vm.password_hash)
        clone.full_clean(validate_constraints=False)
        clone.save()
        clones.append(clone)
    return clones


# --- operations ------------------------------------------------------------------------------

@handles(OperationKind.RESIZE, request_states=CHANGEABLE_STATES, permission=APPLY_CHANGE)
def vm_resize(op: Operation) -> str:
    """Give the VM its new vCPUs and RAM, live where libvirt allows, else at the next start."""
    vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
    return resize_apply(vm, int(op.arguments["vcpus"]), int(op.arguments["memory_mib"]))


def resize_apply(vm: VirtualMachine, vcpus: int, memory: int) -> str:
    """Resize the VM on its host if the host has room (else refuse); say when it applies.

    A resize approved for a VM whose host had no room moves it first (`resize_move`); this
    refusal is for a host that lost its room since.
    """
    with transaction.atomic():
        host = type(vm.host).objects.select_for_update().get(pk=vm.host_id)
        used_cpu, used_mem = host_usage(host)
        if (used_cpu - vm.vcpus + vcpus > host.vcpu_capacity
                or used_mem - vm.memory_mib + memory > host.memory_capacity_mib):
            raise PortalError(f"Host {host.name} has no room for {vcpus} vCPUs and "
                              f"{memory} MiB any more; ask for the resize again: "
                              f"{vm.name} will move to a host with room.")
        how = vm_hypervisor(vm).set_resources(vm.domain_name, vcpus, memory)
        VirtualMachine.objects.filter(pk=vm.pk).update(
            vcpus=vcpus, memory_mib=memory, sizes_pending_restart=how == "next-start")
    when = {"live": "now, while it runs", "next-start": "at its next start (shut it down "
            "and start it)", "config": "when it next starts"}[how]
    return f"{vm.name} has {vcpus} vCPUs and {memory} MiB {when}."


def _vm_and_disk(op: Operation) -> tuple[VirtualMachine, ExtraDisk, Hypervisor]:
    vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
    disk = ExtraDisk.objects.select_related("datastore").get(pk=op.arguments["disk"])
    return vm, disk, vm_hypervisor(vm)


@handles(OperationKind.DISK_ADD, request_states=CHANGEABLE_STATES, permission=APPLY_CHANGE)
def disk_add(op: Operation) -> str:
    """Create the disk's volume and attach it, live when the VM runs."""
    vm, disk, hv = _vm_and_disk(op)
    taken: list[tuple[str, Callable[[], None]]] = []
    try:
        ds = disk.datastore
        operation_progress(op, f"Creating a {disk.size_gib} GiB volume on {ds.name}")
        hv.ensure_pool(ds.pool_name, ds.path)
        path = hv.create_volume(ds.pool_name, disk.volume_name, disk.size_gib * GIB)
        taken.append(("volume", lambda: hv.delete_volume(ds.pool_name, disk.volume_name)))
        used = set(hv.disk_targets(vm.domain_name))
        target = next(t for t in DISK_TARGETS if t not in used)
        operation_progress(op, f"Attaching it as {target}")
        how = hv.attach_disk(vm.domain_name, path, target)
    except Exception:
        undo_steps(vm, taken)
        disk.delete()
        raise
    ExtraDisk.objects.filter(pk=disk.pk).update(state=DiskState.ATTACHED, target=target)
    return (f"A {disk.size_gib} GiB disk is attached to {vm.name} as {target}"
            f"{' while it runs' if how == 'live' else ''}.")


def _disk_path(disk: ExtraDisk) -> str:
    from pathlib import PurePosixPath

    return str(PurePosixPath(disk.datastore.path) / disk.volume_name)


def disk_action_request(*, disk: ExtraDisk, kind: OperationKind, actor) -> Operation:  # noqa: ANN001
    """Queue the detaching or deleting of an extra disk."""
    allowed = {OperationKind.DISK_DETACH: (DiskState.ATTACHED,),
               OperationKind.DISK_DELETE: (DiskState.ATTACHED, DiskState.DETACHED)}

    def disk_state_check(vm: VirtualMachine) -> None:
        if disk.state not in allowed[kind]:
            raise PortalError(f"The disk is {disk.get_state_display().lower()}.")

    return operation_request(kind=kind, actor=actor, vm=disk.vm, doing="change the disks of",
                             check=disk_state_check, arguments={"disk": disk.pk})


@handles(OperationKind.DISK_DETACH, permission="vms.operate_vm")
def disk_detach(op: Operation) -> str:
    """Detach the disk from the VM, keeping its volume."""
    vm, disk, hv = _vm_and_disk(op)
    hv.detach_disk(vm.domain_name, _disk_path(disk))
    ExtraDisk.objects.filter(pk=disk.pk).update(state=DiskState.DETACHED, target="")
    return f"The {disk.size_gib} GiB disk is detached from {vm.name}; its data is kept."


@handles(OperationKind.DISK_DELETE, permission="vms.operate_vm")
def disk_delete(op: Operation) -> str:
    """Detach the disk if needed and delete its volume."""
    vm, disk, hv = _vm_and_disk(op)
    hv.detach_disk(vm.domain_name, _disk_path(disk))
    hv.delete_volume(disk.datastore.pool_name, disk.volume_name)
    disk.delete()
    return f"The {disk.size_gib} GiB disk of {vm.name} is deleted."


def extra_disks_remove(vm: VirtualMachine, hv: Hypervisor) -> None:
    """Delete every extra disk of a VM being deleted (its domain is already gone)."""
    for disk in vm.extra_disks.select_related("datastore"):
        hv.delete_volume(disk.datastore.pool_name, disk.volume_name)
        disk.delete()


@handles(OperationKind.CLONE, records_steps=True, request_states=(VMState.PENDING,),
         permission=APPLY_CHANGE)
def vm_clone(op: Operation) -> str:
    """Copy the source's disk, give the copy its own host, IP, MAC and VNC port, start it.

    Like an install, each step is recorded before it is taken, so a killed worker's steps
    are given back by the reconciler.
    """
    clone = VirtualMachine.objects.select_related(
        "template__datastore", "security_domain__vlan", "owner", "organisation").get(
        pk=op.vm_id)
    source = VirtualMachine.objects.select_related("host", "datastore").get(
        pk=op.arguments["source"])
    if source.host is None or source.datastore is None:
        raise PortalError(f"{source.name} has no disk to copy.")
    facts = vm_hypervisor(source).find_domain(source.domain_name)
    if facts is not None and facts.state not in ("shutoff", "crashed"):
        raise PortalError(f"Shut {source.name} down before it is copied (its disk is in use); "
                          "then retry this operation.")
    build = steps.Build(op=op, vm=clone, vlan=steps.vm_vlan(clone))
    VirtualMachine.objects.filter(pk=clone.pk).update(state=VMState.INSTALLING)
    with steps.given_back(op, clone):
        steps.step_host(build, datastore=source.datastore)
        steps.step_ip(build)
        steps.step_vnc_port(build)
        steps.step_disk_from_vm(build, source=source)
        steps.step_dhcp(build)
        steps.step_seed(build)
        steps.step_domain(build)
    vm_observe(clone, build.facts)
    return f"{clone.name} is a copy of {source.name} on {clone.host}: IP {build.ip.address}."


def template_save_request(*, vm: VirtualMachine, actor, name: str) -> Operation:  # noqa: ANN001
    """Queue the making of a template from a stopped VM's disk (admins)."""
    if not actor.has_perm("vms.make_template", vm):
        raise PortalError("Only an admin saves VMs as templates.")
    name = " ".join(name.split())
    if not name or len(name) > 120:
        raise PortalError("Give the template a name of up to 120 characters.")
    free_text_check(name, what="name")
    if Template.objects.filter(name=name).exists():
        raise PortalError(f"A template is already called {name}.")

    def stopped(locked: VirtualMachine) -> None:
        if locked.state != VMState.SHUTOFF:
            raise PortalError(f"Shut {locked.name} down first: a template is made from a "
                              "stopped VM.")

    return operation_request(kind=OperationKind.SAVE_TEMPLATE, actor=actor, vm=vm,
                             check=stopped, then="", arguments={"name": name})


@handles(OperationKind.SAVE_TEMPLATE)
def template_save(op: Operation) -> str:
    """Copy the VM's disk, flattened, into a new template image."""
    vm = VirtualMachine.objects.select_related("host", "datastore", "template").get(
        pk=op.vm_id)
    name = op.arguments["name"]
    hv = vm_hypervisor(vm)
    ds = vm.datastore
    facts = hv.find_domain(vm.domain_name)
    if facts is not None and facts.state not in ("shutoff", "crashed"):
        raise PortalError(f"Shut {vm.name} down first; then retry.")
    image = f"tpl-{slugify(name)[:40] or 'template'}-{timezone.now():%Y%m%d%H%M%S}.qcow2"
    operation_progress(op, f"Copying the disk of {vm.name}")
    disk_image_check(datastore=ds, volume=vm.volume_name, host=vm.host, owner=vm.name)
    hv.clone_volume(ds.pool_name, vm.volume_name, image)
    try:
        facts = hv.inspect_image(ds.pool_name, image)
        if facts.backing_path:
            raise PortalError("The copy still has a backing file; nothing was saved.")
        base = vm.template
        Template.objects.create(
            name=name, datastore=ds, image=image, os_name=base.os_name,
            min_vcpus=base.min_vcpus, max_vcpus=base.max_vcpus,
            min_memory_mib=base.min_memory_mib, max_memory_mib=base.max_memory_mib,
            min_disk_gib=max(base.min_disk_gib, vm.disk_gib), max_disk_gib=max(
                base.max_disk_gib, vm.disk_gib))
    except Exception:
        try:
            hv.delete_volume(ds.pool_name, image)
        except VirtError:
            logger.exception("could not remove the unfinished template image %s", image)
        raise
    return f"Template '{name}' made from {vm.name} ({image})."


# --- forwarded SSH ports ---------------------------------------------------------------------

def forward_target(vm: VirtualMachine, what: str) -> PrivateIP:
    """Return the private IP a forward to the VM (an SSH port, a public IP) goes to."""
    ip = vm.private_ip
    if ip is None:
        raise PortalError(f"{vm.name} has no private IP to forward {what} to.")
    return ip


def forward_or_undo(vm: VirtualMachine, label: str, attach: Callable[[], T],
                    detach: Callable[[], object]) -> T:
    """Set up a forward to the VM; when that fails, take back what it left (named `label`)."""
    try:
        return attach()
    except Exception:
        undo_steps(vm, [(label, detach)])
        raise


def ssh_port_request_check(vm: VirtualMachine) -> None:
    """Refuse an SSH port for a VM with a public IP or a port already, or with no private IP."""
    if ssh_port_config() is None:
        raise PortalError("This portal forwards no SSH ports (no NAT box address is set); "
                          "ask an admin.")
    if PublicIP.objects.filter(vm=vm).exists():
        raise PortalError(f"{vm.name} has a public IP: reach it by SSH at that address.")
    if SSHPort.objects.filter(vm=vm).exists():
        raise PortalError(f"{vm.name} already has a forwarded SSH port.")
    if not PrivateIP.objects.filter(vm=vm).exists():
        raise PortalError(f"{vm.name} has no private IP yet to forward a port to.")


@handles(OperationKind.SSH_PORT_ATTACH, request_states=CHANGEABLE_STATES,
         permission=APPLY_CHANGE)
def vm_ssh_port_attach(op: Operation) -> str:
    """Forward a port of the NAT box's address to the VM's SSH server; undo it if a step fails.

    When the box cannot even be cleaned up, the port stays held (and recorded) so it is never
    handed to another VM while a stale rule may still point here; a retry keeps it.
    """
    vm = VirtualMachine.objects.get(pk=op.vm_id)
    ip = forward_target(vm, "an SSH port")
    if PublicIP.objects.filter(vm=vm).exists():
        raise PortalError(f"{vm.name} has a public IP: reach it by SSH at that address.")
    row = forward_or_undo(vm, "SSH port", lambda: ssh_port_attach(vm=vm, private_ip=ip),
                          lambda: ssh_port_detach(vm=vm))
    return (f"{vm.name} answers SSH on {row.address} port {row.port} "
            f"(forwarded to {ip.address} port 22).")


# Asked for by the owner (`lifecycle.vm_action_request`) from the states its ACTION_STATES
# names; a failed one is retried whatever the state.
@handles(OperationKind.SSH_PORT_RELEASE, permission="vms.operate_vm", request_states=(
    VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF, VMState.CRASHED, VMState.UNKNOWN))
def vm_ssh_port_release(op: Operation) -> str:
    """Remove the VM's SSH port forward and give the port back."""
    vm = VirtualMachine.objects.get(pk=op.vm_id)
    ssh_port_detach(vm=vm)
    return f"{vm.name} no longer has a forwarded SSH port."
