"""The Django admin shows VMs, operations and requests but changes none of them."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from operations.models import Operation, OperationKind
from tests import factories as f
from vms.models import VirtualMachine, VMRequest, VMState

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(site):
    req = f.VMRequestFactory(requester=site.student, template=site.template, name="adm-lab")
    vm = VirtualMachine.objects.create(
        name="adm-lab", owner=site.student, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=VMState.RUNNING, request=req)
    op = Operation.objects.create(kind=OperationKind.START, vm=vm)
    return {VMRequest: req, VirtualMachine: vm, Operation: op}


@pytest.mark.parametrize("model", [VMRequest, VirtualMachine, Operation])
def test_the_admin_views_but_never_adds_changes_or_deletes(site, rows, model):
    obj = rows[model]
    meta = model._meta
    client = site.client(site.admin)  # a superuser: only the admin classes can refuse
    base = f"admin:{meta.app_label}_{meta.model_name}"

    listing = client.get(reverse(f"{base}_changelist"))
    assert listing.status_code == 200
    assert reverse(f"{base}_add") not in listing.content.decode()
    assert client.get(reverse(f"{base}_add")).status_code == 403
    assert client.post(reverse(f"{base}_add"), {"name": "x"}).status_code == 403

    view = client.get(reverse(f"{base}_change", args=[obj.pk]))
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    before = model.objects.filter(pk=obj.pk).values().get()
    client.post(reverse(f"{base}_change", args=[obj.pk]), {"name": "renamed", "state": "x"})
    assert model.objects.filter(pk=obj.pk).values().get() == before

    assert client.get(reverse(f"{base}_delete", args=[obj.pk])).status_code == 403
    assert client.post(reverse(f"{base}_delete", args=[obj.pk]), {"post": "yes"}
                       ).status_code == 403
    bulk = client.post(reverse(f"{base}_changelist"),
                       {"action": "delete_selected", "_selected_action": [obj.pk],
                        "post": "yes"})
    assert bulk.status_code in (200, 302)
    assert model.objects.filter(pk=obj.pk).exists()


def test_approval_steps_are_shown_read_only_inside_their_request(site, rows):
    inline = admin.site._registry[VMRequest].inlines[0](VMRequest, admin.site)
    request = type("R", (), {"user": site.admin})()
    assert not inline.has_add_permission(request, rows[VMRequest])
    assert not inline.has_change_permission(request, rows[VMRequest])
    assert not inline.has_delete_permission(request, rows[VMRequest])


def test_a_staff_member_who_is_not_an_admin_sees_in_the_admin_what_the_portal_shows(site, rows):
    other = site.other_student
    other.is_staff = True
    other.save()
    from django.contrib.auth.models import Permission

    other.user_permissions.set(Permission.objects.filter(codename__in=[
        "view_vmrequest", "view_virtualmachine", "view_operation"]))
    client = site.client(other)
    for model in (VMRequest, VirtualMachine, Operation):
        meta = model._meta
        listing = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        assert listing.status_code == 200
        assert listing.context["cl"].result_count == 0, model
    seen = site.client(site.admin).get(reverse("admin:vms_virtualmachine_changelist"))
    assert seen.context["cl"].result_count == 1


def test_the_admin_index_offers_no_add_for_vms_requests_or_operations(site):
    index = site.client(site.admin).get(reverse("admin:index")).content.decode()
    for model in (VMRequest, VirtualMachine, Operation):
        meta = model._meta
        assert reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist") in index
        assert reverse(f"admin:{meta.app_label}_{meta.model_name}_add") not in index
