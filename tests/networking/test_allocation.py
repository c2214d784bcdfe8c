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


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_allocators_never_share_an_address(site):
    vms = make_vms(site, 12)
    results: list[str] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(len(vms))

    def worker(vm):
        try:
            barrier.wait()
            results.append(ip_allocate(vm=vm, vlan=site.vlan).address)
        except PoolExhausted as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(vm,)) for vm in vms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 5 and len(set(results)) == 5
    assert len(errors) == 7
    held = PrivateIP.objects.filter(vm__isnull=False)
    assert held.count() == 5
    assert len(set(held.values_list("vm", flat=True))) == 5
