"""Hypervisor-tier tests of snapshots, clones, extra disks and resizing on qemu:///system.

Same ground rules as test_virt_qemu.py: own directories under /var/tmp (0755, so qemu can
reach them), own pools, an isolated network without <ip>, names portaltest-<random>, all
removed in teardown. The guest's boot sector only spins: it never answers ACPI, so it never
releases a hot-plugged disk, and it has no balloon driver.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.virt import Hypervisor, VirtError, close_all
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from tests.integration.qemu import (
    domstate,
    guest_kind,
    make_base_image,
    qemu_img_info,
    unique,
    virsh,
    virsh_info,
)

pytestmark = pytest.mark.hypervisor

MIB = 1024**2
VNC_PASSWORD = "s3cret"


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    close_all()
    yield Hypervisor("qemu:///system")
    close_all()


def _make_workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    path.chmod(0o755)  # qemu runs as libvirt-qemu and must reach the images
    return path


def _drop_pool(name: str) -> None:
    virsh("pool-destroy", name, check=False)
    virsh("pool-undefine", name, check=False)


@pytest.fixture
def pool(hv: Hypervisor) -> Iterator[tuple[str, Path]]:
    """Return (pool name, base image path) of a fresh dir pool holding a bootable base."""
    workdir = _make_workdir()
    name = unique()
    base = make_base_image(workdir)
    hv.ensure_pool(name, str(workdir))
    yield name, base
    _drop_pool(name)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def other_pool(hv: Hypervisor) -> Iterator[tuple[str, Path]]:
    """Return (pool name, directory) of a second, empty dir pool."""
    workdir = _make_workdir()
    name = unique()
    hv.ensure_pool(name, str(workdir))
    yield name, workdir
    _drop_pool(name)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def network(hv: Hypervisor) -> Iterator[str]:
    """Return the name of an active isolated network without <ip> (so no dnsmasq)."""
    name = unique()
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    hv.ensure_network(ET.tostring(root, encoding="unicode"))
    yield name
    virsh("net-destroy", name, check=False)
    virsh("net-undefine", name, check=False)


@pytest.fixture
def names(hv: Hypervisor) -> Iterator[list[str]]:
    """Collect domain names; every domain named here is removed, snapshots and all."""
    created: list[str] = []
    yield created
    for name in created:
        try:
            hv.undefine_domain(name)
        finally:
            virsh("destroy", name, check=False)
            virsh("undefine", name, "--snapshots-metadata", "--nvram", check=False)


def define(
    hv: Hypervisor,
    names: list[str],
    disk: str,
    network: str,
    *,
    vcpus: int = 1,
    memory_mib: int = 64,
) -> str:
    name = unique()
    names.append(name)
    spec = DomainSpec(
        name=name,
        uuid=str(uuid.uuid4()),
        **guest_kind(hv),
        vcpus=vcpus,
        memory_mib=memory_mib,
        disk_path=disk,
        network=network,
        vnc_password=VNC_PASSWORD,
    )
    hv.define_domain(build_domain_xml(spec))
    return name


def file_disks(xml: str) -> dict[str, str]:
    root = ET.fromstring(xml)
    return {
        d.find("target").get("dev"): d.find("source").get("file")
        for d in root.iterfind("devices/disk")
        if d.find("source") is not None
    }


def inactive_disks(name: str) -> dict[str, str]:
    return file_disks(virsh("dumpxml", "--inactive", name).stdout)


def live_disks(name: str) -> dict[str, str]:
    return file_disks(virsh("dumpxml", name).stdout)


def vnc_password(hv: Hypervisor, name: str) -> str | None:
    graphics = ET.fromstring(hv.domain_xml(name, secure=True)).find("devices/graphics")
    return graphics.get("passwd")


# -- snapshots -------------------------------------------------------------------------------


def test_revert_of_a_running_domains_snapshot_undoes_a_later_disk_and_keeps_it_running(
    hv: Hypervisor, pool: tuple[str, Path], network: str, names: list[str]
) -> None:
    pool_name, base = pool
    disk = hv.create_overlay(pool_name, "vm.qcow2", str(base), 8 * MIB)
    name = define(hv, names, disk, network)
    hv.start(name)

    hv.snapshot_create(name, "snap-1", "</description><evil/> before the marker")
    hv.snapshot_create(name, "snap-1", "retried")  # idempotent
    assert hv.snapshot_names(name) == ["snap-1"]
    assert domstate(name) == "running"
    snapshot_xml = ET.fromstring(virsh("snapshot-dumpxml", name, "snap-1").stdout)
    assert snapshot_xml.findtext("description") == "</description><evil/> before the marker"
    assert snapshot_xml.find("memory").get("snapshot") == "internal"
    assert snapshot_xml.findtext("state") == "running"

    marker = hv.create_volume(pool_name, "marker.qcow2", MIB)
    assert hv.attach_disk(name, marker, "vdb") == "live"
    assert inactive_disks(name) == {"vda": disk, "vdb": marker}

    assert hv.snapshot_revert(name, "snap-1") == "running"
    assert domstate(name) == "running"
    assert inactive_disks(name) == {"vda": disk}
    assert live_disks(name) == {"vda": disk}
    assert hv.disk_targets(name) == {"vda": disk}
    assert vnc_password(hv, name) == VNC_PASSWORD

    hv.snapshot_create(name, "snap-2")
    assert hv.snapshot_names(name) == ["snap-1", "snap-2"]
    hv.snapshot_delete(name, "snap-1")
    hv.snapshot_delete(name, "snap-1")
    assert hv.snapshot_names(name) == ["snap-2"]
    assert virsh("snapshot-list", name, "--name").stdout.split() == ["snap-2"]
    hv.snapshot_delete(name, "snap-2")
    assert hv.snapshot_names(name) == []
    # Internal snapshots live in the qcow2 file; deleting them leaves the image clean.
    hv.destroy(name)  # qemu-img may not open an image a running qemu holds locked
    assert "snapshots" not in qemu_img_info(disk)


def test_snapshot_of_a_shut_off_domain_reverts_a_running_one_to_shut_off(
    hv: Hypervisor, pool: tuple[str, Path], network: str, names: list[str]
) -> None:
    pool_name, base = pool
    disk = hv.create_overlay(pool_name, "vm.qcow2", str(base), 8 * MIB)
    name = define(hv, names, disk, network)
    hv.snapshot_create(name, "cold")
    assert [s["name"] for s in qemu_img_info(disk)["snapshots"]] == ["cold"]
    hv.start(name)
    assert hv.snapshot_revert(name, "cold") == "shutoff"
    assert domstate(name) == "shut off"
    assert vnc_password(hv, name) == VNC_PASSWORD


# -- clones ----------------------------------------------------------------------------------


def test_clone_of_a_stopped_domains_overlay_boots_a_second_domain(
    hv: Hypervisor,
    pool: tuple[str, Path],
    other_pool: tuple[str, Path],
    network: str,
    names: list[str],
) -> None:
    pool_name, base = pool
    disk = hv.create_overlay(pool_name, "first.qcow2", str(base), 8 * MIB)
    first = define(hv, names, disk, network)

    hv.start(first)
    with pytest.raises(VirtError, match='Failed to get shared "write" lock') as caught:
        hv.clone_volume(pool_name, "first.qcow2", "second.qcow2")
    assert f"cannot clone volume 'first.qcow2' in pool '{pool_name}'" in str(caught.value)
    assert not hv.volume_exists(pool_name, "second.qcow2")
    hv.destroy(first)

    copy = hv.clone_volume(pool_name, "first.qcow2", "second.qcow2")
    assert copy == str(base.parent / "second.qcow2")
    assert hv.clone_volume(pool_name, "first.qcow2", "second.qcow2") == copy
    info = qemu_img_info(copy)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 8 * MIB
    assert "backing-filename" not in info
    facts = hv.inspect_image(pool_name, "second.qcow2")
    assert (facts.format, facts.backing_path) == ("qcow2", None)

    second = define(hv, names, copy, network)
    hv.start(first)
    hv.start(second)
    assert (domstate(first), domstate(second)) == ("running", "running")
    assert hv.disk_targets(second) == {"vda": copy}

    other_name, other_dir = other_pool
    hv.destroy(first)
    elsewhere = hv.clone_volume(pool_name, "first.qcow2", "third.qcow2", target_pool=other_name)
    assert elsewhere == str(other_dir / "third.qcow2")
    assert "backing-filename" not in qemu_img_info(elsewhere)
    assert hv.list_volumes(other_name) == ["third.qcow2"]


# -- extra disks -----------------------------------------------------------------------------


def test_extra_disk_is_hot_plugged_but_a_guest_without_acpi_keeps_it_until_shut_down(
    hv: Hypervisor, pool: tuple[str, Path], network: str, names: list[str]
) -> None:
    pool_name, base = pool
    disk = hv.create_overlay(pool_name, "vm.qcow2", str(base), 8 * MIB)
    name = define(hv, names, disk, network)
    hv.start(name)

    extra = hv.create_volume(pool_name, "extra.qcow2", 4 * MIB)
    assert hv.attach_disk(name, extra, "vdb") == "live"
    assert hv.attach_disk(name, extra, "vdb") == "live"
    assert live_disks(name) == {"vda": disk, "vdb": extra}
    assert inactive_disks(name) == {"vda": disk, "vdb": extra}
    assert hv.disk_targets(name) == {"vda": disk, "vdb": extra}

    with pytest.raises(
        VirtError,
        match=r"did not release it within 1 s .*; shut the VM down and retry",
    ):
        hv.detach_disk(name, extra, unplug_timeout=1)
    assert live_disks(name) == {"vda": disk, "vdb": extra}
    assert inactive_disks(name) == {"vda": disk, "vdb": extra}

    hv.destroy(name)
    assert hv.detach_disk(name, extra) == "config"
    assert inactive_disks(name) == {"vda": disk}
    assert hv.detach_disk(name, extra) == "absent"
    assert hv.attach_disk(name, extra, "vdb") == "config"
    assert inactive_disks(name) == {"vda": disk, "vdb": extra}
    assert vnc_password(hv, name) == VNC_PASSWORD
    hv.start(name)
    assert live_disks(name) == {"vda": disk, "vdb": extra}


# -- resizing --------------------------------------------------------------------------------


def test_resize_of_a_stopped_domain_shows_in_dominfo_and_at_its_start(
    hv: Hypervisor, pool: tuple[str, Path], network: str, names: list[str]
) -> None:
    pool_name, base = pool
    disk = hv.create_overlay(pool_name, "vm.qcow2", str(base), 8 * MIB)
    name = define(hv, names, disk, network, vcpus=1, memory_mib=64)

    assert hv.set_resources(name, 2, 128) == "config"
    info = virsh_info("dominfo", name)
    assert (info["CPU(s)"], info["Max memory"], info["Used memory"]) == (
        "2", "131072 KiB", "131072 KiB",
    )  # fmt: skip
    assert vnc_password(hv, name) == VNC_PASSWORD

    facts = hv.start(name)
    assert (facts.vcpus, facts.memory_mib) == (2, 128)

    # The running domain has no headroom above its sizes, so growing waits for a restart.
    assert hv.set_resources(name, 3, 192) == "next-start"
    info = virsh_info("dominfo", name)
    assert (info["CPU(s)"], info["Max memory"]) == ("2", "131072 KiB")
    inactive = ET.fromstring(virsh("dumpxml", "--inactive", name).stdout)
    assert inactive.findtext("vcpu") == "3"
    assert (inactive.findtext("memory"), inactive.find("memory").get("unit")) == (
        str(192 * 1024), "KiB",
    )  # fmt: skip
    hv.destroy(name)
    facts = hv.start(name)
    assert (facts.vcpus, facts.memory_mib) == (3, 192)
