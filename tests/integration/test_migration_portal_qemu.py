"""Hypervisor tier: the portal's Migrate operation between this machine and a second libvirtd.

The VM is installed by the portal on qemu:///system (`test_portal_qemu.real_site`); the second
host (`second_host`) is registered and refreshed like any host, and sees the same datastore
folder, marked shared.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.models import Host
from hosts.virt import Hypervisor, close_all, get_connection
from networking.models import PrivateIP
from operations.models import OperationStatus
from operations.runner import operation_run
from tests.integration.second_host import SecondHost, second_host  # noqa: F401
from tests.integration.test_portal_qemu import install, real_site, suffix  # noqa: F401
from vms.models import VMState
from vms.services.migration import vm_migrate_request

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]


@pytest.fixture
def two_hosts(real_site, second_host: SecondHost) -> Iterator:  # noqa: F811
    """Register the second host beside the site's, seeing its datastore (shared)."""
    site = real_site
    # The same machine under another libvirtd: what the site's host refresh found holds.
    one = site.host
    hv2 = Host.objects.create(name="hv2", uri=second_host.uri, address=second_host.address,
                              accel=one.accel, cpu_mode=one.cpu_mode, vcpus=one.vcpus,
                              memory_mib=one.memory_mib,
                              memory_reserved_mib=one.memory_reserved_mib)
    site.datastore.shared = True
    site.datastore.save()
    site.datastore.hosts.add(hv2)
    there = Hypervisor(second_host.uri)
    network = site.vlan.network_name
    there.ensure_network(get_connection("qemu:///system").networkLookupByName(network)
                         .XMLDesc(0))
    yield site, hv2, there
    for dom in get_connection(second_host.uri).listAllDomains(0):
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(1 << 1)  # snapshots' metadata too
    for net in get_connection(second_host.uri).listAllNetworks(0):
        if net.isActive():
            net.destroy()
        net.undefine()
    close_all()


def _macs(hv: Hypervisor, network: str) -> set[str]:
    return {mac for mac, _ip, _name in hv.network_dhcp_hosts(network)}


def test_the_portal_moves_a_running_vm_live_with_its_address_and_a_new_vnc_port(
        two_hosts, django_capture_on_commit_callbacks):
    site, hv2, there = two_hosts
    vm, op = install(site, django_capture_on_commit_callbacks, f"pt-{suffix()}")
    assert op.status == OperationStatus.SUCCEEDED, op.message
    here, network = Hypervisor("qemu:///system"), site.vlan.network_name
    mac = PrivateIP.objects.get(vm=vm).mac
    with django_capture_on_commit_callbacks(execute=False):
        op = vm_migrate_request(vm=vm, actor=site.admin)
    assert op.host == hv2
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    vm.refresh_from_db()
    assert vm.host == hv2 and vm.state == VMState.RUNNING
    assert there.domain(vm.domain_name).state == "running"
    assert here.find_domain(vm.domain_name) is None
    assert f"port='{vm.vnc_port}'" in there.domain_xml(vm.domain_name)
    assert mac in _macs(there, network) and mac not in _macs(here, network)


def test_a_destination_without_the_network_leaves_the_vm_running_on_its_source(
        two_hosts, django_capture_on_commit_callbacks):
    site, hv2, there = two_hosts
    vm, op = install(site, django_capture_on_commit_callbacks, f"pt-{suffix()}")
    assert op.status == OperationStatus.SUCCEEDED, op.message
    port = vm.vnc_port
    net = get_connection(there.uri).networkLookupByName(site.vlan.network_name)
    net.destroy()
    net.undefine()
    with django_capture_on_commit_callbacks(execute=False):
        op = vm_migrate_request(vm=vm, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.FAILED
    vm.refresh_from_db()
    assert vm.host == site.host and vm.vnc_port == port
    assert Hypervisor("qemu:///system").domain(vm.domain_name).state == "running"
    assert there.find_domain(vm.domain_name) is None
    assert "vnc_port" not in op.arguments


@pytest.fixture
def private_datastore(two_hosts) -> Iterator:
    """Move the site's datastore to a path private to each host (not shared), base included."""
    site, hv2, there = two_hosts
    old = Path(site.datastore.path)
    path = Path(f"/var/lib/libvirt/portaltest-{suffix()}")
    path.mkdir(mode=0o755)
    shutil.copyfile(old / "base.qcow2", path / "base.qcow2")
    (path / "base.qcow2").chmod(0o644)
    site.datastore.name, site.datastore.path = f"t{suffix()}", str(path)
    site.datastore.shared = False
    site.datastore.save()
    yield site, hv2, there, path
    for uri in ("qemu:///system", there.uri):
        for action in ("pool-destroy", "pool-undefine"):
            subprocess.run(["virsh", "-c", uri, action, site.datastore.pool_name],
                           capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def test_the_portal_moves_a_running_vm_off_a_datastore_not_shared_with_its_disk(
        private_datastore, second_host, django_capture_on_commit_callbacks):  # noqa: F811
    site, hv2, there, path = private_datastore
    vm, op = install(site, django_capture_on_commit_callbacks, f"pt-{suffix()}")
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert (path / vm.volume_name).exists()
    with django_capture_on_commit_callbacks(execute=False):
        op = vm_migrate_request(vm=vm, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert op.steps == []
    vm.refresh_from_db()
    assert vm.host == hv2 and vm.state == VMState.RUNNING
    assert there.domain(vm.domain_name).state == "running"
    assert Hypervisor("qemu:///system").find_domain(vm.domain_name) is None
    # The disk is on the second host's own folder of that path, and gone from this one's.
    theirs = second_host.root / "lib" / path.relative_to("/var/lib/libvirt")
    assert (theirs / vm.volume_name).exists() and (theirs / "base.qcow2").exists()
    assert not (path / vm.volume_name).exists() and (path / "base.qcow2").exists()
