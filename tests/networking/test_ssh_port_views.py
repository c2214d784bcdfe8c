"""Pages of forwarded SSH ports: the ssh lines, asking, releasing, and who may do what."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from networking.models import PublicIP, SSHPort
from operations.models import OperationKind, OperationStatus
from tests import factories as f
from tests.networking.ssh_port_helpers import BOX, ask, box  # noqa: F401 - the box fixture
from tests.vms.test_lifecycle import install, run_pending
from vms.models import RequestKind, VirtualMachine, VMRequest

pytestmark = pytest.mark.django_db


def owned_by(site, vm, user):
    """Give the VM to the user, with no cloud-init login user of its own; faculty sees it."""
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=user, login_user="")
    VMRequest.objects.filter(pk=vm.request_id).update(faculty=site.faculty)
    vm.refresh_from_db()
    return vm


def page(site, user, vm):
    response = site.client(user).get(reverse("vms:vm_detail", args=[vm.pk]))
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_the_vm_page_shows_the_exact_ssh_line_and_a_release_button(
        site, django_capture_on_commit_callbacks, box):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    vm = owned_by(site, vm, site.student)
    body = page(site, site.student, vm)
    assert f'<code id="ssh-command">ssh -p 10000 stu@{BOX}</code>' in body
    release = reverse("vms:vm_action", args=[vm.pk, "ssh_port_release"])
    assert f'<form method="post" action="{release}" id="ssh-port-release"' in body
    assert "csrfmiddlewaretoken" in body.split('id="ssh-port-release"')[1].split("</form>")[0]
    assert 'id="ask-ssh-port"' not in body
    # A faculty member sees the line but has no Release button.
    body = page(site, site.faculty, vm)
    assert f"ssh -p 10000 stu@{BOX}" in body and 'id="ssh-port-release"' not in body


def test_the_ssh_line_names_the_vms_login_user_when_it_has_one(
        site, django_capture_on_commit_callbacks, box):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(login_user="student1")
    assert f"ssh -p 10000 student1@{BOX}" in page(site, site.admin, vm)


def test_a_vm_with_a_public_ip_shows_the_plain_ssh_line(
        site, django_capture_on_commit_callbacks, box):  # noqa: F811
    f.make_public_pool(1)
    vm, _ = install(site, django_capture_on_commit_callbacks, public_ip=True)
    vm = owned_by(site, vm, site.admin)
    public = PublicIP.objects.get(vm=vm).address
    body = page(site, site.admin, vm)
    assert f'<code id="ssh-command">ssh adm@{public}</code>' in body
    assert 'id="ask-ssh-port"' not in body and "ssh -p" not in body


def test_the_page_offers_an_ssh_port_only_when_the_portal_forwards_them(
        site, django_capture_on_commit_callbacks, box, settings):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    body = page(site, site.admin, vm)
    assert f'href="{reverse("vms:vm_change_ssh_port", args=[vm.pk])}"' in body
    assert "Ask for an SSH port" in body and 'id="ssh-command"' not in body
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": "", "ADDRESS": ""}
    assert "Ask for an SSH port" not in page(site, site.admin, vm)
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": "not-an-ip"}
    assert "Ask for an SSH port" not in page(site, site.admin, vm)  # bad settings offer none


def test_the_owner_asks_through_the_form_and_release_gives_the_port_back(
        site, django_capture_on_commit_callbacks, box):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    vm = owned_by(site, vm, site.student)
    client = site.client(site.student)
    url = reverse("vms:vm_change_ssh_port", args=[vm.pk])
    form = client.get(url).content.decode()
    assert f"An SSH port for {vm.name}" in form and "ssh -p" in form
    response = client.post(url, {"purpose": "ssh from home", "faculty": site.faculty.pk})
    req = VMRequest.objects.get(target=vm)
    assert response.status_code == 302 and response["Location"] == reverse(
        "vms:request_detail", args=[req.pk])
    assert (req.kind, req.stage) == (RequestKind.SSH_PORT, "faculty")
    with django_capture_on_commit_callbacks(execute=False):
        for approver in (site.faculty, site.orgadmin, site.admin):
            site.client(approver).post(reverse("vms:request_approve", args=[req.pk]),
                                       {"seen_stage": VMRequest.objects.get(pk=req.pk).stage})
    assert run_pending(vm).status == OperationStatus.SUCCEEDED
    assert SSHPort.objects.get(vm=vm).port == 10000
    release = reverse("vms:vm_action", args=[vm.pk, "ssh_port_release"])
    asked = client.post(release)  # first the question, saying which port goes
    assert asked.status_code == 200 and "port 10000" in asked.content.decode()
    assert SSHPort.objects.filter(vm=vm).exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(release, {"confirmed": "1"})
    assert response.status_code == 302
    op = run_pending(vm)
    assert op.kind == OperationKind.SSH_PORT_RELEASE and op.status == OperationStatus.SUCCEEDED
    assert not SSHPort.objects.filter(vm=vm).exists() and box.rules == set()


def test_a_refused_request_says_why_and_creates_nothing(
        site, django_capture_on_commit_callbacks, box):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    client = site.client(site.admin)
    response = client.post(reverse("vms:vm_change_ssh_port", args=[vm.pk]),
                           {"purpose": "again"}, follow=True)
    assert "already has a forwarded SSH port" in response.content.decode()
    assert VMRequest.objects.filter(target=vm).count() == 1


def test_another_users_vm_answers_404_and_a_viewer_cannot_ask_or_release(
        site, django_capture_on_commit_callbacks, box):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    vm = owned_by(site, vm, site.student)
    ask_url = reverse("vms:vm_change_ssh_port", args=[vm.pk])
    release_url = reverse("vms:vm_action", args=[vm.pk, "ssh_port_release"])
    assert site.client(site.faculty).get(reverse("vms:vm_detail", args=[vm.pk])).status_code \
        == 200  # a viewer, without the right to operate it
    for who in (site.other_student, site.other_orgadmin, site.faculty):
        client = site.client(who)
        assert client.get(ask_url).status_code == 404
        assert client.post(ask_url, {"purpose": "x"}).status_code == 404
        assert client.post(release_url).status_code == 404
    assert VMRequest.objects.filter(target=vm).count() == 1  # only the approved one
    assert not vm.operations.filter(kind=OperationKind.SSH_PORT_RELEASE).exists()
    assert SSHPort.objects.get(vm=vm).port == 10000


def test_the_network_overview_lists_the_ports_in_use(
        site, django_capture_on_commit_callbacks, box, settings):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    body = html.unescape(site.client(site.admin).get(reverse("networking:overview"))
                         .content.decode())
    assert "1 <span class=\"fs-5 text-body-secondary\">of 3 taken" in body
    assert f"{BOX}:10000" in body and f"{vm.private_ip.address}:22" in body
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "FORWARD_PORTS": "20-10"}
    body = site.client(site.admin).get(reverse("networking:overview")).content.decode()
    assert "PORTAL_NAT_FORWARD_PORTS" in body and "reversed" in body


def test_the_console_page_offers_the_forwarded_ssh_line_as_the_vm_page_does(
        site, django_capture_on_commit_callbacks, box):  # noqa: F811
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    vm = owned_by(site, vm, site.student)
    response = site.client(site.student).get(reverse("console:vnc", args=[vm.pk]))
    assert response.status_code == 200
    assert f"ssh -p 10000 stu@{BOX}" in html.unescape(response.content.decode())
