"""The portal's install, lifecycle and delete on a real libvirtd with qemu."""

from __future__ import annotations

import ipaddress
import random
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.demo_image import build_template_image
from hosts.models import Host
from hosts.virt import close_all
from networking.models import PrivateIP
from networking.ranges import private_range_add
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests.integration.qemu import make_network
from vms.models import VirtualMachine, VMState
from vms.services.lifecycle import vm_action_request
from vms.services.workflow import vm_request_approve, vm_request_create

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]
URI = "qemu:///system"


def virsh(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                          timeout=120, check=check)


def suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def real_site(site) -> Iterator:
    """Point the fast tier's site at qemu:///system, a fresh datastore and an isolated network."""
    close_all()
    workdir = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    workdir.chmod(0o755)  # qemu runs as another user and must reach the images
    build_template_image(workdir / "base.qcow2", "portal hypervisor test")
    (workdir / "base.qcow2").chmod(0o644)
    octets = random.sample(range(100, 250), 2)  # a test subnet, not a secret
    nets = [make_network(workdir, "10.213", octet) for octet in octets]

    Host.objects.filter(pk=site.host.pk).update(uri=URI, accel="", vcpus=0, memory_mib=0)
    site.host.refresh_from_db()
    site.datastore.name = f"t{suffix()}"
    site.datastore.path = str(workdir)
    site.datastore.save()
    site.template.image = "base.qcow2"
    site.template.min_memory_mib = 64
    site.template.save()
    for vlan, (net, subnet) in ((site.vlan, nets[0]), (site.vlan2, nets[1])):
        vlan.network_name, vlan.subnet, vlan.attach = net, subnet, "network"
        vlan.save()
        PrivateIP.objects.filter(vlan=vlan).delete()
        base = ipaddress.IPv4Network(subnet).network_address
        private_range_add(vlan=vlan, first=str(base + 100), last=str(base + 104))
    refresh = Operation.objects.create(kind=OperationKind.HOST_REFRESH, host=site.host)
    assert operation_run(operation_id=refresh.pk).status == OperationStatus.SUCCEEDED
    site.host.refresh_from_db()
    assert site.host.accel in ("kvm", "qemu")
    try:
        yield site
    finally:
        for vm in VirtualMachine.objects.all():
            virsh("destroy", vm.domain_name)
            virsh("undefine", vm.domain_name, "--snapshots-metadata", "--nvram")
        pool = site.datastore.pool_name
        virsh("pool-destroy", pool)
        virsh("pool-undefine", pool)
        for net, _ in nets:
            virsh("net-destroy", net)
            virsh("net-undefine", net)
        shutil.rmtree(workdir, ignore_errors=True)
        close_all()


def install(site, capture, name):
    req = vm_request_create(requester=site.admin, name=name, template=site.template, vcpus=1,
                            memory_mib=64, disk_gib=1, purpose="hypervisor tier",
                            security_domain=site.domain)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    vm = VirtualMachine.objects.get(request=req)
    op = operation_run(operation_id=vm.operations.get().pk)
    vm.refresh_from_db()
    return vm, op


def act(vm, kind, site, capture):
    with capture(execute=False):
        op = vm_action_request(vm=vm, kind=kind, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    vm.refresh_from_db()
    return op


def domstate(name: str) -> str:
    return virsh("domstate", name).stdout.strip()


def test_install_runs_a_real_vm_and_delete_leaves_nothing(
        real_site, django_capture_on_commit_callbacks):
    site = real_site
    name = f"pt-{suffix()}"
    vm, op = install(site, django_capture_on_commit_callbacks, name)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.state == VMState.RUNNING
    assert domstate(name) == "running"
    disk = Path(site.datastore.path) / vm.volume_name
    info = subprocess.run(["qemu-img", "info", "--output=json", "-U", "-f", "qcow2", str(disk)],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    assert '"backing-filename-format": "qcow2"' in info
    assert str(Path(site.datastore.path) / "base.qcow2") in info
    ip = PrivateIP.objects.get(vm=vm)
    dumped = virsh("dumpxml", name).stdout
    assert ip.mac in dumped and site.vlan.network_name in dumped
    assert f"port='{vm.vnc_port}'" in dumped
    net_xml = virsh("net-dumpxml", site.vlan.network_name).stdout
    assert f"<host mac='{ip.mac}' name='{name}' ip='{ip.address}'/>" in net_xml

    steps = [
        (OperationKind.SUSPEND, VMState.PAUSED, "paused"),
        (OperationKind.RESUME, VMState.RUNNING, "running"),
        (OperationKind.REBOOT, VMState.RUNNING, "running"),
        (OperationKind.DESTROY, VMState.SHUTOFF, "shut off"),
        (OperationKind.START, VMState.RUNNING, "running"),
    ]
    for kind, state, virsh_state in steps:
        op = act(vm, kind, site, django_capture_on_commit_callbacks)
        assert op.status == OperationStatus.SUCCEEDED, (kind, op.message)
        assert vm.state == state
        assert domstate(name) == virsh_state

    op = act(vm, OperationKind.DELETE, site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.state == VMState.DELETED
    assert virsh("dominfo", name).returncode != 0
    assert not disk.exists()
    assert not PrivateIP.objects.filter(vm=vm).exists()
    assert ip.mac not in virsh("net-dumpxml", site.vlan.network_name).stdout


def test_a_guest_that_ignores_acpi_fails_shutdown_clearly_and_keeps_running(
        real_site, django_capture_on_commit_callbacks, settings):
    settings.PORTAL = {**settings.PORTAL, "SHUTDOWN_TIMEOUT": 2}
    site = real_site
    name = f"pt-{suffix()}"
    vm, op = install(site, django_capture_on_commit_callbacks, name)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    op = act(vm, OperationKind.SHUTDOWN, site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert "Force off" in op.message
    assert vm.state == VMState.RUNNING and domstate(name) == "running"


def test_a_missing_template_image_fails_the_install_and_leaves_nothing(
        real_site, django_capture_on_commit_callbacks):
    site = real_site
    (Path(site.datastore.path) / "base.qcow2").unlink()
    name = f"pt-{suffix()}"
    vm, op = install(site, django_capture_on_commit_callbacks, name)
    assert op.status == OperationStatus.FAILED
    assert "image base.qcow2 is not in datastore" in op.message, op.message
    assert vm.state == VMState.FAILED and vm.host is None
    assert virsh("dominfo", name).returncode != 0
    assert not (Path(site.datastore.path) / vm.volume_name).exists()
    assert not PrivateIP.objects.filter(vm=vm).exists()


def move(site, vm, capture):
    from vms.models import RequestKind
    from vms.services.workflow import vm_change_request_create

    req = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.NETWORK,
                                   purpose="move", security_domain=site.domain2)
    with capture(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    return operation_run(operation_id=vm.operations.get(status="queued").pk)


def test_a_stopped_vm_moves_to_another_security_domain(
        real_site, django_capture_on_commit_callbacks):
    site = real_site
    name = f"pt-{suffix()}"
    vm, op = install(site, django_capture_on_commit_callbacks, name)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    act(vm, OperationKind.DESTROY, site, django_capture_on_commit_callbacks)
    old = PrivateIP.objects.get(vm=vm)
    op = move(site, vm, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    new = PrivateIP.objects.get(vm=vm)
    assert new.vlan == site.vlan2 and new.mac != old.mac
    config = virsh("dumpxml", name, "--inactive").stdout
    assert new.mac in config and old.mac not in config and site.vlan2.network_name in config
    assert new.mac in virsh("net-dumpxml", site.vlan2.network_name).stdout
    assert old.mac not in virsh("net-dumpxml", site.vlan.network_name).stdout
    op = act(vm, OperationKind.START, site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED and domstate(name) == "running"


def test_a_running_guest_that_cannot_unplug_keeps_its_network(
        real_site, django_capture_on_commit_callbacks):
    site = real_site
    name = f"pt-{suffix()}"
    vm, op = install(site, django_capture_on_commit_callbacks, name)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    old = PrivateIP.objects.get(vm=vm)
    # The demo guest has no ACPI hot-unplug, so libvirt's detach never completes.
    op = move(site, vm, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert "did not release it" in op.detail and "shut it down and retry" in op.message
    assert list(PrivateIP.objects.filter(vm=vm)) == [old]
    for flag in ((), ("--inactive",)):
        xml = virsh("dumpxml", name, *flag).stdout
        assert old.mac in xml
    assert domstate(name) == "running"
    assert old.mac in virsh("net-dumpxml", site.vlan.network_name).stdout
    assert "<host " not in virsh("net-dumpxml", site.vlan2.network_name).stdout


def test_a_running_vm_has_cpu_and_memory_in_its_rrd_after_two_collections(
        real_site, django_capture_on_commit_callbacks):
    import time

    from monitoring.collector import host_collect, rrd_store, vm_key

    site = real_site
    vm, op = install(site, django_capture_on_commit_callbacks, f"pt-{suffix()}")
    assert op.status == OperationStatus.SUCCEEDED, op.message
    # RRD rows appear once their step has ended, so stamp the two cycles on the last two
    # step boundaries; the counters themselves are real, read seconds apart.
    step = rrd_store().step
    boundary = int(time.time()) // step * step
    host_collect(host=site.host, now=boundary - step)
    time.sleep(3)
    host_collect(host=site.host, now=boundary)
    series = rrd_store().fetch("vm", vm_key(vm), "hour")
    cpu = [v for v in series.column("cpu") if v is not None]
    memory = [v for v in series.column("memory") if v is not None]
    assert cpu and max(cpu) > 0
    assert memory and max(memory) > 0
    host = rrd_store().fetch("host", str(site.host.pk), "hour")
    assert [v for v in host.column("memory") if v]
