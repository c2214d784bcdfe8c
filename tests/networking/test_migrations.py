"""The migration to one address per VM and VLAN gives back what earlier races took."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from networking.models import PrivateIP
from tests.networking.test_allocation import make_vms

BEFORE = [("networking", "0003_ssh_port")]
AFTER = [("networking", "0004_one_address_per_vm_vlan")]


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_the_address_the_vm_shows_and_frees_the_others(site):
    a, b = make_vms(site, 2)
    rows = list(PrivateIP.objects.filter(vlan=site.vlan).order_by("id"))
    other = PrivateIP.objects.filter(vlan=site.vlan2).first()
    _migrate(BEFORE)
    try:
        now = timezone.now()
        # Eight addresses for one VM, as the race gave: three here, the newest in the middle.
        for row, age in ((rows[0], 3), (rows[1], 1), (rows[2], 2)):
            PrivateIP.objects.filter(pk=row.pk).update(vm=a, allocated_at=now - timedelta(
                minutes=age))
        PrivateIP.objects.filter(pk=rows[3].pk).update(vm=b, allocated_at=now)
        PrivateIP.objects.filter(pk=other.pk).update(vm=a, allocated_at=now)  # another VLAN
    finally:
        _migrate(AFTER)
    held = dict(PrivateIP.objects.filter(vm__isnull=False).values_list("address", "vm"))
    assert held == {rows[1].address: a.pk, rows[3].address: b.pk, other.address: a.pk}
    freed = PrivateIP.objects.filter(pk__in=[rows[0].pk, rows[2].pk])
    assert list(freed.values_list("vm", "allocated_at")) == [(None, None)] * 2
    with pytest.raises(IntegrityError), transaction.atomic():
        PrivateIP.objects.filter(pk=rows[0].pk).update(vm=a)
