"""VMs, their actions, snapshots and operations through the API, on libvirt's test driver."""

from __future__ import annotations

import pytest

from operations.models import Operation, OperationStatus
from tests.api.conftest import run_queued, v1

pytestmark = pytest.mark.django_db


def test_list_shows_the_callers_vms_with_addresses(site, api, student_vm):
    body = api("student").get(v1("vms/")).json()
    assert [vm["name"] for vm in body["results"]] == ["lab1"]
    vm = body["results"][0]
    assert vm["state"] == "running" and vm["host"] == "hv1" and vm["owner"] == "stu"
    ip = student_vm.private_ip
    assert vm["addresses"] == [{"address": ip.address, "mac": ip.mac, "vlan_id": ip.vlan_id}]
    assert body["next"] is None
    assert api("other_student").get(v1("vms/")).json()["results"] == []


def test_detail_has_access_lines(site, api, student_vm):
    body = api("student").get(v1(f"vms/{student_vm.pk}/")).json()
    access = body["access"]
    assert access["ssh_inside"] == f"ssh {student_vm.login_user}@{student_vm.private_ip.address}"
    assert access["console_url"].endswith(f"/vms/{student_vm.pk}/console/")
    assert access["serial_url"].endswith(f"/vms/{student_vm.pk}/serial/")
    assert body["operations"] and body["operations"][0].startswith("/api/v1/operations/")


@pytest.mark.parametrize("who", ["other_student", "other_orgadmin"])
def test_others_vms_are_not_found(site, api, student_vm, who):
    client = api(who)
    assert client.get(v1(f"vms/{student_vm.pk}/")).status_code == 404
    assert client.post(v1(f"vms/{student_vm.pk}/shutdown/")).status_code == 404
    assert client.delete(v1(f"vms/{student_vm.pk}/")).status_code == 404
    assert client.get(v1(f"vms/{student_vm.pk}/snapshots/")).status_code == 404
    assert student_vm.operations.filter(status=OperationStatus.QUEUED).count() == 0


def test_faculty_sees_but_may_not_operate(site, api, student_vm):
    client = api("faculty")
    assert client.get(v1(f"vms/{student_vm.pk}/")).status_code == 200
    assert client.post(v1(f"vms/{student_vm.pk}/suspend/")).status_code == 404


def test_action_answers_202_with_the_operation_to_poll(site, api, student_vm):
    client = api("student")
    response = client.post(v1(f"vms/{student_vm.pk}/suspend/"))
    assert response.status_code == 202
    op = response.json()["operation"]
    assert op["kind"] == "suspend" and op["status"] == "queued"
    assert response["Location"] == op["url"] == f"/api/v1/operations/{op['id']}/"
    # Another action while this one waits: 409 with the service's words.
    clash = client.post(v1(f"vms/{student_vm.pk}/reboot/"))
    assert clash.status_code == 409 and clash.json()["detail"]
    run_queued(student_vm)
    polled = client.get(op["url"]).json()
    assert polled["status"] == "succeeded" and student_vm.state == "paused"
    assert client.post(v1(f"vms/{student_vm.pk}/resume/")).status_code == 202
    run_queued(student_vm)
    assert student_vm.state == "running"


def test_action_in_the_wrong_state_is_a_conflict(site, api, student_vm):
    response = api("student").post(v1(f"vms/{student_vm.pk}/resume/"))
    assert response.status_code == 409
    assert set(response.json()) == {"detail"}


def test_force_off_start_and_delete(site, api, student_vm):
    client = api("student")
    assert client.post(v1(f"vms/{student_vm.pk}/force-off/")).status_code == 202
    run_queued(student_vm)
    assert student_vm.state == "shutoff"
    assert client.post(v1(f"vms/{student_vm.pk}/start/")).status_code == 202
    run_queued(student_vm)
    response = client.delete(v1(f"vms/{student_vm.pk}/"))
    assert response.status_code == 202 and response.json()["operation"]["kind"] == "delete"
    run_queued(student_vm)
    assert student_vm.state == "deleted"
    assert client.get(v1("vms/")).json()["results"] == []
    assert [v["name"] for v in client.get(v1("vms/?deleted=1")).json()["results"]] == ["lab1"]


def test_snapshots_take_revert_delete(site, api, student_vm):
    client = api("student")
    base = v1(f"vms/{student_vm.pk}/snapshots/")
    bad = client.post(base, {"name": ""}, format="json")
    assert bad.status_code == 400 and "name" in bad.json()["errors"]
    taken = client.post(base, {"name": "before", "description": "clean"}, format="json")
    assert taken.status_code == 202
    assert taken.json()["operation"]["kind"] == "snapshot_create"
    run_queued(student_vm)
    snaps = client.get(base).json()
    assert [(s["name"], s["state"]) for s in snaps] == [("before", "ready")]
    sid = snaps[0]["id"]
    assert client.post(f"{base}{sid}/revert/").status_code == 202
    run_queued(student_vm)
    assert client.delete(f"{base}{sid}/").status_code == 202
    run_queued(student_vm)
    assert client.get(base).json() == []
    assert client.post(f"{base}{sid + 99}/revert/").status_code == 404


def test_operations_list_and_filter(site, api, student_vm):
    client = api("student")
    ops = client.get(v1("operations/")).json()["results"]
    assert [op["kind"] for op in ops] == ["install"]
    assert ops[0]["vm"] == f"/api/v1/vms/{student_vm.pk}/"
    assert client.get(v1("operations/?status=failed")).json()["results"] == []
    bad = client.get(v1("operations/?status=nonsense"))
    assert bad.status_code == 400 and "status" in bad.json()["errors"]
    op = Operation.objects.get(vm=student_vm)
    assert api("other_student").get(v1(f"operations/{op.pk}/")).status_code == 404
    assert client.get(v1(f"operations/{op.pk}/")).json()["progress"] is not None


def test_read_only_token_reads_but_never_writes(site, api, student_vm):
    client = api("student", read_only=True)
    assert client.get(v1(f"vms/{student_vm.pk}/")).status_code == 200
    for call in (lambda: client.post(v1(f"vms/{student_vm.pk}/shutdown/")),
                 lambda: client.delete(v1(f"vms/{student_vm.pk}/")),
                 lambda: client.post(v1(f"vms/{student_vm.pk}/snapshots/"), {"name": "x"})):
        response = call()
        assert response.status_code == 403
        assert "read-only" in response.json()["detail"]
    assert not student_vm.operations.filter(status=OperationStatus.QUEUED).exists()


def test_cursor_pages_of_fifty(site, api, student_vm):
    from vms.models import VirtualMachine

    VirtualMachine.objects.bulk_create([
        VirtualMachine(name=f"bulk-{i}", owner=site.student, organisation=site.org,
                       template=site.template, vcpus=1, memory_mib=512, disk_gib=2,
                       state="shutoff") for i in range(60)])
    client = api("student")
    first = client.get(v1("vms/")).json()
    assert len(first["results"]) == 50 and first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 11 and second["next"] is None
    names = {vm["name"] for vm in first["results"] + second["results"]}
    assert len(names) == 61


def test_queries_per_page_are_constant(site, api, student_vm):
    from vms.models import VirtualMachine

    VirtualMachine.objects.bulk_create([
        VirtualMachine(name=f"bulk-{i}", owner=site.student, organisation=site.org,
                       template=site.template, host=site.host, vcpus=1, memory_mib=512,
                       disk_gib=2, state="shutoff") for i in range(60)])
    client = api("student")
    client.get(v1("vms/"))  # the token's last use is written once
    counts = []
    for size in (5, 50):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as seen:
            assert len(client.get(v1(f"vms/?page_size={size}")).json()["results"]) == size
        counts.append(len(seen))
    assert counts[0] == counts[1] <= 4


def test_the_hypervisors_words_are_for_admins(site, api, student_vm):
    op = Operation.objects.get(vm=student_vm)
    Operation.objects.filter(pk=op.pk).update(detail="virError: qemu said something")
    assert api("student").get(v1(f"operations/{op.pk}/")).json()["detail"] == ""
    assert api("admin").get(v1(f"operations/{op.pk}/")).json()["detail"].startswith("virError")
