"""Managing people: roles given in the portal, their source, and who may manage whom."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.urls import reverse

from core.accounts.models import Organisation, Role, User
from core.accounts.services import (
    directory_profile_apply,
    organisation_create,
    user_role_grant,
    user_set_active,
)
from core.errors import PortalError
from tests import factories as f

pytestmark = pytest.mark.django_db
GROUPS = {"admin": "cn=admins,dc=x", "org_admin": "cn=orgadmins,dc=x",
          "faculty": "cn=faculty,dc=x"}


def new_directory_user(username):
    user = User(username=username)
    user.set_unusable_password()  # as django-auth-ldap makes them
    user.save()
    return user


def directory_login(user, groups=(), org="Computer Science"):
    directory_profile_apply(user=user, group_dns=set(groups), attributes={"ou": [org]},
                            role_groups=GROUPS, org_attribute="ou")
    user.save()
    user.refresh_from_db()
    return user


def test_a_directory_login_sets_role_and_organisation_from_the_directory(site):
    user = new_directory_user("dina")
    directory_login(user, groups=["cn=faculty,dc=x"], org="Chemistry")
    assert (user.role, user.directory_role, user.organisation.name) == (
        Role.FACULTY, Role.FACULTY, "Chemistry")
    assert user.is_directory_user and user.role_source == "directory"
    directory_login(user, groups=["cn=admins,dc=x", "cn=faculty,dc=x"], org="Chemistry")
    assert user.role == Role.ADMIN and user.is_staff and user.is_superuser
    assert Organisation.objects.filter(name="Chemistry").count() == 1


def test_a_role_given_in_the_portal_survives_the_next_login(site):
    user = directory_login(new_directory_user("dina"))
    user_role_grant(user=user, role=Role.FACULTY, actor=site.admin)
    user = directory_login(User.objects.get(pk=user.pk))
    assert (user.role, user.role_source, user.role_granted_by) == (
        Role.FACULTY, "portal", site.admin)


def test_the_directory_wins_when_it_gives_a_higher_role(site):
    user = directory_login(new_directory_user("dina"))
    user_role_grant(user=user, role=Role.FACULTY, actor=site.admin)
    user = directory_login(User.objects.get(pk=user.pk), groups=["cn=orgadmins,dc=x"])
    assert user.role == Role.ORG_ADMIN and user.role_source == "directory"
    user = directory_login(User.objects.get(pk=user.pk), groups=[])
    assert user.role == Role.FACULTY and user.role_source == "portal"


def test_a_local_accounts_role_is_set_directly(site):
    user_role_grant(user=site.student, role=Role.FACULTY, actor=site.admin)
    site.student.refresh_from_db()
    assert site.student.role == Role.FACULTY and site.student.role_source == "local"


def test_org_admins_manage_only_their_members_and_not_admins(site):
    user_role_grant(user=site.student, role=Role.FACULTY, actor=site.orgadmin)
    with pytest.raises(PortalError):
        user_role_grant(user=site.other_student, role=Role.FACULTY, actor=site.orgadmin)
    with pytest.raises(PortalError, match="may not make anyone admin"):
        user_role_grant(user=site.student, role=Role.ADMIN, actor=site.orgadmin)
    with pytest.raises(PortalError):
        user_role_grant(user=site.admin, role=Role.USER, actor=site.orgadmin)
    for who in (site.student, site.faculty):
        with pytest.raises(PortalError):
            user_role_grant(user=site.other_student, role=Role.FACULTY, actor=who)
    site.other_student.refresh_from_db()
    assert site.other_student.role == Role.USER


def test_an_unknown_role_is_refused(site):
    with pytest.raises(ValidationError):
        user_role_grant(user=site.student, role="emperor", actor=site.admin)


def test_deactivation_and_its_limits(site):
    user_set_active(user=site.student, active=False, actor=site.orgadmin)
    site.student.refresh_from_db()
    assert not site.student.is_active
    assert not site.client(None).login(request=HttpRequest(), username="stu",
                                       password="pass-word-123")
    with pytest.raises(PortalError):
        user_set_active(user=site.admin, active=False, actor=site.admin)


def test_organisations_are_added_by_admins_with_unique_names(site):
    org = organisation_create(name="  Mathematics ", actor=site.admin)
    assert (org.name, org.slug) == ("Mathematics", "mathematics")
    with pytest.raises(ValidationError):
        organisation_create(name="Mathematics", actor=site.admin)
    with pytest.raises(PortalError):
        organisation_create(name="Biology", actor=site.orgadmin)


def test_people_list_shows_an_org_admin_only_their_organisation(site):
    body = site.client(site.orgadmin).get(reverse("accounts:people_list")).content.decode()
    assert "stu" in body and "pstu" not in body
    everyone = site.client(site.admin).get(reverse("accounts:people_list")).content.decode()
    assert "pstu" in everyone and "local account" in everyone


def test_the_person_page_changes_a_role_and_says_where_it_came_from(site):
    url = reverse("accounts:person_detail", args=[site.student.pk])
    response = site.client(site.orgadmin).post(url, {"role": "faculty", "is_active": "on"},
                                               follow=True)
    body = response.content.decode()
    assert "Saved stu: Faculty" in body and "this local account" in body
    refused = site.client(site.orgadmin).post(url, {"role": "admin", "is_active": "on"})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    site.student.refresh_from_db()
    assert site.student.role == Role.FACULTY


def test_faculty_search_finds_faculty_of_ones_organisation_only(site):
    f.UserFactory(username="fiona", first_name="Fiona", role=Role.FACULTY, organisation=site.org)
    client = site.client(site.student)
    found = client.get(reverse("accounts:faculty_search"), {"q": "fi"}).json()["results"]
    assert [r["username"] for r in found] == ["fiona"]
    assert client.get(reverse("accounts:faculty_search"), {"q": "pfa"}).json()["results"] == []
    assert client.get(reverse("accounts:faculty_search"), {"q": "*"}).json()["results"] == []


def test_the_request_form_takes_a_faculty_by_username(site):
    from vms.models import VMRequest

    data = {"name": "by-name", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
            "disk_gib": 2, "purpose": "x", "security_domain": site.domain.pk,
            "faculty_username": "fac"}
    client = site.client(site.student)
    client.post(reverse("vms:request_create"), data)
    assert VMRequest.objects.get().faculty == site.faculty
    refused = client.post(reverse("vms:request_create"),
                          {**data, "name": "by-name-2", "faculty_username": "pfac"})
    assert "No faculty member of your organisation" in refused.content.decode()
    assert VMRequest.objects.count() == 1


def test_a_directory_account_never_logs_in_with_a_local_password(site):
    user = directory_login(new_directory_user("dina"))
    user.set_password("a-local-secret-123")
    user.save()
    # The login throttle needs the request; a bare one stands for the browser.
    assert not site.client(None).login(request=HttpRequest(), username="dina",
                                       password="a-local-secret-123")
    assert site.client(None).login(request=HttpRequest(), username="stu",
                                   password="pass-word-123")
