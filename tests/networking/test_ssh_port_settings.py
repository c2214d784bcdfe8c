"""Forwarded SSH ports: the port range and address settings, and allocating ports from them."""

from __future__ import annotations

import threading

import pytest
from django.core.checks import run_checks

from core.errors import PoolExhausted, PortalError
from networking.allocation import (
    SSHPortSettingsError,
    parse_port_range,
    ssh_port_allocate,
    ssh_port_config,
    ssh_port_config_from,
    ssh_port_release,
    ssh_ports_fill,
)
from networking.models import SSHPort
from tests.networking.ssh_port_helpers import BOX
from tests.networking.test_allocation import make_vms, race

# ---- settings ----

@pytest.mark.parametrize(("text", "says"), [
    ("abc", "not a port range"), ("10000", "not a port range"), ("10000-", "not a port range"),
    ("15000-10000", "reversed"), ("0-10", "outside"), ("10000-70000", "outside"),
])
def test_a_bad_port_range_is_refused_with_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says):
        parse_port_range(text)
    with pytest.raises(SSHPortSettingsError, match=f"PORTAL_NAT_FORWARD_PORTS: .*{says}"):
        ssh_port_config_from({"PUBLIC_ADDRESS": BOX, "FORWARD_PORTS": text})


def test_the_default_range_is_anweddols(settings):
    assert settings.PORTAL_NAT["FORWARD_PORTS"] == "10000-15000"
    config = ssh_port_config_from({"PUBLIC_ADDRESS": BOX, "FORWARD_PORTS": "10000-15000"})
    assert (config.address, config.first, config.last, config.size) == (BOX, 10000, 15000, 5001)


@pytest.mark.parametrize(("address", "says"), [
    ("nat.example.org", "not an IPv4 address"), ("127.0.0.1", "not a unicast"),
    ("0.0.0.0", "not a unicast"), ("224.0.0.5", "not a unicast"),  # noqa: S104
])
def test_a_bad_public_address_is_refused(address, says):
    with pytest.raises(SSHPortSettingsError, match=f"PORTAL_NAT_PUBLIC_ADDRESS .*{says}"):
        ssh_port_config_from({"PUBLIC_ADDRESS": address, "FORWARD_PORTS": "10000-10010"})


def test_a_range_holding_the_boxs_own_ssh_port_is_refused():
    with pytest.raises(SSHPortSettingsError, match="holds port 2222"):
        ssh_port_config_from({"ADDRESS": BOX, "PORT": 2222, "FORWARD_PORTS": "2000-3000"})
    # The same range on another address of the box is fine.
    assert ssh_port_config_from({"ADDRESS": "10.0.0.1", "PORT": 2222, "PUBLIC_ADDRESS": BOX,
                                 "FORWARD_PORTS": "2000-3000"}).first == 2000


def test_the_address_defaults_to_the_nat_boxs_ipv4_address_else_none_is_offered():
    assert ssh_port_config_from({"ADDRESS": BOX, "FORWARD_PORTS": "10000-10001"}).address == BOX
    for address in ("", "nat.example.org", "127.0.0.1"):
        assert ssh_port_config_from({"ADDRESS": address, "FORWARD_PORTS": "x"}) is None


def test_the_system_check_reports_bad_settings(settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "9-1"}
    errors = [e for e in run_checks() if e.id == "networking.E001"]
    assert len(errors) == 1 and "reversed" in errors[0].msg
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "FORWARD_PORTS": "10000-15000"}
    assert not [e for e in run_checks() if e.id == "networking.E001"]


# ---- allocation ----

@pytest.mark.django_db
def test_allocation_takes_the_lowest_free_port_once_per_vm(site, box):
    a, b, c, d = make_vms(site, 4)
    assert ssh_port_allocate(vm=a).port == 10000
    assert ssh_port_allocate(vm=a).port == 10000  # kept, not a second one
    assert ssh_port_allocate(vm=b).port == 10001
    assert ssh_port_allocate(vm=c).port == 10002
    with pytest.raises(PoolExhausted, match=rf"No free SSH port is left on {BOX} \(10000-10002\)"):
        ssh_port_allocate(vm=d)
    assert not SSHPort.objects.filter(vm=d).exists()
    assert sorted(SSHPort.objects.values_list("port", flat=True)) == [10000, 10001, 10002]
    ssh_port_release(vm=b)
    assert ssh_port_allocate(vm=d).port == 10001


@pytest.mark.django_db
def test_allocation_stays_inside_the_range_when_it_changes(site, box, settings):
    a, b = make_vms(site, 2)
    assert ssh_port_allocate(vm=a).port == 10000
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "FORWARD_PORTS": "12000-12001"}
    assert ssh_port_allocate(vm=b).port == 12000
    assert ssh_port_allocate(vm=a).port == 10000  # a port held before the change stays held
    assert ssh_ports_fill() == 0


@pytest.mark.django_db
def test_no_port_is_taken_when_none_are_offered(site, settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "ADDRESS": "", "PUBLIC_ADDRESS": ""}
    assert ssh_port_config() is None
    (vm,) = make_vms(site, 1)
    with pytest.raises(PortalError, match="forwards no SSH ports"):
        ssh_port_allocate(vm=vm)
    assert not SSHPort.objects.exists()


@pytest.mark.django_db
def test_the_unique_constraint_refuses_a_port_twice(site, box):
    from django.db import IntegrityError, transaction

    SSHPort.objects.create(address=BOX, port=10000)
    with pytest.raises(IntegrityError), transaction.atomic():
        SSHPort.objects.create(address=BOX, port=10000)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_ssh_port_allocations_share_ten_ports(site, settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "10000-10009"}
    vms = make_vms(site, 50)
    # The pool starts empty: the allocators also race to fill it.
    results, errors = race(vms, lambda vm: ssh_port_allocate(vm=vm))
    assert sorted(r.port for r in results) == list(range(10000, 10010)) and len(errors) == 40
    held = SSHPort.objects.filter(vm__isnull=False)
    assert sorted(held.values_list("port", flat=True)) == list(range(10000, 10010))
    assert len(set(held.values_list("vm", flat=True))) == 10
    assert SSHPort.objects.count() == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_allocators_hand_out_no_port_twice(site, settings):
    from django.db import connection

    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "20000-20149"}
    vms = make_vms(site, 160)
    taken: list[list[int]] = [[], []]
    exhausted = [0, 0]

    def allocator(i):
        try:
            for vm in vms[i::2]:
                try:
                    taken[i].append(ssh_port_allocate(vm=vm).port)
                except PoolExhausted:
                    exhausted[i] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=allocator, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ports = taken[0] + taken[1]
    assert len(ports) == 150 and len(set(ports)) == 150 and sum(exhausted) == 10
    assert taken[0] and taken[1]
    assert SSHPort.objects.filter(vm__isnull=False).count() == 150
