"""The whole life of a VM through the API alone, on a real libvirtd with qemu.

A student's token asks for the VM; the faculty's, org-admin's and admin's tokens approve it;
the worker (run in-process: tasks are synchronous in the tests) installs it; the student
snapshots it, powers it off and deletes it, polling each operation at the URL the API gave.
The test guest ignores ACPI, so "stop" is Force off here (a shut down is tested elsewhere).
"""

from __future__ import annotations

import pytest

from tests.api.conftest import token_client, v1
from tests.integration.test_portal_qemu import domstate, real_site, suffix, virsh  # noqa: F401

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]


def test_a_vm_from_request_to_deletion_through_the_api_alone(
        real_site, settings, django_capture_on_commit_callbacks):  # noqa: F811
    site = real_site
    settings.PORTAL_API_RATE = "100000/minute"
    student, faculty, orgadmin, admin = (token_client(u) for u in (
        site.student, site.faculty, site.orgadmin, site.admin))
    run = django_capture_on_commit_callbacks  # committed work runs its task, in-process

    def finished(answer) -> dict:
        assert answer.status_code == 202, answer.json()
        operation = student.get(answer.json()["operation"]["url"]).json()
        assert operation["status"] == "succeeded", operation
        return operation

    template = student.get(v1("templates/")).json()[0]
    domain = next(d for d in student.get(v1("security-domains/")).json()
                  if d["id"] == site.domain.pk)
    name = f"pa-{suffix()}"
    made = student.post(v1("requests/"), {
        "name": name, "template": template["id"], "security_domain": domain["id"],
        "vcpus": 1, "memory_mib": 64, "disk_gib": 1, "purpose": "API flow",
        "faculty": site.faculty.username}, format="json")
    assert made.status_code == 201, made.json()
    request_url = made.json()["url"]

    for approver, then in ((faculty, "org_admin"), (orgadmin, "admin"), (admin, "approved")):
        assert [r["url"] for r in approver.get(v1("approvals/")).json()["results"]] == \
            [request_url]
        with run(execute=True):
            answer = approver.post(f"{request_url}approve/", {"reason": "fine"},
                                   format="json")
        assert answer.status_code == 200, answer.json()
        assert answer.json()["stage"] == then

    vm_url = student.get(request_url).json()["vm"]
    vm = student.get(vm_url).json()
    assert vm["state"] == "running", vm
    assert domstate(name) == "running"
    install = student.get(vm["operations"][-1]).json()
    assert install["kind"] == "install" and install["status"] == "succeeded"
    assert vm["addresses"] and vm["access"]["ssh_inside"].endswith(vm["addresses"][0]["address"])

    with run(execute=True):
        taken = student.post(f"{vm_url}snapshots/", {"name": "clean"}, format="json")
    finished(taken)
    snapshots = student.get(f"{vm_url}snapshots/").json()
    assert [(s["name"], s["state"]) for s in snapshots] == [("clean", "ready")]

    with run(execute=True):
        stopped = student.post(f"{vm_url}force-off/")
    finished(stopped)
    assert student.get(vm_url).json()["state"] == "shutoff"
    assert domstate(name) == "shut off"

    # A read-only token of the same student may look, never touch.
    reader = token_client(site.student, read_only=True)
    assert reader.get(vm_url).status_code == 200
    assert reader.delete(vm_url).status_code == 403

    with run(execute=True):
        deleted = student.delete(vm_url)
    finished(deleted)
    assert student.get(vm_url).json()["state"] == "deleted"
    assert virsh("dominfo", name).returncode != 0  # the domain is gone
