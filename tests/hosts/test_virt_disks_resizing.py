"""Fast tests of extra disks and resizing against libvirt's test driver.

Each test gets its own host from a node file under tmp_path (see tests/hosts/conftest.py).
The test driver resizes but cannot attach or detach devices at all: live hot-plug is proven in
the hypervisor tier (tests/integration/test_virt_ops_qemu.py); here the persistent-XML path is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import hosts.virt.base as virt_base
from hosts.virt import Hypervisor, NotFound, VirtError, get_connection
from tests.hosts.virt_helpers import (
    BAD_DOMAIN_NAMES,
    BASE,
    VIR_ERR_NO_SUPPORT,
    domain_xml,
    forbid_libvirt,
)

DISK = "/srv/portal/main/web1-data.qcow2"
OTHER_DISK = "/srv/portal/main/web1-more.qcow2"


def persistent_xml(uri: str, name: str) -> ET.Element:
    """Return the domain's persistent definition as libvirt holds it (INACTIVE = 2)."""
    return ET.fromstring(get_connection(uri).lookupByName(name).XMLDesc(2))


def persistent_disks(uri: str, name: str) -> dict[str, str]:
    root = persistent_xml(uri, name)
    return {
        d.find("target").get("dev"): d.find("source").get("file")
        for d in root.iterfind("devices/disk")
    }


# -- bad domain names for every new domain method --------------------------------------------

NEW_DOMAIN_CALLS = {
    "snapshot_create": lambda hv, d: hv.snapshot_create(d, "snap-1"),
    "snapshot_revert": lambda hv, d: hv.snapshot_revert(d, "snap-1"),
    "snapshot_delete": lambda hv, d: hv.snapshot_delete(d, "snap-1"),
    "snapshot_names": lambda hv, d: hv.snapshot_names(d),
    "attach_disk": lambda hv, d: hv.attach_disk(d, DISK, "vdb"),
    "detach_disk": lambda hv, d: hv.detach_disk(d, DISK),
    "disk_targets": lambda hv, d: hv.disk_targets(d),
    "set_resources": lambda hv, d: hv.set_resources(d, 1, 256),
}


@pytest.mark.parametrize("method", sorted(NEW_DOMAIN_CALLS))
@pytest.mark.parametrize("name", BAD_DOMAIN_NAMES)
def test_new_domain_methods_refuse_bad_domain_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, method: str, name: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid domain name"):
        NEW_DOMAIN_CALLS[method](hv, name)


# -- extra disks -----------------------------------------------------------------------------


def test_attach_disk_to_a_shut_off_domain_changes_its_persistent_xml(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    assert hv.attach_disk(web1, DISK, "vdb") == "config"
    assert persistent_disks(uri, web1) == {"vdb": DISK}
    disk = persistent_xml(uri, web1).find("devices/disk")
    assert (disk.get("type"), disk.get("device")) == ("file", "disk")
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("target").get("bus") == "virtio"
    assert hv.disk_targets(web1) == {"vdb": DISK}


def test_attach_disk_is_idempotent(hv: Hypervisor, uri: str, web1: str) -> None:
    hv.attach_disk(web1, DISK, "vdb")
    assert hv.attach_disk(web1, DISK, "vdb") == "config"
    assert persistent_disks(uri, web1) == {"vdb": DISK}


def test_attach_disk_keeps_the_vnc_password_when_it_redefines(
    hv: Hypervisor, uri: str
) -> None:
    root = ET.fromstring(domain_xml("web1"))
    ET.SubElement(ET.SubElement(root, "devices"), "graphics", type="vnc", passwd="s3cret")
    hv.define_domain(ET.tostring(root, encoding="unicode"))
    hv.attach_disk("web1", DISK, "vdb")
    assert 'passwd="s3cret"' in hv.domain_xml("web1", secure=True).replace("'", '"')


def test_attach_disk_refuses_a_target_holding_another_disk(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    hv.attach_disk(web1, DISK, "vdb")
    with pytest.raises(VirtError, match=f"vdb already holds {DISK}"):
        hv.attach_disk(web1, OTHER_DISK, "vdb")
    assert persistent_disks(uri, web1) == {"vdb": DISK}


def test_attach_disk_refuses_a_disk_attached_under_another_target(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    hv.attach_disk(web1, DISK, "vdb")
    with pytest.raises(VirtError, match="already attached as vdb"):
        hv.attach_disk(web1, DISK, "vdc")
    assert persistent_disks(uri, web1) == {"vdb": DISK}


def test_attach_disk_to_a_running_domain_reports_what_the_driver_refuses(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    hv.start(web1)
    # The test driver has no hot-plug at all; the error names action, object and host.
    with pytest.raises(VirtError, match=f"cannot attach disk {DISK} as vdb to domain 'web1' on "):
        hv.attach_disk(web1, DISK, "vdb")
    assert persistent_disks(uri, web1) == {}


def test_detach_disk_from_a_shut_off_domain_changes_its_persistent_xml(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    hv.attach_disk(web1, DISK, "vdb")
    hv.attach_disk(web1, OTHER_DISK, "vdc")
    assert hv.detach_disk(web1, DISK) == "config"
    assert persistent_disks(uri, web1) == {"vdc": OTHER_DISK}
    assert hv.detach_disk(web1, DISK) == "absent"
    assert hv.disk_targets(web1) == {"vdc": OTHER_DISK}


def test_detach_disk_of_a_disk_a_running_domain_lacks_is_absent(
    hv: Hypervisor, web1: str
) -> None:
    hv.start(web1)
    assert hv.detach_disk(web1, DISK) == "absent"


def test_disk_targets_lists_only_file_disks(hv: Hypervisor, uri: str) -> None:
    root = ET.fromstring(domain_xml("web1"))
    devices = ET.SubElement(root, "devices")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "source", file=BASE)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    cdrom = ET.SubElement(devices, "disk", type="file", device="cdrom")
    ET.SubElement(cdrom, "target", dev="sda", bus="sata")
    hv.define_domain(ET.tostring(root, encoding="unicode"))
    assert hv.disk_targets("web1") == {"vda": BASE}


@pytest.mark.parametrize(
    "call",
    [
        lambda hv: hv.attach_disk("ghost", DISK, "vdb"),
        lambda hv: hv.detach_disk("ghost", DISK),
        lambda hv: hv.disk_targets("ghost"),
    ],
    ids=["attach", "detach", "targets"],
)
def test_disk_methods_on_a_missing_domain_raise_not_found(hv: Hypervisor, call) -> None:
    with pytest.raises(NotFound, match="domain 'ghost' on test://"):
        call(hv)


@pytest.mark.parametrize("target", ["vda", "vdB", "sdb", "vd", "vdbb", "vd1", "", None, "vdb\n"])
def test_attach_disk_refuses_bad_targets_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, target: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid disk target"):
        hv.attach_disk("web1", DISK, target)


@pytest.mark.parametrize("path", ["", "data.qcow2", "/srv/../etc/shadow", "/srv//x", "/a\nb", None])
@pytest.mark.parametrize(
    "call",
    [lambda hv, p: hv.attach_disk("web1", p, "vdb"), lambda hv, p: hv.detach_disk("web1", p)],
    ids=["attach", "detach"],
)
def test_disk_methods_refuse_bad_paths_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, call, path: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid disk path"):
        call(hv, path)


# -- resizing --------------------------------------------------------------------------------


def test_set_resources_on_a_shut_off_domain_changes_its_config(hv: Hypervisor, web1: str) -> None:
    assert hv.set_resources(web1, 4, 512) == "config"
    facts = hv.domain(web1)
    assert (facts.state, facts.vcpus, facts.memory_mib) == ("shutoff", 4, 512)
    assert hv.set_resources(web1, 1, 64) == "config"
    facts = hv.domain(web1)
    assert (facts.vcpus, facts.memory_mib) == (1, 64)


def test_set_resources_writes_maximum_and_current_sizes(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    hv.set_resources(web1, 3, 256)
    root = persistent_xml(uri, web1)
    assert root.findtext("vcpu") == "3"
    assert root.find("vcpu").get("current") in (None, "3")
    assert (root.findtext("memory"), root.find("memory").get("unit")) == ("262144", "KiB")
    assert root.findtext("currentMemory") == "262144"


def test_set_resources_on_a_running_domain_within_its_maximums_is_live(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    hv.start(web1)  # 2 vCPUs, 128 MiB
    assert hv.set_resources(web1, 1, 64) == "live"
    info = get_connection(uri).lookupByName(web1).info()
    assert (info[2], info[3]) == (64 * 1024, 1)
    root = persistent_xml(uri, web1)
    assert (root.findtext("vcpu"), root.findtext("memory")) == ("1", str(64 * 1024))


def test_set_resources_beyond_the_running_maximums_waits_for_the_next_start(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    hv.start(web1)
    assert hv.set_resources(web1, 4, 512) == "next-start"
    facts = hv.domain(web1)
    assert (facts.state, facts.vcpus, facts.memory_mib) == ("running", 2, 128)
    root = persistent_xml(uri, web1)
    assert (root.findtext("vcpu"), root.findtext("memory")) == ("4", str(512 * 1024))
    hv.destroy(web1)
    facts = hv.start(web1)
    assert (facts.vcpus, facts.memory_mib) == (4, 512)


def test_set_resources_redefines_the_xml_when_the_driver_refuses_the_setters(
    hv: Hypervisor, uri: str, web1: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    libvirt = virt_base.libvirt

    def refuse(self, *args):
        exc = libvirt.libvirtError("unsupported")
        exc.err = (VIR_ERR_NO_SUPPORT, 0, "this function is not supported", 2)
        raise exc

    monkeypatch.setattr(libvirt.virDomain, "setMemoryFlags", refuse)
    assert hv.set_resources(web1, 3, 384) == "config"
    facts = hv.domain(web1)
    assert (facts.vcpus, facts.memory_mib) == (3, 384)
    root = persistent_xml(uri, web1)
    assert root.findtext("currentMemory") == str(384 * 1024)


def test_set_resources_on_a_missing_domain_raises_not_found(hv: Hypervisor, uri: str) -> None:
    with pytest.raises(NotFound, match=f"cannot resize domain 'ghost' on {uri}"):
        hv.set_resources("ghost", 1, 128)


@pytest.mark.parametrize(
    ("vcpus", "memory_mib", "message"),
    [
        (0, 128, "invalid vCPU count"),
        (257, 128, "invalid vCPU count"),
        (True, 128, "invalid vCPU count"),
        ("2", 128, "invalid vCPU count"),
        (2, 63, "invalid memory in MiB"),
        (2, 4 * 1024 * 1024 + 1, "invalid memory in MiB"),
        (2, 128.0, "invalid memory in MiB"),
        (2, None, "invalid memory in MiB"),
    ],
)
def test_set_resources_refuses_bad_sizes_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, vcpus: object, memory_mib: object, message: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match=message):
        hv.set_resources("web1", vcpus, memory_mib)
