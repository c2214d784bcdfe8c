"""Extra disks, change requests and usage of a VM; hosts, pools and addresses for admins."""

from __future__ import annotations

import pytest

from tests.api.conftest import v1
from vms.models import ExtraDisk, VMRequest

pytestmark = pytest.mark.django_db


def test_change_requests_climb_the_chain(site, api, student_vm, django_capture_on_commit_callbacks):
    client = api("student")
    url = v1(f"vms/{student_vm.pk}/changes/")
    bad = client.post(url, {"kind": "resize", "purpose": "", "vcpus": 99, "memory_mib": 512,
                            "faculty": "fac"}, format="json")
    assert bad.status_code == 400
    assert {"purpose", "vcpus"} <= set(bad.json()["errors"])
    no_faculty = client.post(url, {"kind": "public_ip", "purpose": "a web demo"}, format="json")
    assert no_faculty.status_code == 400 and "faculty" in no_faculty.json()["errors"]
    made = client.post(url, {"kind": "disk", "purpose": "more data", "size_gib": 1,
                             "faculty": "fac"}, format="json")
    assert made.status_code == 201, made.json()
    body = made.json()
    assert body["kind"] == "disk" and body["stage"] == "faculty"
    assert body["vm"] == f"/api/v1/vms/{student_vm.pk}/"
    req_url = body["url"]
    with django_capture_on_commit_callbacks(execute=False):
        for who in ("faculty", "orgadmin", "admin"):
            assert api(who).post(f"{req_url}approve/", {}, format="json").status_code == 200
    assert VMRequest.objects.get(pk=body["id"]).stage == "approved"
    assert student_vm.operations.get(status="queued").kind == "disk_add"
    student_vm.operations.filter(status="queued").update(status="succeeded")
    # libvirt's test driver attaches no disks: as if the operation had attached it.
    ExtraDisk.objects.filter(vm=student_vm).update(state="attached", target="vdb")
    disks = client.get(v1(f"vms/{student_vm.pk}/disks/")).json()
    assert [(d["size_gib"], d["state"]) for d in disks] == [(1, "attached")]
    disk = disks[0]["id"]
    assert api("other_student").post(
        v1(f"vms/{student_vm.pk}/disks/{disk}/detach/")).status_code == 404
    detach = client.post(v1(f"vms/{student_vm.pk}/disks/{disk}/detach/"))
    assert detach.status_code == 202 and detach.json()["operation"]["kind"] == "disk_detach"
    student_vm.operations.filter(status="queued").update(status="succeeded")
    response = client.delete(v1(f"vms/{student_vm.pk}/disks/{disk}/"))
    assert response.status_code == 202 and response.json()["operation"]["kind"] == "disk_delete"


def test_changes_to_anothers_vm_are_not_found(site, api, student_vm):
    response = api("other_student").post(v1(f"vms/{student_vm.pk}/changes/"),
                                          {"kind": "public_ip", "purpose": "x"}, format="json")
    assert response.status_code == 404


def test_usage_series(site, api, student_vm):
    from monitoring.collector import rrd_store, vm_key

    store = rrd_store()
    store.ensure("vm", vm_key(student_vm))
    body = api("student").get(v1(f"vms/{student_vm.pk}/usage/?period=hour")).json()
    assert body["period"] == "hour" and set(body["metrics"]) >= {"cpu", "memory"}
    assert body["metrics"]["cpu"]["unit"] == "%"
    assert all(len(point) == 2 for point in body["metrics"]["cpu"]["points"])
    bad = api("student").get(v1(f"vms/{student_vm.pk}/usage/?period=decade"))
    assert bad.status_code == 400 and "period" in bad.json()["errors"]
    assert api("other_student").get(v1(f"vms/{student_vm.pk}/usage/")).status_code == 404


def test_hosts_and_pools_are_for_admins(site, api, student_vm):
    admin = api("admin")
    hosts = admin.get(v1("hosts/")).json()["results"]
    assert [h["name"] for h in hosts] == ["hv1"]
    assert admin.get(v1(f"hosts/{site.host.pk}/usage/")).status_code == 200
    vlans = {v["name"]: v for v in admin.get(v1("vlans/")).json()["results"]}
    assert vlans["campus"]["taken"] == 1 and vlans["campus"]["total"] == 5
    taken = admin.get(v1(f"vlans/{site.vlan.pk}/addresses/?state=taken")).json()["results"]
    assert [a["vm"] for a in taken] == ["lab1"]
    assert admin.get(v1("public-ips/")).status_code == 200
    for who in ("student", "faculty", "orgadmin"):
        for path in ("hosts/", f"hosts/{site.host.pk}/", "vlans/", "public-ips/",
                     f"vlans/{site.vlan.pk}/addresses/"):
            assert api(who).get(v1(path)).status_code == 404, (who, path)
