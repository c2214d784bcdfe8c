"""The steps an install and a clone are built from.

Each step records itself on the operation (`operation_step`) before it takes anything, does
its work and returns that record: its own undo, which `operations.undo` gives back (the
worker's clean-up below, or the reconciler's when the worker died half-way). Every step is
idempotent, so a retried operation picks up what is already there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import transaction

from core.errors import PortalError
from hosts.images import disk_image_check, template_image_check
from hosts.models import Datastore
from hosts.placement import host_choose
from hosts.virt import DomainFacts, Hypervisor
from hosts.virt.domain_xml import build_domain_xml
from hosts.vnc import vnc_port_allocate
from networking.allocation import ip_allocate
from networking.models import VLAN, PrivateIP, PublicIP
from networking.services import dhcp_add, nat_attach
from operations.models import Operation
from operations.runner import RunFenced, operation_progress, operation_step, operation_steps_undo
from operations.undo import Step

from ..models import VirtualMachine, VMState
from .credentials import seed_upload, takes_credentials
from .domain import vm_hypervisor, vm_spec

GIB = 1024**3


@dataclass
class Build:
    """One install or clone under way: what its steps have taken so far."""

    op: Operation
    vm: VirtualMachine
    vlan: VLAN
    hv: Hypervisor | None = None  # the adapter of the VM's host, once it has one
    on_host: dict[str, object] = field(default_factory=dict)  # recorded with host-side steps
    datastore: Datastore | None = None  # where its disk and seed go, once placed
    ip: PrivateIP | None = None
    disk_path: str = ""
    seed_path: str | None = None
    facts: DomainFacts | None = None  # the domain as it started
    public: PublicIP | None = None


def vm_vlan(vm: VirtualMachine) -> VLAN:
    """Return the VLAN the VM takes its address in; refuse a VM with no security domain."""
    if vm.security_domain is None:
        raise PortalError(f"{vm.name} has no security domain to take an address in.")
    return vm.security_domain.vlan


def _record(build: Build, step: str, **facts: object) -> Step:
    operation_step(build.op, step, **facts)
    return build.op.steps[-1]


@contextmanager
def given_back(op: Operation, vm: VirtualMachine,
               after: Callable[[], object] | None = None) -> Iterator[None]:
    """Give back every step recorded by the body if it fails, then call `after` (by default,
    mark the VM failed: an install or clone that did not finish), and re-raise."""
    try:
        yield
    except RunFenced:
        raise  # taken over: the reconciler or the retry owns what this run took
    except BaseException:
        # BaseException: django-q's time limit arrives as SystemExit, and what was taken
        # must be given back before the worker goes (KeyboardInterrupt is re-raised too).
        operation_steps_undo(op, vm)
        if after is None:
            VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.FAILED)
        else:
            after()
        raise


def step_host(build: Build, *, datastore: Datastore) -> Step:
    """Place the VM on a host (rows locked so concurrent placements see each other)."""
    vm = build.vm
    operation_progress(build.op, "Choosing a host")
    with transaction.atomic():
        if vm.host_id is None:
            vm.host = host_choose(vcpus=vm.vcpus, memory_mib=vm.memory_mib,
                                  template=vm.template)
            vm.datastore = datastore
            vm.save(update_fields=["host", "datastore"])
    step = _record(build, "host")
    build.on_host = {"host": vm.host_id, "host_name": vm.host.name}
    build.datastore = vm.datastore
    build.hv = vm_hypervisor(vm)
    return step


def step_ip(build: Build) -> Step:
    """Give the VM a private IP and MAC in its VLAN (an address already held is kept)."""
    operation_progress(build.op, f"Allocating an IP address on {build.vlan}")
    step = _record(build, "ip")
    build.ip = ip_allocate(vm=build.vm, vlan=build.vlan)
    return step


def step_vnc_port(build: Build) -> Step:
    """Give the VM a VNC port that nothing on its host listens on."""
    step = _record(build, "vnc_port")
    vnc_port_allocate(vm=build.vm, avoid=build.hv.vnc_ports_in_use())
    return step


def step_disk_from_template(build: Build) -> Step:
    """Create the VM's disk as an overlay on its template's image."""
    vm, hv, ds = build.vm, build.hv, build.datastore
    operation_progress(build.op, f"Creating the disk on {ds.name}")
    hv.ensure_pool(ds.pool_name, ds.path)
    # Inspected on the host before libvirt opens (and chowns) anything it names.
    template_image_check(template=vm.template, host=vm.host, hv=hv)
    step = _record(build, "volume", pool=ds.pool_name, volume=vm.volume_name, **build.on_host)
    build.disk_path = hv.create_overlay(ds.pool_name, vm.volume_name, vm.template.image_path,
                                        vm.disk_gib * GIB)
    return step


def step_disk_from_vm(build: Build, *, source: VirtualMachine) -> Step:
    """Copy a stopped VM's disk, on its host, as the VM's own disk."""
    ds = source.datastore
    operation_progress(build.op, f"Copying the disk of {source.name}")
    # The copy reads through the disk's backing chain: nothing outside the datastore.
    disk_image_check(datastore=ds, volume=source.volume_name, host=source.host,
                     owner=source.name)
    step = _record(build, "volume", pool=ds.pool_name, volume=build.vm.volume_name,
                   host=source.host_id, host_name=source.host.name)
    build.disk_path = vm_hypervisor(source).clone_volume(ds.pool_name, source.volume_name,
                                                         build.vm.volume_name)
    build.hv.ensure_pool(ds.pool_name, ds.path)
    return step


def step_seed(build: Build) -> Step | None:
    """Write the VM's cloud-init seed (login, keys, hostname) if its template takes one."""
    vm, ds = build.vm, build.datastore
    if not takes_credentials(vm):
        return None
    operation_progress(build.op, "Writing the login details (cloud-init seed)")
    step = _record(build, "volume", pool=ds.pool_name, volume=vm.seed_volume_name,
                   **build.on_host)
    build.seed_path = seed_upload(vm, build.hv, ds.pool_name, build.ip.mac)
    return step


def step_dhcp(build: Build) -> Step:
    """Write the DHCP entry that gives the VM's MAC its address."""
    ip = build.ip
    operation_progress(build.op, "Writing the DHCP entry")
    build.hv.ensure_network_active(build.vlan.network_name)
    dhcp_add(vm=build.vm, ip=ip)
    # Recorded once written: a clashing entry refused above is not ours to remove.
    return _record(build, "dhcp", address=ip.address, mac=ip.mac, **build.on_host)


def step_domain(build: Build) -> Step:
    """Define the VM's domain (redefined when it has our UUID) and start it."""
    vm, hv = build.vm, build.hv
    operation_progress(build.op, "Defining the domain")
    existing = hv.find_domain(vm.domain_name)
    if existing is not None and existing.uuid != str(vm.uuid):
        raise PortalError(
            f"Host {vm.host.name} already has another domain called {vm.domain_name}."
        )
    step = _record(build, "domain", name=vm.domain_name, **build.on_host)
    hv.define_domain(build_domain_xml(vm_spec(vm, build.disk_path, build.ip,
                                              seed_path=build.seed_path)))
    operation_progress(build.op, "Starting")
    build.facts = hv.start(vm.domain_name)
    return step


def step_public_ip(build: Build) -> Step:
    """Map a public IP to the VM's private one on the NAT box."""
    operation_progress(build.op, "Mapping a public IP")
    step = _record(build, "nat")
    build.public = nat_attach(vm=build.vm, private_ip=build.ip)
    return step
