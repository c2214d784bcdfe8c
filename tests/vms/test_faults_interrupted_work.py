"""Workers under faults: installs, clones and power actions killed or timed out half-way, failed
reverts, and what the reconciler gives back and records on the VM."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from hosts.virt import Hypervisor, VirtError
from networking.models import PrivateIP
from operations.models import AdminAlert, Operation, OperationKind, OperationStatus
from operations.reconcile import operations_reconcile
from operations.runner import RunFenced, operation_run
from tests import factories as f
from tests.vms.faults_helpers import LONG_AGO, act, approved_vm, install, retry
from vms.models import Snapshot, VirtualMachine, VMState
from vms.services import lifecycle
from vms.services.snapshots import snapshot_revert, snapshot_take
from vms.services.workflow import vm_request_approve

pytestmark = pytest.mark.django_db
URI = "test:///default"


def nothing_left_on_the_host(site, vm):
    hv = Hypervisor(URI)
    assert hv.find_domain(vm.domain_name) is None
    assert vm.volume_name not in hv.list_volumes(site.datastore.pool_name)
    assert not PrivateIP.objects.filter(vm=vm).exists()
    assert [h for h in hv.network_dhcp_hosts("default") if h[2] == vm.domain_name] == []


# ---- installs killed or timed out half-way ----

@pytest.mark.parametrize("stop", [SystemExit, KeyboardInterrupt])
def test_a_stop_in_the_middle_of_an_install_gives_its_steps_back_and_records_the_failure(
        site, django_capture_on_commit_callbacks, monkeypatch, stop):
    def stopped(self, xml):
        raise stop("Task exceeded maximum timeout value (900 seconds)")

    monkeypatch.setattr(Hypervisor, "define_domain", stopped)
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    op = vm.operations.get()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(stop):
        operation_run(operation_id=op.pk)
    op.refresh_from_db()
    vm.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert "worker was stopped" in op.message and "given back" in op.message
    assert op.detail.startswith(f"Interrupted: {stop.__name__}")
    assert op.steps == [] and op.admin_alert != AdminAlert.NONE
    assert vm.state == VMState.FAILED and vm.host is None
    assert "stopped half-way" in vm.attention
    nothing_left_on_the_host(site, vm)
    to_owner = [m for m in mail.outbox if m.to == [site.student.email]]
    assert to_owner and "worker was stopped" in to_owner[-1].body
    assert "Interrupted" not in to_owner[-1].body


def dead_install(site, capture, monkeypatch, at="define_domain"):
    """Install until the step `at`, where the worker vanishes without a word."""
    def vanish(*args, **kwargs):
        raise RunFenced("the worker process is gone")  # leaves the row as a kill would

    monkeypatch.setattr(Hypervisor, at, vanish)
    vm = approved_vm(site, capture, requester=site.student)
    op = operation_run(operation_id=vm.operations.get().pk)
    monkeypatch.undo()
    assert op.status == OperationStatus.RUNNING
    Operation.objects.filter(pk=op.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    vm.refresh_from_db()
    return vm, op


def test_the_reconciler_gives_back_a_dead_installs_steps_and_marks_the_vm(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, op = dead_install(site, capture, monkeypatch)
    hv = Hypervisor(URI)
    assert vm.state == VMState.INSTALLING and PrivateIP.objects.filter(vm=vm).exists()
    assert vm.volume_name in hv.list_volumes(site.datastore.pool_name)
    assert [s["step"] for s in op.steps] == ["host", "ip", "vnc_port", "volume", "dhcp",
                                             "domain"]

    with capture(execute=True):
        assert operations_reconcile()["failed"] == 1
    op.refresh_from_db()
    vm.refresh_from_db()
    assert op.status == OperationStatus.FAILED and op.steps == []
    assert "stopped answering" in op.message
    assert vm.state == VMState.FAILED and vm.host is None and vm.vnc_port is None
    assert "Everything it had taken was given back" in vm.attention
    nothing_left_on_the_host(site, vm)
    assert vm.seed_volume_name not in hv.list_volumes(site.datastore.pool_name)
    # The owner hears in plain words; the admins get the hypervisor-side story.
    owner_mail = [m for m in mail.outbox if m.to == [site.student.email]]
    assert owner_mail and "heartbeat" in owner_mail[0].body

    page = site.client(site.admin).get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert "Needs attention" in page and 'data-action="retry"' in page
    assert 'data-action="delete-attention"' in page
    owner_page = site.client(site.student).get(
        reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert "Needs attention" in owner_page and 'data-action="delete-attention"' in owner_page
    assert 'data-action="retry"' not in owner_page
    host_page = site.client(site.admin).get(
        reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert "Needs attention" not in host_page  # the host was given back as well

    # Retry, once the cause is gone, installs it and clears the mark.
    retry(op, site.admin, capture)
    assert operation_run(operation_id=op.pk).status == OperationStatus.SUCCEEDED
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING and vm.attention == ""


def test_what_cannot_be_given_back_is_recorded_on_the_vm_and_host_pages(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, op = dead_install(site, capture, monkeypatch)
    monkeypatch.setattr(Hypervisor, "delete_volume", lambda self, pool, volume: (
        _ for _ in ()).throw(VirtError("pool busy")))
    with capture(execute=False):
        operations_reconcile()
    monkeypatch.undo()
    vm.refresh_from_db()
    op.refresh_from_db()
    assert [s["step"] for s in op.steps] == ["host", "volume"]
    assert f"volume {vm.volume_name} in pool {site.datastore.pool_name} on host hv1" \
        in vm.attention
    assert vm.host == site.host  # kept, so that Delete finds and removes what is left
    host_page = site.client(site.admin).get(
        reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert "needs attention" in host_page and vm.volume_name in host_page
    # Delete works from here and removes the rest.
    assert act(vm, OperationKind.DELETE, site.student, capture).status == "succeeded"
    assert vm.state == VMState.DELETED and vm.attention == ""
    assert vm.volume_name not in Hypervisor(URI).list_volumes(site.datastore.pool_name)


def test_a_vm_left_installing_with_nothing_under_way_is_handled(
        site, django_capture_on_commit_callbacks):
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    Operation.objects.filter(vm=vm).update(status=OperationStatus.FAILED)
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.INSTALLING)
    assert operations_reconcile()["stuck"] == 1
    vm.refresh_from_db()
    assert vm.state == VMState.FAILED and "install stopped half-way" in vm.attention
    assert operations_reconcile()["stuck"] == 0
    with django_capture_on_commit_callbacks(execute=False):
        lifecycle.vm_action_request(vm=vm, kind=OperationKind.DELETE, actor=site.admin)


def test_a_failed_revert_records_the_real_state_and_says_it(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture)
    with capture(execute=False):
        snap = snapshot_take(vm=vm, actor=site.admin, name="before")
    assert operation_run(operation_id=vm.operations.latest("id").pk).status == "succeeded"
    snap = Snapshot.objects.get(pk=snap.pk)

    def half_a_revert(self, domain, name):
        self.destroy(domain)
        raise VirtError("revert failed half-way")

    monkeypatch.setattr(Hypervisor, "snapshot_revert", half_a_revert)
    with capture(execute=False):
        op = snapshot_revert(snapshot=snap, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    vm.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert vm.state == VMState.SHUTOFF  # observed on the host, not left as it was
    assert "could not be returned to the snapshot" in op.message
    assert "It is shut off now." in op.message
    assert "revert to snapshot 'before' failed half-way" in vm.attention


def test_factories_still_make_vms_without_attention(site):
    vm = VirtualMachine.objects.create(
        name="plain", owner=site.student, organisation=site.org,
        request=f.VMRequestFactory(requester=site.student, template=site.template),
        template=site.template, vcpus=1, memory_mib=256, disk_gib=1)
    assert vm.attention == ""


def test_a_dead_clone_is_given_back_by_the_reconciler(
        site, django_capture_on_commit_callbacks, monkeypatch):
    from vms.models import RequestKind
    from vms.services.workflow import vm_change_request_create

    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture)
    act(vm, OperationKind.DESTROY, site.student, capture)
    req = vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.CLONE,
                                   purpose="a copy", faculty=site.faculty, params={"count": 1})
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.admin)
    clone = VirtualMachine.objects.get(clone_of=vm)
    monkeypatch.setattr(Hypervisor, "define_domain", lambda self, xml: (_ for _ in ()).throw(
        RunFenced("the worker process is gone")))
    op = operation_run(operation_id=clone.operations.get().pk)
    monkeypatch.undo()
    assert op.status == OperationStatus.RUNNING and PrivateIP.objects.filter(vm=clone).exists()
    Operation.objects.filter(pk=op.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    assert operations_reconcile()["failed"] == 1
    clone.refresh_from_db()
    assert clone.state == VMState.FAILED and "given back" in clone.attention
    nothing_left_on_the_host(site, clone)


def test_a_dead_power_action_records_the_state_the_vm_is_really_in(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.SHUTOFF)
    op = Operation.objects.create(kind=OperationKind.START, vm=vm, status="running",
                                  attempts=1, progress="Starting",
                                  started_at=timezone.now() - LONG_AGO,
                                  heartbeat_at=timezone.now() - LONG_AGO)
    assert operations_reconcile()["failed"] == 1
    op.refresh_from_db()
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING  # read from the host, not what the portal last thought
    assert "may have left its work half-done" in op.message
    assert "The VM is running now." in vm.attention and "“Starting”" in vm.attention
    # Any later success means the VM is in a known state again.
    assert act(vm, OperationKind.REBOOT, site.student,
               django_capture_on_commit_callbacks).status == "succeeded"
    assert vm.attention == ""


def test_a_stop_in_a_handler_without_recorded_steps_says_what_may_be_left(
        site, django_capture_on_commit_callbacks, monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    monkeypatch.setattr(Hypervisor, "reboot", lambda self, n: (_ for _ in ()).throw(
        SystemExit("Task exceeded maximum timeout value (900 seconds)")))
    with django_capture_on_commit_callbacks(execute=False):
        op = lifecycle.vm_action_request(vm=vm, kind=OperationKind.REBOOT, actor=site.student)
    with pytest.raises(SystemExit):
        operation_run(operation_id=op.pk)
    op.refresh_from_db()
    vm.refresh_from_db()
    assert op.status == "failed" and "may have left its work half-done" in op.message
    assert "check the VM" in vm.attention
