"""Acting on reconcile findings on a real libvirtd: adopt one domain made outside the portal,
delete another with its disk."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from networking.models import PrivateIP
from operations.models import OperationKind, OperationStatus
from operations.runner import operation_run
from tests.integration.test_portal_qemu import (  # noqa: F401 - the fixture
    act,
    domstate,
    real_site,
    suffix,
    virsh,
)
from vms.models import VirtualMachine, VMState
from vms.services.adoption import orphan_domain_adopt_request
from vms.services.orphans import orphan_domain_delete_request
from vms.services.reconcile import host_reconcile

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]


def _outside_domain(site, name: str, mac: str) -> Path:
    """Define a shut off domain with virsh, on a disk of its own in the datastore's folder."""
    disk = Path(site.datastore.path) / f"{name}-own.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(Path(site.datastore.path) / "base.qcow2"), str(disk)],
                   check=True, timeout=60)
    disk.chmod(0o666)
    root = ET.Element("domain", type=site.host.accel)
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = "96"
    ET.SubElement(root, "vcpu").text = "1"
    ET.SubElement(ET.SubElement(root, "os"), "type", arch="x86_64").text = "hvm"
    devices = ET.SubElement(root, "devices")
    drive = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(drive, "driver", name="qemu", type="qcow2")
    ET.SubElement(drive, "source", file=str(disk))
    ET.SubElement(drive, "target", dev="vda", bus="virtio")
    nic = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(nic, "mac", address=mac)
    ET.SubElement(nic, "source", network=site.vlan.network_name)
    ET.SubElement(nic, "model", type="virtio")
    xml_file = Path(site.datastore.path) / f"{name}.xml"
    xml_file.write_text(ET.tostring(root, encoding="unicode"))
    virsh("define", str(xml_file), check=True)
    return disk


def _run(capture, ask):
    with capture(execute=False):
        op = ask()
    return operation_run(operation_id=op.pk)


def test_adopting_one_outside_domain_and_deleting_another(
        real_site, django_capture_on_commit_callbacks):  # noqa: F811 - the fixture
    site, capture = real_site, django_capture_on_commit_callbacks
    keep, junk = f"pt-adopt-{suffix()}", f"pt-junk-{suffix()}"
    try:
        ip = PrivateIP.objects.filter(vlan=site.vlan, vm__isnull=True).first()
        own_disk = _outside_domain(site, keep, ip.mac)
        junk_disk = _outside_domain(site, junk, "52:54:00:fe:00:01")
        host_reconcile(host=site.host)
        site.host.refresh_from_db()
        assert {keep, junk} <= set(site.host.unknown_domains)

        op = _run(capture, lambda: orphan_domain_adopt_request(
            host=site.host, domain=keep, owner=site.student, template=site.template,
            actor=site.admin))
        assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
        vm = VirtualMachine.objects.get(name=keep)
        assert (vm.owner, vm.memory_mib, PrivateIP.objects.get(vm=vm).pk) == (
            site.student, 96, ip.pk)
        assert (Path(site.datastore.path) / vm.volume_name).exists() and own_disk.exists()
        # The adopted VM is the portal's now: its owner's Start runs it on the portal's spec.
        assert act(vm, OperationKind.START, site, capture).status == OperationStatus.SUCCEEDED
        assert vm.state == VMState.RUNNING and domstate(keep) == "running"
        dumped = virsh("dumpxml", keep).stdout
        assert vm.volume_name in dumped and f"port='{vm.vnc_port}'" in dumped

        op = _run(capture, lambda: orphan_domain_delete_request(
            host=site.host, domain=junk, actor=site.admin))
        assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
        assert virsh("dominfo", junk).returncode != 0 and not junk_disk.exists()
        assert str(junk_disk) in op.message
    finally:
        for name in (keep, junk):
            virsh("destroy", name)
            virsh("undefine", name, "--nvram")
