"""The demo's networks leave libvirt's dynamic leases out of the portal's address pools."""

from __future__ import annotations

import ipaddress

import pytest
from django.core.management.base import CommandError

from hosts.virt import Hypervisor
from portal.management.commands.demo_setup import LAB_NETWORK, Command, dynamic_range

pytestmark = pytest.mark.django_db


def inside(address: str, start: str, end: str) -> bool:
    return ipaddress.IPv4Address(start) <= ipaddress.IPv4Address(address) \
        <= ipaddress.IPv4Address(end)


def test_the_dynamic_range_runs_from_after_libvirts_own_address_to_below_the_pool():
    net = ipaddress.IPv4Network("192.168.122.0/24")
    assert dynamic_range(net, ipaddress.IPv4Address("192.168.122.100")) == (
        "192.168.122.2", "192.168.122.99")
    with pytest.raises(CommandError, match="no room"):
        dynamic_range(net, ipaddress.IPv4Address("192.168.122.2"))


def test_the_demo_shrinks_the_campus_networks_range_below_its_pool(site):
    hv = Hypervisor(site.host.uri)
    network = site.vlan.network_name
    assert hv.network_dhcp_ranges(network) == [("192.168.122.2", "192.168.122.254")]
    Command()._dynamic_ranges(site.host.uri)
    ranges = hv.network_dhcp_ranges(network)
    assert ranges == [("192.168.122.2", "192.168.122.99")]
    for address in site.vlan.addresses.values_list("address", flat=True):
        assert not any(inside(address, *r) for r in ranges), address
    Command()._dynamic_ranges(site.host.uri)  # again: nothing changes
    assert hv.network_dhcp_ranges(network) == ranges


def test_the_demo_lab_network_leases_only_below_its_pool(site):
    Command()._lab_network(site.host.uri)
    ranges = Hypervisor(site.host.uri).network_dhcp_ranges(LAB_NETWORK)
    assert ranges == [("10.77.0.2", "10.77.0.99")]
    assert not any(inside("10.77.0.100", *r) or inside("10.77.0.149", *r) for r in ranges)


def test_the_fast_tiers_private_network_mirrors_the_demo(site):
    ranges = Hypervisor(site.host.uri).network_dhcp_ranges("private")
    pool = site.vlan2.addresses.values_list("address", flat=True)
    assert pool and not any(inside(a, *r) for a in pool for r in ranges)
