"""Whole-cloud shutdown then bootup on a real libvirtd: exactly the running set comes back."""

from __future__ import annotations

import pytest

from hosts.models import Host, HostStatus
from operations.models import OperationKind, OperationStatus
from operations.runner import operation_run
from tests.integration.second_host import second_host  # noqa: F401 - a fixture
from tests.integration.test_portal_qemu import (  # noqa: F401 - real_site is a fixture
    URI,
    act,
    install,
    real_site,
    suffix,
    virsh,
)
from vms.models import CloudShutdown, Snapshot, VirtualMachine, VMState
from vms.services.cloud_power import cloud_bootup_request, cloud_shutdown_request

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]


def reason(name: str) -> str:
    """Return the domain's state with libvirt's reason for it ("running (from snapshot)")."""
    return virsh("domstate", "--reason", name).stdout.strip()


def ask(call, site, capture):  # noqa: ANN001
    with capture(execute=False):
        op = call(actor=site.admin)
    return operation_run(operation_id=op.pk)


def test_whole_cloud_shutdown_then_bootup_restores_exactly_the_running_set(
        real_site, django_capture_on_commit_callbacks, settings):  # noqa: F811
    site, capture = real_site, django_capture_on_commit_callbacks
    settings.PORTAL = {**settings.PORTAL, "CLOUD_BOOT_WAIT": 60, "CLOUD_POLL": 1}
    settings.PORTAL_HOST_HEALTH = {**settings.PORTAL_HOST_HEALTH, "MIN_FREE_GIB": 0}
    # A healthy host: the fixture defines the second VLAN's network without starting it.
    virsh("net-start", site.vlan2.network_name)
    # Three small VMs on a two-core machine.
    Host.objects.filter(pk=site.host.pk).update(cpu_overcommit=4)
    names = [f"pc-{suffix()}" for _ in range(3)]
    vms = []
    for name in names:
        vm, op = install(site, capture, name)
        assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
        vms.append(vm)
    assert act(vms[2], OperationKind.DESTROY, site, capture).status == OperationStatus.SUCCEEDED
    assert [reason(n) for n in names[:2]] == ["running (booted)"] * 2

    shutdown = ask(cloud_shutdown_request, site, capture)
    assert shutdown.status == OperationStatus.SUCCEEDED, (shutdown.message, shutdown.detail)
    assert "2 VM(s) saved" in shutdown.message and site.host.name in shutdown.message
    assert "Left on" in shutdown.message  # the host has no power method: it stays on
    record = CloudShutdown.objects.get()
    assert [virsh("domstate", n).stdout.strip() for n in names] == ["shut off"] * 3
    for name in names[:2]:
        listed = virsh("snapshot-list", "--name", name).stdout.split()
        assert listed == [record.snapshot_name]
        info = virsh("snapshot-info", name, record.snapshot_name).stdout
        assert "running" in info  # taken with its memory, while it ran
    assert virsh("snapshot-list", "--name", names[2]).stdout.split() == []
    assert not Snapshot.objects.exists()
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.MAINTENANCE

    bootup = ask(cloud_bootup_request, site, capture)
    assert bootup.status == OperationStatus.SUCCEEDED, (bootup.message, bootup.detail)
    # Resumed from the snapshot taken while they ran, not booted afresh.
    assert [reason(n) for n in names[:2]] == ["running (from snapshot)"] * 2
    assert virsh("domstate", names[2]).stdout.strip() == "shut off"
    for name in names:
        assert virsh("snapshot-list", "--name", name).stdout.split() == []
    assert [VirtualMachine.objects.get(pk=v.pk).state for v in vms] == [
        VMState.RUNNING, VMState.RUNNING, VMState.SHUTOFF]
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.UP
    record.refresh_from_db()
    assert record.finished_at is not None


def test_two_hosts_shut_down_and_boot_up_each_with_its_own_running_set(
        real_site, second_host, django_capture_on_commit_callbacks, settings):  # noqa: F811
    from hosts.virt import Hypervisor, close_all, get_connection

    site, capture = real_site, django_capture_on_commit_callbacks
    settings.PORTAL = {**settings.PORTAL, "CLOUD_BOOT_WAIT": 60, "CLOUD_POLL": 1}
    settings.PORTAL_HOST_HEALTH = {**settings.PORTAL_HOST_HEALTH, "MIN_FREE_GIB": 0}
    one = site.host
    Host.objects.filter(pk=one.pk).update(cpu_overcommit=4)
    try:
        first, _ = install(site, capture, f"pc-{suffix()}")
        second, _ = install(site, capture, f"pc-{suffix()}")
        idle, _ = install(site, capture, f"pc-{suffix()}")
        hv2 = Host.objects.create(name="hv2", uri=second_host.uri, address=second_host.address,
                                  accel=one.accel, cpu_mode=one.cpu_mode, vcpus=one.vcpus,
                                  memory_mib=one.memory_mib, cpu_overcommit=4,
                                  memory_reserved_mib=one.memory_reserved_mib)
        site.datastore.shared = True
        site.datastore.save()
        site.datastore.hosts.add(hv2)
        there = Hypervisor(second_host.uri)
        for vlan in (site.vlan, site.vlan2):
            virsh("net-start", vlan.network_name)
            there.ensure_network(get_connection(URI).networkLookupByName(vlan.network_name)
                                 .XMLDesc(0))
        # The second runs on the second host: moved there live by the portal.
        from vms.services.migration import vm_migrate_request

        with capture(execute=False):
            moving = vm_migrate_request(vm=second, actor=site.admin)
        assert moving.host == hv2
        moved = operation_run(operation_id=moving.pk)
        assert moved.status == OperationStatus.SUCCEEDED, (moved.message, moved.detail)
        second.refresh_from_db()
        assert (first.host_id, second.host_id, idle.host_id) == (one.pk, hv2.pk, one.pk)
        assert act(idle, OperationKind.DESTROY, site, capture).status == "succeeded"

        shutdown = ask(cloud_shutdown_request, site, capture)
        assert shutdown.status == OperationStatus.SUCCEEDED, (shutdown.message,
                                                              shutdown.detail)
        assert "2 VM(s) saved" in shutdown.message and "hv1, hv2" in shutdown.message
        assert Hypervisor(URI).find_domain(first.domain_name).state == "shutoff"
        assert there.find_domain(second.domain_name).state == "shutoff"

        bootup = ask(cloud_bootup_request, site, capture)
        assert bootup.status == OperationStatus.SUCCEEDED, (bootup.message, bootup.detail)
        assert reason(first.domain_name) == "running (from snapshot)"
        assert there.find_domain(second.domain_name).state == "running"
        assert Hypervisor(URI).find_domain(idle.domain_name).state == "shutoff"
        assert there.snapshot_names(second.domain_name) == []
        assert set(Host.objects.values_list("status", flat=True)) == {HostStatus.UP}
    finally:
        for dom in get_connection(second_host.uri).listAllDomains(0):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(1 << 1)  # snapshots' metadata too
        for net in get_connection(second_host.uri).listAllNetworks(0):
            if net.isActive():
                net.destroy()
            net.undefine()
        close_all()
