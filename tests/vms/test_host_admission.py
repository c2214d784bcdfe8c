"""Operations per host are capped: the rest wait, queued, and start when a slot frees."""

from __future__ import annotations

import socket

import pytest

from hosts.models import Host, HostStatus
from operations import registry
from operations.admission import WAITING_FOR_HOST, host_operations_cap, operations_start_waiting
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from operations.tasks import run_operation
from tests import factories as f
from vms.tasks import reconcile

pytestmark = pytest.mark.django_db


@pytest.fixture
def cap_one(settings):
    settings.PORTAL = {**settings.PORTAL, "HOST_MAX_OPERATIONS": 1}


def refresh_op(host, **kw) -> Operation:
    return Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=host, **kw)


def test_an_operation_waits_while_its_host_runs_its_cap(site, cap_one, monkeypatch):
    ran = []
    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler",
                        lambda op: ran.append(op.pk) or "done")
    refresh_op(site.host, status=OperationStatus.RUNNING)
    waiting = operation_run(operation_id=refresh_op(site.host).pk)
    assert ran == []
    waiting.refresh_from_db()
    assert (waiting.status, waiting.progress, waiting.attempts) == (
        OperationStatus.QUEUED, WAITING_FOR_HOST, 0)


def test_other_hosts_keep_moving_while_one_host_is_full(site, cap_one, monkeypatch):
    ran = []
    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler",
                        lambda op: ran.append(op.host.name) or "done")
    other = f.HostFactory(name="hv2", uri="qemu+tcp://hv2.example.org/system")
    refresh_op(site.host, status=OperationStatus.RUNNING)
    refresh_op(site.host, status=OperationStatus.RUNNING)  # e.g. over a lowered cap
    assert operation_run(operation_id=refresh_op(other).pk).status == OperationStatus.SUCCEEDED
    assert ran == ["hv2"]


def test_a_vm_operation_counts_against_its_vms_host(site, cap_one, monkeypatch,
                                                   django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    refresh_op(site.host, status=OperationStatus.RUNNING)
    op = Operation.objects.create(kind=OperationKind.REBOOT, vm=vm)
    assert operation_run(operation_id=op.pk).status == OperationStatus.QUEUED


def test_a_finishing_operation_starts_the_one_waiting_for_its_slot(
        site, cap_one, monkeypatch, django_capture_on_commit_callbacks):
    order = []
    second = refresh_op(site.host)

    def handler(op):
        order.append(op.pk)
        if op.pk != second.pk:
            # While this one runs, the host is full: the second must wait.
            assert operation_run(operation_id=second.pk).status == OperationStatus.QUEUED
        return "done"

    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", handler)
    first = refresh_op(site.host)
    with django_capture_on_commit_callbacks(execute=True):
        run_operation(first.pk)  # the task the worker runs: it kicks the waiting one
    second.refresh_from_db()
    assert order == [first.pk, second.pk]
    assert second.status == OperationStatus.SUCCEEDED and second.progress == ""


def test_the_reconciler_starts_waiting_operations_as_a_safety_net(
        site, cap_one, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", lambda op: "done")
    stranded = refresh_op(site.host, progress=WAITING_FOR_HOST)
    full = f.HostFactory(name="hv2", uri="qemu+tcp://hv2.example.org/system")
    refresh_op(full, status=OperationStatus.RUNNING)
    still_waiting = refresh_op(full, progress=WAITING_FOR_HOST)
    monkeypatch.setattr("vms.tasks.async_task", lambda *a, **k: None)  # no host comparisons
    with django_capture_on_commit_callbacks(execute=True):
        result = reconcile()
    assert result["started_waiting"] == 1
    stranded.refresh_from_db()
    still_waiting.refresh_from_db()
    assert stranded.status == OperationStatus.SUCCEEDED
    assert still_waiting.status == OperationStatus.QUEUED
    assert operations_start_waiting(host_ids=[full.pk]) == 0


def test_the_default_cap_leaves_a_worker_for_the_rest_of_the_fleet(site, settings):
    settings.PORTAL = {**settings.PORTAL, "HOST_MAX_OPERATIONS": 0}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "workers": 4}
    assert host_operations_cap() == 4  # one host: nothing else to keep moving
    f.HostFactory(name="hv2", uri="qemu+tcp://hv2.example.org/system")
    assert host_operations_cap() == 3
    f.HostFactory(name="hv3", uri="qemu+tcp://hv3.example.org/system",
                  status=HostStatus.DOWN)
    assert host_operations_cap() == 3
    settings.PORTAL = {**settings.PORTAL, "HOST_MAX_OPERATIONS": 2}
    assert host_operations_cap() == 2


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_operation_that_cannot_reach_its_host_records_why_on_the_host(
        site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    uri = f"qemu+tcp://127.0.0.1:{closed_port()}/system"
    Host.objects.filter(pk=site.host.pk).update(uri=uri)
    op = Operation.objects.create(kind=OperationKind.REBOOT, vm=vm)
    run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert "cannot connect to host 127.0.0.1" in op.detail
    assert "cannot connect" not in op.message  # the owner reads words, not libvirt's
    site.host.refresh_from_db()
    assert site.host.last_error.startswith(f"cannot connect to host 127.0.0.1 ({uri})")
    assert "check that libvirtd runs there" in site.host.last_error


def test_a_success_on_the_host_clears_its_connection_error(site, monkeypatch):
    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", lambda op: "done")
    Host.objects.filter(pk=site.host.pk).update(
        last_error="cannot connect to host hv1 (qemu+tcp://hv1/system): no answer within 10 s")
    run_operation(refresh_op(site.host).pk)
    site.host.refresh_from_db()
    assert site.host.last_error == ""


def test_a_success_that_never_reached_libvirt_leaves_the_error(site, monkeypatch):
    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", lambda op: "done")
    error = "cannot connect to host hv2.example.org (qemu+tcp://hv2.example.org/system): refused"
    other = f.HostFactory(name="hv2", uri="qemu+tcp://hv2.example.org/system",
                          last_error=error)
    run_operation(refresh_op(other).pk)
    other.refresh_from_db()
    assert other.last_error == error
