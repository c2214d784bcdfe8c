"""Nobody decides their own request, at any stage, admins and promoted users included."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from core.accounts.models import Role
from core.errors import PortalError
from vms.models import Decision, RequestKind, RequestStage, VirtualMachine, VMRequest
from vms.services.workflow import (
    OWN_REQUEST_MESSAGE,
    vm_change_request_create,
    vm_request_approve,
    vm_request_create,
    vm_request_reject,
)

pytestmark = pytest.mark.django_db


def submit(site, requester, name="own-lab"):
    return vm_request_create(
        requester=requester, name=name, template=site.template, vcpus=1, memory_mib=512,
        disk_gib=2, purpose="Own request", security_domain=site.domain,
        faculty=site.faculty if requester.role == Role.USER else None)


def promote(user, role):
    user.role = role
    user.is_staff = user.is_superuser = role == Role.ADMIN
    user.save()
    return user


def assert_refused(req, actor):
    """Both decisions are refused with the one message, and the request stays where it was."""
    stage, steps = req.stage, req.steps.count()
    assert not actor.has_perm("vms.decide_request", req)
    with pytest.raises(PortalError) as err:
        vm_request_approve(request=req, actor=actor)
    assert str(err.value) == OWN_REQUEST_MESSAGE
    with pytest.raises(PortalError) as err:
        vm_request_reject(request=req, actor=actor, reason="mine")
    assert str(err.value) == OWN_REQUEST_MESSAGE
    req.refresh_from_db()
    assert (req.stage, req.steps.count()) == (stage, steps)
    assert req not in VMRequest.objects.awaiting(actor)


def test_an_admin_cannot_approve_their_own_request_but_another_admin_can(
        site, django_capture_on_commit_callbacks):
    req = submit(site, site.admin)
    assert req.stage == RequestStage.ADMIN
    assert_refused(req, site.admin)
    assert not VirtualMachine.objects.exists()
    other = site.another_admin()
    assert other.has_perm("vms.decide_request", req)
    with django_capture_on_commit_callbacks(execute=False):
        vm_request_approve(request=req, actor=other)
    req.refresh_from_db()
    assert req.stage == RequestStage.APPROVED
    assert VirtualMachine.objects.get(request=req).owner == site.admin


@pytest.mark.parametrize("stage", [RequestStage.FACULTY, RequestStage.ORG_ADMIN,
                                   RequestStage.ADMIN])
def test_a_student_promoted_to_admin_while_the_request_waits_cannot_decide_it(site, stage):
    req = submit(site, site.student)
    VMRequest.objects.filter(pk=req.pk).update(stage=stage)
    req.refresh_from_db()
    promote(site.student, Role.ADMIN)
    assert_refused(req, site.student)


def test_a_student_promoted_to_org_admin_cannot_pass_their_own_org_admin_stage(site):
    req = submit(site, site.student)
    vm_request_approve(request=req, actor=site.faculty)
    req.refresh_from_db()
    assert req.stage == RequestStage.ORG_ADMIN
    promote(site.student, Role.ORG_ADMIN)
    assert_refused(req, site.student)
    # The organisation's other org-admin still may.
    vm_request_approve(request=req, actor=site.orgadmin)
    req.refresh_from_db()
    assert req.stage == RequestStage.ADMIN


def test_a_faculty_named_as_their_own_faculty_cannot_pass_the_faculty_stage(site):
    req = submit(site, site.student)
    promote(site.student, Role.FACULTY)
    VMRequest.objects.filter(pk=req.pk).update(faculty=site.student)
    req.refresh_from_db()
    assert_refused(req, site.student)


def test_an_admins_own_change_request_waits_for_another_admin(
        site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    assert vm.owner == site.admin
    change = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.RESIZE,
                                      purpose="more memory",
                                      params={"vcpus": 1, "memory_mib": 1024})
    assert_refused(change, site.admin)
    with django_capture_on_commit_callbacks(execute=False):
        vm_request_approve(request=change, actor=site.another_admin())
    change.refresh_from_db()
    assert change.stage == RequestStage.APPROVED


def test_an_admins_own_request_is_not_mailed_to_them_as_awaiting_approval(
        site, django_capture_on_commit_callbacks):
    other = site.another_admin()
    with django_capture_on_commit_callbacks(execute=True):
        submit(site, site.admin)
    asked = [m for m in mail.outbox if "awaits your approval" in m.subject]
    assert [m.to for m in asked] == [[other.email]]


def test_the_pages_hide_the_decision_on_ones_own_request_and_refuse_a_forged_post(site):
    req = submit(site, site.admin)
    other_req = submit(site, site.student, name="students-lab")
    client = site.client(site.admin)

    approvals = client.get(reverse("vms:approvals")).content.decode()
    assert 'data-request="own-lab"' not in approvals
    assert 'data-request="students-lab"' in approvals
    detail = client.get(reverse("vms:request_detail", args=[req.pk])).content.decode()
    assert 'id="decision-form"' not in detail
    assert "another admin must decide it" in detail
    other_detail = client.get(reverse("vms:request_detail", args=[other_req.pk]))
    assert 'id="decision-form"' in other_detail.content.decode()

    response = client.post(reverse("vms:request_approve", args=[req.pk]),
                           {"seen_stage": req.stage, "reason": ""}, follow=True)
    assert OWN_REQUEST_MESSAGE in response.content.decode()
    req.refresh_from_db()
    assert req.stage == RequestStage.ADMIN
    assert not req.steps.filter(decision=Decision.APPROVED).exists()
