"""Install, power actions and deletion of VMs, each carried out as an Operation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import PortalError
from hosts.remote import RemoteError
from hosts.virt import DomainFacts, Hypervisor, ShutdownTimeout, VirtError
from hosts.virt.domain_xml import build_interface_xml
from hosts.vnc import vnc_port_release
from networking.allocation import (
    ip_allocate,
    ip_release,
    public_ip_release,
)
from networking.models import NATMapping, PrivateIP, SecurityDomain, SSHPort
from networking.services import (
    dhcp_add,
    dhcp_remove,
    nat_attach,
    nat_detach,
    nat_remap,
    ssh_port_detach,
    ssh_port_remap,
)
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request, operation_scope_check
from operations.runner import RunFenced, operation_progress, operation_superseded
from operations.undo import undo_steps

from ..models import RequestKind, VirtualMachine, VMRequest, VMState
from ..signals import vm_deleted
from . import steps
from .changes import (
    clones_record,
    disk_arguments,
    extra_disks_remove,
    forward_or_undo,
    forward_target,
    resize_arguments,
    ssh_port_request_check,
)
from .credentials import login_name_for, password_prepare
from .domain import APPLY_CHANGE, CHANGEABLE_STATES, OPERATE, vm_hypervisor, vm_observe, vm_spec
from .notify import absolute_url, notify
from .resize_move import resize_move_request, resize_needs_move

GIB = 1024**3

# The VM states from which each owner action makes sense; the worker re-checks with libvirt.
ACTION_STATES: dict[OperationKind, tuple[str, ...]] = {
    OperationKind.START: (VMState.SHUTOFF, VMState.CRASHED, VMState.UNKNOWN),
    OperationKind.SHUTDOWN: (VMState.RUNNING,),
    OperationKind.DESTROY: (VMState.RUNNING, VMState.PAUSED, VMState.CRASHED, VMState.UNKNOWN),
    OperationKind.REBOOT: (VMState.RUNNING,),
    OperationKind.SUSPEND: (VMState.RUNNING,),
    OperationKind.RESUME: (VMState.PAUSED,),
    # Installing and deleting too: offered only while no operation is under way, i.e. when
    # the install or deletion died half-way and the VM needs attention.
    OperationKind.DELETE: (VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF, VMState.CRASHED,
                           VMState.FAILED, VMState.UNKNOWN, VMState.PENDING,
                           VMState.INSTALLING, VMState.DELETING),
    OperationKind.PUBLIC_IP_RELEASE: (VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF,
                                      VMState.CRASHED, VMState.UNKNOWN),
    OperationKind.SSH_PORT_RELEASE: (VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF,
                                     VMState.CRASHED, VMState.UNKNOWN),
}
OWNER_ACTIONS = tuple(ACTION_STATES)


def vm_create_from_request(*, request: VMRequest, actor) -> VirtualMachine:  # noqa: ANN001
    """Record the VM of an approved request and queue its install."""
    vm = VirtualMachine(
        name=request.name, owner=request.requester, organisation=request.organisation,
        request=request, template=request.template, vcpus=request.vcpus,
        memory_mib=request.memory_mib, disk_gib=request.disk_gib, purpose=request.purpose,
        security_domain=request.security_domain, state=VMState.PENDING,
        login_user=login_name_for(request.requester.get_username()),
        login_keys=request.ssh_keys,
    )
    vm.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            vm.save()
    except IntegrityError as exc:
        raise PortalError(f"A live VM is already called {request.name}.") from exc
    operation_request(kind=OperationKind.INSTALL, actor=actor, vm=vm)
    return vm


CHANGE_OPERATIONS = {
    RequestKind.RESIZE: OperationKind.RESIZE,
    RequestKind.DISK: OperationKind.DISK_ADD,
    RequestKind.SSH_PORT: OperationKind.SSH_PORT_ATTACH,
    RequestKind.NETWORK: OperationKind.NETWORK_MOVE,
    RequestKind.PUBLIC_IP: OperationKind.PUBLIC_IP_ATTACH,
}
BUSY_THEN = "approve again when it has finished."


def _change_arguments(request: VMRequest) -> Callable[[VirtualMachine], dict] | dict:
    kind = RequestKind(request.kind)
    if kind == RequestKind.RESIZE:
        return resize_arguments(request)
    if kind == RequestKind.DISK:
        return disk_arguments(request)
    arguments = {"request": request.pk}
    if request.security_domain_id:
        arguments["security_domain"] = request.security_domain_id
    return arguments


def _changeable(vm: VirtualMachine) -> None:
    if vm.state not in CHANGEABLE_STATES:
        raise PortalError(f"{vm.name} is {vm.get_state_display().lower()}; it cannot change now.")


def vm_change_apply(*, request: VMRequest, actor) -> Operation:  # noqa: ANN001
    """Queue the operation that carries out an approved change request.

    Every change goes through `operation_request` (lock, permission, state, scope, create).
    A resize its VM's host has no room for is a migration to a host with room that resizes
    the VM once there (`resize_move`). A clone's operations run on the new VMs; the original
    is checked as the change's target first (its state, nothing else under way on it), and
    the first copy's operation returned.
    """
    vm = VirtualMachine.objects.get(pk=request.target_id)
    kind = RequestKind(request.kind)
    if kind == RequestKind.CLONE:
        with transaction.atomic():
            source = VirtualMachine.objects.select_for_update().get(pk=vm.pk)
            _changeable(source)
            operation_scope_check(vm=source, then=BUSY_THEN)
            return [operation_request(kind=OperationKind.CLONE, actor=actor, vm=clone,
                                      doing="copy", then=BUSY_THEN,
                                      arguments={"request": request.pk, "source": source.pk})
                    for clone in clones_record(request=request, vm=source)][0]
    if kind == RequestKind.RESIZE and resize_needs_move(
            vm, int(request.params["vcpus"]), int(request.params["memory_mib"])):
        # Its host has no room for the new sizes: it moves to one that has, then resizes.
        return resize_move_request(request=request, actor=actor, then=BUSY_THEN)
    check = ssh_port_request_check if kind == RequestKind.SSH_PORT else None
    return operation_request(kind=CHANGE_OPERATIONS[kind], actor=actor, vm=vm, doing="change",
                             check=check, arguments=_change_arguments(request), then=BUSY_THEN)


def vm_action_request(*, vm: VirtualMachine, kind: OperationKind, actor) -> Operation:  # noqa: ANN001
    """Queue a power action or deletion the actor asked for, if the VM's state allows it."""
    if kind not in ACTION_STATES:
        raise PortalError(f"'{kind}' is not an action on a VM.")
    with transaction.atomic():
        # Permission (`vms.operate_vm`), the states of ACTION_STATES and the VM's scope.
        op = operation_request(kind=kind, actor=actor, vm=vm)
        if kind == OperationKind.DELETE:
            VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.DELETING)
    return op


INSTALL_STATES = (VMState.PENDING, VMState.FAILED, VMState.INSTALLING)


@handles(OperationKind.INSTALL, states=INSTALL_STATES, records_steps=True)
def vm_install(op: Operation) -> str:
    """Place the VM, give it an IP, MAC and VNC port, make its disk, define and start it.

    Built from the steps of `vms.services.steps` (a clone takes the same ones): each is
    idempotent, so a retried install picks up what is already there, and recorded on the
    operation before it is taken, so what a failed or killed run took is given back.
    """
    vm = VirtualMachine.objects.select_related(
        "template__datastore", "owner", "organisation", "security_domain__vlan", "request",
    ).get(pk=op.vm_id)
    if vm.state not in INSTALL_STATES:
        raise PortalError(f"{vm.name} is {vm.get_state_display().lower()}; nothing to install.")
    build = steps.Build(op=op, vm=vm, vlan=steps.vm_vlan(vm))
    vm.state = VMState.INSTALLING
    vm.save(update_fields=["state"])
    with steps.given_back(op, vm):
        steps.step_host(build, datastore=vm.template.datastore)
        steps.step_ip(build)
        steps.step_vnc_port(build)
        steps.step_disk_from_template(build)
        password_prepare(vm)
        steps.step_seed(build)
        steps.step_dhcp(build)
        steps.step_domain(build)
        if vm.request is not None and vm.request.public_ip:
            steps.step_public_ip(build)
    vm_observe(vm, build.facts)
    ip, public = build.ip, build.public
    reach = f", public IP {public.address}" if public else ""
    notify(recipients=[vm.owner.email], subject=f"VM {vm.name} is ready",
           body=(f"Your VM {vm.name} runs on {vm.host.name} with IP {ip.address}{reach}.\n"
                 f"{absolute_url('vms:vm_detail', vm.pk)}"))
    return f"Installed on {vm.host.name}: IP {ip.address}, MAC {ip.mac}{reach}."


def _power(action: Callable[[Hypervisor, str], DomainFacts], done: str) -> Callable[
        [Operation], str]:
    def run(op: Operation) -> str:
        vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
        hv = vm_hypervisor(vm)
        try:
            facts = action(hv, vm.domain_name)
        except VirtError:
            vm_observe(vm, hv.find_domain(vm.domain_name))
            raise
        vm_observe(vm, facts)
        return f"{vm.name} {done}."

    return run


@handles(OperationKind.START, states=ACTION_STATES[OperationKind.START], permission=OPERATE)
def vm_start(op: Operation) -> str:
    """Start the VM; sizes waiting for a restart take effect now."""
    message = _power(lambda hv, n: hv.start(n), "started")(op)
    VirtualMachine.objects.filter(pk=op.vm_id).update(sizes_pending_restart=False)
    return message


def _power_handles(kind: OperationKind, action: Callable[[Hypervisor, str], DomainFacts],
                   done: str, **spec: object) -> None:
    handles(kind, states=ACTION_STATES[kind], permission=OPERATE, **spec)(_power(action, done))


# Force off may be asked for while a shut down waits for the guest: the shut down gives way.
_power_handles(OperationKind.DESTROY, lambda hv, n: hv.destroy(n), "forced off",
               preempts=(OperationKind.SHUTDOWN,))
_power_handles(OperationKind.REBOOT, lambda hv, n: hv.reboot(n), "rebooted")
_power_handles(OperationKind.SUSPEND, lambda hv, n: hv.suspend(n), "suspended")
_power_handles(OperationKind.RESUME, lambda hv, n: hv.resume(n), "resumed")


def shutdown_ignored_words(op: Operation, error: Exception) -> str:
    """Say, in the owner's words, that the guest ignored the shut down and what to do."""
    seconds = getattr(error, "seconds", settings.PORTAL["SHUTDOWN_TIMEOUT"])
    return (f"{op.vm.name} did not shut down within {seconds:g} s; the guest may ignore ACPI "
            "requests. Use Force off (like pulling the power plug) or shut it down from "
            "inside.")


@handles(OperationKind.SHUTDOWN, states=ACTION_STATES[OperationKind.SHUTDOWN],
         permission=OPERATE, routine={ShutdownTimeout: shutdown_ignored_words})
def vm_shutdown(op: Operation) -> str:
    """Ask the guest to power off and wait for it; stop waiting when a Force off takes over.

    A guest that ignores the request is a routine failure (the owner's to act on); the raw
    text stays in the operation's detail.
    """
    vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
    hv = vm_hypervisor(vm)
    try:
        facts = hv.shutdown(vm.domain_name, timeout=settings.PORTAL["SHUTDOWN_TIMEOUT"],
                            stop_waiting=lambda: operation_superseded(op))
    except VirtError:
        vm_observe(vm, hv.find_domain(vm.domain_name))
        raise
    if operation_superseded(op):
        # Recorded as given way when the Force off was asked for; the Force off observes.
        raise RunFenced(f"operation {op.pk} gave way")
    vm_observe(vm, facts)
    return f"{vm.name} shut down."


@handles(OperationKind.DELETE, states=ACTION_STATES[OperationKind.DELETE], permission=OPERATE)
def vm_delete(op: Operation) -> str:
    """Undefine the domain, remove its disk, give back its IP and MAC, mark the VM deleted."""
    vm = VirtualMachine.objects.select_related("host", "datastore").get(pk=op.vm_id)
    try:
        if NATMapping.objects.filter(vm=vm).exists():
            operation_progress(op, "Removing the NAT mapping")
            nat_detach(vm=vm)
        if SSHPort.objects.filter(vm=vm).exists():
            operation_progress(op, "Removing the SSH port forward")
            ssh_port_detach(vm=vm)
        if vm.host is not None:
            hv = vm_hypervisor(vm)
            operation_progress(op, "Removing the domain")
            hv.undefine_domain(vm.domain_name)
            if vm.datastore is not None:
                operation_progress(op, "Removing the disks")
                hv.delete_volume(vm.datastore.pool_name, vm.volume_name)
                hv.delete_volume(vm.datastore.pool_name, vm.seed_volume_name)
            extra_disks_remove(vm, hv)
            for ip in PrivateIP.objects.filter(vm=vm).select_related("vlan"):
                operation_progress(op, "Removing the DHCP entry")
                dhcp_remove(vm=vm, ip=ip)
    except (VirtError, RemoteError):
        # The VM stays listed so the owner can try again once the host answers.
        vm.state = VMState.UNKNOWN
        vm.save(update_fields=["state"])
        raise
    ip_release(vm=vm)
    public_ip_release(vm=vm)
    vnc_port_release(vm=vm)
    vm.snapshots.all().delete()  # internal snapshots went with the disk
    vm.snapshot_schedules.all().delete()
    vm_deleted.send(sender=VirtualMachine, vm=vm)
    vm.state = VMState.DELETED
    vm.deleted_at = timezone.now()
    vm.password_once = ""  # a password never shown dies with its VM
    vm.save(update_fields=["state", "deleted_at", "password_once"])
    return f"{vm.name} deleted; its disk, addresses and VNC port were given back."


def _disk_path(vm: VirtualMachine) -> str:
    return str(PurePosixPath(vm.datastore.path) / vm.volume_name)


@handles(OperationKind.NETWORK_MOVE, states=CHANGEABLE_STATES, permission=APPLY_CHANGE)
def vm_network_move(op: Operation) -> str:
    """Move the VM to another security domain: new IP and MAC in its VLAN, old ones released."""
    vm = VirtualMachine.objects.select_related("host", "datastore", "owner", "organisation",
                                               "security_domain").get(pk=op.vm_id)
    target = SecurityDomain.objects.select_related("vlan").get(
        pk=op.arguments["security_domain"])
    hv = vm_hypervisor(vm)
    held = list(PrivateIP.objects.filter(vm=vm).select_related("vlan"))
    old = next((ip for ip in held if ip.vlan_id != target.vlan_id), None)
    if old is None:
        VirtualMachine.objects.filter(pk=vm.pk).update(security_domain=target)
        return f"{vm.name} is already in {target}."
    undo: list[tuple[str, Callable[[], None]]] = []
    try:
        operation_progress(op, f"Allocating an IP address on {target.vlan}")
        new = ip_allocate(vm=vm, vlan=target.vlan)
        undo.append(("new IP", lambda: ip_release(vm=vm, address=new.address)))
        hv.ensure_network_active(target.vlan.network_name)
        operation_progress(op, "Writing the DHCP entry")
        dhcp_add(vm=vm, ip=new)
        undo.append(("new DHCP entry", lambda: dhcp_remove(vm=vm, ip=new)))
        operation_progress(op, "Swapping the network interface")
        hv.replace_interface(vm.domain_name, old.mac,
                             build_interface_xml(vm_spec(vm, _disk_path(vm), new)))
        undo.append(("interface", lambda: hv.replace_interface(
            vm.domain_name, new.mac, build_interface_xml(vm_spec(vm, _disk_path(vm), old)))))
        if NATMapping.objects.filter(vm=vm).exists():
            operation_progress(op, "Moving the NAT mapping")
            nat_remap(vm=vm, private_ip=new)
            undo.append(("NAT mapping", lambda: nat_remap(vm=vm, private_ip=old)))
        if SSHPort.objects.filter(vm=vm).exists():
            operation_progress(op, "Moving the SSH port forward")
            # Registered first: remapping back to the old address also undoes a half move.
            undo.append(("SSH port forward", lambda: ssh_port_remap(vm=vm, private_ip=old)))
            ssh_port_remap(vm=vm, private_ip=new)
        dhcp_remove(vm=vm, ip=old)
    except Exception:
        undo_steps(vm, undo)
        raise
    ip_release(vm=vm, address=old.address)
    VirtualMachine.objects.filter(pk=vm.pk).update(security_domain=target)
    return (f"{vm.name} moved to {target}: IP {new.address}, MAC {new.mac} "
            f"(was {old.address}).")


@handles(OperationKind.PUBLIC_IP_ATTACH, states=CHANGEABLE_STATES, permission=APPLY_CHANGE)
def vm_public_ip_attach(op: Operation) -> str:
    """Give the VM a public IP and map it to its private one on the NAT box."""
    vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
    ip = forward_target(vm, "a public one")
    public = forward_or_undo(vm, "public IP", lambda: nat_attach(vm=vm, private_ip=ip),
                             lambda: nat_detach(vm=vm))
    return f"{vm.name} is reachable at {public.address} (NAT to {ip.address})."


@handles(OperationKind.PUBLIC_IP_RELEASE, permission=OPERATE,
         states=ACTION_STATES[OperationKind.PUBLIC_IP_RELEASE])
def vm_public_ip_release(op: Operation) -> str:
    """Remove the VM's NAT mapping and give its public IP back."""
    vm = VirtualMachine.objects.get(pk=op.vm_id)
    nat_detach(vm=vm)
    return f"{vm.name} no longer has a public IP."
