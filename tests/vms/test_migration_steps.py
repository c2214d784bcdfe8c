"""A migration's recorded steps: what a worker killed half-way left on the destination is given
back by the reconciler (test-driver hosts, a datastore not shared so disks are copied)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from hosts.virt import Hypervisor
from networking.models import PrivateIP
from operations.models import Operation, OperationStatus
from operations.reconcile import operations_reconcile
from operations.runner import RunFenced, operation_run
from tests.vms.faults_helpers import LONG_AGO
from tests.vms.test_migration import URI, ask, macs_on, second, stopped  # noqa: F401
from vms.models import VMState

pytestmark = pytest.mark.django_db


def dead_move(site, capture, monkeypatch, at):
    """Move a stopped VM on a datastore not shared until `at`, where the worker vanishes."""
    vm = stopped(site, capture)
    site.datastore.shared = False
    site.datastore.save()

    def vanish(*args, **kwargs):
        raise RunFenced("the worker process is gone")  # leaves the row as a kill would

    monkeypatch.setattr(Hypervisor, at, vanish)
    op = operation_run(operation_id=ask(vm, site.admin, capture).pk)
    monkeypatch.undo()
    assert op.status == OperationStatus.RUNNING
    Operation.objects.filter(pk=op.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    return vm, op


def test_the_reconciler_gives_back_what_a_dead_migration_took_on_the_destination(
        site, second, django_capture_on_commit_callbacks, monkeypatch):  # noqa: F811
    capture = django_capture_on_commit_callbacks
    # Killed after the domain was defined there, before it was undefined here.
    vm, op = dead_move(site, capture, monkeypatch, "undefine_domain")
    pool, here, there = site.datastore.pool_name, Hypervisor(URI), Hypervisor(second.uri)
    mac = PrivateIP.objects.get(vm=vm).mac
    assert [s["step"] for s in op.steps] == ["migration_vnc_port", "migration_dhcp",
                                             "migration_destination"]
    assert there.find_domain(vm.domain_name) is not None
    assert there.volume_exists(pool, vm.volume_name) and mac in macs_on(second.uri)
    assert Operation.objects.get(pk=op.pk).arguments["vnc_port"] == 5900

    with capture(execute=True):
        assert operations_reconcile()["failed"] == 1
    op.refresh_from_db()
    vm.refresh_from_db()
    assert op.status == OperationStatus.FAILED and op.steps == []
    assert "given back" in op.message and "vnc_port" not in op.arguments
    assert vm.host == site.host and vm.state == VMState.SHUTOFF
    assert "Everything it had taken was given back" in vm.attention
    assert there.find_domain(vm.domain_name) is None
    assert not there.volume_exists(pool, vm.volume_name)
    base = vm.template.image_path.rpartition("/")[2]
    assert not there.volume_exists(pool, base)  # copied by the dead run: removed as well
    assert mac not in macs_on(second.uri) and mac in macs_on(URI)
    assert here.find_domain(vm.domain_name) is not None
    assert here.volume_exists(pool, vm.volume_name) and here.volume_exists(pool, base)


def test_a_dead_migration_whose_vm_reached_the_destination_is_left_for_an_admin(
        site, second, django_capture_on_commit_callbacks, monkeypatch):  # noqa: F811
    capture = django_capture_on_commit_callbacks
    # Killed after the domain left its source, before the portal recorded the new host.
    vm, op = dead_move(site, capture, monkeypatch, "disks_remove_moved")
    pool, there = site.datastore.pool_name, Hypervisor(second.uri)
    with capture(execute=True):
        assert operations_reconcile()["failed"] == 1
    op.refresh_from_db()
    vm.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    # Nothing of the VM's was removed where it now is; what is left is said on the VM.
    assert there.find_domain(vm.domain_name) is not None
    assert there.volume_exists(pool, vm.volume_name)
    assert [s["step"] for s in op.steps] == ["migration_dhcp", "migration_destination"]
    assert "Left behind" in vm.attention and "domain lab1" in vm.attention
