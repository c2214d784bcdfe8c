"""The approval chain: who may move a request, where it goes, and every refusal."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from core.errors import PortalError
from operations.models import Operation, OperationKind
from tests import factories as f
from vms.models import ApprovalStep, Decision, RequestStage, VirtualMachine, VMRequest
from vms.services.workflow import (
    vm_request_approve,
    vm_request_cancel,
    vm_request_create,
    vm_request_reject,
)

pytestmark = pytest.mark.django_db


def submit(site, requester=None, **overrides):
    args = {
        "requester": requester or site.student, "name": "thesis-lab",
        "template": site.template, "vcpus": 2, "memory_mib": 1024, "disk_gib": 4,
        "purpose": "Thesis experiments", "security_domain": site.domain,
        "faculty": site.faculty if (requester or site.student).role == "user" else None,
    }
    args.update(overrides)
    return vm_request_create(**args)


def test_student_request_waits_for_faculty_and_notifies_them(
        site, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        req = submit(site)
    assert req.stage == RequestStage.FACULTY
    assert req.organisation == site.org
    step = req.steps.get()
    assert (step.actor, step.decision, step.stage) == (site.student, Decision.SUBMITTED,
                                                       RequestStage.FACULTY)
    assert [m.to for m in mail.outbox] == [[site.faculty.email]]


def test_full_chain_ends_with_a_queued_install(site, django_capture_on_commit_callbacks):
    req = submit(site)
    with django_capture_on_commit_callbacks(execute=False):
        req = vm_request_approve(request=req, actor=site.faculty, reason="fine")
        assert req.stage == RequestStage.ORG_ADMIN
        req = vm_request_approve(request=req, actor=site.orgadmin)
        assert req.stage == RequestStage.ADMIN
        req = vm_request_approve(request=req, actor=site.admin)
    assert req.stage == RequestStage.APPROVED
    vm = VirtualMachine.objects.get(request=req)
    assert (vm.name, vm.owner, vm.vcpus, vm.memory_mib, vm.disk_gib) == (
        "thesis-lab", site.student, 2, 1024, 4)
    op = Operation.objects.get(vm=vm)
    assert (op.kind, op.status, op.requested_by) == (OperationKind.INSTALL, "queued", site.admin)
    decisions = list(req.steps.values_list("actor__username", "stage", "decision", "reason"))
    assert decisions == [
        ("stu", "faculty", "submitted", ""),
        ("fac", "faculty", "approved", "fine"),
        ("oadm", "org_admin", "approved", ""),
        ("adm", "admin", "approved", ""),
    ]


def test_requester_is_mailed_at_every_decision(site, django_capture_on_commit_callbacks):
    req = submit(site)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        vm_request_approve(request=req, actor=site.faculty, reason="ok by me")
    to_requester = [m for m in mail.outbox if m.to == [site.student.email]]
    assert len(to_requester) == 1
    assert "approved" in to_requester[0].subject and "ok by me" in to_requester[0].body
    with django_capture_on_commit_callbacks(execute=True):
        vm_request_reject(request=req, actor=site.orgadmin, reason="no budget")
    rejected = [m for m in mail.outbox if "rejected" in m.subject]
    assert rejected[0].to == [site.student.email] and "no budget" in rejected[0].body


@pytest.mark.parametrize(("who", "first_stage"), [
    ("faculty", RequestStage.ORG_ADMIN),
    ("orgadmin", RequestStage.ADMIN),
    ("admin", RequestStage.ADMIN),
])
def test_senior_roles_skip_the_steps_below_them(site, who, first_stage):
    req = submit(site, requester=getattr(site, who))
    assert req.stage == first_stage
    assert req.faculty is None


def test_admin_may_approve_at_any_stage_and_it_is_final(site, django_capture_on_commit_callbacks):
    req = submit(site)
    with django_capture_on_commit_callbacks(execute=False):
        req = vm_request_approve(request=req, actor=site.admin, reason="urgent")
    assert req.stage == RequestStage.APPROVED
    assert VirtualMachine.objects.filter(request=req).exists()


@pytest.mark.parametrize("name", ["Web", "1abc", "a_b", "a" * 64, "", "web.1", "-x", "ab c"])
def test_bad_names_are_refused_and_nothing_is_created(site, name):
    with pytest.raises(ValidationError) as err:
        submit(site, name=name)
    assert "name" in err.value.message_dict
    assert not VMRequest.objects.exists()


@pytest.mark.parametrize(("field", "value"), [
    ("vcpus", 0), ("vcpus", 5), ("memory_mib", 128), ("memory_mib", 8192),
    ("disk_gib", 0), ("disk_gib", 21),
])
def test_sizes_outside_the_template_bounds_are_refused(site, field, value):
    with pytest.raises(ValidationError) as err:
        submit(site, **{field: value})
    assert field in err.value.message_dict
    assert not VMRequest.objects.exists()


def test_sizes_outside_the_site_bounds_are_refused(site, settings):
    settings.PORTAL = {**settings.PORTAL, "MAX_VCPUS": 1}
    with pytest.raises(ValidationError) as err:
        submit(site, vcpus=2)
    assert "between 1 and 1" in err.value.message_dict["vcpus"][0]


@pytest.mark.parametrize("faculty", ["other_faculty", "orgadmin", "student", None])
def test_faculty_must_be_a_faculty_of_the_requesters_organisation(site, faculty):
    with pytest.raises(ValidationError) as err:
        submit(site, faculty=getattr(site, faculty) if faculty else None)
    assert "faculty" in err.value.message_dict
    assert not VMRequest.objects.exists()


def test_a_name_in_use_by_a_pending_request_or_live_vm_is_refused(site):
    submit(site)
    with pytest.raises(ValidationError) as err:
        submit(site)
    assert "name" in err.value.message_dict
    assert VMRequest.objects.count() == 1


def test_a_user_without_organisation_cannot_request(site):
    loner = f.UserFactory(username="loner", organisation=None)
    with pytest.raises(ValidationError):
        submit(site, requester=loner, faculty=site.faculty)


def test_an_inactive_template_is_refused(site):
    site.template.is_active = False
    site.template.save()
    with pytest.raises(ValidationError) as err:
        submit(site)
    assert "template" in err.value.message_dict


@pytest.mark.parametrize("who", ["other_faculty", "orgadmin", "student", "other_orgadmin"])
def test_wrong_person_cannot_decide_at_the_faculty_stage(site, who):
    req = submit(site)
    with pytest.raises(PortalError):
        vm_request_approve(request=req, actor=getattr(site, who))
    with pytest.raises(PortalError):
        vm_request_reject(request=req, actor=getattr(site, who), reason="no")
    req.refresh_from_db()
    assert req.stage == RequestStage.FACULTY
    assert req.steps.count() == 1


@pytest.mark.parametrize("who", ["faculty", "other_orgadmin", "student"])
def test_wrong_person_cannot_decide_at_the_org_admin_stage(site, who):
    req = submit(site)
    vm_request_approve(request=req, actor=site.faculty)
    with pytest.raises(PortalError):
        vm_request_approve(request=req, actor=getattr(site, who))
    req.refresh_from_db()
    assert req.stage == RequestStage.ORG_ADMIN


def test_org_admin_cannot_give_the_final_approval(site):
    req = submit(site, requester=site.orgadmin)
    with pytest.raises(PortalError):
        vm_request_approve(request=req, actor=site.orgadmin)
    assert not VirtualMachine.objects.exists()


def test_a_request_approved_twice_changes_nothing_the_second_time(site):
    req = submit(site)
    vm_request_approve(request=req, actor=site.faculty, seen_stage=RequestStage.FACULTY)
    with pytest.raises(PortalError, match="moved on"):
        vm_request_approve(request=req, actor=site.admin, seen_stage=RequestStage.FACULTY)
    req.refresh_from_db()
    assert req.stage == RequestStage.ORG_ADMIN
    assert req.steps.filter(decision=Decision.APPROVED).count() == 1


def test_a_decided_request_cannot_be_decided_again(site, django_capture_on_commit_callbacks):
    req = submit(site, requester=site.admin)
    with django_capture_on_commit_callbacks(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    with pytest.raises(PortalError, match="already approved"):
        vm_request_approve(request=req, actor=site.another_admin())
    assert VirtualMachine.objects.count() == 1


def test_reject_needs_a_reason_and_records_it(site):
    req = submit(site)
    with pytest.raises(ValidationError):
        vm_request_reject(request=req, actor=site.faculty, reason="  ")
    req.refresh_from_db()
    assert req.stage == RequestStage.FACULTY
    vm_request_reject(request=req, actor=site.faculty, reason="Use the lab machines")
    req.refresh_from_db()
    assert req.stage == RequestStage.REJECTED
    step = ApprovalStep.objects.filter(request=req).last()
    assert (step.actor, step.decision, step.reason) == (site.faculty, Decision.REJECTED,
                                                        "Use the lab machines")
    assert not VirtualMachine.objects.exists()


def test_a_rejected_name_may_be_requested_again(site):
    req = submit(site)
    vm_request_reject(request=req, actor=site.faculty, reason="resubmit with a purpose")
    again = submit(site)
    assert again.stage == RequestStage.FACULTY


def test_requester_may_cancel_only_while_pending(site):
    req = submit(site)
    with pytest.raises(PortalError):
        vm_request_cancel(request=req, actor=site.faculty)
    vm_request_cancel(request=req, actor=site.student)
    req.refresh_from_db()
    assert req.stage == RequestStage.CANCELLED
    with pytest.raises(PortalError):
        vm_request_cancel(request=req, actor=site.student)
