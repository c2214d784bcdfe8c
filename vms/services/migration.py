"""Migration: moving a VM to another host, live while it runs, by redefinition when stopped.

A migration is one operation on the VM that holds the VM and its destination host
(`scope=("vm", "host")`, the destination being the operation's `host`). It takes a VNC port on
the destination (held on the operation until it ends, `hosts.vnc.vnc_port_reserve`), writes the
VM's DHCP entry there (DHCP is per host; NAT and the RRD history are not), moves the domain
with its snapshots (`Hypervisor.migrate_live` / `migrate_cold`) and records the new host and
port. On a datastore that is not shared the disks are copied (`Hypervisor.migrate_live`
pre-creates the overlay there and copies missing bases). A failure at any step gives back
what was made on the destination (recorded steps, `migration_steps`) and leaves the VM on its
source; a cancel asked while it runs aborts libvirt's job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from core.errors import PortalError
from hosts.models import Host
from hosts.placement import NoHostAvailable, host_choose
from hosts.virt import DomainFacts, Hypervisor, is_remote, vnc_listen_address
from hosts.virt.migration import MigrationCancelled, MigrationProgress, migration_uri
from hosts.vnc import vnc_port_reserve
from networking.models import PrivateIP
from networking.services import dhcp_backend, dhcp_entry
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request
from operations.runner import operation_progress, operation_step

from ..models import VirtualMachine, VMState
from .changes import resize_apply
from .domain import vm_hypervisor, vm_observe
from .migration_steps import migration_given_back

logger = logging.getLogger(__name__)

# Admins alone move VMs between hosts (vms/rules.py).
MIGRATE = "vms.migrate_vm"
MIGRATE_STATES = (VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF)
LIVE_STATES = (VMState.RUNNING, VMState.PAUSED)
MIB = 1024 * 1024


def migration_destinations(vm: VirtualMachine) -> list[Host]:
    """Return the up hosts, other than its own, that see the VM's datastore."""
    if vm.datastore_id is None:
        return []
    return list(Host.objects.filter(status="up", datastores=vm.datastore_id)
                .exclude(accel="").exclude(pk=vm.host_id).order_by("name"))


def migration_card(*, vm: VirtualMachine, user) -> dict | None:  # noqa: ANN001
    """Return what the VM page's Migrate card shows an admin (None: no card)."""
    if vm.state not in MIGRATE_STATES or vm.host_id is None or not user.has_perm(MIGRATE, vm):
        return None
    under_way = (Operation.objects.active().filter(vm=vm, kind=OperationKind.MIGRATE)
                 .select_related("host").first())
    return {"under_way": under_way,
            "destinations": migration_destinations(vm) if under_way is None else []}


def _destination_choose(vm: VirtualMachine, destination: Host | None) -> Host:
    """Lock and return the destination: the one asked for if it has room, else the best fit.

    Placement is install's (`hosts.placement.host_choose`: up, the VM's datastore, the most
    free RAM that fits its vCPUs and memory); the VM's own host is never a destination.
    """
    others = (Host.objects.exclude(pk=destination.pk) if destination is not None
              else Host.objects.filter(pk=vm.host_id))
    try:
        return host_choose(vcpus=vm.vcpus, memory_mib=vm.memory_mib, template=vm.template,
                           datastore=vm.datastore,
                           exclude=tuple(others.values_list("pk", flat=True)))
    except NoHostAvailable as exc:
        where = destination.name if destination is not None else "another host"
        raise NoHostAvailable(f"{vm.name} cannot move to {where}: {exc}") from exc


def migration_destination_plan(vm: VirtualMachine, *,
                               reserved: dict[int, tuple[int, int]] | None = None) -> Host:
    """Check the VM may move and return the best-fit other host, counting `reserved` room.

    For a plan of several moves (an evacuation): `reserved` holds the vCPUs and MiB already
    promised on each host. Raises PortalError in admin words when it cannot move.
    """
    _movable(vm)
    if not migration_destinations(vm):
        raise NoHostAvailable(f"{vm.name}: no other host that is up sees its datastore "
                              f"{vm.datastore.name}.")
    try:
        return host_choose(vcpus=vm.vcpus, memory_mib=vm.memory_mib, template=vm.template,
                           datastore=vm.datastore, exclude=(vm.host_id,), reserved=reserved)
    except NoHostAvailable as exc:
        raise NoHostAvailable(f"{vm.name} cannot move to another host: {exc}") from exc


def migration_reachable(vm: VirtualMachine, dest: Host) -> None:
    """Refuse a live move from another machine to a host with no address, in admin words.

    The source's qemu sends the memory straight to the destination, so it must know where;
    a host registered by a local URI alone (`qemu:///system`) has no such address.
    """
    if vm.state in LIVE_STATES and not dest.address and is_remote(vm.host.uri):
        raise PortalError(
            f"Host {dest.name} has no address, so {vm.host.name} cannot send {vm.name}'s "
            f"memory to it. Set {dest.name}'s address (its IP on the network the hosts share) "
            "in administration, then migrate again; nothing was changed.")


def _movable(vm: VirtualMachine) -> None:
    if vm.host_id is None or vm.datastore_id is None:
        raise PortalError(f"{vm.name} is on no host; there is nothing to migrate.")


def vm_migrate_request(*, vm: VirtualMachine, actor, destination: Host | None = None  # noqa: ANN001
                       ) -> Operation:
    """Ask for the VM to move to the destination, or to the best-fit host when none is given."""
    if not actor.has_perm(MIGRATE, vm):
        raise PortalError(f"You may not migrate {vm.name}.")
    if destination is not None and destination.pk == vm.host_id:
        raise PortalError(f"{vm.name} already runs on {destination.name}; choose another host.")
    with transaction.atomic():
        vm = VirtualMachine.objects.select_related("datastore", "template", "host").get(
            pk=vm.pk)
        _movable(vm)
        target = _destination_choose(vm, destination)
        migration_reachable(vm, target)
        return operation_request(
            kind=OperationKind.MIGRATE, actor=actor, vm=vm, host=target, doing="migrate",
            arguments={"source": vm.host_id, "destination": target.pk})


def vm_migrate_cancel(*, operation: Operation, actor) -> Operation:  # noqa: ANN001
    """Ask the worker moving a VM to abort the migration; the VM stays where it was."""
    with transaction.atomic():
        # Lock the operation row alone: its VM is a nullable join PostgreSQL will not lock.
        op = (Operation.objects.select_for_update(of=("self",)).select_related("vm")
              .get(pk=operation.pk))
        if op.kind != OperationKind.MIGRATE or op.vm is None:
            raise PortalError("Only a migration can be cancelled here.")
        if not actor.has_perm(MIGRATE, op.vm):
            raise PortalError(f"You may not migrate {op.vm.name}.")
        if not op.is_active:
            raise PortalError(f"The migration of {op.vm.name} has already ended.")
        op.arguments = {**op.arguments, "cancel": actor.get_username()}
        op.save(update_fields=["arguments", "updated_at"])
    return op


def _cancel_asked(op: Operation) -> bool:
    return Operation.objects.filter(pk=op.pk, arguments__has_key="cancel").exists()


def _progress_words(dest: Host) -> Callable[[MigrationProgress], str]:
    def words(job: MigrationProgress) -> str:
        if not job.total:
            return f"Migrating to {dest.name}: starting"
        return (f"Migrating to {dest.name}: copied {job.processed // MIB} of "
                f"{job.total // MIB} MiB, {job.remaining // MIB} MiB left")
    return words


def cancelled_words(op: Operation, error: Exception) -> str:
    """Say that a cancelled migration left the VM where it was."""
    who = op.arguments.get("cancel", "an administrator")
    return (f"The migration of {op.vm.name} was cancelled by {who}; it stays on "
            f"{op.vm.host.name}.")


def _cancelled_not_retried(op: Operation) -> str | None:
    if "cancel" in op.arguments:
        return "A cancelled migration is not retried; ask for a new one from the VM's page."
    return None


@handles(OperationKind.MIGRATE, states=MIGRATE_STATES, permission=MIGRATE, scope=("vm", "host"),
         routine={MigrationCancelled: cancelled_words}, retry_check=_cancelled_not_retried,
         records_steps=True)
def vm_migrate(op: Operation) -> str:
    """Move the VM to the operation's host; on failure it stays on its source, alone.

    Each thing taken on the destination is recorded first (`migration_steps`), so the worker
    gives it back when the move fails, and the reconciler when the worker died half-way.
    """
    vm = VirtualMachine.objects.select_related("host", "datastore").get(pk=op.vm_id)
    dest = Host.objects.get(pk=op.host_id)
    if vm.host_id == dest.pk:
        return f"{vm.name} is already on {dest.name}."
    if _cancel_asked(op):
        raise MigrationCancelled(f"the migration of {vm.name} was cancelled before it started")
    migration_reachable(vm, dest)
    source_hv, dest_hv = vm_hypervisor(vm), Hypervisor(dest.uri)
    name, ds = vm.domain_name, vm.datastore
    here = source_hv.find_domain(name)
    if here is None:
        raise PortalError(f"{vm.name} has no domain on {vm.host.name} to migrate.")
    there = dest_hv.find_domain(name)
    if there is not None:
        raise PortalError(f"Host {dest.name} already has a domain called {name}.")
    live = here.state in ("running", "paused", "blocked")
    ip = PrivateIP.objects.filter(vm=vm).select_related("vlan").first()
    on_dest = {"host": dest.pk, "host_name": dest.name}
    with migration_given_back(op, vm):
        operation_progress(op, f"Taking a VNC port on {dest.name}")
        operation_step(op, "migration_vnc_port", operation_id=op.pk, **on_dest)
        port = vnc_port_reserve(operation=op, vm=vm, host=dest,
                                avoid=dest_hv.vnc_ports_in_use())
        if ip is not None:
            operation_progress(op, f"Writing the DHCP entry on {dest.name}")
            dest_hv.ensure_network_active(ip.vlan.network_name)
            operation_step(op, "migration_dhcp", address=ip.address, mac=ip.mac, **on_dest)
            dhcp_backend().add(dest.uri, dhcp_entry(vm, ip))
        dest_hv.ensure_pool(ds.pool_name, ds.path)
        snapshots = source_hv.snapshot_metadata(name)
        operation_step(op, "migration_destination", name=name, snapshots=list(snapshots.xmls),
                       current=snapshots.current or "",
                       volumes=[] if ds.shared else source_hv.disks_copy_plan(name, dest.uri),
                       **on_dest)
        facts, note = _move(op, vm, dest, source_hv, port=port, live=live)
    source = vm.host
    with transaction.atomic():
        VirtualMachine.objects.filter(pk=vm.pk).update(host=dest, vnc_port=port)
        vm.host, vm.vnc_port = dest, port
    if ip is not None:
        try:
            dhcp_backend().remove(source.uri, dhcp_entry(vm, ip))
        except Exception:  # the VM has moved; a stale entry on the source harms nobody
            logger.exception("could not remove the DHCP entry of %s on %s", vm, source)
    vm_observe(vm, facts)
    how = "live" if live else "while shut off"
    done = f"{vm.name} moved {how} from {source.name} to {dest.name} (VNC port {port})."
    if note:
        done += f" Not everything followed: {note}"
    resize = op.arguments.get("resize")
    if resize:
        # A resize its old host had no room for (`resize_move`): applied here now.
        operation_progress(op, f"Resizing {vm.name} on {dest.name}")
        done += " " + resize_apply(vm, int(resize["vcpus"]), int(resize["memory_mib"]))
    return done


def _move(op: Operation, vm: VirtualMachine, dest: Host, source_hv: Hypervisor, *,
          port: int, live: bool) -> tuple[DomainFacts, str]:
    """Move the domain (live or stopped, copying its disks when not shared); say what is off."""
    name, shared = vm.domain_name, vm.datastore.shared
    listen = vnc_listen_address(dest.uri, dest.address)
    copied = "" if shared else " with its disk"
    if live:
        words = _progress_words(dest)
        operation_progress(op, f"Migrating to {dest.name}{copied} while it runs")
        result = source_hv.migrate_live(
            name, dest.uri, shared=shared, vnc_port=port, vnc_listen=listen,
            migrate_uri=migration_uri(f"tcp://{dest.address}") if dest.address else "",
            progress=lambda job: operation_progress(op, words(job)),
            should_stop=lambda: _cancel_asked(op))
        return result.facts, result.snapshot_problem
    operation_progress(op, f"Moving the stopped VM{copied} to {dest.name}")
    return source_hv.migrate_cold(name, dest.uri, shared=shared, vnc_port=port,
                                  vnc_listen=listen), ""
