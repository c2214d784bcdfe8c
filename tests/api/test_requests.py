"""VM requests and approvals through the API: the same checks and chain as the pages."""

from __future__ import annotations

import pytest

from tests.api.conftest import run_queued, v1
from vms.models import VirtualMachine, VMRequest

pytestmark = pytest.mark.django_db


def ask(site, client, **over):
    body = {"name": "lab2", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
            "disk_gib": 2, "purpose": "thesis", "security_domain": site.domain.pk,
            "faculty": "fac", **over}
    return client.post(v1("requests/"), body, format="json")


def test_errors_come_field_by_field(site, api):
    response = ask(site, api("student"), name="Bad Name", vcpus=99, faculty="nobody",
                   security_domain=site.domain.pk + 100)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {"name", "faculty", "security_domain"} <= set(errors)
    assert all(isinstance(m, str) for msgs in errors.values() for m in msgs)
    assert not VMRequest.objects.exists()


def test_a_student_needs_a_faculty(site, api):
    response = ask(site, api("student"), faculty="")
    assert response.status_code == 400 and "faculty" in response.json()["errors"]


def test_another_organisations_domain_is_refused(site, api):
    from networking.models import SecurityDomain

    theirs = SecurityDomain.objects.get(name="Physics lab")
    response = ask(site, api("student"), security_domain=theirs.pk)
    assert response.status_code == 400 and "security_domain" in response.json()["errors"]


def test_the_whole_chain_then_the_vm(site, api, django_capture_on_commit_callbacks):
    made = ask(site, api("student"))
    assert made.status_code == 201
    url = made.json()["url"]
    assert made["Location"] == url and made.json()["stage"] == "faculty"
    # Nobody decides their own request.
    own = api("student").post(f"{url}approve/", {}, format="json")
    assert own.status_code == 409
    # Out of reach: another organisation's org-admin does not even see it.
    assert api("other_orgadmin").post(f"{url}approve/", {}, format="json").status_code == 404
    for who, then in (("faculty", "org_admin"), ("orgadmin", "admin"), ("admin", "approved")):
        pending = api(who).get(v1("approvals/")).json()["results"]
        assert [r["url"] for r in pending] == [url]
        with django_capture_on_commit_callbacks(execute=False):
            response = api(who).post(f"{url}approve/", {"reason": "ok"}, format="json")
        assert response.status_code == 200, response.json()
        assert response.json()["stage"] == then
    body = api("student").get(url).json()
    assert [s["decision"] for s in body["steps"]][-3:] == ["approved"] * 3
    vm = VirtualMachine.objects.get(request_id=body["id"])
    assert body["vm"] == f"/api/v1/vms/{vm.pk}/"
    run_queued(vm)
    assert api("student").get(body["vm"]).json()["state"] == "running"


def test_a_stale_stage_changes_nothing(site, api):
    url = ask(site, api("student")).json()["url"]
    response = api("admin").post(f"{url}approve/", {"seen_stage": "admin"}, format="json")
    assert response.status_code == 409
    assert VMRequest.objects.get().stage == "faculty"


def test_reject_needs_a_reason(site, api):
    url = ask(site, api("student")).json()["url"]
    refused = api("faculty").post(f"{url}reject/", {}, format="json")
    assert refused.status_code == 400 and "reason" in refused.json()["errors"]
    done = api("faculty").post(f"{url}reject/", {"reason": "use the lab's VM"}, format="json")
    assert done.status_code == 200 and done.json()["stage"] == "rejected"
    assert done.json()["steps"][-1]["reason"] == "use the lab's VM"


def test_cancel_ones_own(site, api):
    url = ask(site, api("student")).json()["url"]
    assert api("faculty").post(f"{url}cancel/").status_code == 404
    response = api("student").post(f"{url}cancel/")
    assert response.status_code == 200 and response.json()["stage"] == "cancelled"


def test_lists_are_the_pages_lists(site, api):
    ask(site, api("student"))
    assert len(api("student").get(v1("requests/")).json()["results"]) == 1
    # The faculty's own list is empty; with ?scope=all, every request they may see.
    assert api("faculty").get(v1("requests/")).json()["results"] == []
    assert len(api("faculty").get(v1("requests/?scope=all")).json()["results"]) == 1
    assert api("other_student").get(v1("requests/?scope=all")).json()["results"] == []


def test_offered_templates_and_domains(site, api):
    assert [t["name"] for t in api("student").get(v1("templates/")).json()] == ["Debian"]
    names = [d["name"] for d in api("student").get(v1("security-domains/")).json()]
    assert names == ["Private", "Research"]
    other = [d["name"] for d in api("other_student").get(v1("security-domains/")).json()]
    assert other == ["Physics lab"]
