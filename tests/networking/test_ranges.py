"""Adding address ranges: every bad range is refused whole, with the reason."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from networking.models import PrivateIP, PublicIP
from networking.ranges import (
    mac_is_local_unicast,
    macs_generate,
    private_range_add,
    public_range_add,
)

pytestmark = pytest.mark.django_db


def refused(func, field, text, **kwargs):
    before = (PrivateIP.objects.count(), PublicIP.objects.count())
    with pytest.raises(ValidationError) as err:
        func(**kwargs)
    messages = err.value.message_dict[field]
    assert any(text in m for m in messages), messages
    assert (PrivateIP.objects.count(), PublicIP.objects.count()) == before


def test_a_private_range_gets_one_generated_mac_per_address(site):
    added = private_range_add(vlan=site.vlan, first="192.168.122.10", last="192.168.122.19")
    assert [a.address for a in added] == [f"192.168.122.{i}" for i in range(10, 20)]
    macs = [a.mac for a in added]
    assert len(set(macs)) == 10 and all(mac_is_local_unicast(m) for m in macs)
    assert PrivateIP.objects.filter(vlan=site.vlan).count() == 15


def test_given_macs_are_used_in_order(site):
    added = private_range_add(vlan=site.vlan, first="192.168.122.30", last="192.168.122.31",
                              macs=["02:00:00:00:00:0A", "02-00-00-00-00-0b"])
    assert [a.mac for a in added] == ["02:00:00:00:00:0a", "02:00:00:00:00:0b"]


@pytest.mark.parametrize(("first", "last", "field", "text"), [
    ("192.168.122.20", "192.168.122.10", "last", "reversed"),
    ("192.168.122.10", "192.168.123.10", "last", "outside"),
    ("10.0.0.1", "10.0.0.5", "first", "outside"),
    ("192.168.122.300", "192.168.122.310", "first", "not an IPv4 address"),
    ("banana", "192.168.122.10", "first", "not an IPv4 address"),
    ("192.168.122.10", "", "last", "not an IPv4 address"),
    ("::1", "::2", "first", "not an IPv4 address"),
    ("192.168.122.0", "192.168.122.5", "first", "network, broadcast or gateway"),
    ("192.168.122.250", "192.168.122.255", "first", "network, broadcast or gateway"),
    ("192.168.122.98", "192.168.122.102", "first", "Already in a pool"),
])
def test_bad_private_ranges_are_refused_whole(site, first, last, field, text):
    refused(private_range_add, field, text, vlan=site.vlan, first=first, last=last)


def test_the_gateway_cannot_join_the_pool(site):
    site.vlan.gateway = "192.168.122.1"
    site.vlan.save()
    refused(private_range_add, "first", "gateway", vlan=site.vlan, first="192.168.122.1",
            last="192.168.122.3")


def test_a_huge_range_is_refused(site, settings):
    refused(public_range_add, "last", "add at most 4096", first="100.64.0.0",
            last="100.64.255.255")
    settings.PORTAL = {**settings.PORTAL, "MAX_RANGE": 16}
    refused(private_range_add, "last", "add at most 16", vlan=site.vlan,
            first="192.168.122.2", last="192.168.122.30")
    refused(public_range_add, "last", "add at most 16", first="198.51.100.0",
            last="198.51.103.255")


@pytest.mark.parametrize(("macs", "text"), [
    (["02:00:00:00:00:01"], "2 expected, 1 given"),
    (["02:00:00:00:00:01", "nonsense"], "not a MAC address"),
    (["02:00:00:00:00:01", "03:00:00:00:00:01"], "multicast"),
    (["02:00:00:00:00:01", "02:00:00:00:00:01"], "Repeated MAC"),
    (["02:00:00:00:00:01", "52:54:00:00:0a:64"], "Already in the pool"),
])
def test_bad_given_macs_are_refused(site, macs, text):
    refused(private_range_add, "macs", text, vlan=site.vlan, first="192.168.122.40",
            last="192.168.122.41", macs=macs)


def test_generated_macs_never_repeat_taken_ones(site):
    taken = set(PrivateIP.objects.values_list("mac", flat=True))
    macs = macs_generate(500)
    assert len(set(macs)) == 500 and not taken & set(macs)
    assert all(m.startswith("52:54:00:") and mac_is_local_unicast(m) for m in macs)


def test_a_public_range_is_added(site):
    added = public_range_add(first="198.51.100.10", last="198.51.100.12")
    assert [a.address for a in added] == ["198.51.100.10", "198.51.100.11", "198.51.100.12"]


@pytest.mark.parametrize(("first", "last", "text"), [
    ("127.0.0.1", "127.0.0.3", "cannot be a public address"),
    ("224.0.0.1", "224.0.0.2", "cannot be a public address"),
    ("192.168.122.200", "192.168.122.201", "inside VLAN campus"),
    ("198.51.100.5", "198.51.100.1", "reversed"),
])
def test_bad_public_ranges_are_refused(site, first, last, text):
    refused(public_range_add, "first" if text != "reversed" else "last", text,
            first=first, last=last)


def test_overlapping_public_ranges_are_refused(site):
    public_range_add(first="198.51.100.10", last="198.51.100.20")
    refused(public_range_add, "first", "Already in a pool", first="198.51.100.20",
            last="198.51.100.25")
