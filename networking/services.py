"""Writes of the networking application: DHCP entries, NAT mappings and SSH ports of VMs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request

from . import dhcp, nat
from .allocation import (
    public_ip_allocate,
    public_ip_release,
    ssh_port_allocate,
    ssh_port_release,
)
from .models import NATMapping, PrivateIP, PublicIP, SecurityDomain, SSHPort

if TYPE_CHECKING:
    from core.accounts.models import User
    from vms.models import VirtualMachine

logger = logging.getLogger(__name__)


def dhcp_backend() -> dhcp.DhcpBackend:
    """Return the DHCP backend the settings choose."""
    return dhcp.backend_from_settings(settings.PORTAL_DHCP)


def nat_backend() -> nat.NatBackend:
    """Return the NAT backend the settings choose."""
    return nat.backend_from_settings(settings.PORTAL_NAT)


def security_domains_for(user: User) -> QuerySet[SecurityDomain]:
    """Return the security domains the user's organisation may place VMs in."""
    qs = SecurityDomain.objects.select_related("vlan")
    if user.organisation_id is None:
        return qs.none()
    return qs.filter(organisations=user.organisation_id).distinct()


def dhcp_entry(vm: VirtualMachine, ip: PrivateIP) -> dhcp.DhcpEntry:
    """Return the DHCP host entry that gives the VM this address."""
    return dhcp.DhcpEntry(network=ip.vlan.network_name, mac=ip.mac, ip=ip.address,
                          hostname=vm.domain_name)


def dhcp_add(*, vm: VirtualMachine, ip: PrivateIP) -> None:
    """Make the VM's host hand this address to the VM's MAC."""
    dhcp_backend().add(vm.host.uri, dhcp_entry(vm, ip))


def dhcp_remove(*, vm: VirtualMachine, ip: PrivateIP) -> None:
    """Remove the DHCP entry of this address."""
    dhcp_backend().remove(vm.host.uri, dhcp_entry(vm, ip))


def nat_attach(*, vm: VirtualMachine, private_ip: PrivateIP) -> PublicIP:
    """Give the VM a public IP and forward it to the private one on the NAT box."""
    public = public_ip_allocate(vm=vm)
    mapping, _ = NATMapping.objects.update_or_create(
        public_ip=public, defaults={"vm": vm, "private_address": private_ip.address,
                                    "applied_at": None})
    nat_backend().apply(nat.NatMapping(public.address, private_ip.address))
    NATMapping.objects.filter(pk=mapping.pk).update(applied_at=timezone.now())
    return public


def nat_detach(*, vm: VirtualMachine) -> None:
    """Remove the VM's NAT mapping exactly and give its public IP back."""
    for mapping in NATMapping.objects.filter(vm=vm).select_related("public_ip"):
        nat_backend().remove(nat.NatMapping(mapping.public_ip.address, mapping.private_address))
        mapping.delete()
    public_ip_release(vm=vm)


def nat_remap(*, vm: VirtualMachine, private_ip: PrivateIP) -> None:
    """Point the VM's public IP at another of its private addresses."""
    for mapping in NATMapping.objects.filter(vm=vm).select_related("public_ip"):
        backend = nat_backend()
        backend.remove(nat.NatMapping(mapping.public_ip.address, mapping.private_address))
        backend.apply(nat.NatMapping(mapping.public_ip.address, private_ip.address))
        NATMapping.objects.filter(pk=mapping.pk).update(private_address=private_ip.address,
                                                        applied_at=timezone.now())


def nat_resync() -> int:
    """Clear every portal rule on the NAT box and apply the database's mappings again.

    Returns how many were applied: public IP mappings and SSH port forwards together.
    """
    mappings = list(NATMapping.objects.select_related("public_ip"))
    wanted = [nat.NatMapping(m.public_ip.address, m.private_address) for m in mappings]
    forwards = list(SSHPort.objects.filter(vm__isnull=False, private_address__isnull=False))
    backend = nat_backend()
    backend.clear(wanted)
    for m, w in zip(mappings, wanted, strict=True):
        backend.apply(w)
        with transaction.atomic():
            NATMapping.objects.filter(pk=m.pk).update(applied_at=timezone.now())
    for row in forwards:
        backend.forward(_forward(row, row.private_address))
        SSHPort.objects.filter(pk=row.pk).update(applied_at=timezone.now())
    return len(wanted) + len(forwards)


@handles(OperationKind.NAT_RESYNC, target="nat", scope=(), permission="networking.manage_nat")
def nat_resync_operation(op: Operation) -> str:
    """Clear the portal's rules on the NAT box and apply every mapping again."""
    count = nat_resync()
    return f"Cleared the NAT box and applied {count} mapping(s) again."


def nat_resync_request(*, actor: User) -> Operation:
    """Queue the re-applying of every NAT mapping."""
    return operation_request(kind=OperationKind.NAT_RESYNC, actor=actor)


def _forward(row: SSHPort, private_address: str) -> nat.PortForward:
    return nat.PortForward(row.address, row.port, private_address)


def ssh_port_attach(*, vm: VirtualMachine, private_ip: PrivateIP) -> SSHPort:
    """Give the VM a port on the NAT box's address and forward it to the VM's port 22."""
    row = ssh_port_allocate(vm=vm)
    # Recorded before the box is touched, so a detach after a half-applied forward finds it.
    SSHPort.objects.filter(pk=row.pk).update(private_address=private_ip.address,
                                             applied_at=None)
    nat_backend().forward(_forward(row, private_ip.address))
    row.private_address, row.applied_at = private_ip.address, timezone.now()
    SSHPort.objects.filter(pk=row.pk).update(applied_at=row.applied_at)
    return row


def ssh_port_detach(*, vm: VirtualMachine) -> None:
    """Remove the VM's SSH port forward exactly and give the port back."""
    for row in SSHPort.objects.filter(vm=vm, private_address__isnull=False):
        nat_backend().unforward(_forward(row, row.private_address))
    ssh_port_release(vm=vm)


def ssh_port_remap(*, vm: VirtualMachine, private_ip: PrivateIP) -> None:
    """Point the VM's SSH port at another of its private addresses.

    The new forward is added before the old one is removed, and the record follows the new
    one at once, so remapping back to the old address undoes a move that failed anywhere.
    """
    backend = nat_backend()
    for row in SSHPort.objects.filter(vm=vm):
        old = row.private_address
        if old == private_ip.address:
            backend.forward(_forward(row, old))
            continue
        new = _forward(row, private_ip.address)
        try:
            backend.forward(new)
        except Exception:
            try:
                backend.unforward(new)
            except Exception:  # the first failure is the one to report
                logger.exception("could not remove the half-added forward %s", new)
            raise
        SSHPort.objects.filter(pk=row.pk).update(private_address=private_ip.address,
                                                 applied_at=timezone.now())
        if old:
            backend.unforward(_forward(row, old))
