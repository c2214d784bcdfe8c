"""Private IP + MAC allocation: one holder per address, released addresses reused."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from networking.allocation import PoolExhausted, ip_allocate, ip_release
from networking.models import PrivateIP
from tests import factories as f
from vms.models import VirtualMachine


def make_vms(site, n):
    vms = []
    for i in range(n):
        req = f.VMRequestFactory(requester=site.student, template=site.template,
                                 name=f"alloc-{i}", stage="approved")
        vms.append(VirtualMachine.objects.create(
            name=f"alloc-{i}", owner=site.student, organisation=site.org, request=req,
            template=site.template, vcpus=1, memory_mib=256, disk_gib=1))
    return vms


@pytest.mark.django_db
def test_allocation_takes_the_first_free_and_keeps_what_a_vm_holds(site):
    a, b = make_vms(site, 2)
    first = ip_allocate(vm=a, vlan=site.vlan)
    assert first.address == "192.168.122.100"
    assert ip_allocate(vm=a, vlan=site.vlan) == first
    assert ip_allocate(vm=b, vlan=site.vlan).address == "192.168.122.101"


@pytest.mark.django_db
def test_released_addresses_are_reused(site):
    a, b = make_vms(site, 2)
    held = ip_allocate(vm=a, vlan=site.vlan)
    ip_release(vm=a)
    assert ip_allocate(vm=b, vlan=site.vlan) == held


@pytest.mark.django_db
def test_exhaustion_says_so_and_takes_nothing(site):
    vms = make_vms(site, 6)
    for vm in vms[:5]:
        ip_allocate(vm=vm, vlan=site.vlan)
    with pytest.raises(PoolExhausted, match="No free private IP"):
        ip_allocate(vm=vms[5], vlan=site.vlan)
    assert not PrivateIP.objects.filter(vm=vms[5]).exists()


def race(vms, allocate):
    """Run allocate(vm) for every VM at once, each on its own connection."""
    results, errors = [], []
    barrier = threading.Barrier(len(vms))

    def worker(vm):
        try:
            barrier.wait()
            results.append(allocate(vm))
        except PoolExhausted as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(vm,)) for vm in vms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_allocators_share_ten_addresses_without_duplicates(site):
    from tests import factories as f

    vlan = f.VLANFactory(name="race", tag=99, subnet="10.99.0.0/24")
    f.make_pool(vlan, 10)
    vms = make_vms(site, 50)
    results, errors = race(vms, lambda vm: ip_allocate(vm=vm, vlan=vlan))
    assert len(results) == 10 and len(errors) == 40
    assert len({ip.address for ip in results}) == 10
    assert len({ip.mac for ip in results}) == 10
    held = PrivateIP.objects.filter(vlan=vlan)
    assert held.filter(vm__isnull=False).count() == 10
    assert len(set(held.values_list("vm", flat=True))) == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_vnc_allocations_on_one_host_get_ten_distinct_ports(site, settings):
    from networking.allocation import vnc_port_allocate

    settings.PORTAL = {**settings.PORTAL, "VNC_PORTS": (5900, 5909)}
    vms = make_vms(site, 50)
    VirtualMachine.objects.filter(pk__in=[vm.pk for vm in vms]).update(host=site.host)
    for vm in vms:
        vm.host = site.host
    results, errors = race(vms, lambda vm: vnc_port_allocate(vm=vm))
    assert sorted(results) == list(range(5900, 5910)) and len(errors) == 40
    ports = VirtualMachine.objects.filter(vnc_port__isnull=False).values_list("vnc_port",
                                                                                flat=True)
    assert sorted(ports) == list(range(5900, 5910))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_public_ip_allocations_share_ten_addresses(site):
    from networking.allocation import public_ip_allocate
    from tests import factories as f

    f.make_public_pool(10)
    vms = make_vms(site, 50)
    results, errors = race(vms, lambda vm: public_ip_allocate(vm=vm))
    assert len({p.address for p in results}) == 10 and len(errors) == 40
