"""Evacuating a host in maintenance: the plan's room, the children, what stays and why.

On libvirt's test driver a stopped VM moves (by redefinition) and a running one fails to
(the driver cannot migrate live), which shows a failed child. The children run in the
parent's own thread here (EVACUATE_PARALLEL=1): threads do not see a test's transaction.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.errors import PortalError
from hosts.models import Host, HostStatus
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests import factories as f
from tests.vms.test_lifecycle import install
from tests.vms.test_migration import placed, second, stopped  # noqa: F401 - fixture
from vms.models import VirtualMachine, VMState
from vms.services.evacuation import evacuation_plan, evacuation_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_at_a_time(settings):
    settings.PORTAL = {**settings.PORTAL, "EVACUATE_PARALLEL": 1}


def maintenance(host: Host) -> Host:
    Host.objects.filter(pk=host.pk).update(status=HostStatus.MAINTENANCE)
    host.refresh_from_db()
    return host


def on_hv1(other: Host, build):  # noqa: ANN001, ANN201
    """Build VMs while the second host takes none (installs place them on hv1)."""
    Host.objects.filter(pk=other.pk).update(status=HostStatus.DOWN)
    try:
        return build()
    finally:
        Host.objects.filter(pk=other.pk).update(status=HostStatus.UP)


def evacuate(site, capture) -> Operation:
    with capture(execute=False):
        op = evacuation_request(host=maintenance(site.host), actor=site.admin)
    return operation_run(operation_id=op.pk)


def test_the_plan_counts_the_room_promised_to_vms_planned_before(site, second,  # noqa: F811
                                                                 django_capture_on_commit_callbacks):
    third = f.HostFactory(name="hv3", uri="test:///hv3", memory_mib=6000,
                          memory_reserved_mib=0)
    Host.objects.filter(pk=second.pk).update(memory_mib=7000, memory_reserved_mib=0)
    site.datastore.hosts.add(third)
    for name in ("big1", "big2", "big3"):
        vm = placed(site, django_capture_on_commit_callbacks, name, site.host)
        VirtualMachine.objects.filter(pk=vm.pk).update(memory_mib=4096)
    moves, stays = evacuation_plan(maintenance(site.host))
    # Each destination takes one: a second 4096 MiB VM would overfill either.
    assert sorted(dest.name for _vm, dest in moves) == ["hv2", "hv3"]
    assert [(vm.name, why.split(":")[0]) for vm, why in stays] == [
        ("big3", "big3 cannot move to another host")]
    assert "hv2 has 7 vCPUs and 2904 MiB free; hv3 has 7 vCPUs and 1904" in stays[0][1]


def test_every_vm_moves_and_the_evacuation_succeeds(site, second,  # noqa: F811
                                                    django_capture_on_commit_callbacks):
    a, b = on_hv1(second, lambda: [stopped(site, django_capture_on_commit_callbacks, name=n)
                                   for n in ("lab1", "lab2")])
    op = evacuate(site, django_capture_on_commit_callbacks)
    assert (op.status, op.message) == (OperationStatus.SUCCEEDED,
                                       "All 2 VMs moved off hv1."), op.message
    children = list(op.children.order_by("vm__name"))
    assert [(c.kind, c.vm, c.host, c.status) for c in children] == [
        (OperationKind.MIGRATE, a, second, OperationStatus.SUCCEEDED),
        (OperationKind.MIGRATE, b, second, OperationStatus.SUCCEEDED)]
    assert all(c.enqueued_at is None for c in children)  # run by the parent, not the queue
    assert set(VirtualMachine.objects.filter(host=second).values_list("name", flat=True)) \
        == {"lab1", "lab2"}


def test_vms_that_cannot_move_stay_and_the_parent_lists_why(site, second,  # noqa: F811
                                                             django_capture_on_commit_callbacks):
    moved, (running, _) = on_hv1(second, lambda: (
        stopped(site, django_capture_on_commit_callbacks, name="lab1"),
        install(site, django_capture_on_commit_callbacks, name="lab2")))
    assert running.state == VMState.RUNNING
    installing = placed(site, django_capture_on_commit_callbacks, "lab3", site.host)
    VirtualMachine.objects.filter(pk=installing.pk).update(state=VMState.INSTALLING)
    op = evacuate(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert op.message.startswith("1 of 3 VMs moved off hv1; 2 stay: "), op.message
    assert "lab2: its move to hv2 failed: " in op.message
    assert "lab3 is installing; only running, suspended or shut off VMs are moved." \
        in op.message
    moved.refresh_from_db()
    running.refresh_from_db()
    assert (moved.host, running.host) == (second, site.host)
    failed = op.children.get(vm=running)
    assert failed.status == OperationStatus.FAILED and failed.parent == op


def test_a_vm_whose_datastore_no_other_host_sees_stays(site, second,  # noqa: F811
                                                       django_capture_on_commit_callbacks):
    vm = stopped(site, django_capture_on_commit_callbacks)
    site.datastore.hosts.remove(second)
    op = evacuate(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert ("0 of 1 VMs moved off hv1; 1 stay: lab1: no other host that is up sees its "
            "datastore") in op.message
    assert not op.children.exists()
    vm.refresh_from_db()
    assert vm.host == site.host
    # The host page's card reads the plan from the operation: nothing to move, one stays.
    assert op.arguments["plan"] == []
    assert [(s["name"], s["why"][:30]) for s in op.arguments["stays"]] == [
        ("lab1", "lab1: no other host that is up")]


def test_an_evacuation_needs_maintenance_and_vms(site, django_capture_on_commit_callbacks):
    assert evacuation_request(host=maintenance(site.host), actor=site.admin) is None
    placed(site, django_capture_on_commit_callbacks, "lab1", site.host)
    Host.objects.filter(pk=site.host.pk).update(status=HostStatus.UP)
    site.host.refresh_from_db()
    with pytest.raises(PortalError, match="hv1 is not in maintenance"):
        evacuation_request(host=site.host, actor=site.admin)
    with pytest.raises(PortalError, match="You may not evacuate hv1"):
        evacuation_request(host=maintenance(site.host), actor=site.orgadmin)


def test_evacuate_again_from_the_host_page(site, second,  # noqa: F811
                                           django_capture_on_commit_callbacks):
    vm = placed(site, django_capture_on_commit_callbacks, "lab1", site.host)
    maintenance(site.host)
    url = reverse("hosts:host_evacuate", args=[site.host.pk])
    assert site.client(site.orgadmin).post(url).status_code == 404
    page = site.client(site.admin).get(reverse("hosts:host_detail", args=[site.host.pk]))
    assert 'id="host-evacuate"' in page.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = site.client(site.admin).post(url, follow=True)
    text = response.content.decode()
    assert "The VMs left on hv1 are being moved to other hosts." in text
    op = site.host.operations.get(kind=OperationKind.EVACUATE)
    assert op.status == OperationStatus.QUEUED
    # While it is under way the card polls itself and offers no second evacuation.
    assert 'hx-select="#host-evacuation"' in text and 'id="host-evacuate"' not in text
    Operation.objects.create(kind=OperationKind.MIGRATE, vm=vm, host=second, parent=op,
                             status=OperationStatus.RUNNING,
                             progress="Migrating to hv2: copied 10 of 40 MiB, 30 MiB left")
    page = site.client(site.admin).get(reverse("hosts:host_detail", args=[site.host.pk]))
    assert "copied 10 of 40 MiB" in page.content.decode()


def test_the_card_lists_moves_waiting_and_vms_that_stay_with_why(
        site, second, django_capture_on_commit_callbacks):  # noqa: F811
    moving = placed(site, django_capture_on_commit_callbacks, "lab1", site.host)
    waiting = placed(site, django_capture_on_commit_callbacks, "lab2", site.host)
    maintenance(site.host)
    op = Operation.objects.create(
        kind=OperationKind.EVACUATE, host=site.host, status=OperationStatus.RUNNING,
        progress="0 of 3 moved",
        arguments={"plan": [{"vm": moving.pk, "name": "lab1", "to": "hv2"},
                            {"vm": waiting.pk, "name": "lab2", "to": "hv2"}],
                   "stays": [{"vm": 999, "name": "lab3", "why": "lab3 is installing"}]})
    Operation.objects.create(kind=OperationKind.MIGRATE, vm=moving, host=second, parent=op,
                             status=OperationStatus.RUNNING, progress="Migrating to hv2: starting")
    text = site.client(site.admin).get(
        reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    rows = {name: text.split(f'data-evacuation-vm="{name}"', 1)[1].split("</tr>", 1)[0]
            for name in ("lab1", "lab2", "lab3")}
    assert "Migrating to hv2: starting" in rows["lab1"]
    assert "Waiting" in rows["lab2"] and "Moves once a slot is free." in rows["lab2"]
    assert "Stays" in rows["lab3"] and "lab3 is installing" in rows["lab3"]
    # The VMs' table is refreshed with the card while it runs.
    assert 'hx-select-oob="#host-vms"' in text and 'id="host-vms"' in text


@pytest.mark.postgres  # SQLite's shared in-memory test database locks tables across threads
@pytest.mark.django_db(transaction=True)
def test_two_moves_at_once_in_the_evacuations_own_threads(site, second, settings,  # noqa: F811
                                                          monkeypatch,
                                                          django_capture_on_commit_callbacks):
    """Committed rows, so that the evacuation's threads see them; no task is queued."""
    monkeypatch.setattr("operations.requests.operation_enqueue", lambda op: None)
    a, b = on_hv1(second, lambda: [stopped(site, django_capture_on_commit_callbacks, name=n)
                                   for n in ("lab1", "lab2")])
    settings.PORTAL = {**settings.PORTAL, "EVACUATE_PARALLEL": 2}
    op = evacuate(site, django_capture_on_commit_callbacks)
    assert (op.status, op.message) == (OperationStatus.SUCCEEDED,
                                       "All 2 VMs moved off hv1."), op.message
    assert set(op.children.values_list("status", flat=True)) == {OperationStatus.SUCCEEDED}
    assert set(VirtualMachine.objects.filter(host=second).values_list("pk", flat=True)) \
        == {a.pk, b.pk}
