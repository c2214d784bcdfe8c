"""The VM page's snapshot, disk, resize, clone and template controls."""

from __future__ import annotations

import pytest
from django.urls import reverse

from operations.models import OperationKind
from tests.vms.test_lifecycle import act, install, run_pending
from vms.models import RequestKind, Snapshot, VirtualMachine, VMRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    vm.refresh_from_db()
    return vm


def test_the_owner_takes_a_snapshot_from_the_page(site, vm, django_capture_on_commit_callbacks):
    client = site.client(site.student)
    page = client.get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert 'id="snapshot-form"' in page and 'id="template-form"' not in page
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("vms:snapshot_create", args=[vm.pk]),
                               {"name": "before exam", "description": "clean state"},
                               follow=True)
    assert "“Take a snapshot” on lab1 is queued." in response.content.decode()
    run_pending(vm)
    live = client.get(reverse("vms:vm_status", args=[vm.pk])).content.decode()
    assert "before exam" in live and "clean state" in live and 'data-action="revert"' in live


def test_the_snapshot_limit_shows_as_a_message(site, vm, django_capture_on_commit_callbacks,
                                              settings):
    settings.PORTAL = {**settings.PORTAL, "MAX_SNAPSHOTS": 1}
    Snapshot.objects.create(vm=vm, name="old", state="ready")
    response = site.client(site.student).post(reverse("vms:snapshot_create", args=[vm.pk]),
                                              {"name": "new"}, follow=True)
    assert "already has 1 snapshots" in response.content.decode()
    assert vm.snapshots.count() == 1


def test_the_schedule_form_sets_the_schedules(site, vm):
    site.client(site.student).post(reverse("vms:snapshot_schedule", args=[vm.pk]),
                                   {"frequencies": ["daily", "monthly"]})
    assert set(vm.snapshot_schedules.values_list("frequency", flat=True)) == {
        "daily", "monthly"}


@pytest.mark.parametrize(("url", "data", "kind"), [
    ("vms:vm_change_resize", {"vcpus": 2, "memory_mib": 1024}, RequestKind.RESIZE),
    ("vms:vm_change_disk", {"size_gib": 10}, RequestKind.DISK),
    ("vms:vm_change_clone", {"count": 2}, RequestKind.CLONE),
])
def test_change_requests_are_asked_for_through_their_forms(site, vm, url, data, kind):
    client = site.client(site.student)
    assert client.get(reverse(url, args=[vm.pk])).status_code == 200
    response = client.post(reverse(url, args=[vm.pk]),
                           {**data, "purpose": "coursework", "faculty": site.faculty.pk},
                           follow=True)
    req = VMRequest.objects.get(target=vm)
    assert (req.kind, req.stage) == (kind, "faculty")
    assert req.summary in response.content.decode().replace("&#x27;", "'")


def test_a_bad_resize_shows_the_bound(site, vm):
    response = site.client(site.student).post(
        reverse("vms:vm_change_resize", args=[vm.pk]),
        {"vcpus": 64, "memory_mib": 512, "purpose": "x", "faculty": site.faculty.pk})
    assert "Choose between 1 and 4" in response.content.decode()
    assert not VMRequest.objects.filter(target=vm).exists()


def test_admins_save_a_stopped_vm_as_template_from_the_page(
        site, vm, django_capture_on_commit_callbacks):
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    admin = site.client(site.admin)
    page = admin.get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert 'id="template-form"' in page
    with django_capture_on_commit_callbacks(execute=False):
        response = admin.post(reverse("vms:vm_save_template", args=[vm.pk]),
                              {"name": "Course image"}, follow=True)
    assert "“Save as template” on lab1 is queued." in response.content.decode()
    assert run_pending(vm).status == "succeeded"
