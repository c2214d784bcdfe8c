"""Operations moved from the vms application keep their rows, ids, fields and content type."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from operations.models import AlertDigest, Operation, OperationKind, OperationStatus

BEFORE = [("vms", "0008_operation_fencing")]


def _migrate(target) -> MigrationExecutor:  # noqa: ANN001
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_the_move_keeps_every_operation_row_and_the_one_active_per_vm_rule(site):
    latest = _latest()
    executor = _migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        OldOperation = old.get_model("vms", "Operation")  # noqa: N806
        OldDigest = old.get_model("vms", "AlertDigest")  # noqa: N806
        ContentType.objects.get_or_create(app_label="vms", model="operation")
        ContentType.objects.filter(app_label="operations").delete()
        done = OldOperation.objects.create(
            kind="host_refresh", host_id=site.host.pk, status="failed", attempts=2,
            message="It failed.", detail="libvirt said no", steps=[{"step": "host"}],
            admin_alert="pending")
        queued = OldOperation.objects.create(kind="nat_resync", status="queued")
        OldDigest.objects.create(name="admins")
    finally:
        _migrate(latest)
    moved = Operation.objects.get(pk=done.pk)
    assert (moved.kind, moved.host_id, moved.status, moved.attempts, moved.message,
            moved.detail, moved.steps, moved.admin_alert, moved.parent) == (
        OperationKind.HOST_REFRESH, site.host.pk, OperationStatus.FAILED, 2, "It failed.",
        "libvirt said no", [{"step": "host"}], "pending", None)
    assert list(Operation.objects.active().values_list("pk", flat=True)) == [queued.pk]
    assert AlertDigest.objects.filter(name="admins").exists()
    assert ContentType.objects.get_for_model(Operation).app_label == "operations"
    assert not ContentType.objects.filter(app_label="vms", model="operation").exists()
    # The table kept its partial unique index: still one operation under way per VM.
    from tests.operations.test_requests import plain_vm

    vm = plain_vm(site)
    Operation.objects.create(kind=OperationKind.START, vm=vm)
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(kind=OperationKind.SHUTDOWN, vm=vm)
