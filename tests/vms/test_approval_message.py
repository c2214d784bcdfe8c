"""The final approval's message links to the VM it made or changes."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.portal.test_rules import ask, make_vm
from vms.models import RequestKind, RequestStage, VirtualMachine
from vms.services.workflow import vm_change_request_create

pytestmark = pytest.mark.django_db


def approve(site, req, capture):
    with capture(execute=False):
        response = site.client(site.admin).post(
            reverse("vms:request_approve", args=[req.pk]),
            {"seen_stage": req.stage, "reason": ""}, follow=True)
    return response.content.decode()


def test_the_admins_approval_links_to_the_new_vm(site, django_capture_on_commit_callbacks):
    req = ask(site, site.orgadmin, name="new-lab")
    body = approve(site, req, django_capture_on_commit_callbacks)
    vm = VirtualMachine.objects.get(request=req)
    link = reverse("vms:vm_detail", args=[vm.pk])
    assert "Approved new-lab; its install is queued." in body
    assert f'<a href="{link}" class="alert-link">Open new-lab</a>' in body


def test_the_admins_approval_of_a_change_links_to_the_changed_vm(
        site, django_capture_on_commit_callbacks):
    vm = make_vm(site, name="grow-me")
    req = vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.RESIZE,
                                   purpose="more room", faculty=site.faculty,
                                   params={"vcpus": 2, "memory_mib": 1024})
    body = approve(site, req, django_capture_on_commit_callbacks)
    req.refresh_from_db()
    assert req.stage == RequestStage.APPROVED
    link = reverse("vms:vm_detail", args=[vm.pk])
    assert "the change is under way." in body
    assert f'<a href="{link}" class="alert-link">Open grow-me</a>' in body


def test_an_intermediate_approval_has_no_link(site):
    req = ask(site, site.student, name="mid-lab")
    response = site.client(site.faculty).post(
        reverse("vms:request_approve", args=[req.pk]),
        {"seen_stage": "faculty", "reason": ""}, follow=True)
    body = response.content.decode()
    assert "Approved mid-lab; it now awaits" in body and "alert-link" not in body
