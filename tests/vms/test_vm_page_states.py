"""The VM page as its state changes: Force off during a shut down's wait, the notice of the
operation just asked for, and what a VM that is not installed offers."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hosts.virt import Hypervisor, VirtError
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests.vms.faults_helpers import approved_vm, install
from vms.models import VMState
from vms.services import lifecycle

pytestmark = pytest.mark.django_db
QEMU = ("qemu-system-x86_64: ../target/i386/kvm/kvm.c:3412: kvm_buf_set_msrs: Assertion "
        "`ret == cpu->kvm_msr_buf->nmsrs' failed.")
FORMS = ('id="snapshot-form"', 'id="schedule-form"', 'id="vm-snapshots"', 'id="vm-disks"')


def page(site, user, vm, url="vms:vm_detail", query=""):
    return site.client(user).get(reverse(url, args=[vm.pk]) + query).content.decode()


def test_force_off_is_offered_while_a_shut_down_waits(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        shut = lifecycle.vm_action_request(vm=vm, kind=OperationKind.SHUTDOWN,
                                           actor=site.student)
    Operation.objects.filter(pk=shut.pk).update(status=OperationStatus.RUNNING)
    live = page(site, site.student, vm, "vms:vm_status")
    assert 'data-action="destroy"' in live
    for other in ("shutdown", "reboot", "suspend", "delete"):
        assert f'data-action="{other}"' not in live
    assert "Waiting for the guest to shut down; Force off stops the wait" in live
    # Anything else under way still holds every button back.
    Operation.objects.filter(pk=shut.pk).update(kind=OperationKind.REBOOT)
    live = page(site, site.student, vm, "vms:vm_status")
    assert 'data-action="destroy"' not in live and "An operation is under way" in live


def test_the_queued_notice_gives_way_to_the_outcome(site, django_capture_on_commit_callbacks,
                                                    monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    client = site.client(site.student)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("vms:vm_action", args=[vm.pk, "reboot"]))
    query = "?" + response["Location"].split("?", 1)[1]
    assert "“Reboot” on lab1 is queued." in page(site, site.student, vm, query=query)
    monkeypatch.setattr(Hypervisor, "reboot", lambda self, n: (_ for _ in ()).throw(
        VirtError(f"cannot reboot domain '{n}' on qemu:///system: {QEMU}")))
    operation_run(operation_id=vm.operations.get(status=OperationStatus.QUEUED).pk)
    for url in ("vms:vm_detail", "vms:vm_status"):  # a reload, and the live part
        shown = page(site, site.student, vm, url, query)
        assert "is queued" not in shown
        assert 'id="vm-op-notice" data-status="failed"' in shown
        assert "The VM lab1 could not be rebooted" in shown and "Assertion" not in shown
    # Without the query (a plain visit later) no notice at all.
    assert 'id="vm-op-notice"' not in page(site, site.student, vm)


def test_a_failed_install_tells_the_student_what_to_do_in_plain_words(
        site, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(Hypervisor, "start", lambda self, n: (_ for _ in ()).throw(
        VirtError(f"cannot start domain '{n}' on qemu:///system: {QEMU}")))
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED and vm.state == VMState.FAILED
    assert op.message == (
        "The VM lab1 could not be installed and started on its host; an administrator has been "
        "told. You can delete it and ask for a new VM, or wait: an administrator may retry the "
        "install once the cause is fixed.")
    student = page(site, site.student, vm)
    assert "Assertion" not in student and "qemu:///system" not in student
    assert "The install of lab1 did not complete" in student
    assert "You can delete it and ask for a new VM" in student
    for form in FORMS:
        assert form not in student, form
    assert 'data-page-key="not-installed"' in student
    admin = page(site, site.admin, vm)
    assert "kvm_buf_set_msrs: Assertion" in admin  # the raw text, for admins only


@pytest.mark.parametrize("state", [VMState.PENDING, VMState.INSTALLING, VMState.DELETING])
def test_a_vm_not_yet_installed_offers_no_snapshot_schedule_or_disk_forms(
        site, django_capture_on_commit_callbacks, state):
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    vm.state = state
    vm.save(update_fields=["state"])
    shown = page(site, site.student, vm)
    for form in FORMS:
        assert form not in shown, form
    assert 'id="vm-not-installed"' in shown


def test_a_vm_deleted_while_its_page_is_open_loses_its_forms(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    opened = page(site, site.student, vm)
    for form in FORMS:
        assert form in opened, form
    assert 'data-page-key="installed"' in opened
    with django_capture_on_commit_callbacks(execute=False):
        lifecycle.vm_action_request(vm=vm, kind=OperationKind.DELETE, actor=site.student)
    operation_run(operation_id=vm.operations.get(status=OperationStatus.QUEUED).pk)
    # The live part now carries another key (portal.js reloads the page on it) and no forms.
    live = page(site, site.student, vm, "vms:vm_status")
    assert 'data-live-key="deleted"' in live
    for form in FORMS:
        assert form not in live, form
    reloaded = page(site, site.student, vm)
    for form in FORMS:
        assert form not in reloaded, form
    assert "This VM was deleted" in reloaded
