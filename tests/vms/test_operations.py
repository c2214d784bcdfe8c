"""The Operation runner, retry and dismiss, and the reconciler."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import PortalError
from hosts.models import Host
from hosts.virt import Hypervisor
from operations import registry
from operations.models import Operation, OperationKind, OperationStatus
from operations.reconcile import operations_reconcile
from operations.requests import operation_dismiss, operation_retry
from operations.runner import operation_run
from vms.models import VirtualMachine, VMState
from vms.services.reconcile import host_reconcile

pytestmark = pytest.mark.django_db


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake(op):
        seen.append(op.pk)
        return "did it"

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", fake)
    return seen


def host_op(site, **kw):
    return Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host, **kw)


def test_runner_marks_running_then_succeeded(site, calls):
    op = operation_run(operation_id=host_op(site).pk)
    assert calls == [op.pk]
    assert (op.status, op.message, op.attempts) == (OperationStatus.SUCCEEDED, "did it", 1)
    assert op.started_at <= op.finished_at


@pytest.mark.parametrize("status", [OperationStatus.RUNNING, OperationStatus.SUCCEEDED,
                                    OperationStatus.FAILED])
def test_a_redelivered_operation_is_not_run_again(site, calls, status):
    op = host_op(site, status=status)
    operation_run(operation_id=op.pk)
    assert calls == []
    op.refresh_from_db()
    assert op.status == status and op.attempts == 0


def test_an_unexpected_error_fails_the_operation_and_keeps_its_text_for_admins(site,
                                                                              monkeypatch):
    def broken(op):
        raise KeyError("disk")

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", broken)
    op = operation_run(operation_id=host_op(site).pk)
    assert op.status == OperationStatus.FAILED
    assert op.detail == "Unexpected error: KeyError: 'disk'"
    assert "KeyError" not in op.message and "Refresh host of host hv1 failed" in op.message


def test_host_refresh_reads_the_hosts_facts(site):
    Host.objects.filter(pk=site.host.pk).update(vcpus=0, memory_mib=0, accel="")
    op = operation_run(operation_id=host_op(site).pk)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    site.host.refresh_from_db()
    facts = Hypervisor("test:///default").facts()
    assert (site.host.vcpus, site.host.memory_mib, site.host.accel) == (
        facts.cpus, facts.memory_mib, "test")
    assert site.host.last_seen_at is not None


def test_retry_requeues_only_failed_operations(site, django_capture_on_commit_callbacks):
    done = host_op(site, status=OperationStatus.SUCCEEDED)
    with pytest.raises(PortalError):
        operation_retry(operation=done, actor=site.admin)
    failed = host_op(site, status=OperationStatus.FAILED, message="boom")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        operation_retry(operation=failed, actor=site.admin)
    failed.refresh_from_db()
    assert failed.status == OperationStatus.QUEUED and len(callbacks) == 1


def test_dismiss_hides_a_failed_operation(site):
    failed = host_op(site, status=OperationStatus.FAILED)
    operation_dismiss(operation=failed, actor=site.admin)
    failed.refresh_from_db()
    assert failed.dismissed
    with pytest.raises(PortalError):
        operation_dismiss(operation=host_op(site), actor=site.admin)


def test_reconcile_requeues_stale_queued_and_fails_overdue_running(
        site, settings, django_capture_on_commit_callbacks):
    long_ago = timezone.now() - timedelta(hours=5)
    stale = host_op(site, enqueued_at=long_ago)
    fresh = host_op(site, enqueued_at=timezone.now())
    overdue = host_op(site, status=OperationStatus.RUNNING, started_at=long_ago)
    running = host_op(site, status=OperationStatus.RUNNING, started_at=timezone.now(),
                      heartbeat_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = operations_reconcile()
    assert (result["requeued"], result["failed"]) == (1, 1)
    assert len(callbacks) == 1
    stale.refresh_from_db()
    assert stale.enqueued_at > long_ago
    for op, status in ((fresh, "queued"), (overdue, "failed"), (running, "running")):
        op.refresh_from_db()
        assert op.status == status
    assert "did not finish within" in overdue.message


def test_host_reconcile_reports_unknown_and_missing_domains_and_deletes_nothing(site):
    from tests import factories as f

    hv = Hypervisor("test:///default")
    before = {d.name for d in hv.list_domains()}
    assert before  # the test driver starts with a domain of its own
    req = f.VMRequestFactory(requester=site.student, template=site.template)
    ghost = VirtualMachine.objects.create(
        name="ghost", owner=site.student, organisation=site.org, request=req,
        template=site.template, host=site.host, vcpus=1, memory_mib=256, disk_gib=1,
        state=VMState.RUNNING)
    result = host_reconcile(host=site.host)
    assert result == {"unknown": sorted(before), "missing": ["ghost"], "orphans": []}
    site.host.refresh_from_db()
    assert site.host.unknown_domains == sorted(before)
    assert site.host.missing_domains == ["ghost"]
    ghost.refresh_from_db()
    assert ghost.state == VMState.UNKNOWN
    assert {d.name for d in hv.list_domains()} == before


def test_reconcile_task_runs_over_every_host(site, django_capture_on_commit_callbacks):
    from vms.tasks import reconcile

    with django_capture_on_commit_callbacks(execute=False):
        result = reconcile()
    assert result["requeued"] == 0 and "hv1" in result


def test_host_refresh_records_the_ssh_host_key_once(site, monkeypatch):
    from hosts import services

    seen = []
    monkeypatch.setattr(services, "fetch_host_key",
                        lambda address: seen.append(address) or "ssh-ed25519 AAAAkey")
    Host.objects.filter(pk=site.host.pk).update(address="hv1.example.org")
    assert operation_run(operation_id=host_op(site).pk).status == OperationStatus.SUCCEEDED
    assert operation_run(operation_id=host_op(site).pk).status == OperationStatus.SUCCEEDED
    site.host.refresh_from_db()
    assert site.host.ssh_host_key == "ssh-ed25519 AAAAkey" and seen == ["hv1.example.org"]


def test_host_refresh_fails_clearly_when_the_host_key_cannot_be_read(site, monkeypatch):
    from hosts import services
    from hosts.remote import RemoteError

    def unreachable(address):
        raise RemoteError("connection refused")

    monkeypatch.setattr(services, "fetch_host_key", unreachable)
    Host.objects.filter(pk=site.host.pk).update(address="hv1.example.org")
    op = operation_run(operation_id=host_op(site).pk)
    assert op.status == OperationStatus.FAILED
    assert "Could not read the SSH host key of hv1.example.org" in op.message
    site.host.refresh_from_db()
    assert site.host.ssh_host_key == ""
