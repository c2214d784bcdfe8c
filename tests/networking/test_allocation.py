"""Private IP + MAC allocation: one holder per address, released addresses reused."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext

import pytest
from django.db import IntegrityError, connection, transaction

from core.errors import PoolExhausted
from networking.allocation import ip_allocate, ip_release
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
    from hosts.vnc import vnc_port_allocate

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


# --- one address per VM and VLAN --------------------------------------------------------------

@pytest.mark.django_db
def test_the_database_refuses_a_second_address_for_a_vm_on_one_vlan(site):
    (vm,) = make_vms(site, 1)
    ip_allocate(vm=vm, vlan=site.vlan)
    spare = PrivateIP.objects.filter(vlan=site.vlan, vm__isnull=True).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        PrivateIP.objects.filter(pk=spare.pk).update(vm=vm)
    # A move between security domains holds one address on each of two VLANs.
    ip_allocate(vm=vm, vlan=site.vlan2)
    assert sorted(PrivateIP.objects.filter(vm=vm).values_list("vlan__name", flat=True)) == [
        "campus", "private"]


@pytest.mark.django_db
def test_an_allocator_that_loses_the_race_returns_the_winners_address(site, monkeypatch):
    (vm,) = make_vms(site, 1)
    # Another worker's allocation committed just after ours looked for a held address.
    winner = PrivateIP.objects.filter(vlan=site.vlan).order_by("-id").first()
    PrivateIP.objects.filter(pk=winner.pk).update(vm=vm)
    original, looks = PrivateIP.objects.filter, []

    def look_before_the_winner(*args, **kwargs):
        if kwargs == {"vm": vm, "vlan": site.vlan} and not looks:
            looks.append(1)
            return original(pk__in=[])
        return original(*args, **kwargs)

    monkeypatch.setattr(PrivateIP.objects, "filter", look_before_the_winner)
    got = _allocate_orm(vm=vm, vlan=site.vlan)  # SQLite's path; PostgreSQL's is raced below
    assert looks and got.address == winner.address
    assert list(PrivateIP.objects.filter(vm=vm).values_list("address", flat=True)) == [
        winner.address]
    assert PrivateIP.objects.filter(vlan=site.vlan, vm__isnull=True).count() == 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_allocations_for_one_vm_give_it_one_address(site):
    vlan = f.VLANFactory(name="one-vm", tag=98, subnet="10.98.0.0/24")
    f.make_pool(vlan, 20)
    (vm,) = make_vms(site, 1)
    results, errors = race([vm] * 10, lambda vm: ip_allocate(vm=vm, vlan=vlan))
    assert errors == [] and len(results) == 10
    assert len({(ip.address, ip.mac) for ip in results}) == 1
    held = PrivateIP.objects.filter(vm=vm)
    assert list(held.values_list("address", flat=True)) == [results[0].address]
    assert PrivateIP.objects.filter(vlan=vlan, vm__isnull=True).count() == 19


def _allocate_orm(vm, vlan):
    from django.utils import timezone

    from networking.allocation import _allocate

    return _allocate(vm, vlan, timezone.now())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("allocate", [ip_allocate, _allocate_orm], ids=["statement", "orm"])
@pytest.mark.parametrize("in_transaction", [False, True], ids=["alone", "in-transaction"])
def test_an_allocation_refused_by_the_constraint_reads_the_winners_address(
        site, allocate, in_transaction):
    vlan = f.VLANFactory(name="loser", tag=97, subnet="10.97.0.0/24")
    f.make_pool(vlan, 5)
    (vm,) = make_vms(site, 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (our_pid,) = cursor.fetchone()
    took, won, failures = threading.Event(), {}, []

    def winner():
        try:
            with transaction.atomic():
                won["ip"] = ip_allocate(vm=vm, vlan=vlan)
                took.set()
                # Commit once our allocator waits on the winner's (vm, vlan) key, so it has
                # already looked, seen nothing held and taken another row.
                with connection.cursor() as cursor:
                    for _ in range(3000):
                        cursor.execute("SELECT count(*) FROM pg_locks "
                                       "WHERE pid = %s AND NOT granted", [our_pid])
                        if cursor.fetchone()[0]:
                            return
                        time.sleep(0.01)
                failures.append("the second allocator never waited on the first")
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
        finally:
            took.set()
            connection.close()

    thread = threading.Thread(target=winner)
    thread.start()
    took.wait()
    with transaction.atomic() if in_transaction else nullcontext():
        got = allocate(vm=vm, vlan=vlan)
        # Inside a transaction, the refused statement must not have aborted it.
        assert PrivateIP.objects.filter(vm=vm).count() == 1
    thread.join()
    assert failures == []
    assert got.address == won["ip"].address
    assert list(PrivateIP.objects.filter(vm=vm).values_list("address", flat=True)) == [
        won["ip"].address]
