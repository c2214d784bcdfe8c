"""The host page: one wording of the acceleration, and memory figures that say what they are."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from hosts.models import Host, accel_label
from operations.models import OperationStatus
from tests.hosts.test_host_probe_pages import fake_site, refresh  # noqa: F401 - the fixture
from tests.hosts.test_probe import NO_KVM
from tests.portal.test_rules import make_vm

pytestmark = pytest.mark.django_db


def test_a_tcg_host_is_called_the_same_on_its_page_its_history_and_the_lists(fake_site):  # noqa: F811
    fake_site.fake["kwargs"] = {"kvm_error": NO_KVM}
    op = refresh(fake_site)
    assert op.status == OperationStatus.SUCCEEDED, op.detail
    assert fake_site.host.accel == "qemu"
    assert "TCG (no KVM) acceleration" in op.message
    admin = fake_site.client(fake_site.admin)
    page = admin.get(reverse("hosts:host_detail", args=[fake_site.host.pk])).content.decode()
    assert re.search(r'id="host-accel">TCG \(no KVM\)<', page)
    assert "VMs get <strong>TCG (no KVM)</strong> acceleration" in page
    assert "TCG (no KVM) acceleration" in page  # the refresh in the host's operations
    assert "QEMU" not in page.replace("qemu&#x27;s", "")
    listing = admin.get(reverse("hosts:host_list")).content.decode()
    dashboard = admin.get(reverse("dashboard")).content.decode()
    assert "TCG (no KVM)" in listing and "TCG (no KVM)" in dashboard
    assert ">QEMU<" not in listing and ">QEMU<" not in dashboard


def test_the_probe_attempts_use_the_same_words(fake_site):  # noqa: F811
    fake_site.fake["kwargs"] = {"kvm_error": NO_KVM}
    refresh(fake_site)
    page = fake_site.client(fake_site.admin).get(
        reverse("hosts:host_detail", args=[fake_site.host.pk])).content.decode()
    tried = re.findall(r'<td class="text-nowrap">([^<·]+) ·', page)
    assert tried and set(t.strip() for t in tried) <= {"KVM", "TCG (no KVM)"}


@pytest.mark.parametrize(("accel", "label"), [
    ("kvm", "KVM"), ("qemu", "TCG (no KVM)"), ("test", "libvirt test driver"), ("", "")])
def test_every_acceleration_has_one_label(accel, label):
    assert accel_label(accel) == label


def test_memory_figures_say_which_is_which_and_add_up(site):
    Host.objects.filter(pk=site.host.pk).update(vcpus=4, cpu_overcommit=4, memory_mib=5082,
                                                memory_reserved_mib=1024, accel="kvm")
    make_vm(site, name="a")  # 1 vCPU, 512 MiB
    make_vm(site, name="b")
    page = site.client(site.admin).get(
        reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert re.search(r"Physical memory</dt><dd[^>]*>5082 MiB<", page)
    given = re.search(r'id="host-memory-given">([^<]*)<span[^>]*>([^<]*)<', page)
    assert given.group(1) == "1024 of 4058 MiB"
    assert "4058 MiB is the physical memory less 1024 MiB kept for the host" in given.group(2)
    assert "under Usage" in given.group(2)
    assert "RAM used" not in page
    vcpus = re.search(r'id="host-vcpus-given">([^<]*)<', page)
    assert vcpus.group(1) == "2 of 16"
