"""Destructive actions ask first, on a page of their own when there is no JavaScript."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from operations.models import Operation, OperationKind, OperationStatus
from tests import factories as f
from tests.vms.faults_helpers import approved_vm, install
from vms.models import ExtraDisk, RequestStage, Snapshot, VMState
from vms.services.workflow import vm_request_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    return vm


def ask(client, url, capture, **data):
    with capture(execute=False):
        return client.post(url, data)


def assert_confirmation_page(response, url, back, *words):
    assert response.status_code == 200
    page = response.content.decode()
    form = re.search(r'<form method="post" action="([^"]+)"[^>]*id="confirm-form">(.*?)</form>',
                     page, re.S)
    assert form is not None and form.group(1) == url
    assert 'name="csrfmiddlewaretoken"' in form.group(2)
    assert '<input type="hidden" name="confirmed" value="1">' in form.group(2)
    assert f'href="{back}" data-action="back"' in form.group(2)
    for text in words:
        assert text in page, text
    # The Content-Security-Policy forbids inline script and style.
    assert "<script>" not in page and " style=" not in page


@pytest.mark.parametrize(("action", "title", "says"), [
    ("destroy", "Force off lab1?", "like pulling the plug"),
    ("delete", "Delete lab1?", "This cannot be undone"),
    ("public_ip_release", "Release the public IP of lab1?", "can no longer be reached"),
])
def test_a_destructive_vm_action_without_confirmation_asks_and_changes_nothing(
        site, vm, django_capture_on_commit_callbacks, action, title, says):
    client = site.client(site.student if vm.owner == site.student else site.admin)
    url = reverse("vms:vm_action", args=[vm.pk, action])
    before = Operation.objects.count()
    response = ask(client, url, django_capture_on_commit_callbacks)
    assert_confirmation_page(response, url, reverse("vms:vm_detail", args=[vm.pk]), title,
                             says)
    assert Operation.objects.count() == before
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING


def test_confirmed_force_off_and_delete_are_queued(site, vm, django_capture_on_commit_callbacks):
    client = site.client(site.admin)
    response = ask(client, reverse("vms:vm_action", args=[vm.pk, "destroy"]),
                   django_capture_on_commit_callbacks, confirmed="1")
    op = vm.operations.get(kind=OperationKind.DESTROY)
    assert response.status_code == 302
    assert response["Location"] == reverse("vms:vm_detail", args=[vm.pk]) + f"?op={op.pk}"
    Operation.objects.filter(pk=op.pk).update(status=OperationStatus.SUCCEEDED)
    ask(client, reverse("vms:vm_action", args=[vm.pk, "delete"]),
        django_capture_on_commit_callbacks, confirmed="1")
    vm.refresh_from_db()
    assert vm.state == VMState.DELETING


@pytest.mark.parametrize("action", ["start", "shutdown", "reboot", "suspend"])
def test_actions_that_can_be_undone_ask_nothing(site, vm, django_capture_on_commit_callbacks,
                                                action):
    if action == "start":
        vm.state = VMState.SHUTOFF
        vm.save(update_fields=["state"])
    response = ask(site.client(site.admin), reverse("vms:vm_action", args=[vm.pk, action]),
                   django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert vm.operations.filter(kind=action, status=OperationStatus.QUEUED).exists()


def test_snapshot_revert_and_delete_ask_first(site, vm, django_capture_on_commit_callbacks):
    snap = Snapshot.objects.create(vm=vm, name="before exam", state="ready")
    client = site.client(site.admin)
    back = reverse("vms:vm_detail", args=[vm.pk])
    for name, title in (("snapshot_revert", "Revert lab1 to the snapshot “before exam”?"),
                        ("snapshot_delete", "Delete the snapshot “before exam” of lab1?")):
        url = reverse(f"vms:{name}", args=[vm.pk, snap.pk])
        assert_confirmation_page(ask(client, url, django_capture_on_commit_callbacks), url,
                                 back, title)
    assert not vm.operations.filter(kind__startswith="snapshot").exists()
    snap.refresh_from_db()
    assert snap.state == "ready"
    ask(client, reverse("vms:snapshot_delete", args=[vm.pk, snap.pk]),
        django_capture_on_commit_callbacks, confirmed="1")
    assert vm.operations.filter(kind=OperationKind.SNAPSHOT_DELETE).exists()


def test_deleting_an_extra_disk_asks_first_detaching_does_not(
        site, vm, django_capture_on_commit_callbacks):
    disk = ExtraDisk.objects.create(vm=vm, datastore=site.datastore, size_gib=3,
                                    state="attached", target="vdb")
    client = site.client(site.admin)
    url = reverse("vms:disk_delete", args=[vm.pk, disk.pk])
    assert_confirmation_page(ask(client, url, django_capture_on_commit_callbacks), url,
                             reverse("vms:vm_detail", args=[vm.pk]),
                             "Delete the 3 GiB disk of lab1?", "every file on it")
    assert not vm.operations.filter(kind=OperationKind.DISK_DELETE).exists()
    detach = ask(client, reverse("vms:disk_detach", args=[vm.pk, disk.pk]),
                 django_capture_on_commit_callbacks)
    assert detach.status_code == 302
    assert vm.operations.filter(kind=OperationKind.DISK_DETACH).exists()


def test_cancelling_a_request_asks_first(site, django_capture_on_commit_callbacks):
    req = vm_request_create(
        requester=site.student, name="lab9", template=site.template, vcpus=1, memory_mib=512,
        disk_gib=2, purpose="x", faculty=site.faculty, security_domain=site.domain)
    client = site.client(site.student)
    url = reverse("vms:request_cancel", args=[req.pk])
    page = client.get(reverse("vms:request_detail", args=[req.pk])).content.decode()
    assert re.search(rf'<form method="post" action="{url}" data-confirm="Cancel the request '
                     r'lab9\?', page)
    assert_confirmation_page(ask(client, url, django_capture_on_commit_callbacks), url,
                             reverse("vms:request_detail", args=[req.pk]),
                             "Cancel the request lab9?", "submit a new request")
    req.refresh_from_db()
    assert req.stage == RequestStage.FACULTY
    ask(client, url, django_capture_on_commit_callbacks, confirmed="1")
    req.refresh_from_db()
    assert req.stage == RequestStage.CANCELLED


def test_others_get_no_confirmation_page(site, vm, django_capture_on_commit_callbacks):
    response = ask(site.client(site.other_student),
                   reverse("vms:vm_action", args=[vm.pk, "delete"]),
                   django_capture_on_commit_callbacks)
    assert response.status_code == 404


def test_the_vm_page_marks_destructive_forms_for_the_dialog(
        site, django_capture_on_commit_callbacks):
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    Operation.objects.filter(vm=vm).update(status=OperationStatus.FAILED)
    vm.state = VMState.RUNNING
    vm.save(update_fields=["state"])
    f.make_public_pool(1)
    page = site.client(site.student).get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    for action in ("destroy", "delete"):
        url = reverse("vms:vm_action", args=[vm.pk, action])
        assert re.search(rf'action="{url}" data-confirm="[^"]+"', page), action
    shutdown = reverse("vms:vm_action", args=[vm.pk, "shutdown"])
    assert f'action="{shutdown}">' in page  # no question for a shut down
