"""Writes of the networking application: DHCP entries and NAT mappings of VMs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import dhcp, nat
from .allocation import public_ip_allocate, public_ip_release
from .models import NATMapping, PrivateIP, PublicIP, SecurityDomain

if TYPE_CHECKING:
    from portal.accounts.models import User
    from vms.models import VirtualMachine


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
    """Clear every portal rule on the NAT box and apply the database's mappings again."""
    mappings = list(NATMapping.objects.select_related("public_ip"))
    wanted = [nat.NatMapping(m.public_ip.address, m.private_address) for m in mappings]
    backend = nat_backend()
    backend.clear(wanted)
    for m, w in zip(mappings, wanted, strict=True):
        backend.apply(w)
        with transaction.atomic():
            NATMapping.objects.filter(pk=m.pk).update(applied_at=timezone.now())
    return len(wanted)
