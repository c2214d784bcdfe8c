"""With REDIS_URL set, operation ids travel through Redis."""

from __future__ import annotations

import uuid

import pytest


@pytest.mark.redis
def test_operation_ids_travel_through_redis_when_redis_url_is_set(settings):
    from django_q.brokers import get_broker
    from django_q.brokers.redis_broker import Redis
    from django_q.signing import SignedPackage

    assert settings.Q_CLUSTER["redis"] == settings.REDIS_URL
    assert "orm" not in settings.Q_CLUSTER
    broker = get_broker(f"portal-test-{uuid.uuid4().hex[:8]}")
    assert isinstance(broker, Redis)
    try:
        assert broker.ping()
        broker.enqueue(SignedPackage.dumps(
            {"id": "t1", "name": "operation-42", "func": "operations.tasks.run_operation",
             "args": (42,), "kwargs": {}}))
        assert broker.queue_size() == 1
        (_, payload), = broker.dequeue()
        task = SignedPackage.loads(payload)
        assert (task["func"], task["args"]) == ("operations.tasks.run_operation", (42,))
        assert broker.queue_size() == 0
    finally:
        broker.delete_queue()
