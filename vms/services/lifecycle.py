"""Install, power actions and deletion of VMs, each carried out as an Operation."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts.placement import host_choose
from hosts.virt import DomainFacts, Hypervisor, NotFound, VirtError
from networking.allocation import ip_allocate, ip_release
from portal import permissions
from portal.errors import PortalError

from ..domain_xml import DomainSpec, build_domain_xml
from ..models import Operation, OperationKind, OperationStatus, VirtualMachine, VMRequest, VMState
from .notify import absolute_url, notify
from .operations import handles, operation_create, operation_progress

logger = logging.getLogger(__name__)

GIB = 1024**3

# The VM states from which each owner action makes sense; the worker re-checks with libvirt.
ACTION_STATES: dict[OperationKind, tuple[str, ...]] = {
    OperationKind.START: (VMState.SHUTOFF, VMState.CRASHED, VMState.UNKNOWN),
    OperationKind.SHUTDOWN: (VMState.RUNNING,),
    OperationKind.DESTROY: (VMState.RUNNING, VMState.PAUSED, VMState.CRASHED, VMState.UNKNOWN),
    OperationKind.REBOOT: (VMState.RUNNING,),
    OperationKind.SUSPEND: (VMState.RUNNING,),
    OperationKind.RESUME: (VMState.PAUSED,),
    OperationKind.DELETE: (VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF, VMState.CRASHED,
                           VMState.FAILED, VMState.UNKNOWN, VMState.PENDING),
}
OWNER_ACTIONS = tuple(ACTION_STATES)

LIBVIRT_STATE = {
    "running": VMState.RUNNING, "blocked": VMState.RUNNING, "paused": VMState.PAUSED,
    "pmsuspended": VMState.PAUSED, "shutoff": VMState.SHUTOFF, "shutdown": VMState.RUNNING,
    "crashed": VMState.CRASHED, "nostate": VMState.UNKNOWN,
}


def vm_create_from_request(*, request: VMRequest, actor) -> VirtualMachine:  # noqa: ANN001
    """Record the VM of an approved request and queue its install."""
    vm = VirtualMachine(
        name=request.name, owner=request.requester, organisation=request.organisation,
        request=request, template=request.template, vcpus=request.vcpus,
        memory_mib=request.memory_mib, disk_gib=request.disk_gib, purpose=request.purpose,
        state=VMState.PENDING,
    )
    vm.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            vm.save()
    except IntegrityError as exc:
        raise PortalError(f"A live VM is already called {request.name}.") from exc
    operation_create(kind=OperationKind.INSTALL, vm=vm, requested_by=actor)
    return vm


def vm_action_request(*, vm: VirtualMachine, kind: OperationKind, actor) -> Operation:  # noqa: ANN001
    """Queue a power action or deletion the actor asked for, if the VM's state allows it."""
    if kind not in ACTION_STATES:
        raise PortalError(f"'{kind}' is not an action on a VM.")
    with transaction.atomic():
        locked = VirtualMachine.objects.select_for_update().get(pk=vm.pk)
        if not permissions.can_operate_vm(actor, locked):
            raise PortalError(f"You may not act on {locked.name}.")
        if locked.state not in ACTION_STATES[kind]:
            raise PortalError(
                f"Cannot {OperationKind(kind).label.lower()} {locked.name} while it is "
                f"{locked.get_state_display().lower()}."
            )
        if locked.operations.filter(status__in=[OperationStatus.QUEUED,
                                                OperationStatus.RUNNING]).exists():
            raise PortalError(f"Another operation on {locked.name} is under way; wait for it.")
        try:
            with transaction.atomic():
                op = operation_create(kind=kind, vm=locked, requested_by=actor)
        except IntegrityError as exc:
            raise PortalError(f"Another operation on {locked.name} is under way.") from exc
        if kind == OperationKind.DELETE:
            locked.state = VMState.DELETING
            locked.save(update_fields=["state"])
    return op


def _observe(vm: VirtualMachine, facts: DomainFacts | None) -> None:
    vm.state = LIBVIRT_STATE.get(facts.state, VMState.UNKNOWN) if facts else VMState.UNKNOWN
    vm.state_checked_at = timezone.now()
    vm.save(update_fields=["state", "state_checked_at"])


def _hypervisor(vm: VirtualMachine) -> Hypervisor:
    if vm.host is None:
        raise PortalError(f"{vm.name} is on no host; it was never installed.")
    return Hypervisor(vm.host.uri)


def _spec(vm: VirtualMachine, disk_path: str, mac: str, network: str) -> DomainSpec:
    return DomainSpec(
        name=vm.domain_name, uuid=str(vm.uuid), domain_type=vm.host.accel,
        vcpus=vm.vcpus, memory_mib=vm.memory_mib, disk_path=disk_path,
        network=network, mac=mac, description=vm.purpose,
        metadata={"vm-id": str(vm.pk), "owner": vm.owner.get_username(),
                  "organisation": vm.organisation.slug},
    )


@handles(OperationKind.INSTALL)
def vm_install(op: Operation) -> str:
    """Place the VM, give it an IP and MAC, make its disk, define and start its domain.

    Each step is idempotent so a retried install picks up what is already there; if a
    step fails, every resource taken so far is given back before the error is raised.
    """
    vm = VirtualMachine.objects.select_related("template__datastore", "owner",
                                               "organisation").get(pk=op.vm_id)
    if vm.state not in (VMState.PENDING, VMState.FAILED, VMState.INSTALLING):
        raise PortalError(f"{vm.name} is {vm.get_state_display().lower()}; nothing to install.")
    undo: list[tuple[str, Callable[[], None]]] = []
    vm.state = VMState.INSTALLING
    vm.save(update_fields=["state"])
    try:
        operation_progress(op, "Choosing a host")
        with transaction.atomic():
            if vm.host_id is None:
                vm.host = host_choose(vcpus=vm.vcpus, memory_mib=vm.memory_mib,
                                      template=vm.template)
                vm.datastore = vm.template.datastore
                vm.save(update_fields=["host", "datastore"])
        undo.append(("host", lambda: _forget_host(vm)))

        operation_progress(op, f"Allocating an IP address on {vm.host.name}")
        ip = ip_allocate(vm=vm)
        undo.append(("IP", lambda: ip_release(vm=vm)))

        hv = Hypervisor(vm.host.uri)
        ds = vm.datastore
        operation_progress(op, f"Creating the disk on {ds.name}")
        hv.ensure_pool(ds.pool_name, ds.path)
        _check_template_image(hv, vm)
        disk_path = hv.create_overlay(ds.pool_name, vm.volume_name, vm.template.image_path,
                                      vm.disk_gib * GIB)
        undo.append(("disk", lambda: hv.delete_volume(ds.pool_name, vm.volume_name)))

        operation_progress(op, "Defining the domain")
        existing = hv.find_domain(vm.domain_name)
        if existing is not None and existing.uuid != str(vm.uuid):
            raise PortalError(
                f"Host {vm.host.name} already has another domain called {vm.domain_name}."
            )
        hv.ensure_network_active(ip.vlan.network_name)
        hv.define_domain(build_domain_xml(_spec(vm, disk_path, ip.mac, ip.vlan.network_name)))
        undo.append(("domain", lambda: hv.undefine_domain(vm.domain_name)))

        operation_progress(op, "Starting")
        facts = hv.start(vm.domain_name)
    except Exception:
        for what, step in reversed(undo):
            try:
                step()
            except Exception:  # keep undoing the rest; the reconciler reports what is left
                logger.exception("could not give back the %s of %s", what, vm.name)
        vm.state = VMState.FAILED
        vm.save(update_fields=["state"])
        raise
    _observe(vm, facts)
    notify(recipients=[vm.owner.email], subject=f"VM {vm.name} is ready",
           body=(f"Your VM {vm.name} runs on {vm.host.name} with IP {ip.address}.\n"
                 f"{absolute_url('vms:vm_detail', vm.pk)}"))
    return f"Installed on {vm.host.name} with IP {ip.address} and MAC {ip.mac}."


def _check_template_image(hv: Hypervisor, vm: VirtualMachine) -> None:
    """Refuse a template image that is not a standalone qcow2 inside its datastore."""
    template, pool = vm.template, vm.datastore.pool_name
    try:
        image = hv.inspect_image(pool, template.image)
    except NotFound as exc:
        raise PortalError(
            f"Template {template.name}: image {template.image} is not in datastore "
            f"{vm.datastore.name} on {vm.host.name}."
        ) from exc
    if image.format != "qcow2":
        raise PortalError(f"Template {template.name}: image {template.image} is "
                          f"{image.format}, not qcow2.")
    if image.backing_path:
        raise PortalError(f"Template {template.name}: image {template.image} has a backing "
                          "file; templates must be standalone images.")


def _forget_host(vm: VirtualMachine) -> None:
    vm.host = None
    vm.datastore = None
    vm.save(update_fields=["host", "datastore"])


def _power(action: Callable[[Hypervisor, str], DomainFacts], done: str) -> Callable[
        [Operation], str]:
    def run(op: Operation) -> str:
        vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
        hv = _hypervisor(vm)
        try:
            facts = action(hv, vm.domain_name)
        except VirtError:
            _observe(vm, hv.find_domain(vm.domain_name))
            raise
        _observe(vm, facts)
        return f"{vm.name} {done}."

    return run


handles(OperationKind.START)(_power(lambda hv, n: hv.start(n), "started"))
handles(OperationKind.DESTROY)(_power(lambda hv, n: hv.destroy(n), "forced off"))
handles(OperationKind.REBOOT)(_power(lambda hv, n: hv.reboot(n), "rebooted"))
handles(OperationKind.SUSPEND)(_power(lambda hv, n: hv.suspend(n), "suspended"))
handles(OperationKind.RESUME)(_power(lambda hv, n: hv.resume(n), "resumed"))
handles(OperationKind.SHUTDOWN)(_power(
    lambda hv, n: hv.shutdown(n, timeout=settings.PORTAL["SHUTDOWN_TIMEOUT"]), "shut down"))


@handles(OperationKind.DELETE)
def vm_delete(op: Operation) -> str:
    """Undefine the domain, remove its disk, give back its IP and MAC, mark the VM deleted."""
    vm = VirtualMachine.objects.select_related("host", "datastore").get(pk=op.vm_id)
    if vm.host is not None:
        hv = Hypervisor(vm.host.uri)
        try:
            operation_progress(op, "Removing the domain")
            hv.undefine_domain(vm.domain_name)
            if vm.datastore is not None:
                operation_progress(op, "Removing the disk")
                hv.delete_volume(vm.datastore.pool_name, vm.volume_name)
        except VirtError:
            # The VM stays listed so the owner can try again once the host answers.
            vm.state = VMState.UNKNOWN
            vm.save(update_fields=["state"])
            raise
    ip_release(vm=vm)
    vm.state = VMState.DELETED
    vm.deleted_at = timezone.now()
    vm.save(update_fields=["state", "deleted_at"])
    return f"{vm.name} deleted; its disk, IP and MAC were given back."
