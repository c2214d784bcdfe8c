"""Fast tests of what a host refresh stores from the probe, the host page, pins and VM specs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

import hosts.services as host_services
import hosts.virt.base as virt_base
import hosts.virt.probe as probe_module
from hosts.models import Host
from hosts.virt import Hypervisor, get_connection
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests.hosts.test_probe import EPYC_NESTED, MSR_ABORT, NO_KVM, URI, FakeQemuHost


@pytest.fixture
def fake_site(site, monkeypatch: pytest.MonkeyPatch):
    """Point the site's host at a fake nested-EPYC qemu host whose guests run on the test driver."""
    monkeypatch.setattr(probe_module, "SETTLE_S", 0)
    monkeypatch.setattr(host_services, "PROBE_BOOT_SETTLE_S", 0)
    # The fake remote host has no shell to run qemu-img in (tests/hosts/test_images.py).
    monkeypatch.setattr(host_services, "template_image_check",
                        lambda *, template, host, hv: template.image_path)
    state = {"kwargs": {"refuse": EPYC_NESTED}}
    real_get = virt_base.get_connection

    def connect(uri: str):
        if uri != URI:
            return real_get(uri)
        fake = state.get("fake")
        if fake is None:
            fake = state["fake"] = FakeQemuHost("test:///default", **state["kwargs"])
        return fake

    monkeypatch.setattr(virt_base, "get_connection", connect)
    get_connection("test:///default")  # keep the site's pool and image alive
    Host.objects.filter(pk=site.host.pk).update(uri=URI, accel="", cpu_mode="")
    site.host.refresh_from_db()
    site.fake = state
    return site


def refresh(site) -> Operation:
    op = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host)
    op = operation_run(operation_id=op.pk)
    site.host.refresh_from_db()
    return op


def test_refresh_stores_acceleration_cpu_mode_and_every_attempt(fake_site) -> None:
    op = refresh(fake_site)
    host = fake_site.host
    assert op.status == OperationStatus.SUCCEEDED, op.detail
    assert "KVM acceleration with named model qemu64" in op.message
    assert (host.accel, host.cpu_mode, host.is_pinned) == ("kvm", "custom:qemu64", False)
    assert host.probed_at is not None and host.last_error == ""
    report = host.probe_report
    assert [(a["cpu_mode"], a["ok"]) for a in report["attempts"]] == [
        ("host-passthrough", False), ("host-model", False), ("custom:qemu64", True)]
    assert "failed to set MSR 0x10a" in report["attempts"][0]["reason"]


def test_the_probe_boots_a_template_read_only_and_says_which(fake_site) -> None:
    refresh(fake_site)
    assert fake_site.host.probe_report["booted"] == "Debian"
    disks = ET.fromstring(fake_site.fake["fake"].xml[0]).findall("devices/disk")
    assert len(disks) == 1
    assert disks[0].find("source").get("file") == fake_site.template.image_path
    assert disks[0].find("readonly") is not None
    assert ET.fromstring(fake_site.fake["fake"].xml[0]).findtext("memory") == "256"


def test_without_a_template_image_on_the_host_the_probe_boots_nothing(fake_site) -> None:
    Hypervisor("test:///default").delete_volume(fake_site.datastore.pool_name,
                                                fake_site.template.image)
    refresh(fake_site)
    assert fake_site.host.probe_report["booted"] == ""
    assert ET.fromstring(fake_site.fake["fake"].xml[0]).find("devices/disk") is None
    body = fake_site.client(fake_site.admin).get(
        reverse("hosts:host_detail", args=[fake_site.host.pk])).content.decode()
    assert "with no disk" in body


def test_refresh_uses_pins_as_given(fake_site) -> None:
    Host.objects.filter(pk=fake_site.host.pk).update(accel_pin="qemu")
    fake_site.host.refresh_from_db()
    op = refresh(fake_site)
    assert op.status == OperationStatus.SUCCEEDED
    assert "(pinned)" in op.message
    assert (fake_site.host.accel, fake_site.host.cpu_mode) == ("qemu", "")
    assert fake_site.host.probe_report["pinned"] is True


def test_a_host_where_no_guest_runs_takes_no_vms_and_says_why(fake_site) -> None:
    fake_site.fake["kwargs"] = {"kvm_error": NO_KVM,
                                "refuse": {("qemu", ""): "internal error: no qemu binary"}}
    op = refresh(fake_site)
    assert op.status == OperationStatus.FAILED
    assert "no acceleration ran a test guest" in op.message
    assert "no qemu binary" in op.message
    host = fake_site.host
    assert host.accel == "" and host.last_error
    assert len(host.probe_report["attempts"]) == 2


def test_host_page_shows_the_probe_and_pins_to_admins_only(fake_site) -> None:
    refresh(fake_site)
    url = reverse("hosts:host_detail", args=[fake_site.host.pk])
    body = fake_site.client(fake_site.admin).get(url).content.decode()
    assert 'id="host-refresh"' in body and 'id="host-pins"' in body
    assert "named model qemu64" in body and "host-passthrough" in body
    assert "failed to set MSR 0x10a to 0x69" in body
    assert body.count('data-ok="no"') == 2 and body.count('data-ok="yes"') == 1
    assert "in use" in body and "data-pinned" not in body
    assert fake_site.client(fake_site.student).get(url).status_code == 404


def test_the_refresh_button_queues_one_refresh(site, django_capture_on_commit_callbacks) -> None:
    url = reverse("hosts:host_refresh", args=[site.host.pk])
    admin = site.client(site.admin)
    with django_capture_on_commit_callbacks(execute=False):
        assert admin.post(url).status_code == 302
        admin.post(url)
    ops = Operation.objects.filter(host=site.host, kind=OperationKind.HOST_REFRESH)
    assert ops.count() == 1 and ops.get().requested_by == site.admin
    assert site.client(site.student).post(url).status_code == 404
    assert admin.get(url).status_code == 405


def test_pins_are_saved_from_the_host_page_and_trigger_a_probe(
        site, django_capture_on_commit_callbacks) -> None:
    url = reverse("hosts:host_refresh", args=[site.host.pk])
    admin = site.client(site.admin)
    with django_capture_on_commit_callbacks(execute=False):
        admin.post(url, {"pins": "1", "accel_pin": "kvm", "cpu_mode_pin": "custom:EPYC"})
    site.host.refresh_from_db()
    assert (site.host.accel_pin, site.host.cpu_mode_pin) == ("kvm", "custom:EPYC")
    assert Operation.objects.filter(host=site.host, kind=OperationKind.HOST_REFRESH).count() == 1
    body = admin.get(reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert "data-pinned" in body and 'value="custom:EPYC"' in body


@pytest.mark.parametrize(("accel_pin", "cpu_mode_pin", "error"), [
    ("qemu", "host-passthrough", "needs KVM"),
    ("", "custom:EPYC'/><x", "invalid CPU model"),
    ("", "passthrough", "invalid CPU mode"),
    ("xen", "", "is not a valid choice"),
])
def test_bad_pins_are_refused_and_nothing_changes(site, accel_pin, cpu_mode_pin, error) -> None:
    url = reverse("hosts:host_refresh", args=[site.host.pk])
    page = site.client(site.admin).post(url, {"pins": "1", "accel_pin": accel_pin,
                                              "cpu_mode_pin": cpu_mode_pin}, follow=True)
    assert error in page.content.decode()
    site.host.refresh_from_db()
    assert (site.host.accel_pin, site.host.cpu_mode_pin) == ("", "")
    assert not Operation.objects.filter(host=site.host).exists()


def test_changing_pins_in_django_admin_queues_a_probe(site, django_capture_on_commit_callbacks):
    url = reverse("admin:hosts_host_change", args=[site.host.pk])
    admin = site.client(site.admin)
    form = {"name": site.host.name, "uri": site.host.uri, "address": "", "status": "up",
            "cpu_overcommit": "4", "memory_reserved_mib": "1024", "ssh_host_key": "",
            "accel_pin": "", "cpu_mode_pin": "host-model"}
    with django_capture_on_commit_callbacks(execute=False):
        page = admin.post(url, form)
    assert page.status_code == 302, page.content.decode()[:2000]
    site.host.refresh_from_db()
    assert site.host.cpu_mode_pin == "host-model"
    assert Operation.objects.filter(host=site.host, kind=OperationKind.HOST_REFRESH).count() == 1


def test_vms_get_the_cpu_mode_of_their_host(site, django_capture_on_commit_callbacks) -> None:
    from tests.vms.test_lifecycle import install

    Host.objects.filter(pk=site.host.pk).update(cpu_mode="custom:EPYC")
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.detail
    cpu = ET.fromstring(Hypervisor(site.host.uri).domain_xml(vm.domain_name)).find("cpu")
    assert cpu is not None and cpu.findtext("model") == "EPYC"


def test_an_install_that_qemu_aborts_tells_the_owner_plainly_and_the_admin_everything(
        site, django_capture_on_commit_callbacks, monkeypatch, mailoutbox) -> None:
    from hosts.virt import VirtError
    from tests.vms.test_lifecycle import approved_vm, run_pending
    from vms.models import VirtualMachine

    def abort(self, name):
        raise VirtError(f"cannot start domain '{name}' on qemu:///system: {MSR_ABORT}")

    monkeypatch.setattr(Hypervisor, "start", abort)
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    with django_capture_on_commit_callbacks(execute=True):
        op = run_pending(vm)
    assert op.status == OperationStatus.FAILED
    assert "kvm_buf_set_msrs" in op.detail

    for url in (reverse("vms:vm_detail", args=[vm.pk]), reverse("vms:vm_status", args=[vm.pk]),
                reverse("vms:operation_list")):
        owner = site.client(site.student).get(url).content.decode()
        assert "could not be installed and started on its host" in owner, url
        assert "an administrator has been told" in owner
        for raw in ("kvm_buf_set_msrs", "MSR", "qemu", "Assertion", "internal error"):
            assert raw not in owner, (url, raw)
        admin = site.client(site.admin).get(url).content.decode()
        assert "could not be installed and started on its host" in admin
        assert "data-op-detail" in admin and "failed to set MSR 0x10a to 0x69" in admin, url
    told = [m for m in mailoutbox if site.admin.email in m.to]
    assert told and "kvm_buf_set_msrs" in told[0].body
    # The owner is told too, in plain words only.
    to_owner = [m for m in mailoutbox if site.student.email in m.to]
    assert len(to_owner) == 1 and "could not be installed and started" in to_owner[0].body
    for raw in ("kvm_buf_set_msrs", "MSR", "qemu", "internal error"):
        assert raw not in to_owner[0].body and raw not in to_owner[0].subject
