"""Snapshots, extra disks, resize, clones and save-as-template on libvirt's test driver."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from core.errors import PortalError
from hosts.models import HostStatus, Template
from hosts.virt import Hypervisor, VirtError
from networking.models import PrivateIP
from operations.models import OperationKind, OperationStatus
from operations.runner import operation_run
from tests.vms.test_lifecycle import act, install, run_pending
from vms.models import (
    DiskState,
    ExtraDisk,
    RequestKind,
    Snapshot,
    SnapshotKind,
    SnapshotSchedule,
    VirtualMachine,
    VMState,
)
from vms.services.changes import disk_action_request, template_save_request
from vms.services.snapshots import (
    snapshot_delete,
    snapshot_revert,
    snapshot_schedule_set,
    snapshot_take,
    snapshots_scheduled_take,
)
from vms.services.workflow import vm_change_request_create, vm_request_approve

pytestmark = pytest.mark.django_db
URI = "test:///default"


def take(site, vm, capture, name="before upgrade", **kw):
    with capture(execute=False):
        snap = snapshot_take(vm=vm, actor=site.admin, name=name, **kw)
    op = run_pending(vm)
    vm.refresh_from_db()
    return snap, op


def queued(vm, call, capture):
    with capture(execute=False):
        call()
    op = run_pending(vm)
    vm.refresh_from_db()
    return op


def approved_change(site, vm, kind, capture, **params):
    req = vm_change_request_create(requester=site.admin, vm=vm, kind=kind, purpose="needed",
                                   params=params)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    return req


# --- snapshots -------------------------------------------------------------------------------

def test_a_snapshot_is_taken_with_a_portal_name_and_the_users_words(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    snap, op = take(site, vm, django_capture_on_commit_callbacks, name="v1 </name><x/>",
                    description="</description><evil/> & co")
    assert op.status == OperationStatus.SUCCEEDED, op.message
    snap.refresh_from_db()
    assert snap.state == "ready" and snap.vm_state == VMState.RUNNING
    assert snap.libvirt_name.startswith("snap-")
    assert Hypervisor(URI).snapshot_names(vm.domain_name) == [snap.libvirt_name]


def test_the_snapshot_after_the_limit_is_refused(site, django_capture_on_commit_callbacks,
                                                 settings):
    settings.PORTAL = {**settings.PORTAL, "MAX_SNAPSHOTS": 2}
    vm, _ = install(site, django_capture_on_commit_callbacks)
    for i in range(2):
        take(site, vm, django_capture_on_commit_callbacks, name=f"s{i}")
    with pytest.raises(PortalError, match="already has 2 snapshots"):
        snapshot_take(vm=vm, actor=site.admin, name="one too many")
    assert vm.snapshots.count() == 2


@pytest.mark.parametrize(("setup", "text"), [
    ("host_down", "host is down"), ("installing", "while it is installing"),
    ("stranger", "may not"), ("busy", "under way"),
])
def test_snapshots_are_refused_when_they_cannot_be_taken(
        site, django_capture_on_commit_callbacks, setup, text):
    from vms.services.lifecycle import vm_action_request

    vm, _ = install(site, django_capture_on_commit_callbacks)
    actor = site.admin
    if setup == "host_down":
        site.host.status = HostStatus.DOWN
        site.host.save()
    elif setup == "installing":
        VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.INSTALLING)
    elif setup == "stranger":
        actor = site.other_student
    else:
        with django_capture_on_commit_callbacks(execute=False):
            vm_action_request(vm=vm, kind=OperationKind.SUSPEND, actor=site.admin)
    with pytest.raises(PortalError, match=text):
        snapshot_take(vm=vm, actor=actor, name="x")
    assert not vm.snapshots.exists()


def test_a_snapshot_needs_a_name(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError):
        snapshot_take(vm=vm, actor=site.admin, name="   ")


def test_a_failed_snapshot_leaves_nothing(site, django_capture_on_commit_callbacks,
                                          monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    monkeypatch.setattr(Hypervisor, "snapshot_create", lambda self, *a: (_ for _ in ()).throw(
        VirtError("disk full")))
    _, op = take(site, vm, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED and "disk full" in op.detail
    assert not vm.snapshots.exists()
    assert Hypervisor(URI).snapshot_names(vm.domain_name) == []


def test_revert_and_delete(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    snap, _ = take(site, vm, django_capture_on_commit_callbacks)
    snap.refresh_from_db()
    op = queued(vm, lambda: snapshot_revert(snapshot=snap, actor=site.admin),
                django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.state == VMState.RUNNING
    op = queued(vm, lambda: snapshot_delete(snapshot=snap, actor=site.admin),
                django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED
    assert not vm.snapshots.exists()
    assert Hypervisor(URI).snapshot_names(vm.domain_name) == []


def test_a_vm_whose_host_is_down_cannot_be_reverted(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    snap, _ = take(site, vm, django_capture_on_commit_callbacks)
    snap.refresh_from_db()
    site.host.status = HostStatus.DOWN
    site.host.save()
    with pytest.raises(PortalError, match="host is down"):
        snapshot_revert(snapshot=snap, actor=site.admin)


def test_a_schedule_keeps_exactly_the_newest_n(site, django_capture_on_commit_callbacks,
                                               settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.PORTAL = {**settings.PORTAL, "MAX_SNAPSHOTS": 2}
    vm, _ = install(site, django_capture_on_commit_callbacks)
    snapshot_schedule_set(vm=vm, actor=site.admin, frequencies={"daily"})
    now = timezone.now()
    for day in range(4):
        with django_capture_on_commit_callbacks(execute=False):
            assert snapshots_scheduled_take(now=now + timedelta(days=day)) == 1
        assert run_pending(vm).status == OperationStatus.SUCCEEDED
    daily = vm.snapshots.filter(kind=SnapshotKind.DAILY)
    assert daily.count() == 2
    names = sorted(daily.values_list("libvirt_name", flat=True))
    assert sorted(Hypervisor(URI).snapshot_names(vm.domain_name)) == names
    with django_capture_on_commit_callbacks(execute=False):
        assert snapshots_scheduled_take(now=now + timedelta(days=3, hours=2)) == 0
    assert SnapshotSchedule.objects.get(vm=vm).last_taken_at is not None


def test_scheduled_snapshots_do_not_use_up_the_manual_allowance(
        site, django_capture_on_commit_callbacks, settings):
    settings.PORTAL = {**settings.PORTAL, "MAX_SNAPSHOTS": 1}
    vm, _ = install(site, django_capture_on_commit_callbacks)
    take(site, vm, django_capture_on_commit_callbacks, kind=SnapshotKind.WEEKLY)
    snap, op = take(site, vm, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED


# --- extra disks -----------------------------------------------------------------------------

def test_an_extra_disk_is_created_and_attached_to_a_stopped_vm(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    approved_change(site, vm, RequestKind.DISK, django_capture_on_commit_callbacks, size_gib=5)
    op = run_pending(vm)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    disk = ExtraDisk.objects.get(vm=vm)
    assert (disk.state, disk.target, disk.size_gib) == (DiskState.ATTACHED, "vdb", 5)
    hv = Hypervisor(URI)
    assert disk.volume_name in hv.list_volumes(site.datastore.pool_name)
    assert "vdb" in hv.disk_targets(vm.domain_name)
    op = queued(vm, lambda: disk_action_request(disk=disk, kind=OperationKind.DISK_DETACH,
                                                actor=site.admin),
                django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED
    disk.refresh_from_db()
    assert disk.state == DiskState.DETACHED and "vdb" not in hv.disk_targets(vm.domain_name)
    op = queued(vm, lambda: disk_action_request(disk=disk, kind=OperationKind.DISK_DELETE,
                                                actor=site.admin),
                django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED
    assert not ExtraDisk.objects.exists()
    assert disk.volume_name not in hv.list_volumes(site.datastore.pool_name)


def test_a_disk_that_cannot_attach_leaves_nothing(site, django_capture_on_commit_callbacks,
                                                  monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    monkeypatch.setattr(Hypervisor, "attach_disk", lambda self, *a: (_ for _ in ()).throw(
        VirtError("no free slot")))
    approved_change(site, vm, RequestKind.DISK, django_capture_on_commit_callbacks, size_gib=5)
    op = run_pending(vm)
    assert op.status == OperationStatus.FAILED and "no free slot" in op.detail
    assert not ExtraDisk.objects.exists()
    assert [v for v in Hypervisor(URI).list_volumes(site.datastore.pool_name)
            if v.startswith("disk-")] == []


@pytest.mark.parametrize(("size", "field"), [(0, "size_gib"), (100000, "size_gib")])
def test_disk_sizes_out_of_bounds_are_refused(site, django_capture_on_commit_callbacks, size,
                                              field):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError) as err:
        vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.DISK,
                                 purpose="x", params={"size_gib": size})
    assert field in err.value.message_dict


def test_a_full_datastore_fails_the_disk_request_at_approval(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    site.datastore.capacity_gib = 3
    site.datastore.save()
    req = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.DISK,
                                   purpose="x", params={"size_gib": 5})
    with pytest.raises(PortalError, match="GiB free"):
        vm_request_approve(request=req, actor=site.another_admin())
    assert not ExtraDisk.objects.exists()


# --- resize ----------------------------------------------------------------------------------

def test_a_stopped_vm_is_resized(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    approved_change(site, vm, RequestKind.RESIZE, django_capture_on_commit_callbacks,
                    vcpus=2, memory_mib=1024)
    op = run_pending(vm)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm.refresh_from_db()
    assert (vm.vcpus, vm.memory_mib) == (2, 1024)
    facts = Hypervisor(URI).domain(vm.domain_name)
    assert (facts.vcpus, facts.memory_mib) == (2, 1024)


@pytest.mark.parametrize(("vcpus", "memory", "field"), [
    (9, 512, "vcpus"), (1, 64, "memory_mib"), (1, 512, "vcpus"),
])
def test_resize_requests_outside_bounds_or_without_change_are_refused(
        site, django_capture_on_commit_callbacks, vcpus, memory, field):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError) as err:
        vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.RESIZE,
                                 purpose="x", params={"vcpus": vcpus, "memory_mib": memory})
    assert field in err.value.message_dict


def test_a_resize_no_host_has_room_for_is_refused_when_asked(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    site.host.vcpus = 1
    site.host.save()
    with pytest.raises(ValidationError, match="cannot grow to 2 vCPUs and 512 MiB on its "
                                              "host, nor move to another"):
        approved_change(site, vm, RequestKind.RESIZE, django_capture_on_commit_callbacks,
                        vcpus=2, memory_mib=512)


def test_a_resize_whose_host_lost_its_room_since_the_approval_fails_and_changes_nothing(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    approved_change(site, vm, RequestKind.RESIZE, django_capture_on_commit_callbacks,
                    vcpus=2, memory_mib=512)
    site.host.vcpus = 1
    site.host.save()
    op = run_pending(vm)
    assert op.status == OperationStatus.FAILED and "no room" in op.message
    assert "will move to a host with room" in op.message
    vm.refresh_from_db()
    assert vm.vcpus == 1 and Hypervisor(URI).domain(vm.domain_name).vcpus == 1


# --- clones ----------------------------------------------------------------------------------

def test_clones_get_their_own_disk_name_ip_mac_and_port(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    approved_change(site, vm, RequestKind.CLONE, django_capture_on_commit_callbacks, count=2)
    clones = list(VirtualMachine.objects.filter(clone_of=vm).order_by("name"))
    assert [c.name for c in clones] == ["lab1-copy1", "lab1-copy2"]
    for clone in clones:
        op = operation_run(operation_id=clone.operations.get().pk)
        assert op.status == OperationStatus.SUCCEEDED, op.message
    hv = Hypervisor(URI)
    ips = {PrivateIP.objects.get(vm=c).address for c in [vm, *clones]}
    ports = {VirtualMachine.objects.get(pk=c.pk).vnc_port for c in [vm, *clones]}
    assert len(ips) == 3 and len(ports) == 3
    for clone in clones:
        assert hv.domain(clone.domain_name).state == "running"
        image = hv.inspect_image(site.datastore.pool_name, clone.volume_name)
        assert image.format == "qcow2" and image.backing_path is None
    assert hv.domain(vm.domain_name).state == "shutoff"


def test_a_clone_of_a_running_vm_waits_for_it_to_stop(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    approved_change(site, vm, RequestKind.CLONE, django_capture_on_commit_callbacks, count=1)
    clone = VirtualMachine.objects.get(clone_of=vm)
    op = operation_run(operation_id=clone.operations.get().pk)
    assert op.status == OperationStatus.FAILED and "Shut lab1 down" in op.message
    assert not PrivateIP.objects.filter(vm=clone).exists()


def test_a_clone_that_fails_to_copy_leaves_nothing(site, django_capture_on_commit_callbacks,
                                                   monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    approved_change(site, vm, RequestKind.CLONE, django_capture_on_commit_callbacks, count=1)
    clone = VirtualMachine.objects.get(clone_of=vm)
    monkeypatch.setattr(Hypervisor, "define_domain", lambda self, xml: (_ for _ in ()).throw(
        VirtError("refused")))
    op = operation_run(operation_id=clone.operations.get().pk)
    assert op.status == OperationStatus.FAILED
    clone.refresh_from_db()
    assert clone.state == VMState.FAILED and clone.host is None and clone.vnc_port is None
    assert not PrivateIP.objects.filter(vm=clone).exists()
    assert clone.volume_name not in Hypervisor(URI).list_volumes(site.datastore.pool_name)


@pytest.mark.parametrize("count", [0, 6])
def test_clone_counts_out_of_bounds_are_refused(site, django_capture_on_commit_callbacks, count):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError) as err:
        vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.CLONE,
                                 purpose="x", params={"count": count})
    assert "count" in err.value.message_dict


# --- save as template ------------------------------------------------------------------------

def test_a_stopped_vm_becomes_a_standalone_template(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    op = queued(vm, lambda: template_save_request(vm=vm, actor=site.admin, name="Lab image"),
                django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    template = Template.objects.get(name="Lab image")
    image = Hypervisor(URI).inspect_image(site.datastore.pool_name, template.image)
    assert image.backing_path is None and image.format == "qcow2"


@pytest.mark.parametrize("who", ["student", "orgadmin"])
def test_only_admins_save_templates(site, django_capture_on_commit_callbacks, who):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(PortalError):
        template_save_request(vm=vm, actor=getattr(site, who), name="x")


def test_a_running_vm_is_not_saved_as_template(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(PortalError, match="Shut lab1 down"):
        template_save_request(vm=vm, actor=site.admin, name="x")


def test_delete_removes_extra_disks_and_snapshots(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    approved_change(site, vm, RequestKind.DISK, django_capture_on_commit_callbacks, size_gib=2)
    run_pending(vm)
    take(site, vm, django_capture_on_commit_callbacks)
    volume = ExtraDisk.objects.get(vm=vm).volume_name
    op = act(vm, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert not ExtraDisk.objects.exists() and not Snapshot.objects.exists()
    assert volume not in Hypervisor(URI).list_volumes(site.datastore.pool_name)
