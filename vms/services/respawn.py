"""Respawning the VMs of a dead host on other hosts, from their disks on a shared datastore.

One host operation (`HOST_RESPAWN`, holding the dead host) fences the host first (powers it
off through IPMI or SSH, whatever VMs are recorded there, or takes an administrator's word
that it is off), so that no VM ever runs twice; a fence that fails stops everything. Then,
one VM at a time, it places the VM with install's placement on another up host that sees its
datastore (each placed VM counts at once for the next), takes a VNC port there, writes its
DHCP entry, defines its domain from its disk (`missing.vm_define_from_disk`) and starts it if
it ran before. Each VM's steps are recorded before they are taken and forgotten once it has
moved: a worker that dies half-way leaves only the VM under way to give back, and a retry
goes on with the VMs still on the dead host. A VM that cannot move (its disk only on the dead
host, no host with room) stays there, marked as needing attention with the reason.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from core.errors import HostFailure, PortalError
from hosts.models import Host, HostStatus
from hosts.placement import host_choose
from hosts.power import host_fence, host_fence_means
from hosts.virt import Hypervisor
from hosts.vnc import vnc_port_allocate
from networking.dhcp import DhcpEntry
from networking.services import dhcp_backend, dhcp_entry
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request
from operations.runner import RunFenced, operation_progress, operation_step, operation_steps_keep
from operations.undo import Step, recorded_steps_undo, step_register

from ..models import VirtualMachine, VMState
from .domain import vm_observe
from .missing import vm_define_from_disk

logger = logging.getLogger(__name__)

MANAGE_HOST = "hosts.manage_host"
# The VMs that ran before their host died are started again on their new host.
STARTED_AGAIN = (VMState.RUNNING, VMState.PAUSED)
# A VM in one of these states is half-made or half-gone: it is not moved.
NOT_MOVED = {VMState.PENDING: "it was never installed", VMState.INSTALLING: "it was installing",
             VMState.FAILED: "its install failed", VMState.DELETING: "it was being deleted"}


def host_respawn_refusal(host: Host, *, off_confirmed: bool = False) -> str | None:
    """Return why the VMs of this host may not be respawned now, or None."""
    if host.status != HostStatus.DOWN:
        return (f"{host.name} is {host.get_status_display().lower()}: only the VMs of a host "
                "that is down are respawned elsewhere. Migrate them instead.")
    if not VirtualMachine.objects.live().filter(host=host).exists():
        return f"No VM is recorded on {host.name}; there is nothing to respawn."
    if host_fence_means(host) is None and not off_confirmed:
        return (f"The portal cannot power {host.name} off (no IPMI or SSH power method), so "
                f"it cannot make sure its VMs are dead: tick “I have made sure {host.name} is "
                "powered off” once you have, or set a power method in administration.")
    return None


def host_respawn_request(*, host: Host, actor=None, off_confirmed: bool = False,  # noqa: ANN001
                         automatic: bool = False) -> Operation:
    """Ask for the VMs of a dead host to be respawned elsewhere, fencing it first.

    `off_confirmed` is the actor's word that the host is powered off, needed when no power
    method can fence it; who said so is recorded on the operation.
    """

    def check(locked: Host) -> None:
        refusal = host_respawn_refusal(locked, off_confirmed=off_confirmed)
        if refusal:
            raise PortalError(refusal)

    confirmed_by = actor.get_username() if (off_confirmed and actor is not None) else ""
    return operation_request(
        kind=OperationKind.HOST_RESPAWN, actor=actor, host=host, check=check,
        doing="respawn the VMs of",
        arguments={"off_confirmed_by": confirmed_by, "automatic": automatic})


def respawn_after_marked_down(host: Host) -> Operation | None:
    """Respawn a host's VMs when the health check marked it down, if the settings say so.

    Only with `PORTAL["RESPAWN_AUTOMATIC"]` on, and only when its power method can fence it:
    nobody is there to confirm that it is off.
    """
    if not settings.PORTAL.get("RESPAWN_AUTOMATIC"):
        return None
    if host_fence_means(host) is None:
        logger.warning("%s is down; its VMs are not respawned automatically: no power method "
                       "can fence it", host.name)
        return None
    if not VirtualMachine.objects.live().filter(host=host).exists():
        return None
    try:
        return host_respawn_request(host=host, automatic=True)
    except PortalError as exc:
        logger.warning("the VMs of %s were not respawned automatically: %s", host.name, exc)
        return None


# ---- the operation ----

def _fence(op: Operation, host: Host) -> str:
    """Fence the host, or raise saying that nothing was respawned."""
    earlier = op.arguments.get("fenced", "")
    if earlier and host_fence_means(host) != "IPMI":
        # A retry: SSH does not reach a host it powered off; the earlier fence holds.
        return f"{earlier} (at an earlier attempt)"
    operation_progress(op, f"Fencing {host.name}")
    try:
        said = host_fence(host, off_confirmed_by=op.arguments.get("off_confirmed_by", ""))
    except HostFailure:
        raise  # the tool's or the host's own text goes to admins (FENCE_FAILED words it)
    except PortalError as exc:
        raise PortalError(f"{host.name} was not fenced, so no VM was respawned: {exc}") from exc
    op.arguments = {**op.arguments, "fenced": said}
    Operation.objects.filter(pk=op.pk).update(arguments=op.arguments)
    return said


def _place(op: Operation, vm: VirtualMachine, dead: Host) -> Host:
    """Choose the VM's new host and record it there with a VNC port, in one transaction."""
    with transaction.atomic():
        dest = host_choose(vcpus=vm.vcpus, memory_mib=vm.memory_mib, template=vm.template,
                           datastore=vm.datastore, exclude=(dead.pk,))
        operation_step(op, "respawn_place", vm=vm.pk, vm_name=vm.name, source=dead.pk,
                       vnc_port=vm.vnc_port, dest_name=dest.name)
        VirtualMachine.objects.filter(pk=vm.pk).update(host=dest, vnc_port=None)
        vm.host, vm.vnc_port = dest, None
        vnc_port_allocate(vm=vm, avoid=Hypervisor(dest.uri).vnc_ports_in_use())
    return dest


def _respawn_one(op: Operation, vm: VirtualMachine, dead: Host) -> str:
    """Move one VM of the dead host; return what was done, or raise saying why not."""
    prior = VMState(vm.state)
    if prior in NOT_MOVED:
        raise PortalError(NOT_MOVED[prior])
    ds = vm.datastore
    if ds is None:
        raise PortalError("no datastore is recorded for its disk")
    if not ds.shared:
        raise PortalError(f"its disk is on datastore {ds.name}, which is not shared: only "
                          f"{dead.name} sees it")
    operation_progress(op, f"Placing {vm.name}")
    dest = _place(op, vm, dead)
    hv = Hypervisor(dest.uri)
    existing = hv.find_domain(vm.domain_name)
    if existing is not None and existing.uuid != str(vm.uuid):
        raise PortalError(f"{dest.name} already has another domain called {vm.domain_name}")
    ip = vm.private_ip
    if ip is not None:
        operation_progress(op, f"Writing the DHCP entry of {vm.name} on {dest.name}")
        hv.ensure_network_active(ip.vlan.network_name)
        dhcp_backend().add(dest.uri, dhcp_entry(vm, ip))
        # Recorded once written: a clashing entry refused above is not ours to remove.
        operation_step(op, "respawn_dhcp", vm=vm.pk, host=dest.pk, host_name=dest.name,
                       network=ip.vlan.network_name, mac=ip.mac, address=ip.address,
                       name=vm.domain_name)
    operation_progress(op, f"Defining {vm.name} on {dest.name} from its disk")
    hv.ensure_pool(ds.pool_name, ds.path)
    operation_step(op, "respawn_domain", vm=vm.pk, host=dest.pk, host_name=dest.name,
                   name=vm.domain_name, uuid=str(vm.uuid))
    vm_define_from_disk(vm, hv)
    facts = hv.domain(vm.domain_name)
    if prior in STARTED_AGAIN and facts.state != "running":
        operation_progress(op, f"Starting {vm.name} on {dest.name}")
        facts = hv.start(vm.domain_name)
    vm_observe(vm, facts)
    VirtualMachine.objects.filter(pk=vm.pk).exclude(attention="").update(attention="")
    how = (f"started; it was {prior.label.lower()}" if prior in STARTED_AGAIN
           else f"not started; it was {prior.label.lower()}")
    return f"{vm.name} on {dest.name} ({how})"


def respawn_request_guard(kind: str, vm: object, host: object,
                          parent: Operation | None = None) -> str | None:
    """Refuse any operation on a VM that a respawn is moving right now (registered in ready()).

    The respawn holds the dead host; once the VM's recorded host is its new one, that scope no
    longer covers it, so until the VM is defined and started there, its steps (kept on the
    respawn only while that VM is under way) say it is still being moved.
    """
    if vm is None or kind == OperationKind.HOST_RESPAWN:
        return None
    for op in (Operation.objects.active().filter(kind=OperationKind.HOST_RESPAWN)
               .select_related("host")):
        if any(step.get("vm") == vm.pk for step in op.steps):
            return (f"{vm.name} is being started again on another host, as {op.host.name} is "
                    "down; wait a minute for it to finish, then try again.")
    return None


def _left(op: Operation, vm: VirtualMachine, dead: Host, reason: str) -> str:
    """Mark a VM that stays on the dead host as needing attention; return it in words."""
    VirtualMachine.objects.filter(pk=vm.pk).exclude(state=VMState.DELETED).update(
        attention=f"Not respawned when its host {dead.name} was down (operation #{op.pk}): "
                  f"{reason}.")
    return f"{vm.name} ({reason})"


FENCE_FAILED = ("{host} could not be fenced (powered off), so no VM was respawned; the details "
                "below say why. Retry once its power method works, or power it off by hand, "
                "set its power method to none and ask again, confirming it is off.")


@handles(OperationKind.HOST_RESPAWN, target="host", scope=("host",), permission=MANAGE_HOST,
         records_steps=True, failed_words=FENCE_FAILED)
def host_respawn(op: Operation) -> str:
    """Fence the dead host, then move each of its VMs that can move; say which did and not."""
    dead = Host.objects.get(pk=op.host_id)
    if dead.status != HostStatus.DOWN:
        raise PortalError(f"{dead.name} is {dead.get_status_display().lower()} now; its VMs "
                          "were not respawned.")
    fenced = _fence(op, dead)
    moved, left = [], []
    vms = (VirtualMachine.objects.live().filter(host=dead)
           .select_related("datastore", "template").order_by("name", "pk"))
    for vm in vms:
        start = len(op.steps)
        try:
            moved.append(_respawn_one(op, vm, dead))
        except RunFenced:
            raise
        except BaseException as exc:
            # Give back what this VM took; those moved before keep their new host.
            given = recorded_steps_undo(dead, op.steps[start:])
            operation_steps_keep(op, op.steps[:start] + given)
            vm.host, vm.vnc_port = dead, None
            if not isinstance(exc, Exception):
                raise
            logger.warning("%s was not respawned from %s: %s", vm.name, dead.name, exc)
            left.append(_left(op, vm, dead, str(exc).rstrip(".")))
        else:
            operation_steps_keep(op, op.steps[:start])
    words = [f"{fenced}."]
    if moved:
        words.append(f"Respawned {len(moved)} VM(s): " + "; ".join(moved) + ".")
    if left:
        words.append(f"Left on {dead.name}, needing attention: " + "; ".join(left) + ".")
    if not moved and not left:
        words.append(f"No VM was left on {dead.name}.")
    return " ".join(words)


# ---- giving back a VM's move half-way ----

def _place_undo(owner: object, step: Step) -> None:
    VirtualMachine.objects.filter(pk=step["vm"]).update(host_id=step["source"],
                                                        vnc_port=step["vnc_port"])


def _dhcp_undo(owner: object, step: Step) -> None:
    host = Host.objects.get(pk=step["host"])
    dhcp_backend().remove(host.uri, DhcpEntry(
        network=str(step["network"]), mac=str(step["mac"]), ip=str(step["address"]),
        hostname=str(step["name"])))


def _domain_undo(owner: object, step: Step) -> None:
    hv = Hypervisor(Host.objects.get(pk=step["host"]).uri)
    facts = hv.find_domain(str(step["name"]))
    if facts is not None and facts.uuid == step["uuid"]:
        hv.undefine_domain(str(step["name"]))


step_register("respawn_place", _place_undo, lambda s: (
    f"{s['vm_name']}'s place on host {s.get('dest_name')} (back to its dead host)"),
    kept_while_left=True)
step_register("respawn_dhcp", _dhcp_undo, lambda s: (
    f"DHCP entry {s['address']} ({s['mac']}) on host {s.get('host_name')}"))
step_register("respawn_domain", _domain_undo, lambda s: (
    f"domain {s['name']} on host {s.get('host_name')}"))
