"""One way to ask for an operation: permission, state, scope; parents show their children."""

from __future__ import annotations

import pytest

from core.errors import PortalError
from operations import registry
from operations.models import Operation, OperationKind, OperationStatus
from operations.requests import operation_create, operation_request, operation_scope_busy
from tests import factories as f
from vms.models import VirtualMachine, VMState

pytestmark = pytest.mark.django_db


def plain_vm(site, name: str = "plain", state: str = VMState.RUNNING) -> VirtualMachine:  # noqa: ANN001
    """Return a VM of the student's on the site's host."""
    return VirtualMachine.objects.create(
        name=name, owner=site.student, organisation=site.org, host=site.host, state=state,
        request=f.VMRequestFactory(requester=site.student, template=site.template),
        template=site.template, vcpus=1, memory_mib=256, disk_gib=1)


def test_active_is_queued_or_running(site):
    ops = {status: Operation.objects.create(kind=OperationKind.NAT_RESYNC, status=status)
           for status in OperationStatus.values}
    assert set(Operation.objects.active()) == {ops["queued"], ops["running"]}


def test_a_request_is_refused_without_permission_in_a_wrong_state_or_on_a_busy_vm(
        site, django_capture_on_commit_callbacks):
    vm = plain_vm(site)
    with pytest.raises(PortalError, match="You may not act on plain."):
        operation_request(kind=OperationKind.SHUTDOWN, actor=site.other_student, vm=vm)
    with pytest.raises(PortalError, match="Cannot resume plain while it is running."):
        operation_request(kind=OperationKind.RESUME, actor=site.student, vm=vm)
    with django_capture_on_commit_callbacks():
        op = operation_request(kind=OperationKind.SHUTDOWN, actor=site.student, vm=vm)
    assert (op.status, op.requested_by, op.vm) == ("queued", site.student, vm)
    with pytest.raises(PortalError, match="Another operation on plain is under way; wait"):
        operation_request(kind=OperationKind.REBOOT, actor=site.student, vm=vm)
    assert Operation.objects.count() == 1


@pytest.fixture
def evacuate(monkeypatch):
    """Register, for this test, a host-holding kind (an evacuation would be one)."""
    spec = registry.OperationSpec(kind=OperationKind.HOST_REFRESH, handler=lambda op: "",
                                  target="host", scope=("host",))
    monkeypatch.setitem(registry.SPECS, OperationKind.HOST_REFRESH, spec)
    return spec


def test_a_host_held_by_an_operation_blocks_its_vms_and_the_other_way_round(
        site, evacuate, django_capture_on_commit_callbacks):
    vm = plain_vm(site)
    with django_capture_on_commit_callbacks():
        held = operation_request(kind=OperationKind.HOST_REFRESH, actor=site.admin,
                                 host=site.host)
        assert operation_scope_busy(vm=vm)
        with pytest.raises(PortalError, match="Another operation on plain is under way"):
            operation_request(kind=OperationKind.SHUTDOWN, actor=site.student, vm=vm)
        # Its own children are let through: the parent drives them.
        child = operation_request(kind=OperationKind.SHUTDOWN, actor=site.admin, vm=vm,
                                  parent=held)
    assert child.parent == held
    Operation.objects.filter(pk=held.pk).update(status=OperationStatus.SUCCEEDED)
    with pytest.raises(PortalError, match=f"Another operation on {site.host.name} is under"):
        operation_request(kind=OperationKind.HOST_REFRESH, actor=site.admin, host=site.host)


def test_a_parent_shows_how_many_children_stand_in_each_status(site):
    parent = operation_create(kind=OperationKind.NAT_RESYNC)
    assert parent.children_progress() == {}
    for name, status in (("a", "succeeded"), ("b", "succeeded"), ("c", "running"),
                         ("d", "failed")):
        Operation.objects.create(kind=OperationKind.START, vm=plain_vm(site, name),
                                 parent=parent, status=status)
    assert parent.children_progress() == {"running": 1, "succeeded": 2, "failed": 1}
    assert parent.children_summary == "1 running, 2 done, 1 failed"


def test_the_operations_list_shows_a_parents_progress(site):
    from django.urls import reverse

    parent = operation_create(kind=OperationKind.NAT_RESYNC, requested_by=site.admin)
    for name, status in (("a", "succeeded"), ("b", "running")):
        Operation.objects.create(kind=OperationKind.START, vm=plain_vm(site, name),
                                 parent=parent, status=status)
    page = site.client(site.admin).get(reverse("vms:operation_list"))
    assert "Its operations: 1 running, 1 done" in page.content.decode()


# --- approved changes take the same path ------------------------------------------------------

def approve_change(site, vm, kind, **params):  # noqa: ANN001
    """Ask for a change of the admin's and have another admin approve it (final)."""
    from vms.services.workflow import vm_change_request_create, vm_request_approve

    req = vm_change_request_create(requester=site.admin, vm=vm, kind=kind, purpose="needed",
                                   params=params)
    return vm_request_approve(request=req, actor=site.another_admin())


def test_every_change_kind_needs_the_apply_permission_and_a_changeable_vm():
    from vms.models import VMState
    from vms.services.domain import APPLY_CHANGE, CHANGEABLE_STATES

    for kind in (OperationKind.RESIZE, OperationKind.DISK_ADD, OperationKind.SSH_PORT_ATTACH,
                 OperationKind.NETWORK_MOVE, OperationKind.PUBLIC_IP_ATTACH):
        spec = registry.spec_for(kind)
        assert (spec.permission, spec.request_states) == (APPLY_CHANGE, CHANGEABLE_STATES)
    clone = registry.spec_for(OperationKind.CLONE)
    assert (clone.permission, clone.request_states) == (APPLY_CHANGE, (VMState.PENDING,))


def test_a_change_approved_while_the_vm_is_busy_is_refused_and_records_nothing(
        site, django_capture_on_commit_callbacks):
    from vms.models import ExtraDisk, RequestKind, VMRequest

    for kind, params in ((RequestKind.DISK, {"size_gib": 2}),
                         (RequestKind.RESIZE, {"vcpus": 2, "memory_mib": 512}),
                         (RequestKind.CLONE, {"count": 1})):
        vm = plain_vm(site, name=f"busy-{kind}")
        with django_capture_on_commit_callbacks():
            operation_request(kind=OperationKind.SHUTDOWN, actor=site.student, vm=vm)
        with pytest.raises(PortalError, match="under way; approve again when it has finished"):
            approve_change(site, vm, kind, **params)
    assert not ExtraDisk.objects.exists()
    assert not VirtualMachine.objects.filter(clone_of__isnull=False).exists()
    assert Operation.objects.count() == 3
    assert not VMRequest.objects.filter(stage="approved").exists()


def test_a_change_of_a_vm_that_cannot_change_is_refused(site):
    from vms.models import RequestKind

    vm = plain_vm(site)
    other = plain_vm(site, name="other")
    VirtualMachine.objects.filter(pk__in=[vm.pk, other.pk]).update(state=VMState.FAILED)
    with pytest.raises(PortalError, match="Cannot change plain while it is install failed"):
        approve_change(site, vm, RequestKind.RESIZE, vcpus=2, memory_mib=512)
    with pytest.raises(PortalError, match="other is install failed; it cannot change now"):
        approve_change(site, other, RequestKind.CLONE, count=1)
    assert not Operation.objects.exists()


def test_only_an_admin_carries_out_an_approved_change(site):
    from vms.models import RequestKind, VMRequest
    from vms.services.lifecycle import vm_change_apply

    vm = plain_vm(site)
    req = VMRequest.objects.create(
        kind=RequestKind.RESIZE, requester=site.student, organisation=site.org, target=vm,
        name=vm.name, template=site.template, vcpus=2, memory_mib=512, disk_gib=1,
        params={"vcpus": 2, "memory_mib": 512})
    with pytest.raises(PortalError, match="You may not change plain"):
        vm_change_apply(request=req, actor=site.student)
    assert not Operation.objects.exists()


def test_host_and_nat_kinds_name_their_permission_and_refuse_others(site):
    from hosts.services import host_refresh_request
    from networking.services import nat_resync_request

    with pytest.raises(PortalError, match="You may not act on"):
        host_refresh_request(host=site.host, requested_by=site.faculty)
    with pytest.raises(PortalError, match="You may not act on the portal"):
        nat_resync_request(actor=site.orgadmin)
    assert not Operation.objects.exists()
    assert host_refresh_request(host=site.host, requested_by=site.admin).kind == "host_refresh"


def test_children_of_one_parent_do_not_block_each_other_on_a_shared_destination(
        site, django_capture_on_commit_callbacks):
    """An evacuation's migrations may share a destination; others' may not pass."""
    dest = f.HostFactory(name="hv2", uri="test:///hv2")
    a, b = plain_vm(site, "a"), plain_vm(site, "b")
    parent = Operation.objects.create(kind=OperationKind.EVACUATE, host=site.host,
                                      status=OperationStatus.RUNNING)
    first = Operation.objects.create(kind=OperationKind.MIGRATE, vm=a, host=dest,
                                     parent=parent, status=OperationStatus.RUNNING)
    assert not operation_scope_busy(vm=b, host_id=dest.pk, parent=parent)
    assert operation_scope_busy(host_id=dest.pk)  # anyone else waits for the destination
    stranger = Operation.objects.create(kind=OperationKind.EVACUATE, host=dest)  # queued
    assert operation_scope_busy(host_id=dest.pk, parent=stranger)
    Operation.objects.filter(pk=stranger.pk).update(status=OperationStatus.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        second = operation_request(kind=OperationKind.MIGRATE, actor=site.admin, vm=b,
                                   host=dest, parent=parent, enqueue=False)
    assert (second.parent, second.enqueued_at, callbacks) == (parent, None, [])
    assert first.vm == a
