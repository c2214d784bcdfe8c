"""A resize its VM's host has no room for: the request says the VM moves, the approval chain
runs as for any change, and the admin's approval moves the VM to a host with room, then resizes
it (test-driver hosts: a stopped VM moves by redefinition, a running one cannot move here)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hosts.models import Host
from hosts.virt import Hypervisor
from operations.models import OperationKind, OperationStatus
from tests.vms.test_lifecycle import act, install, run_pending
from tests.vms.test_migration import URI, second  # noqa: F401
from vms.models import RequestKind, RequestStage, VirtualMachine, VMState
from vms.services.workflow import vm_change_request_create, vm_request_approve

pytestmark = pytest.mark.django_db


def asked(site, capture):
    """A student's VM on a host with one vCPU, and the student's request for two."""
    vm, op = install(site, capture)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    Host.objects.filter(pk=site.host.pk).update(vcpus=1)
    vm.refresh_from_db()
    req = vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.RESIZE,
                                   purpose="the course grew", faculty=site.faculty,
                                   params={"vcpus": 2, "memory_mib": 512})
    return vm, req


def approve_all(req, site, capture):
    """Approve at every stage: faculty, organisation admin, then an admin."""
    for actor, stage in ((site.faculty, RequestStage.FACULTY),
                         (site.orgadmin, RequestStage.ORG_ADMIN),
                         (site.admin, RequestStage.ADMIN)):
        req.refresh_from_db()
        assert req.stage == stage
        with capture(execute=False):
            vm_request_approve(request=req, actor=actor)
    req.refresh_from_db()
    assert req.stage == RequestStage.APPROVED


def test_the_request_says_the_vm_moves_and_every_approver_sees_it(
        site, second, django_capture_on_commit_callbacks):  # noqa: F811
    vm, req = asked(site, django_capture_on_commit_callbacks)
    assert req.params == {"vcpus": 2, "memory_mib": 512, "move": True}
    words = "Resize lab1 to 2 vCPUs and 512 MiB (it moves to a host with room)"
    assert req.summary == words
    page = site.client(site.faculty).get(reverse("vms:request_detail", args=[req.pk]))
    assert words in page.content.decode()
    form = site.client(site.student).get(reverse("vms:vm_change_resize", args=[vm.pk]))
    assert "moves to a host with room first" in form.content.decode()


def test_the_admins_approval_moves_a_stopped_vm_to_the_best_fit_then_resizes_it(
        site, second, django_capture_on_commit_callbacks):  # noqa: F811
    capture = django_capture_on_commit_callbacks
    vm, req = asked(site, capture)
    act(vm, OperationKind.DESTROY, site.admin, capture)
    site.datastore.shared = True
    site.datastore.save()
    approve_all(req, site, capture)
    op = vm.operations.filter(kind=OperationKind.MIGRATE).get()
    assert op.host == second and op.arguments["request"] == req.pk
    assert op.arguments["resize"] == {"vcpus": 2, "memory_mib": 512}
    op = run_pending(vm)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert "moved while shut off from hv1 to hv2" in op.message
    assert "lab1 has 2 vCPUs and 512 MiB" in op.message
    vm.refresh_from_db()
    assert vm.host == second and vm.vcpus == 2 and vm.state == VMState.SHUTOFF
    assert Hypervisor(second.uri).domain(vm.domain_name).vcpus == 2
    assert Hypervisor(URI).find_domain(vm.domain_name) is None


def test_a_running_vm_is_moved_live_and_a_failed_move_changes_nothing(
        site, second, django_capture_on_commit_callbacks):  # noqa: F811
    capture = django_capture_on_commit_callbacks
    vm, req = asked(site, capture)
    site.datastore.shared = True
    site.datastore.save()
    approve_all(req, site, capture)
    # The test driver cannot migrate a running domain: the live move is tried, and fails.
    op = run_pending(vm)
    assert op.kind == OperationKind.MIGRATE and op.status == OperationStatus.FAILED
    assert "cannot migrate domain" in op.detail
    vm.refresh_from_db()
    assert vm.host == site.host and vm.vcpus == 1 and vm.state == VMState.RUNNING
    assert Hypervisor(URI).domain(vm.domain_name).vcpus == 1


def test_a_host_with_room_again_by_the_approval_resizes_in_place(
        site, second, django_capture_on_commit_callbacks):  # noqa: F811
    capture = django_capture_on_commit_callbacks
    vm, req = asked(site, capture)
    Host.objects.filter(pk=site.host.pk).update(vcpus=8)
    approve_all(req, site, capture)
    op = run_pending(vm)
    assert op.kind == OperationKind.RESIZE and op.status == OperationStatus.SUCCEEDED
    vm.refresh_from_db()
    assert vm.host == site.host and vm.vcpus == 2
