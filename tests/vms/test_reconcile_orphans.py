"""Acting on a host's orphan domains and volumes: adopt, delete, each through an operation."""

from __future__ import annotations

import pytest

from hosts.models import Host
from hosts.virt import Hypervisor
from hosts.virt.domain_xml import parse_domain_xml
from networking.models import PrivateIP
from operations.models import OperationStatus
from operations.runner import operation_run
from tests.virt_host import domain_xml, with_disk, with_vnc
from tests.vms.faults_helpers import install
from vms.models import VirtualMachine, VMState
from vms.services.adoption import orphan_domain_adopt_request
from vms.services.orphans import orphan_domain_delete_request, orphan_volume_delete_request
from vms.services.reconcile import host_reconcile

pytestmark = pytest.mark.django_db
GIB = 1024**3


def _orphan(site, name, *, volumes=("",), mac="52:54:00:00:0a:64", disks=None):
    """Define a domain outside the portal, with volumes of its own in the site's datastore."""
    hv = Hypervisor(site.host.uri)
    paths = []
    for volume in volumes:
        if volume:
            paths.append(hv.create_volume(site.datastore.pool_name, volume, GIB))
    paths += disks or []
    xml = domain_xml(name, memory_mib=384, vcpus=2, disk=paths[0], mac=mac)
    if len(paths) > 1:  # a second disk
        xml = with_disk(xml, paths[1], "vdb")
    hv.define_domain(xml)
    return hv, paths


def _run(capture, ask):
    with capture(execute=False):
        op = ask()
    return operation_run(operation_id=op.pk)


def test_adopting_a_shut_off_orphan_domain_makes_it_a_vm_of_the_owner(
        site, django_capture_on_commit_callbacks):
    hv, (disk,) = _orphan(site, "stray", volumes=("stray-disk.qcow2",))
    host_reconcile(host=site.host)
    site.host.refresh_from_db()
    assert "stray" in site.host.unknown_domains
    op = _run(django_capture_on_commit_callbacks, lambda: orphan_domain_adopt_request(
        host=site.host, domain="stray", owner=site.student, template=site.template,
        actor=site.admin))
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm = VirtualMachine.objects.get(name="stray")
    assert (vm.owner, vm.organisation, vm.vcpus, vm.memory_mib, vm.disk_gib) == (
        site.student, site.org, 2, 384, 1)
    ip = PrivateIP.objects.get(vm=vm)
    assert ip.mac == "52:54:00:00:0a:64" and vm.security_domain == site.domain
    assert vm.vnc_port is not None and vm.state == VMState.SHUTOFF
    # Redefined from the portal's spec, on the portal's copy of its disk; the old disk stays.
    parsed = parse_domain_xml(hv.domain_xml("stray"))
    assert parsed.metadata["vm-id"] == str(vm.pk) and parsed.vnc_port == vm.vnc_port
    assert parsed.disk_paths == [f"{site.datastore.path}/{vm.volume_name}"]
    assert hv.volume_exists(site.datastore.pool_name, "stray-disk.qcow2")
    assert disk in op.message and "orphan volume" in op.message
    site.host.refresh_from_db()
    assert "stray" not in site.host.unknown_domains
    page = site.client(site.student).get("/vms/")
    assert b"stray" in page.content


def test_adopting_a_domain_whose_mac_is_not_in_a_pool_is_refused_and_nothing_is_recorded(
        site, django_capture_on_commit_callbacks):
    _orphan(site, "alien", volumes=("alien.qcow2",), mac="52:54:00:aa:bb:cc")
    host_reconcile(host=site.host)
    op = _run(django_capture_on_commit_callbacks, lambda: orphan_domain_adopt_request(
        host=Host.objects.get(pk=site.host.pk), domain="alien", owner=site.student,
        template=site.template, actor=site.admin))
    assert op.status == OperationStatus.FAILED
    assert "52:54:00:aa:bb:cc" in op.message and "VLAN pools" in op.message
    assert not VirtualMachine.objects.filter(name="alien").exists()
    assert not PrivateIP.objects.filter(vm__isnull=False).exists()


def test_a_running_domain_is_recorded_as_it_is_when_its_disk_and_port_fit(
        site, django_capture_on_commit_callbacks, settings):
    volume = "vm-" + "ab" * 16 + ".qcow2"
    hv, _ = _orphan(site, "live1", volumes=(volume,))
    first, _last = settings.PORTAL["VNC_PORTS"]
    xml = with_vnc(hv.domain_xml("live1"), first + 7, "s3cret")
    hv.define_domain(xml)
    hv.start("live1")
    host_reconcile(host=site.host)
    op = _run(django_capture_on_commit_callbacks, lambda: orphan_domain_adopt_request(
        host=Host.objects.get(pk=site.host.pk), domain="live1", owner=site.faculty,
        template=site.template, actor=site.admin))
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm = VirtualMachine.objects.get(name="live1")
    assert vm.uuid.hex == "ab" * 16 and vm.volume_name == volume
    assert (vm.vnc_port, vm.vnc_password, vm.state) == (first + 7, "s3cret", VMState.RUNNING)
    assert hv.domain("live1").state == "running"


def test_a_running_domain_with_a_disk_named_otherwise_is_refused_with_what_to_do(
        site, django_capture_on_commit_callbacks):
    hv, _ = _orphan(site, "live2", volumes=("mine.qcow2",))
    hv.start("live2")
    host_reconcile(host=site.host)
    op = _run(django_capture_on_commit_callbacks, lambda: orphan_domain_adopt_request(
        host=Host.objects.get(pk=site.host.pk), domain="live2", owner=site.student,
        template=site.template, actor=site.admin))
    assert op.status == OperationStatus.FAILED and "shut the domain down" in op.message
    assert not VirtualMachine.objects.filter(name="live2").exists()
    assert hv.domain("live2").state == "running"


def test_only_admins_may_ask_and_only_for_a_domain_the_reconcile_found(site):
    from core.errors import PortalError

    host_reconcile(host=site.host)
    host = Host.objects.get(pk=site.host.pk)
    with pytest.raises(PortalError, match="may not"):
        orphan_domain_delete_request(host=host, domain="test", actor=site.orgadmin)
    with pytest.raises(PortalError, match="not among the orphan domains"):
        orphan_domain_delete_request(host=host, domain="nosuch", actor=site.admin)


def test_deleting_an_orphan_domain_keeps_the_disks_something_else_uses(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    shared = f"{site.datastore.path}/shared.qcow2"
    hv, (own, _) = _orphan(site, "junk", volumes=("junk.qcow2", "shared.qcow2"))
    hv.define_domain(domain_xml("holder", memory_mib=64, vcpus=1, disk=shared,
                                mac="52:54:00:99:00:01"))
    vm_disk = f"{site.datastore.path}/{vm.volume_name}"
    xml = with_disk(hv.domain_xml("junk"), vm_disk, "vdc")
    hv.define_domain(xml)
    hv.start("junk")
    host_reconcile(host=site.host)
    op = _run(django_capture_on_commit_callbacks, lambda: orphan_domain_delete_request(
        host=Host.objects.get(pk=site.host.pk), domain="junk", actor=site.admin))
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert hv.find_domain("junk") is None
    pool = site.datastore.pool_name
    assert not hv.volume_exists(pool, "junk.qcow2") and own in op.message
    assert hv.volume_exists(pool, "shared.qcow2") and "used by domain holder" in op.message
    assert hv.volume_exists(pool, vm.volume_name) and "template of the portal" in op.message
    assert "junk" not in Host.objects.get(pk=site.host.pk).unknown_domains


def test_deleting_an_orphan_volume_and_refusing_one_a_vm_came_to_use(
        site, django_capture_on_commit_callbacks):
    hv = Hypervisor(site.host.uri)
    pool = site.datastore.pool_name
    hv.create_volume(pool, "left.qcow2", GIB)
    hv.create_volume(pool, "vm-" + "cd" * 16 + ".qcow2", GIB)
    host_reconcile(host=site.host)
    host = Host.objects.get(pk=site.host.pk)
    left, taken = (f"{site.datastore.path}/left.qcow2",
                   f"{site.datastore.path}/vm-{'cd' * 16}.qcow2")
    assert {left, taken} <= set(host.orphan_volumes)
    op = _run(django_capture_on_commit_callbacks, lambda: orphan_volume_delete_request(
        host=host, path=left, actor=site.admin))
    assert op.status == OperationStatus.SUCCEEDED and not hv.volume_exists(pool, "left.qcow2")
    # A VM row that names the volume arrives between the report and the worker.
    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(uuid="cd" * 16)
    op = _run(django_capture_on_commit_callbacks, lambda: orphan_volume_delete_request(
        host=Host.objects.get(pk=site.host.pk), path=taken, actor=site.admin))
    assert op.status == OperationStatus.FAILED and "was kept" in op.message
    assert hv.volume_exists(pool, f"vm-{'cd' * 16}.qcow2")
