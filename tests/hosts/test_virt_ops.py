"""Fast tests of snapshots, extra disks, clones and resizing against libvirt's test driver.

Each test gets its own host from a node file under tmp_path (see tests/hosts/test_virt.py).
The test driver keeps snapshots, clones volumes (copying the XML, not data) and resizes, but
cannot attach or detach devices at all: live hot-plug is proven in the hypervisor tier
(tests/integration/test_virt_ops_qemu.py); here the persistent-XML path is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import hosts.virt.base as virt_base
from hosts.virt import Hypervisor, NotFound, VirtError, close_all, get_connection
from tests.hosts.test_virt import (
    BAD_DOMAIN_NAMES,
    BASE,
    GIB,
    POOL,
    POOL_PATH,
    domain_xml,
    forbid_libvirt,
    write_node_file,
)

# libvirt error codes, spelled out because only hosts.virt may import libvirt.
VIR_ERR_NO_SUPPORT = 3
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_NO_STORAGE_VOL = 50
VIR_ERR_NO_DOMAIN_SNAPSHOT = 72

DISK = "/srv/portal/main/web1-data.qcow2"
OTHER_DISK = "/srv/portal/main/web1-more.qcow2"


@pytest.fixture
def uri(tmp_path: Path):
    close_all()
    yield write_node_file(tmp_path / "node.xml")
    close_all()


@pytest.fixture
def hv(uri: str) -> Hypervisor:
    return Hypervisor(uri)


@pytest.fixture
def web1(hv: Hypervisor) -> str:
    hv.define_domain(domain_xml("web1", memory_mib=128, vcpus=2))
    return "web1"


@pytest.fixture
def pool(hv: Hypervisor) -> str:
    hv.ensure_pool(POOL, POOL_PATH)
    return POOL


def persistent_xml(uri: str, name: str) -> ET.Element:
    """Return the domain's persistent definition as libvirt holds it (INACTIVE = 2)."""
    return ET.fromstring(get_connection(uri).lookupByName(name).XMLDesc(2))


def persistent_disks(uri: str, name: str) -> dict[str, str]:
    root = persistent_xml(uri, name)
    return {
        d.find("target").get("dev"): d.find("source").get("file")
        for d in root.iterfind("devices/disk")
    }


# -- snapshots -------------------------------------------------------------------------------


def test_snapshot_create_of_a_shut_off_domain_is_listed(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "snap-1", "before the upgrade")
    assert hv.snapshot_names(web1) == ["snap-1"]


def test_snapshot_create_of_a_running_domain_keeps_it_running(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.snapshot_create(web1, "snap-1")
    assert hv.snapshot_names(web1) == ["snap-1"]
    assert hv.domain(web1).state == "running"


def test_snapshot_create_is_idempotent(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "snap-1", "first")
    hv.snapshot_create(web1, "snap-1", "retried")
    assert hv.snapshot_names(web1) == ["snap-1"]


def test_snapshot_description_stays_escaped_text(hv: Hypervisor, uri: str, web1: str) -> None:
    text = "</description><evil/> & 'quotes' <name>other</name>"
    hv.snapshot_create(web1, "snap-1", text)
    dom = get_connection(uri).lookupByName(web1)
    root = ET.fromstring(dom.snapshotLookupByName("snap-1").getXMLDesc(0))
    assert root.findtext("description") == text
    assert root.findtext("name") == "snap-1"
    assert root.find("evil") is None
    assert root.find("description/evil") is None


def test_snapshot_names_are_sorted(hv: Hypervisor, web1: str) -> None:
    for name in ("snap-b", "snap-c", "snap-a"):
        hv.snapshot_create(web1, name)
    assert hv.snapshot_names(web1) == ["snap-a", "snap-b", "snap-c"]


def test_snapshot_revert_returns_the_state_the_snapshot_had(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "off")
    hv.start(web1)
    hv.snapshot_create(web1, "on")
    assert hv.snapshot_revert(web1, "off") == "shutoff"
    assert hv.domain(web1).state == "shutoff"
    assert hv.snapshot_revert(web1, "on") == "running"
    assert hv.domain(web1).state == "running"


def test_snapshot_revert_to_a_missing_snapshot_raises_not_found(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    with pytest.raises(NotFound) as caught:
        hv.snapshot_revert(web1, "nope")
    assert caught.value.code == VIR_ERR_NO_DOMAIN_SNAPSHOT
    assert f"cannot revert domain 'web1' to snapshot 'nope' on {uri}" in str(caught.value)


def test_snapshot_delete_removes_it_and_is_idempotent(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "snap-1")
    hv.snapshot_create(web1, "snap-2")
    hv.snapshot_delete(web1, "snap-1")
    hv.snapshot_delete(web1, "snap-1")
    hv.snapshot_delete(web1, "never-taken")
    assert hv.snapshot_names(web1) == ["snap-2"]


@pytest.mark.parametrize(
    ("call", "action"),
    [
        (lambda hv: hv.snapshot_create("ghost", "snap-1"), "create snapshot 'snap-1' of"),
        (lambda hv: hv.snapshot_revert("ghost", "snap-1"), "revert"),
        (lambda hv: hv.snapshot_delete("ghost", "snap-1"), "delete snapshot 'snap-1' of"),
        (lambda hv: hv.snapshot_names("ghost"), "list snapshots of"),
    ],
    ids=["create", "revert", "delete", "names"],
)
def test_snapshot_methods_on_a_missing_domain_raise_not_found(
    hv: Hypervisor, uri: str, call, action: str
) -> None:
    with pytest.raises(NotFound) as caught:
        call(hv)
    assert caught.value.code == VIR_ERR_NO_DOMAIN
    assert f"cannot {action} domain 'ghost' on {uri}" in str(caught.value)


BAD_SNAPSHOT_NAMES = ["", "Snap", "1snap", "snap_1", "snap.1", "snap 1", "../x", "s" * 64, None]


@pytest.mark.parametrize("name", BAD_SNAPSHOT_NAMES)
@pytest.mark.parametrize(
    "call",
    [
        lambda hv, n: hv.snapshot_create("web1", n),
        lambda hv, n: hv.snapshot_revert("web1", n),
        lambda hv, n: hv.snapshot_delete("web1", n),
    ],
    ids=["create", "revert", "delete"],
)
def test_snapshot_methods_refuse_bad_snapshot_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, call, name: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid snapshot name") as caught:
        call(hv, name)
    assert caught.value.code is None


@pytest.mark.parametrize("description", ["bell\x07", "nul\x00", 42, None])
def test_snapshot_create_refuses_descriptions_xml_cannot_hold_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, description: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid snapshot description"):
        hv.snapshot_create("web1", "snap-1", description)


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


# -- clones ----------------------------------------------------------------------------------


def test_clone_volume_copies_an_overlay_into_a_volume_without_backing(
    hv: Hypervisor, pool: str
) -> None:
    hv.create_overlay(pool, "web1-disk.qcow2", BASE, 10 * GIB)
    path = hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2")
    assert path == f"{POOL_PATH}/web2-disk.qcow2"
    facts = hv.inspect_image(pool, "web2-disk.qcow2")
    assert (facts.path, facts.format, facts.backing_path) == (path, "qcow2", None)
    assert facts.capacity_bytes == 10 * GIB
    assert hv.inspect_image(pool, "web1-disk.qcow2").backing_path == BASE


def test_clone_volume_is_idempotent(hv: Hypervisor, pool: str) -> None:
    hv.create_volume(pool, "web1-disk.qcow2", GIB)
    first = hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2")
    assert hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2") == first
    assert hv.list_volumes(pool) == ["web1-disk.qcow2", "web2-disk.qcow2"]


# Cloning into another pool is proven in the hypervisor tier: the test driver looks the
# source volume up in the target pool and so cannot do it.


def test_clone_volume_refuses_an_existing_target_with_a_backing_file(
    hv: Hypervisor, pool: str
) -> None:
    hv.create_volume(pool, "web1-disk.qcow2", GIB)
    hv.create_overlay(pool, "web2-disk.qcow2", BASE, GIB)
    with pytest.raises(VirtError, match="already exists as qcow2 with backing"):
        hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2")


def test_clone_volume_of_a_missing_source_raises_not_found(
    hv: Hypervisor, uri: str, pool: str
) -> None:
    with pytest.raises(NotFound) as caught:
        hv.clone_volume(pool, "ghost.qcow2", "web2-disk.qcow2")
    assert caught.value.code == VIR_ERR_NO_STORAGE_VOL
    assert (
        f"cannot clone volume 'ghost.qcow2' in pool '{POOL}' to volume 'web2-disk.qcow2' "
        f"in pool '{POOL}' on {uri}: no such volume"
    ) in str(caught.value)
    assert hv.list_volumes(pool) == []


def test_clone_volume_into_a_missing_pool_raises_not_found(hv: Hypervisor, pool: str) -> None:
    hv.create_volume(pool, "web1-disk.qcow2", GIB)
    with pytest.raises(NotFound, match="cannot clone volume 'web1-disk.qcow2' into pool 'nopool'"):
        hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2", target_pool="nopool")


def test_clone_volume_refuses_to_clone_onto_itself(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="cannot be cloned onto itself"):
        hv.clone_volume(POOL, "web1-disk.qcow2", "web1-disk.qcow2")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda hv: hv.clone_volume("Pool", "a.qcow2", "b.qcow2"), "invalid pool name"),
        (lambda hv: hv.clone_volume(POOL, "../a", "b.qcow2"), "invalid volume name"),
        (lambda hv: hv.clone_volume(POOL, "a.qcow2", "b/c"), "invalid volume name"),
        (
            lambda hv: hv.clone_volume(POOL, "a.qcow2", "b.qcow2", target_pool="x/y"),
            "invalid pool name",
        ),
    ],
    ids=["pool", "source", "new", "target_pool"],
)
def test_clone_volume_refuses_bad_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, call, message: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match=message):
        call(hv)


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
