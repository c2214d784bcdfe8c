"""Permissions as data: has_perm and visible_to answer alike everywhere, superusers included."""

from __future__ import annotations

import pytest
import rules
from django.conf import settings
from django.urls import reverse

from core.accounts.models import Role, User
from core.accounts.rules import grantable_roles
from operations.models import Operation, OperationKind, OperationStatus
from vms.models import VirtualMachine, VMRequest, VMState
from vms.services.workflow import vm_request_create

pytestmark = pytest.mark.django_db

ROLES = ("student", "faculty", "orgadmin", "admin", "other_student", "other_orgadmin")


def make_vm(site, name="lab", owner=None, state=VMState.RUNNING, **extra):
    owner = owner or site.student
    return VirtualMachine.objects.create(
        name=name, owner=owner, organisation=owner.organisation, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=state, **extra)


def ask(site, requester, name="req"):
    return vm_request_create(
        requester=requester, name=name, template=site.template, vcpus=1, memory_mib=512,
        disk_gib=2, purpose="x", security_domain=site.domain,
        faculty=site.faculty if requester.role == Role.USER else None)


def test_every_application_declares_its_permissions_on_start():
    for perm in ("vms.view_vm", "vms.operate_vm", "vms.view_vm_password", "vms.make_template",
                 "vms.view_request", "vms.decide_request", "vms.cancel_request",
                 "vms.view_operation", "vms.retry_operation", "hosts.view_host",
                 "hosts.manage_host", "networking.manage_pools", "networking.manage_nat",
                 "accounts.list_people", "accounts.manage_person", "accounts.grant_role"):
        assert rules.perm_exists(perm), perm


def test_the_login_throttle_stays_first_and_the_rules_answer_last():
    backends = settings.AUTHENTICATION_BACKENDS
    assert backends[0] == "axes.backends.AxesStandaloneBackend"
    assert backends[-1] == "rules.permissions.ObjectPermissionBackend"


def test_who_sees_and_operates_a_vm_agrees_with_the_visible_list(site):
    vm = make_vm(site)
    sees = {"student", "orgadmin", "admin"}
    operates = {"student", "orgadmin", "admin"}
    for role in ROLES:
        user = site.users[role]
        assert user.has_perm("vms.view_vm", vm) == (role in sees), role
        assert (vm in VirtualMachine.objects.visible_to(user)) == (role in sees), role
        assert user.has_perm("vms.operate_vm", vm) == (role in operates), role


def test_the_faculty_of_a_vms_request_sees_it_but_does_not_operate_it(site):
    req = ask(site, site.student)
    vm = make_vm(site, request=req)
    assert site.faculty.has_perm("vms.view_vm", vm)
    assert not site.faculty.has_perm("vms.operate_vm", vm)


def test_a_superuser_is_held_to_the_rules_it_would_otherwise_skip(site):
    admin = site.admin
    assert admin.is_superuser
    vm = make_vm(site)
    own = ask(site, admin, name="mine")
    assert not admin.has_perm("vms.view_vm_password", vm)  # the owner alone
    assert site.student.has_perm("vms.view_vm_password", vm)
    assert not admin.has_perm("vms.decide_request", own)
    assert not admin.has_perm("vms.cancel_request", ask(site, site.student, name="theirs"))
    assert own not in VMRequest.objects.awaiting(admin)
    # Django's own permissions keep their meaning for superusers.
    assert admin.has_perm("vms.view_virtualmachine")


def test_the_request_page_offers_decisions_as_has_perm_answers(site):
    req = ask(site, site.student)
    for role, decides in (("faculty", True), ("student", False), ("orgadmin", False)):
        user = site.users[role]
        assert user.has_perm("vms.decide_request", req) == decides
        page = site.client(user).get(reverse("vms:request_detail", args=[req.pk]))
        assert (reverse("vms:request_approve", args=[req.pk]) in page.content.decode()) \
            == decides, role
    page = site.client(site.student).get(reverse("vms:request_detail", args=[req.pk]))
    assert reverse("vms:request_cancel", args=[req.pk]) in page.content.decode()


def test_operations_are_seen_on_visible_vms_and_by_whoever_asked_for_them(site):
    vm = make_vm(site)
    on_vm = Operation.objects.create(kind=OperationKind.START, vm=vm)
    asked = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host,
                                     requested_by=site.other_student)
    assert set(Operation.objects.visible_to(site.student)) == {on_vm}
    assert set(Operation.objects.visible_to(site.other_student)) == {asked}
    assert set(Operation.objects.visible_to(site.admin)) == {on_vm, asked}
    assert site.orgadmin.has_perm("vms.view_operation", on_vm)
    assert not site.other_orgadmin.has_perm("vms.view_operation", on_vm)
    assert not site.student.has_perm("vms.retry_operation", on_vm)
    assert site.admin.has_perm("vms.retry_operation", on_vm)


def test_people_and_roles_an_org_admin_manages(site):
    assert grantable_roles(site.orgadmin) == [Role.USER, Role.FACULTY, Role.ORG_ADMIN]
    assert grantable_roles(site.admin) == list(Role)
    assert grantable_roles(site.student) == []
    assert set(User.people.visible_to(site.orgadmin)) == set(User.objects.filter(
        organisation=site.org))
    assert site.orgadmin.has_perm("accounts.manage_person", site.student)
    assert not site.orgadmin.has_perm("accounts.manage_person", site.admin)
    assert not site.orgadmin.has_perm("accounts.manage_person", site.other_student)
    assert not User.people.visible_to(site.student).exists()


def test_an_unknown_word_after_a_vm_is_not_found_and_later_routes_still_answer(site):
    vm = make_vm(site)
    client = site.client(site.student)
    for word in ("bogus", "install", "status2"):
        url = f"/vms/{vm.pk}/{word}/"
        assert client.get(url).status_code == 404
        assert client.post(url).status_code == 404
    assert client.get(reverse("vms:vm_status", args=[vm.pk])).status_code == 200
    assert client.post(reverse("vms:vm_action", args=[vm.pk, "shutdown"])).status_code == 302


def test_list_filters_keep_their_query_parameters(site):
    mine, theirs = ask(site, site.student, "mine"), ask(site, site.orgadmin, "theirs")
    client = site.client(site.orgadmin)
    page = client.get(reverse("vms:request_list")).context["table"].data.data
    assert set(page) == {theirs}
    page = client.get(reverse("vms:request_list"), {"scope": "all"}).context["table"].data.data
    assert set(page) == {mine, theirs}
    gone = make_vm(site, name="gone", state=VMState.DELETED)
    live = make_vm(site, name="live")
    page = client.get(reverse("vms:vm_list")).context["table"].data.data
    assert set(page) == {live}
    page = client.get(reverse("vms:vm_list"), {"deleted": "1"}).context["table"].data.data
    assert set(page) == {live, gone}
    failed = Operation.objects.create(kind=OperationKind.START, vm=live,
                                      status=OperationStatus.FAILED)
    done = Operation.objects.create(kind=OperationKind.START, vm=live,
                                    status=OperationStatus.SUCCEEDED)
    dismissed = Operation.objects.create(kind=OperationKind.START, vm=live, dismissed=True,
                                         status=OperationStatus.FAILED)
    url = reverse("vms:operation_list")
    assert set(client.get(url).context["table"].data.data) == {failed, done, dismissed}
    assert set(client.get(url, {"status": "succeeded"}).context["table"].data.data) == {done}
    assert set(client.get(url, {"status": "nonsense"}).context["table"].data.data) == {
        failed, done, dismissed}
    assert set(client.get(url, {"attention": "1"}).context["table"].data.data) == {failed}
    page = client.get(url).content.decode()
    assert 'id="operations-filter"' in page  # a submit button for browsers without scripts
    people = client.get(reverse("accounts:people_list"), {"role": "faculty", "q": "fa"})
    assert [p.username for p in people.context["table"].data.data] == ["fac"]
    hosts = site.client(site.admin).get(reverse("hosts:host_list"), {"status": "down"})
    assert list(hosts.context["hosts"]) == []
    hosts = site.client(site.admin).get(reverse("hosts:host_list"), {"q": "hv"})
    assert list(hosts.context["hosts"]) == [site.host]


def test_the_filter_forms_keep_their_fields_and_the_choice_made(site):
    client = site.client(site.admin)
    people = client.get(reverse("accounts:people_list"), {"role": "faculty", "q": "fa"})
    page = people.content.decode()
    assert 'name="q" value="fa" placeholder="Name, username or e-mail"' in page
    assert '<option value="faculty" selected>' in page
    hosts = client.get(reverse("hosts:host_list"), {"status": "up"}).content.decode()
    assert '<option value="up" selected>' in hosts and 'name="q"' in hosts
    pool = client.get(reverse("networking:public_pool"), {"state": "free"}).content.decode()
    assert '<option value="free" selected>' in pool
    assert 'placeholder="Address, MAC or VM"' in pool
