"""Orphan domains become VMs; VMs whose domain vanished are recreated or marked lost.

Adoption reads the domain's sizes, disk, MAC and VNC port from its definition through the
adapter. A shut off domain is taken over fully: redefined from the portal's own domain spec
(its network, VNC port and password, metadata), its disk copied under the portal's name when
it has another. A running one is recorded as it is, which needs a disk already named the
portal's way and a VNC port in the portal's range that no VM of the host holds.
"""

from __future__ import annotations

import math
import re
import uuid
from pathlib import PurePosixPath

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from core.errors import PortalError
from hosts.models import NAME_VALIDATOR, Host, Template
from hosts.virt import Hypervisor, power_state
from hosts.virt.domain_xml import ParsedDomain, build_domain_xml, parse_domain_xml
from hosts.vnc import vnc_port_allocate, vnc_port_range
from networking.models import PrivateIP, SecurityDomain
from networking.services import dhcp_add
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request
from operations.runner import operation_progress

from ..models import VirtualMachine, VMState
from .domain import vm_observe, vm_spec
from .orphans import MANAGE_HOST, finding_busy_check, findings_forget, host_datastore_of

GIB = 1024**3
PORTAL_VOLUME_RE = re.compile(r"^vm-([0-9a-f]{32})\.qcow2$")


def orphan_domain_adopt_request(*, host: Host, domain: str, owner, template: Template,  # noqa: ANN001
                                actor) -> Operation:  # noqa: ANN001
    """Ask for an orphan domain of the host to become a VM of the owner."""

    def check(locked: Host) -> None:
        if domain not in locked.unknown_domains:
            raise PortalError(f"{domain} is not among the orphan domains of {locked.name}; "
                              "refresh the page.")
        adoptable_name_check(domain)
        if not owner.is_active or owner.organisation_id is None:
            raise PortalError(f"{owner.get_username()} cannot own a VM: the account is "
                              "inactive or in no organisation.")
        finding_busy_check(locked, key="domain", value=domain)

    return operation_request(
        kind=OperationKind.DOMAIN_ADOPT, actor=actor, host=host, check=check,
        doing="adopt domains of",
        arguments={"domain": domain, "owner": owner.pk, "template": template.pk})


def adoptable_name_check(name: str) -> None:
    """Refuse a domain name the portal cannot give a VM."""
    try:
        NAME_VALIDATOR(name)
    except Exception:  # noqa: BLE001 - a ValidationError, said in the portal's words
        raise PortalError(f"{name} is not a name the portal gives VMs (lower-case letters, "
                          "digits and hyphens, starting with a letter); rename the domain "
                          "on the host first.") from None
    if VirtualMachine.objects.live().filter(name=name).exists():
        raise PortalError(f"A VM named {name} already exists in the portal.")


def _pool_address(parsed: ParsedDomain) -> PrivateIP:
    """Return the free pool address whose MAC the domain's interface has; refuse otherwise."""
    macs = [m.lower() for m in parsed.macs]
    if not macs:
        raise PortalError(f"Domain {parsed.name} has no network interface to take an address "
                          "from.")
    rows = list(PrivateIP.objects.select_related("vlan").filter(mac__in=macs))
    free = [r for r in rows if r.vm_id is None and r.host_id is None]
    if free:
        return free[0]
    if rows:
        raise PortalError(f"The MAC {rows[0].mac} of domain {parsed.name} belongs to "
                          f"{rows[0].address}, which {rows[0].holder} already holds.")
    raise PortalError(f"No interface of domain {parsed.name} ({', '.join(macs)}) has a MAC "
                      "from the portal's VLAN pools; give it one of the pool's MACs on the "
                      "host, or delete the domain.")


def _vnc_port_check(host: Host, port: int | None, name: str) -> None:
    """Refuse a running domain's VNC port unless it lies in the range and no VM holds it."""
    first, last = vnc_port_range()
    if port is None or not first <= port <= last:
        raise PortalError(f"Domain {name} is running with VNC port {port or 'none'}, outside "
                          f"the portal's range {first}-{last}; shut it down on the host and "
                          "adopt it again: it then gets a port of the portal.")
    holder = VirtualMachine.objects.filter(host=host, vnc_port=port).first()
    if holder is not None:
        raise PortalError(f"Domain {name} is running with VNC port {port}, which VM "
                          f"{holder.name} holds; shut it down on the host and adopt it again.")


@handles(OperationKind.DOMAIN_ADOPT, target="host", scope=(), permission=MANAGE_HOST)
def orphan_domain_adopt(op: Operation) -> str:
    """Record an orphan domain as a VM of the chosen owner (see the module)."""
    host = Host.objects.get(pk=op.host_id)
    name = op.arguments["domain"]
    owner = get_user_model().objects.select_related("organisation").get(pk=op.arguments["owner"])
    template = Template.objects.get(pk=op.arguments["template"])
    adoptable_name_check(name)
    hv = Hypervisor(host.uri)
    facts = hv.find_domain(name)
    if facts is None:
        findings_forget(host.pk, domain=name)
        raise PortalError(f"Domain {name} is no longer on {host.name}; nothing was adopted.")
    old_xml = hv.domain_xml(name, secure=True)
    parsed = parse_domain_xml(old_xml)
    running = power_state(facts.state) != VMState.SHUTOFF
    if len(parsed.disk_paths) != 1:
        raise PortalError(f"Domain {name} has {len(parsed.disk_paths)} disks; the portal adopts "
                          "domains with exactly one.")
    disk = parsed.disk_paths[0]
    ds = host_datastore_of(host, disk)
    if ds is None:
        raise PortalError(f"The disk {disk} of domain {name} is outside the datastores of "
                          f"{host.name}; move it into one and adopt the domain again.")
    volume = PurePosixPath(disk).name
    image = hv.inspect_image(ds.pool_name, volume)
    ip = _pool_address(parsed)
    security_domain = (SecurityDomain.objects.filter(
        vlan=ip.vlan, organisations=owner.organisation).first()
        or SecurityDomain.objects.filter(vlan=ip.vlan).first())
    if security_domain is None:
        raise PortalError(f"The address {ip.address} lies on VLAN {ip.vlan}, which no security "
                          "domain uses; add one first.")
    named = PORTAL_VOLUME_RE.match(volume)
    vm_uuid = uuid.UUID(named.group(1)) if named else uuid.uuid4()
    copy = named is None or VirtualMachine.objects.filter(uuid=vm_uuid).exists()
    if copy:
        vm_uuid = uuid.uuid4()
    if running and copy:
        raise PortalError(f"The disk of domain {name} is not named the portal's way "
                          f"({volume}); shut the domain down on the host so its disk can be "
                          "copied, then adopt it again.")
    if running:
        _vnc_port_check(host, parsed.vnc_port, name)
    with transaction.atomic():
        vm = VirtualMachine(
            name=name, uuid=vm_uuid, owner=owner, organisation=owner.organisation,
            template=template, host=host, datastore=ds, security_domain=security_domain,
            vcpus=parsed.vcpus, memory_mib=parsed.memory_mib,
            disk_gib=max(1, math.ceil(image.capacity_bytes / GIB)),
            purpose=f"Adopted from domain {name} on {host.name}.",
            login_user=owner.get_username()[:32],
            vnc_port=parsed.vnc_port if running else None,
            state=VMState.INSTALLING)
        if running:
            vm.vnc_password = (parsed.vnc_password or "")[:8]
        vm.full_clean(exclude=["login_user"])
        vm.save()
        PrivateIP.objects.filter(pk=ip.pk).update(vm=vm, allocated_at=timezone.now())
    try:
        if not running:
            _take_over(op, vm, hv, volume if copy else None, ip, old_xml)
        operation_progress(op, "Adding the DHCP entry")
        dhcp_add(vm=vm, ip=ip)
    except Exception:
        _give_back(vm)
        raise
    vm_observe(vm, hv.domain(name))
    findings_forget(host.pk, domain=name)
    kept = f" Its old disk {disk} stays as an orphan volume." if copy and not running else ""
    return (f"Domain {name} adopted as VM {name} of {owner.get_username()} "
            f"({ip.address}, {ip.mac}, VNC port {vm.vnc_port}).{kept}")


def _take_over(op: Operation, vm: VirtualMachine, hv: Hypervisor, copy_from: str | None,
               ip: PrivateIP, old_xml: str) -> None:
    """Redefine a shut off domain from the portal's spec, copying its disk first if told."""
    pool = vm.datastore.pool_name
    if copy_from is not None:
        operation_progress(op, "Copying the disk under the portal's name")
        hv.clone_volume(pool, copy_from, vm.volume_name)
    disk_path = str(PurePosixPath(vm.datastore.path) / vm.volume_name)
    vnc_port_allocate(vm=vm, avoid=hv.vnc_ports_in_use())
    hv.ensure_network_active(ip.vlan.network_name)  # as an install does: Start needs it
    operation_progress(op, "Redefining the domain from the portal's spec")
    hv.undefine_domain(vm.domain_name)
    try:
        hv.define_domain(build_domain_xml(vm_spec(vm, disk_path, ip)))
    except Exception:
        hv.define_domain(old_xml)  # the domain as it was
        if copy_from is not None:
            hv.delete_volume(pool, vm.volume_name)
        raise


def _give_back(vm: VirtualMachine) -> None:
    """Forget a VM whose adoption failed half-way: its address and row go back."""
    PrivateIP.objects.filter(vm=vm).update(vm=None, allocated_at=None)
    VirtualMachine.objects.filter(pk=vm.pk).delete()
