"""People and organisations, managed in the portal by admins and org-admins."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from core.errors import PortalError
from core.views import form_errors, require

from .directory import directory_faculty_search
from .filters import PeopleFilter
from .forms import OrganisationForm, PersonForm, SSHKeyForm
from .models import Organisation, Role, SSHKey, User
from .rules import grantable_roles
from .services import (
    organisation_create,
    ssh_key_add,
    ssh_key_delete,
    user_login_failures,
    user_login_unlock,
    user_role_grant,
    user_set_active,
    user_set_organisation,
)
from .tables import PeopleTable


@login_required
@require_GET
def people_list(request: HttpRequest) -> HttpResponse:
    """List the people the user manages, with their role and where it comes from."""
    require(request.user.has_perm("accounts.list_people"))
    filters = PeopleFilter(request.GET, queryset=User.people.visible_to(request.user))
    table = PeopleTable(filters.qs.select_related("organisation"))
    RequestConfig(request, paginate={"per_page": 50}).configure(table)
    return render(request, "accounts/people_list.html", {"table": table,
                                                         "filters": filters.form})


@login_required
def person_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show one person and let an admin or their org-admin change role and access."""
    person = get_object_or_404(User.people.visible_to(request.user)
                               .select_related("organisation", "role_granted_by"), pk=pk)
    may_manage = request.user.has_perm("accounts.manage_person", person)
    may_move = request.user.has_perm("accounts.move_person", person)
    initial = {"role": person.granted_role or person.role, "is_active": person.is_active,
               "organisation": person.organisation_id}
    form = PersonForm(request.POST or None, initial=initial,
                      roles=grantable_roles(request.user), may_move=may_move)
    if request.method == "POST":
        require(may_manage)
        if form.is_valid():
            data = form.cleaned_data
            try:
                if data["role"] != initial["role"]:
                    person = user_role_grant(user=person, role=data["role"],
                                             actor=request.user)
                if data["is_active"] != person.is_active:
                    user_set_active(user=person, active=data["is_active"], actor=request.user)
                if may_move and (data["organisation"] and data["organisation"].pk) != \
                        person.organisation_id:
                    user_set_organisation(user=person, organisation=data["organisation"],
                                          actor=request.user)
            except (PortalError, ValidationError) as exc:
                messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
            else:
                messages.success(request, f"Saved {person.get_username()}: "
                                          f"{person.get_role_display()}.")
                return redirect("accounts:person_detail", pk=pk)
    return render(request, "accounts/person_detail.html", {
        "person": person, "form": form, "may_manage": may_manage,
        "vm_count": person.vms.exclude(state="deleted").count(),
        "may_unlock": request.user.has_perm("accounts.unlock_person", person),
        "login_failures": user_login_failures(user=person),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
    })


@login_required
@require_POST
def person_unlock(request: HttpRequest, pk: int) -> HttpResponse:
    """Let a person whose logins the throttle refuses log in again (admins)."""
    person = get_object_or_404(User.people.visible_to(request.user), pk=pk)
    require(request.user.has_perm("accounts.unlock_person", person))
    user_login_unlock(user=person, actor=request.user)
    messages.success(request, f"Logins of {person.get_username()} are unlocked.")
    return redirect("accounts:person_detail", pk=pk)


@login_required
def organisation_list(request: HttpRequest) -> HttpResponse:
    """List organisations with their members, and add one (admins)."""
    require(request.user.has_perm("accounts.manage_organisations"))
    form = OrganisationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = organisation_create(name=form.cleaned_data["name"], actor=request.user)
        except ValidationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Added {org.name}.")
            return redirect("accounts:organisation_list")
    orgs = Organisation.objects.annotate(
        member_count=Count("members", distinct=True),
        faculty_count=Count("members", filter=Q(members__role=Role.FACULTY), distinct=True),
    )
    return render(request, "accounts/organisation_list.html", {"orgs": orgs, "form": form})


@login_required
@require_GET
def faculty_search(request: HttpRequest) -> JsonResponse:
    """Find faculty of the user's organisation by name or username, here and in the directory."""
    q = request.GET.get("q", "").strip()[:64]
    user = request.user
    if len(q) < 2 or user.organisation_id is None:
        return JsonResponse({"results": []})
    found = {
        u.username: {"username": u.username, "name": u.get_full_name() or u.username}
        for u in User.objects.filter(role=Role.FACULTY, organisation_id=user.organisation_id,
                                     is_active=True).exclude(pk=user.pk).filter(
            Q(username__icontains=q) | Q(first_name__icontains=q) | Q(last_name__icontains=q)
        )[:20]
    }
    for entry in directory_faculty_search(q, organisation=user.organisation.name):
        found.setdefault(entry["username"], entry)
    found.pop(user.username, None)
    return JsonResponse({"results": sorted(found.values(), key=lambda e: e["name"])[:20]})


@login_required
def ssh_key_list(request: HttpRequest) -> HttpResponse:
    """List the user's own SSH public keys and add one."""
    form = SSHKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key = ssh_key_add(owner=request.user, name=form.cleaned_data["name"],
                              public_key=form.cleaned_data["public_key"])
        except ValidationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Added key {key.name} ({key.fingerprint}).")
            return redirect("accounts:ssh_key_list")
    keys = SSHKey.objects.visible_to(request.user)
    return render(request, "accounts/ssh_keys.html", {"keys": keys, "form": form})


@login_required
@require_POST
def ssh_key_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete one of the user's own SSH keys."""
    key = get_object_or_404(SSHKey.objects.visible_to(request.user), pk=pk)
    try:
        ssh_key_delete(key=key, actor=request.user)
    except PortalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Deleted key {key.name}. VMs that were given it keep it "
                                  "until you remove it from them.")
    return redirect("accounts:ssh_key_list")
