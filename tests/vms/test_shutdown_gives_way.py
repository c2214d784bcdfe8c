"""A shut down the guest ignores: a routine failure in the owner's words, and Force off
asked for during the wait, which the shut down gives way to (libvirt's test driver)."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from core.errors import PortalError
from hosts.virt import Hypervisor, ShutdownTimeout
from operations.models import AdminAlert, Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests.vms.faults_helpers import act, install
from vms.models import VMState
from vms.services import lifecycle

pytestmark = pytest.mark.django_db
RAW = "domain 'vm-x' on qemu:///system did not shut down within 120 s; use Force off"


def guest_ignores_acpi(monkeypatch):
    def shutdown(self, name, timeout=0, stop_waiting=None):
        raise ShutdownTimeout(RAW, 120)

    monkeypatch.setattr(Hypervisor, "shutdown", shutdown)


def test_an_ignored_shut_down_reads_in_the_owners_words_and_keeps_the_raw_text_for_admins(
        site, django_capture_on_commit_callbacks, monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    guest_ignores_acpi(monkeypatch)
    with django_capture_on_commit_callbacks(execute=False):
        asked = lifecycle.vm_action_request(vm=vm, kind=OperationKind.SHUTDOWN,
                                            actor=site.student)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        op = operation_run(operation_id=asked.pk)
    vm.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert op.message == (
        "lab1 did not shut down within 120 s; the guest may ignore ACPI requests. Use Force "
        "off (like pulling the power plug) or shut it down from inside.")
    assert op.detail == RAW and op.routine
    assert op.admin_alert == AdminAlert.NONE
    # The owner hears of it; the admins are not mailed.
    assert [m.to for m in mail.outbox] == [[site.student.email]]
    assert vm.state == VMState.RUNNING and not vm.attention

    owner_page = site.client(site.student).get(reverse("vms:vm_detail", args=[vm.pk]))
    assert "did not shut down within 120 s" in owner_page.content.decode()
    assert "qemu:///system" not in owner_page.content.decode()
    admin_page = site.client(site.admin).get(reverse("vms:vm_detail", args=[vm.pk]))
    assert "qemu:///system" in admin_page.content.decode()


def test_routine_failures_stay_out_of_the_attention_list_and_the_dashboard_count(
        site, django_capture_on_commit_callbacks, monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    guest_ignores_acpi(monkeypatch)
    routine = act(vm, OperationKind.SHUTDOWN, site.student, django_capture_on_commit_callbacks)
    real = Operation.objects.create(kind=OperationKind.REBOOT, vm=vm, requested_by=site.student,
                                    status=OperationStatus.FAILED, message="it broke",
                                    detail="qemu said no")
    assert list(Operation.objects.needing_attention()) == [real]

    admin = site.client(site.admin)
    listed = admin.get(reverse("vms:operation_list") + "?attention=1").content.decode()
    assert f"/vms/{vm.pk}/" in listed and "it broke" in listed
    assert "did not shut down" not in listed
    dashboard = admin.get(reverse("dashboard"))
    assert dashboard.context["failed_ops"] == 1
    # Still in the VM's history and in the plain list of failures.
    everything = admin.get(reverse("vms:operation_list") + "?status=failed").content.decode()
    assert "did not shut down within 120 s" in everything
    assert routine in site.client(site.student).get(
        reverse("vms:vm_detail", args=[vm.pk])).context["operations"]
    # Dismissing is for the attention list, which a routine failure is not on: no button
    # for it, while the real failure keeps one (Retry stays for both).
    dismiss = [reverse("vms:operation_dismiss", args=[o.pk]) for o in (routine, real)]
    for page in (everything, admin.get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()):
        assert dismiss[0] not in page and dismiss[1] in page
        assert reverse("vms:operation_retry", args=[routine.pk]) in page


def test_force_off_during_the_wait_ends_the_shut_down_and_then_runs(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture)
    polls = []

    def shutdown(self, name, timeout=0, stop_waiting=None):
        # The guest ignores the button; while the worker waits, the owner asks for Force off.
        assert not stop_waiting()
        with capture(execute=False):
            lifecycle.vm_action_request(vm=vm, kind=OperationKind.DESTROY, actor=site.student)
        for _ in range(5):
            polls.append(stop_waiting())
            if polls[-1]:
                return self.domain(name)
        raise ShutdownTimeout(RAW, timeout)

    monkeypatch.setattr(Hypervisor, "shutdown", shutdown)
    with capture(execute=False):
        asked = lifecycle.vm_action_request(vm=vm, kind=OperationKind.SHUTDOWN,
                                            actor=site.student)
    shut = operation_run(operation_id=asked.pk)
    assert polls == [True]  # the first poll after the request stops the wait
    shut.refresh_from_db()
    force = vm.operations.get(kind=OperationKind.DESTROY)
    assert shut.status == OperationStatus.SUCCEEDED and not shut.routine
    assert shut.message == "Shut down gave way to Force off."
    assert shut.superseded_by == force and shut.finished_at is not None
    assert force.status == OperationStatus.QUEUED
    history = site.client(site.student).get(reverse("vms:vm_status", args=[vm.pk]))
    assert "Gave way</span>" in history.content.decode()
    assert "Shut down gave way to Force off." in history.content.decode()

    force = operation_run(operation_id=force.pk)
    vm.refresh_from_db()
    assert force.status == OperationStatus.SUCCEEDED
    assert vm.state == VMState.SHUTOFF
    assert not Operation.objects.active().filter(vm=vm).exists()


def test_force_off_gives_way_only_a_shut_down(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        reboot = lifecycle.vm_action_request(vm=vm, kind=OperationKind.REBOOT,
                                             actor=site.student)
        with pytest.raises(PortalError, match="Another operation on lab1 is under way"):
            lifecycle.vm_action_request(vm=vm, kind=OperationKind.DESTROY, actor=site.student)
    reboot.refresh_from_db()
    assert reboot.status == OperationStatus.QUEUED and reboot.superseded_by is None


def test_a_queued_shut_down_gives_way_and_never_runs(site, django_capture_on_commit_callbacks,
                                                     monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        shut = lifecycle.vm_action_request(vm=vm, kind=OperationKind.SHUTDOWN,
                                           actor=site.student)
        lifecycle.vm_action_request(vm=vm, kind=OperationKind.DESTROY, actor=site.student)
    monkeypatch.setattr(Hypervisor, "shutdown", lambda *a, **k: pytest.fail("ran"))
    operation_run(operation_id=shut.pk)
    shut.refresh_from_db()
    assert shut.status == OperationStatus.SUCCEEDED and shut.superseded_by is not None


def test_someone_who_may_not_operate_the_vm_cannot_cut_its_shut_down_short(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        shut = lifecycle.vm_action_request(vm=vm, kind=OperationKind.SHUTDOWN,
                                           actor=site.student)
        with pytest.raises(PortalError, match="may not"):
            lifecycle.vm_action_request(vm=vm, kind=OperationKind.DESTROY,
                                        actor=site.other_student)
    shut.refresh_from_db()
    assert shut.status == OperationStatus.QUEUED and shut.superseded_by is None
