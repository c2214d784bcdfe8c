"""The pages: forms with inline errors, messages, and the live VM view."""

from __future__ import annotations

import pytest
from django.urls import reverse

from operations.models import OperationStatus
from operations.runner import operation_run
from vms.models import RequestStage, VirtualMachine, VMRequest

pytestmark = pytest.mark.django_db


def form_data(site, **kw):
    data = {"name": "web-lab", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
            "disk_gib": 2, "purpose": "Course project", "faculty": site.faculty.pk,
            "security_domain": site.domain.pk}
    data.update(kw)
    return data


def test_student_submits_the_form_and_sees_the_request(site):
    client = site.client(site.student)
    response = client.post(reverse("vms:request_create"), form_data(site), follow=True)
    req = VMRequest.objects.get()
    assert response.redirect_chain[-1][0] == reverse("vms:request_detail", args=[req.pk])
    body = response.content.decode()
    assert "Request web-lab submitted" in body and "Awaiting faculty" in body
    listing = client.get(reverse("vms:request_list")).content.decode()
    assert "web-lab" in listing and "Awaiting faculty" in listing


def test_the_form_offers_only_faculty_of_the_requesters_organisation(site):
    body = site.client(site.student).get(reverse("vms:request_create")).content.decode()
    assert f'value="{site.faculty.pk}"' in body
    assert f'value="{site.other_faculty.pk}"' not in body


@pytest.mark.parametrize(("field", "value", "error"), [
    ("name", "Bad Name", "lower-case letters"),
    ("vcpus", 9, "Choose between 1 and 4"),
    ("memory_mib", 100000, "Choose between 256 and 4096"),
    ("disk_gib", 500, "Choose between 1 and 20"),
    ("faculty", "other", "Select a valid choice"),
    ("purpose", "", "This field is required"),
])
def test_bad_input_shows_an_inline_error_and_creates_nothing(site, field, value, error):
    if value == "other":
        value = site.other_faculty.pk
    response = site.client(site.student).post(reverse("vms:request_create"),
                                              form_data(site, **{field: value}))
    assert response.status_code == 200
    body = response.content.decode()
    assert error in body and "is-invalid" in body
    assert not VMRequest.objects.exists()


def test_faculty_field_is_absent_for_a_faculty_requester(site):
    body = site.client(site.faculty).get(reverse("vms:request_create")).content.decode()
    assert 'name="faculty"' not in body and "skips the approvals" in body


def test_approvals_page_lists_what_waits_and_the_decision_moves_it(site):
    site.client(site.student).post(reverse("vms:request_create"), form_data(site))
    req = VMRequest.objects.get()
    fac = site.client(site.faculty)
    assert "web-lab" in fac.get(reverse("vms:approvals")).content.decode()
    assert "web-lab" not in site.client(site.other_faculty).get(
        reverse("vms:approvals")).content.decode()
    response = fac.post(reverse("vms:request_approve", args=[req.pk]),
                        {"seen_stage": "faculty", "reason": "", "next": "approvals"}, follow=True)
    assert "Approved web-lab" in response.content.decode()
    req.refresh_from_db()
    assert req.stage == RequestStage.ORG_ADMIN


def test_a_stale_approval_shows_an_error_and_changes_nothing(site):
    site.client(site.student).post(reverse("vms:request_create"), form_data(site))
    req = VMRequest.objects.get()
    admin = site.client(site.admin)
    admin.post(reverse("vms:request_approve", args=[req.pk]), {"seen_stage": "faculty"})
    response = admin.post(reverse("vms:request_approve", args=[req.pk]),
                          {"seen_stage": "faculty"}, follow=True)
    assert "already approved" in response.content.decode()
    assert VirtualMachine.objects.count() == 1


def test_reject_without_reason_shows_an_error(site):
    site.client(site.student).post(reverse("vms:request_create"), form_data(site))
    req = VMRequest.objects.get()
    response = site.client(site.faculty).post(
        reverse("vms:request_reject", args=[req.pk]), {"seen_stage": "faculty", "reason": ""},
        follow=True)
    assert "Give a reason" in response.content.decode()
    req.refresh_from_db()
    assert req.stage == RequestStage.FACULTY


def test_vm_page_shows_state_ip_mac_and_live_operations(site, django_capture_on_commit_callbacks):
    admin = site.client(site.admin)
    with django_capture_on_commit_callbacks(execute=False):
        admin.post(reverse("vms:request_create"), form_data(site))
        req = VMRequest.objects.get()
        site.client(site.another_admin()).post(reverse("vms:request_approve", args=[req.pk]),
                                               {"seen_stage": "admin"})
    vm = VirtualMachine.objects.get()
    page = admin.get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert "Pending install" in page and "Queued" in page
    assert f'hx-get="{reverse("vms:vm_status", args=[vm.pk])}"' in page
    operation_run(operation_id=vm.operations.get().pk)
    live = admin.get(reverse("vms:vm_status", args=[vm.pk])).content.decode()
    vm.refresh_from_db()
    assert "Running" in live and "Done" in live
    assert vm.private_ip.address in live and vm.private_ip.mac in live
    assert 'data-action="suspend"' in live and 'data-action="start"' not in live


def test_vm_action_button_queues_an_operation(site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        response = site.client(site.admin).post(
            reverse("vms:vm_action", args=[vm.pk, "suspend"]), follow=True)
    assert "“Suspend” on lab1 is queued." in response.content.decode()
    assert vm.operations.filter(status=OperationStatus.QUEUED, kind="suspend").exists()


def test_an_unknown_vm_action_is_refused(site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    # The route takes only the owner's actions: any other word is not found.
    response = site.client(site.admin).post(f"/vms/{vm.pk}/explode/")
    assert response.status_code == 404
    assert not vm.operations.filter(status=OperationStatus.QUEUED).exists()


def test_admin_sees_failed_operations_needing_attention(site, django_capture_on_commit_callbacks,
                                                        monkeypatch):
    from hosts.virt import Hypervisor, VirtError
    from tests.vms.test_lifecycle import install

    monkeypatch.setattr(Hypervisor, "start", lambda self, n: (_ for _ in ()).throw(
        VirtError("no room on the bus")))
    install(site, django_capture_on_commit_callbacks)
    page = site.client(site.admin).get(reverse("vms:operation_list") + "?attention=1")
    body = page.content.decode()
    assert "no room on the bus" in body and "Retry" in body
    dash = site.client(site.admin).get(reverse("dashboard")).content.decode()
    assert "Failed operations" in dash


def test_host_pages_show_capacity_to_admins(site):
    body = site.client(site.admin).get(reverse("hosts:host_list")).content.decode()
    assert "hv1" in body and "test:///default" in body


@pytest.mark.parametrize("url_name", ["vms:vm_list", "vms:request_list", "vms:operation_list",
                                      "dashboard"])
def test_list_pages_make_the_same_number_of_queries_whatever_the_row_count(
        site, django_assert_max_num_queries, url_name):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from operations.models import Operation
    from tests import factories as f

    def add(n, start):
        for i in range(start, start + n):
            req = f.VMRequestFactory(requester=site.student, template=site.template,
                                     name=f"row-{i}", stage="approved")
            vm = VirtualMachine.objects.create(
                name=f"row-{i}", owner=site.student, organisation=site.org, request=req,
                template=site.template, host=site.host, vcpus=1, memory_mib=256, disk_gib=1,
                state="running")
            Operation.objects.create(kind="start", vm=vm, requested_by=site.student,
                                     status="succeeded")

    client = site.client(site.admin)
    counts = []
    for n, start in ((2, 0), (20, 100)):
        add(n, start)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse(url_name), {"scope": "all"}).status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts
