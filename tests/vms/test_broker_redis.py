"""The Redis broker loses the tasks a dying cluster had pulled; the reconciler brings them back."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.signing import SignedPackage

from operations import registry
from operations.models import Operation, OperationKind, OperationStatus
from operations.reconcile import operations_reconcile
from operations.requests import operation_enqueue

pytestmark = [pytest.mark.redis, pytest.mark.django_db]


@pytest.fixture
def redis_queue(monkeypatch):
    """Send operations through a private Redis list instead of running them in the test."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "CLUSTER_NAME", f"portal-test-{uuid.uuid4().hex[:8]}")
    broker = get_broker()
    assert type(broker).__name__ == "Redis" and broker.ping()
    yield broker
    broker.delete_queue()


def pull(broker) -> dict:
    """Take one task off the list, as a cluster does (the broker forgets it there and then)."""
    (_, payload), = broker.dequeue()
    return SignedPackage.loads(payload)


def test_a_task_lost_with_its_cluster_is_enqueued_again_by_the_reconciler(
        site, settings, redis_queue, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(registry.SPECS[OperationKind.HOST_REFRESH], "handler", lambda op: "done")
    op = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host)
    with django_capture_on_commit_callbacks(execute=True):
        operation_enqueue(op)
    assert redis_queue.queue_size() == 1
    lost = pull(redis_queue)  # ...and the cluster that pulled it dies
    assert lost["args"] == (op.pk,) and redis_queue.queue_size() == 0

    with django_capture_on_commit_callbacks(execute=True):
        assert operations_reconcile()["requeued"] == 0  # not stale yet
    stale = settings.PORTAL["QUEUED_STALE_AFTER"]
    Operation.objects.filter(pk=op.pk).update(
        enqueued_at=timezone.now() - timedelta(seconds=stale + 1))
    with django_capture_on_commit_callbacks(execute=True):
        assert operations_reconcile()["requeued"] == 1
    assert redis_queue.queue_size() == 1
    task = pull(redis_queue)
    from operations.tasks import run_operation

    run_operation(*task["args"])
    op.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED and op.attempts == 1


def test_a_running_operation_lost_with_its_cluster_is_failed_once_its_heartbeat_stops(
        site, settings, redis_queue, django_capture_on_commit_callbacks):
    now = timezone.now()
    silent = settings.PORTAL["HEARTBEAT_STALE_AFTER"]
    op = Operation.objects.create(
        kind=OperationKind.HOST_REFRESH, host=site.host, status=OperationStatus.RUNNING,
        attempts=1, started_at=now - timedelta(seconds=silent + 5),
        heartbeat_at=now - timedelta(seconds=silent + 1))
    with django_capture_on_commit_callbacks(execute=True):
        assert operations_reconcile()["failed"] == 1
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED and "no heartbeat" in op.message
    assert redis_queue.queue_size() == 0  # failed, not run again half-done: an admin retries
