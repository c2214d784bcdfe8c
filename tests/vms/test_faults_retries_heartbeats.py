"""Workers under faults: retries that no longer apply, fenced runs and heartbeats."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from core.errors import PortalError
from hosts.virt import Hypervisor, VirtError
from operations import registry, runner
from operations.models import Operation, OperationKind, OperationStatus
from operations.reconcile import operations_reconcile
from operations.runner import operation_run
from tests.vms.faults_helpers import LONG_AGO, act, host_op, install, retry
from vms.models import VirtualMachine, VMState

pytestmark = pytest.mark.django_db


def failed_op(vm, kind, **kw):
    return Operation.objects.create(kind=kind, vm=vm, status=OperationStatus.FAILED,
                                    attempts=1, message="it failed", **kw)


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
    monkeypatch.setattr(Hypervisor, "shutdown", lambda self, n, **kw: (_ for _ in ()).throw(
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
