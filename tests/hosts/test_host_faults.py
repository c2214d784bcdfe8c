"""Reconciliation and collection under faults: one task per host, skip hosts down or in
maintenance, record why a host could not be reached, flag orphan volumes without deleting."""

from __future__ import annotations

import socket

import pytest
from django.urls import reverse

from hosts.models import Host, HostStatus
from hosts.virt import Hypervisor, VirtError
from monitoring.tasks import collect_all, collect_host
from tests import factories as f
from vms.models import ExtraDisk, VMState
from vms.services.reconcile import host_reconcile
from vms.tasks import reconcile, reconcile_host

pytestmark = pytest.mark.django_db
GIB = 1024**3


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def enqueued(monkeypatch):
    calls = []
    monkeypatch.setattr("vms.tasks.async_task", lambda func, *args, **kw: calls.append(
        (func, args)))
    monkeypatch.setattr("monitoring.tasks.async_task", lambda func, *args, **kw: calls.append(
        (func, args)))
    return calls


@pytest.fixture
def fleet(site):
    """The site's host plus one down, one in maintenance and one that refuses connections."""
    down = f.HostFactory(name="hv-down", uri="qemu+tcp://down.example.org/system",
                         status=HostStatus.DOWN)
    maint = f.HostFactory(name="hv-maint", uri="qemu+tcp://maint.example.org/system",
                          status=HostStatus.MAINTENANCE)
    dead = f.HostFactory(name="hv-dead", uri=f"qemu+tcp://127.0.0.1:{closed_port()}/system")
    return {"up": site.host, "down": down, "maintenance": maint, "dead": dead}


def test_reconcile_queues_one_comparison_per_host_that_is_up(fleet, enqueued):
    result = reconcile()
    assert sorted(enqueued) == sorted(
        ("vms.tasks.reconcile_host", (h.pk,)) for h in (fleet["up"], fleet["dead"]))
    assert "hv-down" not in result and "hv-maint" not in result


def test_collection_skips_hosts_down_or_in_maintenance(fleet, enqueued):
    assert collect_all() == 2
    assert sorted(args[0] for _, args in enqueued) == sorted(
        [fleet["up"].pk, fleet["dead"].pk])


@pytest.mark.parametrize("status", [HostStatus.DOWN, HostStatus.MAINTENANCE])
def test_a_host_that_left_service_after_its_task_was_queued_is_not_reached(fleet, status):
    dead = fleet["dead"]
    Host.objects.filter(pk=dead.pk).update(status=status)
    assert reconcile_host(dead.pk)["skipped"]
    assert collect_host(dead.pk) == {}
    dead.refresh_from_db()
    assert dead.last_error == "" and dead.reconciled_at is None


def test_an_unreachable_host_records_why_and_the_others_are_still_reconciled(fleet):
    dead, up = fleet["dead"], fleet["up"]
    result = reconcile_host(dead.pk)
    assert "cannot connect to host 127.0.0.1" in result["error"]
    dead.refresh_from_db()
    assert dead.last_error.startswith(f"cannot connect to host 127.0.0.1 ({dead.uri})")
    assert "check that libvirtd runs there" in dead.last_error
    assert "unknown" in reconcile_host(up.pk)
    up.refresh_from_db()
    assert up.reconciled_at is not None and up.last_error == ""


def test_collection_of_an_unreachable_host_records_why_and_a_later_success_clears_it(
        fleet, settings):
    dead, up = fleet["dead"], fleet["up"]
    with pytest.raises(VirtError, match="cannot connect to host 127.0.0.1"):
        collect_host(dead.pk)
    dead.refresh_from_db()
    assert dead.last_error.startswith("cannot connect to host 127.0.0.1")
    Host.objects.filter(pk=up.pk).update(last_error="cannot connect to host hv1: no answer")
    collect_host(up.pk)
    up.refresh_from_db()
    assert up.last_error == "" and up.last_seen_at is not None


def test_a_success_keeps_the_probes_verdict(site):
    from hosts.health import NO_ACCEL_ERROR

    Host.objects.filter(pk=site.host.pk).update(last_error=NO_ACCEL_ERROR)
    host_reconcile(host=site.host)
    site.host.refresh_from_db()
    assert site.host.last_error == NO_ACCEL_ERROR


# -- orphan volumes -------------------------------------------------------------------------


def test_volumes_nothing_in_the_database_uses_are_flagged_and_kept(
        site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    gone, _ = install(site, django_capture_on_commit_callbacks, name="gone")
    hv = Hypervisor(site.host.uri)
    pool, path = site.datastore.pool_name, site.datastore.path
    disk = ExtraDisk.objects.create(vm=vm, datastore=site.datastore, size_gib=1)
    hv.create_volume(pool, disk.volume_name, GIB)
    hv.create_volume(pool, vm.seed_volume_name, GIB)
    hv.create_volume(pool, "stray.qcow2", GIB)
    # A VM deleted in the database whose disk stayed behind.
    type(gone).objects.filter(pk=gone.pk).update(state=VMState.DELETED)

    result = host_reconcile(host=site.host)

    expected = sorted([f"{path}/stray.qcow2", f"{path}/{gone.volume_name}"])
    assert result["orphans"] == expected
    site.host.refresh_from_db()
    assert site.host.orphan_volumes == expected
    names = hv.list_volumes(pool)
    assert {"stray.qcow2", gone.volume_name, vm.volume_name, disk.volume_name,
            vm.seed_volume_name, site.template.image} <= set(names)


def test_an_older_image_a_vm_disk_backs_onto_is_not_an_orphan(
        site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    hv = Hypervisor(site.host.uri)
    pool, path = site.datastore.pool_name, site.datastore.path
    hv.create_volume(pool, "old-image.qcow2", GIB)
    hv.delete_volume(pool, vm.volume_name)
    hv.create_overlay(pool, vm.volume_name, f"{path}/old-image.qcow2", GIB)
    hv.create_volume(pool, "stray.qcow2", GIB)
    assert host_reconcile(host=site.host)["orphans"] == [f"{path}/stray.qcow2"]


def test_a_datastore_that_cannot_be_listed_keeps_its_last_finding(site, monkeypatch):
    path = site.datastore.path
    Host.objects.filter(pk=site.host.pk).update(orphan_volumes=[f"{path}/stray.qcow2"])
    site.host.refresh_from_db()

    def busy(self, pool):
        raise VirtError(f"cannot refresh pool '{pool}': pool has asynchronous jobs running")

    monkeypatch.setattr(Hypervisor, "list_volumes", busy)
    assert host_reconcile(host=site.host)["orphans"] == [f"{path}/stray.qcow2"]


def test_the_host_page_shows_orphan_volumes(site):
    Host.objects.filter(pk=site.host.pk).update(
        orphan_volumes=["/srv/portal/local/stray.qcow2"])
    body = site.client(site.admin).get(
        reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert "no VM, disk, seed or template uses" in body
    assert "/srv/portal/local/stray.qcow2" in body
