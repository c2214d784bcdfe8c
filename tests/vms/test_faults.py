"""Workers under faults: fenced runs, heartbeats, dead installs, retries that no longer apply,
failed reverts and the admins' digest of failures."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from core.errors import PortalError
from hosts.virt import Hypervisor, VirtError
from networking.models import PrivateIP
from operations import registry, runner
from operations.models import AdminAlert, Operation, OperationKind, OperationStatus
from operations.reconcile import operations_reconcile
from operations.requests import operation_retry
from operations.runner import RunFenced, operation_run
from tests import factories as f
from vms.models import Snapshot, VirtualMachine, VMState
from vms.services import lifecycle
from vms.services.snapshots import snapshot_revert, snapshot_take
from vms.services.workflow import vm_request_approve, vm_request_create

pytestmark = pytest.mark.django_db
URI = "test:///default"
LONG_AGO = timedelta(hours=5)


def approved_vm(site, capture, name="lab1", requester=None):
    requester = requester or site.student
    req = vm_request_create(
        requester=requester, name=name, template=site.template, vcpus=1,
        memory_mib=512, disk_gib=2, purpose="faults", security_domain=site.domain,
        faculty=site.faculty if requester == site.student else None)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.admin)
    return VirtualMachine.objects.get(request=req)


def install(site, capture, **kw):
    vm = approved_vm(site, capture, **kw)
    op = operation_run(operation_id=vm.operations.get().pk)
    vm.refresh_from_db()
    return vm, op


def act(vm, kind, actor, capture):
    with capture(execute=False):
        op = lifecycle.vm_action_request(vm=vm, kind=kind, actor=actor)
    op = operation_run(operation_id=op.pk)
    vm.refresh_from_db()
    return op


def failed_op(vm, kind, **kw):
    return Operation.objects.create(kind=kind, vm=vm, status=OperationStatus.FAILED,
                                    attempts=1, message="it failed", **kw)


def retry(op, actor, capture):
    with capture(execute=False):
        return operation_retry(operation=op, actor=actor)


def nothing_left_on_the_host(site, vm):
    hv = Hypervisor(URI)
    assert hv.find_domain(vm.domain_name) is None
    assert vm.volume_name not in hv.list_volumes(site.datastore.pool_name)
    assert not PrivateIP.objects.filter(vm=vm).exists()
    assert [h for h in hv.network_dhcp_hosts("default") if h[2] == vm.domain_name] == []


# ---- retries that no longer make sense ----

def test_a_retry_after_the_vm_was_deleted_is_refused_and_the_vm_stays_deleted(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture, requester=site.student)
    monkeypatch.setattr(Hypervisor, "reboot", lambda self, n: (_ for _ in ()).throw(
        VirtError("host refused")))
    rebooted = act(vm, OperationKind.REBOOT, site.student, capture)
    assert rebooted.status == OperationStatus.FAILED
    monkeypatch.undo()
    assert act(vm, OperationKind.DELETE, site.student, capture).status == "succeeded"
    assert vm.state == VMState.DELETED

    with pytest.raises(PortalError, match="has been deleted"):
        retry(rebooted, site.admin, capture)
    delete = vm.operations.get(kind=OperationKind.DELETE)
    Operation.objects.filter(pk=delete.pk).update(status=OperationStatus.FAILED)
    with pytest.raises(PortalError, match="has been deleted"):
        retry(delete, site.admin, capture)
    response = site.client(site.admin).post(
        reverse("vms:operation_retry", args=[rebooted.pk]), follow=True)
    assert "has been deleted" in response.content.decode()
    rebooted.refresh_from_db()
    assert rebooted.status == OperationStatus.FAILED

    # Even a row queued behind the checks' back is not acted on, and the VM stays deleted.
    Operation.objects.filter(pk=rebooted.pk).update(status=OperationStatus.QUEUED)
    op = operation_run(operation_id=rebooted.pk)
    assert op.status == OperationStatus.FAILED and "was deleted" in op.message
    monkeypatch.setattr(Hypervisor, "undefine_domain", lambda self, n: (_ for _ in ()).throw(
        VirtError("host unreachable")))
    Operation.objects.filter(pk=delete.pk).update(status=OperationStatus.QUEUED)
    assert "was deleted" in operation_run(operation_id=delete.pk).message
    vm.refresh_from_db()
    assert vm.state == VMState.DELETED
    listing = site.client(site.student).get(reverse("vms:vm_list")).content.decode()
    assert vm.name not in listing


def test_a_retry_whose_target_state_no_longer_applies_is_refused(
        site, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture)
    assert vm.state == VMState.RUNNING
    for kind in (OperationKind.INSTALL, OperationKind.START, OperationKind.RESUME):
        with pytest.raises(PortalError, match="no longer applies"):
            retry(failed_op(vm, kind), site.admin, capture)
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.DELETING)
    with pytest.raises(PortalError, match="being deleted"):
        retry(failed_op(vm, OperationKind.SHUTDOWN), site.admin, capture)


def test_a_retry_superseded_by_a_later_success_is_refused(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture)
    monkeypatch.setattr(Hypervisor, "shutdown", lambda self, n, timeout=0: (_ for _ in ()).throw(
        VirtError("no answer to ACPI")))
    shutdown = act(vm, OperationKind.SHUTDOWN, site.admin, capture)
    assert shutdown.status == OperationStatus.FAILED
    monkeypatch.undo()
    assert act(vm, OperationKind.DESTROY, site.admin, capture).status == "succeeded"
    assert act(vm, OperationKind.START, site.admin, capture).status == "succeeded"
    with pytest.raises(PortalError, match="later force off of lab1 succeeded"):
        retry(shutdown, site.admin, capture)


def test_a_retry_of_a_snapshot_that_is_gone_is_refused(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    op = failed_op(vm, OperationKind.SNAPSHOT_CREATE, arguments={"snapshot": 999})
    with pytest.raises(PortalError, match="no longer exists"):
        retry(op, site.admin, django_capture_on_commit_callbacks)


def test_a_retry_that_still_makes_sense_is_queued(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    op = failed_op(vm, OperationKind.SHUTDOWN)
    assert retry(op, site.admin, django_capture_on_commit_callbacks).status == "queued"


# ---- fencing and heartbeats ----

def host_op(site, **kw):
    return Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host, **kw)


@pytest.mark.django_db(transaction=True)
def test_a_late_finish_of_an_old_run_does_not_overwrite_the_retrys_outcome(
        site, settings, monkeypatch, django_capture_on_commit_callbacks, caplog):
    settings.PORTAL = {**settings.PORTAL, "HEARTBEAT_EVERY": 3600}
    started, release = threading.Event(), threading.Event()

    def handler(op):
        if op.attempts == 1:
            started.set()
            assert release.wait(60), "the test never released the first run"
            return "old run finished"
        raise PortalError("the retry failed")

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", handler)
    op = host_op(site)
    outcome = {}
    first = threading.Thread(
        target=lambda: outcome.setdefault("op", operation_run(operation_id=op.pk)))
    first.start()
    try:
        assert started.wait(60)
        # The first run's worker goes silent: the reconciler fails it, an admin retries.
        Operation.objects.filter(pk=op.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
        assert operations_reconcile()["failed"] == 1
        retry(Operation.objects.get(pk=op.pk), site.admin, django_capture_on_commit_callbacks)
        second = operation_run(operation_id=op.pk)
        assert (second.attempts, second.status) == (2, OperationStatus.FAILED)
    finally:
        release.set()
        first.join(60)
    row = Operation.objects.get(pk=op.pk)
    assert (row.attempts, row.status, row.message) == (2, "failed", "the retry failed")
    assert outcome["op"].message == "the retry failed"  # the late run read, never wrote
    assert "finished after it was taken over" in caplog.text


def test_a_run_taken_over_stops_at_its_next_step_and_records_nothing(site, monkeypatch):
    def handler(op):
        # Meanwhile the reconciler failed this run and a retry started attempt 2.
        Operation.objects.filter(pk=op.pk).update(attempts=2)
        runner.operation_progress(op, "next step")
        raise AssertionError("a run taken over must not go on")

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", handler)
    op = operation_run(operation_id=host_op(site).pk)
    assert (op.status, op.attempts, op.progress) == ("running", 2, "")


def test_the_reconciler_fails_only_operations_whose_heartbeat_stopped(
        site, settings, django_capture_on_commit_callbacks):
    settings.PORTAL = {**settings.PORTAL, "HEARTBEAT_STALE_AFTER": 60}
    settings.OPERATION_TIMEOUT = 900
    now = timezone.now()
    slow_but_alive = host_op(site, status="running", attempts=1,
                             started_at=now - timedelta(minutes=10), heartbeat_at=now)
    silent = host_op(site, status="running", attempts=1, started_at=now - timedelta(minutes=3),
                     heartbeat_at=now - timedelta(minutes=2))
    past_the_limit = host_op(site, status="running", attempts=1,
                             started_at=now - timedelta(minutes=20), heartbeat_at=now)
    with django_capture_on_commit_callbacks(execute=False):
        result = operations_reconcile()
    assert result["failed"] == 2
    for op, status in ((slow_but_alive, "running"), (silent, "failed"),
                       (past_the_limit, "failed")):
        op.refresh_from_db()
        assert op.status == status, op
    assert "no heartbeat for 60 s" in silent.message
    assert "within 900 s" in past_the_limit.message
    # The first failure mails the admins at once; the second waits for the next digest.
    assert len(mail.outbox) == 1
    assert {silent.admin_alert, past_the_limit.admin_alert} == {"sent", "pending"}


def test_progress_and_steps_beat_the_heartbeat(site, monkeypatch):
    seen = []

    def handler(op):
        Operation.objects.filter(pk=op.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
        runner.operation_progress(op, "working")
        seen.append(Operation.objects.get(pk=op.pk).heartbeat_at)
        return "done"

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", handler)
    op = operation_run(operation_id=host_op(site).pk)
    assert op.status == "succeeded" and seen[0] > timezone.now() - timedelta(minutes=1)


def test_the_heartbeat_says_whether_the_run_still_owns_the_operation(site):
    op = host_op(site, status="running", attempts=3)
    op.attempts = 3
    assert runner.operation_heartbeat(op)
    op.attempts = 2
    assert not runner.operation_heartbeat(op)


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


# ---- telling people ----

def failing(monkeypatch, error):
    def handler(op):
        raise error

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", handler)


def test_admins_get_one_mail_at_once_then_a_digest_per_window(site, settings, monkeypatch):
    settings.PORTAL = {**settings.PORTAL, "ALERT_DIGEST_MINUTES": 15}
    failing(monkeypatch, VirtError("libvirt said no"))
    first = operation_run(operation_id=host_op(site).pk)
    assert len(mail.outbox) == 1 and site.admin.email in mail.outbox[0].to
    assert "libvirt said no" in mail.outbox[0].body
    second = operation_run(operation_id=host_op(site).pk)
    third = operation_run(operation_id=host_op(site).pk)
    assert len(mail.outbox) == 1  # collected for the next digest
    for op in (first, second, third):
        op.refresh_from_db()
    assert (first.admin_alert, second.admin_alert, third.admin_alert) == (
        "sent", "pending", "pending")

    from operations.alerts import alerts_flush

    assert alerts_flush() == 0  # the window has not passed
    later = timezone.now() + timedelta(minutes=16)
    assert alerts_flush(now=later) == 2
    assert len(mail.outbox) == 2 and "2 operations failed" in mail.outbox[1].subject
    assert f"#{second.pk}" in mail.outbox[1].body and f"#{third.pk}" in mail.outbox[1].body
    assert alerts_flush(now=later + timedelta(minutes=30)) == 0


def test_a_digest_that_cannot_be_sent_keeps_its_failures_for_the_next(site, monkeypatch):
    failing(monkeypatch, VirtError("libvirt said no"))

    def outage(*args, **kwargs):
        raise OSError("mail server down")

    monkeypatch.setattr("operations.alerts.send_mail", outage)
    op = operation_run(operation_id=host_op(site).pk)
    op.refresh_from_db()
    assert op.status == "failed" and op.admin_alert == AdminAlert.PENDING
    monkeypatch.undo()
    assert operations_reconcile()["alerted"] == 1
    op.refresh_from_db()
    assert op.admin_alert == AdminAlert.SENT and len(mail.outbox) == 1


def test_a_failure_the_owner_asked_for_tells_the_owner_in_plain_words(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture, requester=site.student)
    mail.outbox.clear()
    monkeypatch.setattr(Hypervisor, "reboot", lambda self, n: (_ for _ in ()).throw(
        VirtError("QEMU assertion `x' failed")))
    with capture(execute=True):
        act(vm, OperationKind.REBOOT, site.student, capture)
    to_owner = [m for m in mail.outbox if m.to == [site.student.email]]
    assert len(to_owner) == 1 and "could not be rebooted" in to_owner[0].body
    assert "QEMU" not in to_owner[0].body
    to_admins = [m for m in mail.outbox if site.admin.email in m.to]
    assert len(to_admins) == 1 and "QEMU assertion" in to_admins[0].body


def test_a_refusal_in_plain_words_needs_no_admin(site, monkeypatch):
    failing(monkeypatch, PortalError("Shut it down first."))
    op = operation_run(operation_id=host_op(site).pk)
    op.refresh_from_db()
    assert op.status == "failed" and op.admin_alert == AdminAlert.NONE and not mail.outbox


def test_an_admins_action_on_a_students_vm_does_not_mail_the_student(
        site, django_capture_on_commit_callbacks, monkeypatch):
    capture = django_capture_on_commit_callbacks
    vm, _ = install(site, capture, requester=site.student)
    mail.outbox.clear()
    monkeypatch.setattr(Hypervisor, "reboot", lambda self, n: (_ for _ in ()).throw(
        VirtError("no")))
    with capture(execute=True):
        act(vm, OperationKind.REBOOT, site.admin, capture)
    assert not [m for m in mail.outbox if m.to == [site.student.email]]


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
