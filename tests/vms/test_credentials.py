"""Credentials through cloud-init: chosen keys, a generated password shown once, the seed volume."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pycdlib
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.exceptions import ValidationError
from django.urls import reverse
from passlib.hash import sha512_crypt

from core.accounts.services import ssh_key_add
from hosts.virt import Hypervisor, VirtError
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from networking.models import PrivateIP
from operations.models import OperationKind, OperationStatus
from operations.runner import operation_run
from tests import factories as f
from tests.vms.test_lifecycle import act, run_pending
from vms.forms import VMRequestForm
from vms.models import RequestKind, VirtualMachine, VMState
from vms.services.credentials import generate_password, login_name_for
from vms.services.workflow import (
    vm_change_request_create,
    vm_request_approve,
    vm_request_create,
)

pytestmark = pytest.mark.django_db
URI = "test:///default"


def key_line(comment: str = "me@laptop") -> str:
    line = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


@pytest.fixture
def uploads(monkeypatch):
    """Record every volume uploaded (the test driver keeps no contents) and keep uploading."""
    seen: dict[str, bytes] = {}
    original = Hypervisor.upload_volume

    def spy(self, pool, volume, data):
        seen[volume] = data
        return original(self, pool, volume, data)

    monkeypatch.setattr(Hypervisor, "upload_volume", spy)
    return seen


def read_seed(data: bytes) -> dict[str, str]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        files = {}
        for name in ("meta-data", "user-data", "network-config"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()


def request_vm(site, capture, *, requester=None, keys=(), password=False, name="lab1",
               template=None):
    requester = requester or site.student
    req = vm_request_create(
        requester=requester, name=name, template=template or site.template, vcpus=1,
        memory_mib=512, disk_gib=2, purpose="Lab", security_domain=site.domain,
        faculty=site.faculty if requester.role == "user" else None,
        ssh_keys=list(keys), generate_password=password)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.admin)
    return VirtualMachine.objects.get(request=req)


def installed(site, capture, **kw):
    vm = request_vm(site, capture, **kw)
    op = run_pending(vm)
    vm.refresh_from_db()
    return vm, op


# --- login names and passwords ----------------------------------------------------------------

@pytest.mark.parametrize(("username", "login"), [
    ("alice", "alice"),
    ("Bob.Smith@uni.example", "bob-smith"),
    ("2fast", "fast"),
    ("root", "portal"),
    ("sudo", "portal"),
    ("systemd-network", "portal"),
    ("ÄÖÜ", "portal"),
    ("a" * 40, "a" * 32),
])
def test_the_login_user_is_the_username_made_a_valid_linux_login(username, login):
    assert login_name_for(username) == login


def test_generated_passwords_are_long_readable_and_different():
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) >= 16
        assert set(password) <= set("abcdefghijkmnpqrstuvwxyz23456789-")


# --- the request ----------------------------------------------------------------------------

def test_the_form_offers_own_keys_with_the_newest_chosen(site):
    old = ssh_key_add(owner=site.student, name="old", public_key=key_line())
    new = ssh_key_add(owner=site.student, name="new", public_key=key_line())
    ssh_key_add(owner=site.other_student, name="theirs", public_key=key_line())
    form = VMRequestForm(requester=site.student)
    assert set(form.fields["ssh_keys"].queryset) == {old, new}
    assert form.fields["ssh_keys"].initial == [new.pk]
    assert form.fields["generate_password"].initial is False
    page = site.client(site.student).get(reverse("vms:request_create")).content.decode()
    assert new.fingerprint in page and "theirs" not in page


def test_without_keys_the_form_proposes_a_password(site):
    form = VMRequestForm(requester=site.student)
    assert form.fields["generate_password"].initial is True
    page = site.client(site.student).get(reverse("vms:request_create")).content.decode()
    assert reverse("accounts:ssh_key_list") in page


def form_data(site, **extra):
    return {"name": "lab1", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
            "disk_gib": 2, "purpose": "Lab", "security_domain": site.domain.pk,
            "faculty": site.faculty.pk, **extra}


def test_the_request_keeps_the_chosen_keys_and_the_password_choice(site):
    key = ssh_key_add(owner=site.student, name="laptop", public_key=key_line())
    response = site.client(site.student).post(reverse("vms:request_create"), form_data(
        site, ssh_keys=[key.pk], generate_password="on"))
    assert response.status_code == 302
    req = site.student.vm_requests.get()
    assert req.generate_password is True
    assert req.ssh_keys == [{"name": "laptop", "fingerprint": key.fingerprint,
                             "public_key": key.public_key}]


def test_another_users_key_cannot_be_chosen(site):
    theirs = ssh_key_add(owner=site.other_student, name="theirs", public_key=key_line())
    response = site.client(site.student).post(reverse("vms:request_create"),
                                              form_data(site, ssh_keys=[theirs.pk]))
    assert response.status_code == 200 and not site.student.vm_requests.exists()
    with pytest.raises(ValidationError, match="your own SSH keys"):
        vm_request_create(requester=site.student, name="lab1", template=site.template,
                          vcpus=1, memory_mib=512, disk_gib=2, purpose="x",
                          security_domain=site.domain, faculty=site.faculty, ssh_keys=[theirs])


@pytest.mark.parametrize("extra", ["keys", "password"])
def test_a_template_without_cloud_init_gets_neither_keys_nor_password(site, extra):
    key = ssh_key_add(owner=site.student, name="laptop", public_key=key_line())
    plain = f.TemplateFactory(name="Appliance", datastore=site.datastore, cloud_init=False)
    asked = {"ssh_keys": [key.pk]} if extra == "keys" else {"generate_password": "on"}
    response = site.client(site.student).post(reverse("vms:request_create"), form_data(
        site, template=plain.pk, **asked))
    assert response.status_code == 200
    assert "does not take cloud-init" in response.content.decode()
    assert not site.student.vm_requests.exists()
    with pytest.raises(ValidationError, match="does not take cloud-init"):
        vm_request_create(requester=site.student, name="lab1", template=plain, vcpus=1,
                          memory_mib=512, disk_gib=2, purpose="x", security_domain=site.domain,
                          faculty=site.faculty, ssh_keys=[key] if extra == "keys" else [],
                          generate_password=extra == "password")


# --- the install --------------------------------------------------------------------------------

def test_install_writes_a_seed_with_user_keys_and_password_hash(
        site, django_capture_on_commit_callbacks, uploads):
    key = ssh_key_add(owner=site.student, name="laptop", public_key=key_line())
    vm, op = installed(site, django_capture_on_commit_callbacks, keys=[key], password=True)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.login_user == "stu"
    assert sha512_crypt.verify(vm.password_once, vm.password_hash)
    assert vm.password_hash.startswith("$6$")

    files = read_seed(uploads[vm.seed_volume_name])
    meta = yaml.safe_load(files["meta-data"])
    assert meta["instance-id"] == str(vm.uuid) and meta["local-hostname"] == "lab1"
    assert files["user-data"].startswith("#cloud-config\n")
    user_data = yaml.safe_load(files["user-data"])
    assert user_data["hostname"] == "lab1"
    [user] = user_data["users"]
    assert user["name"] == "stu"
    assert user["ssh_authorized_keys"] == [key.public_key]
    assert user["hashed_passwd"] == vm.password_hash and user["lock_passwd"] is False
    assert vm.password_once not in files["user-data"]
    assert PrivateIP.objects.get(vm=vm).mac in files["network-config"]

    hv = Hypervisor(URI)
    assert vm.seed_volume_name in hv.list_volumes(site.datastore.pool_name)
    root = ET.fromstring(hv.domain_xml(vm.domain_name))  # noqa: S314
    [cdrom] = [d for d in root.iterfind("devices/disk") if d.get("device") == "cdrom"]
    assert cdrom.find("source").get("file").endswith(vm.seed_volume_name)
    assert cdrom.find("readonly") is not None
    assert cdrom.find("target").attrib == {"dev": "sda", "bus": "scsi"}


def test_a_key_only_vm_gets_a_locked_password(site, django_capture_on_commit_callbacks,
                                              uploads):
    key = ssh_key_add(owner=site.student, name="laptop", public_key=key_line())
    vm, op = installed(site, django_capture_on_commit_callbacks, keys=[key])
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.password_hash == "" and vm.password_once == ""
    [user] = yaml.safe_load(read_seed(uploads[vm.seed_volume_name])["user-data"])["users"]
    assert user["lock_passwd"] is True and "hashed_passwd" not in user


def test_a_template_without_cloud_init_gets_no_seed(site, django_capture_on_commit_callbacks,
                                                    uploads):
    plain = f.TemplateFactory(name="Appliance", datastore=site.datastore, cloud_init=False)
    vm, op = installed(site, django_capture_on_commit_callbacks, template=plain)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert uploads == {}
    assert "cdrom" not in Hypervisor(URI).domain_xml(vm.domain_name)


@pytest.mark.parametrize("step", ["define_domain", "start"])
def test_a_failed_install_removes_the_seed_and_a_retry_keeps_the_password(
        site, django_capture_on_commit_callbacks, monkeypatch, uploads, step):
    from operations.requests import operation_retry

    original = getattr(Hypervisor, step)
    monkeypatch.setattr(Hypervisor, step, lambda self, *a: (_ for _ in ()).throw(
        VirtError("host refused")))
    vm, op = installed(site, django_capture_on_commit_callbacks, password=True)
    assert op.status == OperationStatus.FAILED
    assert vm.seed_volume_name in uploads
    assert vm.seed_volume_name not in Hypervisor(URI).list_volumes(site.datastore.pool_name)
    first_hash = vm.password_hash

    monkeypatch.setattr(Hypervisor, step, original)
    with django_capture_on_commit_callbacks(execute=False):
        operation_retry(operation=op, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    vm.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.password_hash == first_hash and sha512_crypt.verify(vm.password_once,
                                                                  first_hash)
    assert vm.seed_volume_name in Hypervisor(URI).list_volumes(site.datastore.pool_name)


def test_delete_removes_the_seed_and_any_unseen_password(
        site, django_capture_on_commit_callbacks):
    vm, _ = installed(site, django_capture_on_commit_callbacks, password=True)
    hv = Hypervisor(URI)
    assert vm.seed_volume_name in hv.list_volumes(site.datastore.pool_name)
    op = act(vm, OperationKind.DELETE, site.student, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.state == VMState.DELETED and vm.password_once == ""
    assert vm.seed_volume_name not in hv.list_volumes(site.datastore.pool_name)


def test_a_clone_gets_its_own_seed_with_the_same_user_and_keys(
        site, django_capture_on_commit_callbacks, uploads):
    key = ssh_key_add(owner=site.student, name="laptop", public_key=key_line())
    vm, _ = installed(site, django_capture_on_commit_callbacks, keys=[key], password=True)
    act(vm, OperationKind.DESTROY, site.student, django_capture_on_commit_callbacks)
    req = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.CLONE,
                                   purpose="copy", params={"count": 1})
    with django_capture_on_commit_callbacks(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    clone = VirtualMachine.objects.get(clone_of=vm)
    op = operation_run(operation_id=clone.operations.get().pk)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    clone.refresh_from_db()
    assert clone.login_user == vm.login_user and clone.login_keys == vm.login_keys
    assert clone.password_hash == vm.password_hash and clone.password_once == ""

    files = read_seed(uploads[clone.seed_volume_name])
    meta = yaml.safe_load(files["meta-data"])
    assert meta["instance-id"] == str(clone.uuid) != str(vm.uuid)
    assert meta["local-hostname"] == clone.name == "lab1-copy1"
    [user] = yaml.safe_load(files["user-data"])["users"]
    assert user["name"] == "stu" and user["ssh_authorized_keys"] == [key.public_key]
    assert user["hashed_passwd"] == vm.password_hash
    hv = Hypervisor(URI)
    assert clone.seed_volume_name in hv.domain_xml(clone.domain_name)
    assert vm.seed_volume_name in hv.domain_xml(vm.domain_name)


# --- the VM page ----------------------------------------------------------------------------

def test_the_page_says_how_to_log_in(site, django_capture_on_commit_callbacks):
    key = ssh_key_add(owner=site.student, name="<b>laptop</b>", public_key=key_line())
    vm, _ = installed(site, django_capture_on_commit_callbacks, keys=[key])
    ip = PrivateIP.objects.get(vm=vm).address
    for viewer in (site.student, site.faculty, site.admin):
        page = site.client(viewer).get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
        assert f"ssh stu@{ip}" in page
        assert key.fingerprint in page and "&lt;b&gt;laptop&lt;/b&gt;" in page
        assert "<b>laptop</b>" not in page


def test_the_password_is_shown_once_to_the_owner_only(site, django_capture_on_commit_callbacks):
    vm, _ = installed(site, django_capture_on_commit_callbacks, password=True)
    password, url = vm.password_once, reverse("vms:vm_password", args=[vm.pk])
    detail = reverse("vms:vm_detail", args=[vm.pk])
    for other in (site.admin, site.orgadmin, site.faculty, site.other_student):
        page = site.client(other).get(detail)
        assert password not in page.content.decode() and url not in page.content.decode()
        assert site.client(other).post(url).status_code == 404
    owner = site.client(site.student)
    page = owner.get(detail).content.decode()
    assert url in page and password not in page
    assert owner.get(url).status_code == 405

    shown = owner.post(url)
    assert shown.status_code == 200 and shown["Cache-Control"] == "no-store"
    assert password in shown.content.decode()
    assert "will not be shown again" in shown.content.decode()
    vm.refresh_from_db()
    assert vm.password_once == "" and sha512_crypt.verify(password, vm.password_hash)

    again = owner.post(url, follow=True).content.decode()
    assert password not in again and "already shown" in again
    assert url not in owner.get(detail).content.decode()


# --- the domain XML -----------------------------------------------------------------------------

def spec(**kw):
    return DomainSpec(name="lab1", uuid="6f1c7c57-4d1b-4c8b-9f3e-0c4a8f0a1b2c",
                      domain_type="qemu", vcpus=1, memory_mib=256, disk_path="/d/vm.qcow2",
                      **kw)


def test_the_seed_is_a_readonly_scsi_cdrom_and_only_when_given():
    assert "cdrom" not in build_domain_xml(spec())
    root = ET.fromstring(build_domain_xml(spec(seed_path="/d/vm-seed.iso")))  # noqa: S314
    disks = root.findall("devices/disk")
    assert [d.get("device") for d in disks] == ["disk", "cdrom"]
    cdrom = disks[1]
    assert cdrom.get("type") == "file"
    assert cdrom.find("driver").attrib == {"name": "qemu", "type": "raw"}
    assert cdrom.find("source").get("file") == "/d/vm-seed.iso"
    assert cdrom.find("target").attrib == {"dev": "sda", "bus": "scsi"}
    assert cdrom.find("readonly") is not None
    [controller] = root.findall("devices/controller[@type='scsi']")
    assert controller.get("model") == "virtio-scsi"


@pytest.mark.parametrize("path", ["seed.iso", "/d/../etc/shadow", "/d/x\n.iso"])
def test_a_bad_seed_path_is_refused(path):
    with pytest.raises(ValueError, match="seed path"):
        build_domain_xml(spec(seed_path=path))


def test_the_login_panel_follows_the_install_then_offers_the_password_once(
        site, django_capture_on_commit_callbacks):
    vm = request_vm(site, django_capture_on_commit_callbacks, password=True)
    owner = site.client(site.student)
    panel_url = reverse("vms:vm_login", args=[vm.pk])
    reveal_url = reverse("vms:vm_password", args=[vm.pk])
    page = owner.get(reverse("vms:vm_detail", args=[vm.pk])).content.decode()
    assert f'hx-get="{panel_url}"' in page  # it polls while the VM is being installed
    assert "generated when it is installed" in page and reveal_url not in page
    run_pending(vm)
    panel = owner.get(panel_url).content.decode()
    assert panel.lstrip().startswith('<div class="card mt-4" id="vm-login">')  # polling ends
    assert reveal_url in panel and f"shown once to {site.student.get_username()}" in panel
    assert site.client(site.other_student).get(panel_url).status_code == 404
