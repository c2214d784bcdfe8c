"""Hypervisor-tier tests of the libvirt adapter against the real qemu:///system.

Every test works in its own directory under /var/tmp (pytest's tmp_path is private to root,
but qemu runs as another user and must reach the images), its own storage pool and its own
isolated network without <ip> (so no dnsmasq), all named portaltest-<random> and removed in
fixture teardown. The `default` network and /var/lib/libvirt/images are never touched.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.virt import Hypervisor, NotFound, ProbeAttempt, VirtError
from hosts.virt.domain_xml import DomainSpec, build_domain_xml, parse_domain_xml
from tests.integration.guest import use_serial_socket, wait_for_log
from tests.integration.qemu import (
    MIB,
    domstate,
    guest_kind,
    make_base_image,
    probe_shape,
    probed,
    qemu_img_info,
    unique,
    virsh,
    virsh_info,
)

pytestmark = pytest.mark.hypervisor

@pytest.fixture
def network(workdir: Path) -> Iterator[str]:
    """Return the name of a defined but inactive isolated network without <ip>."""
    name = unique()
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    xml_file = workdir.parent / f"{workdir.name}-net.xml"
    xml_file.write_text(ET.tostring(root, encoding="unicode"))
    try:
        virsh("net-define", str(xml_file))
    finally:
        xml_file.unlink()
    yield name
    virsh("net-destroy", name, check=False)
    virsh("net-undefine", name, check=False)


def test_probe_finds_a_mode_that_runs_and_leaves_no_probe_domain(hv: Hypervisor) -> None:
    assert hv.facts().accel == ""  # nothing is claimed before a probe
    made: list[str] = []

    def shape(domain_type: str, cpu_mode: str) -> str:
        xml = probe_shape(domain_type, cpu_mode)
        made.append(ET.fromstring(xml).findtext("name"))
        return xml

    report = hv.probe(shape, fresh=True)
    assert report.accel in ("kvm", "qemu") and not report.pinned
    assert report.attempts[-1] == ProbeAttempt(report.accel, report.cpu_mode, True, "ran")
    assert all(not a.ok and a.reason for a in report.attempts[:-1])
    if report.accel == "kvm":
        assert Path("/dev/kvm").exists()
        assert report.attempts[0].cpu_mode == "host-passthrough"
    else:
        assert report.cpu_mode == "" and report.attempts[0].accel == "kvm"
    facts = hv.facts()
    assert (facts.accel, facts.cpu_mode) == (report.accel, report.cpu_mode)
    assert facts.hypervisor.startswith("QEMU ")
    assert facts.cpus >= 1
    assert facts.memory_mib > 0
    assert hv.probe(probe_shape) is report  # cached per URI
    assert 0 < len(made) <= len(report.attempts)  # skipped modes build no guest
    names = virsh("list", "--all", "--name").stdout.split()
    assert not set(made) & set(names)


def test_the_probed_mode_really_runs_a_vm_for_a_while(
    hv: Hypervisor, pool: tuple[str, Path], network: str, domain_name: str
) -> None:
    pool_name, base = pool
    hv.ensure_network_active(network)
    disk = hv.create_overlay(pool_name, f"{domain_name}.qcow2", str(base), 8 * MIB)
    kind = guest_kind(hv)
    spec = DomainSpec(name=domain_name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64,
                      disk_path=disk, network=network, **kind)
    hv.define_domain(build_domain_xml(spec))
    assert hv.start(domain_name).state == "running"
    time.sleep(2)  # qemu's vCPU set-up aborts come within a second
    assert domstate(domain_name) == "running"
    cpu = ET.fromstring(hv.domain_xml(domain_name)).find("cpu")
    if kind["cpu_mode"] in ("host-passthrough", "host-model"):
        assert cpu.get("mode") == kind["cpu_mode"]
    elif kind["cpu_mode"]:
        assert f"custom:{cpu.findtext('model')}" == kind["cpu_mode"]
    hv.destroy(domain_name)


def test_the_mode_probed_by_booting_the_demo_guest_brings_it_to_its_login_prompt(
    hv: Hypervisor, pool: tuple[str, Path], network: str, domain_name: str, guest_image: Path
) -> None:
    # Some nested hosts run the firmware under KVM but stop the guest in its bootloader
    # (a KVM emulation failure); the probe boots the image itself to find that out.
    report = probed(hv, str(guest_image))
    assert report.attempts[-1].ok and report.accel in ("kvm", "qemu")
    pool_name, _ = pool
    disk = hv.create_overlay(pool_name, f"{domain_name}.qcow2", str(guest_image), 64 * MIB)
    spec = DomainSpec(name=domain_name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=256,
                      disk_path=disk, network=network, **guest_kind(hv, str(guest_image)))
    log, sock = Path(disk).parent / "serial.log", Path(disk).parent / "serial.sock"
    hv.ensure_network_active(network)
    hv.define_domain(use_serial_socket(build_domain_xml(spec), sock, log))
    hv.start(domain_name)
    wait_for_log(log, r"login:")
    assert domstate(domain_name) == "running"
    hv.destroy(domain_name)


def test_a_pinned_mode_is_used_as_given_and_still_reported(hv: Hypervisor) -> None:
    report = hv.probe(probe_shape, accel_pin="qemu", fresh=True)
    assert (report.accel, report.cpu_mode, report.pinned) == ("qemu", "", True)
    assert ProbeAttempt("qemu", "", True, "ran") in report.attempts


def test_overlay_is_qcow2_backed_by_the_base_with_explicit_formats(
    hv: Hypervisor, pool: tuple[str, Path]
) -> None:
    pool_name, base = pool
    path = hv.create_overlay(pool_name, "disk.qcow2", str(base), 8 * MIB)
    assert path == str(base.parent / "disk.qcow2")

    info = qemu_img_info(path)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 8 * MIB
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"

    facts = hv.inspect_image(pool_name, "disk.qcow2")
    assert (facts.path, facts.format, facts.capacity_bytes, facts.backing_path) == (
        path, "qcow2", 8 * MIB, str(base),
    )  # fmt: skip
    assert hv.inspect_image(pool_name, "base.qcow2").backing_path is None

    assert hv.create_overlay(pool_name, "disk.qcow2", str(base), 8 * MIB) == path
    other = make_base_image(base.parent, "other.qcow2")
    with pytest.raises(VirtError, match="already exists with backing"):
        hv.create_overlay(pool_name, "disk.qcow2", str(other), 8 * MIB)

    hv.delete_volume(pool_name, "disk.qcow2")
    hv.delete_volume(pool_name, "disk.qcow2")
    assert not Path(path).exists()
    assert hv.list_volumes(pool_name) == ["base.qcow2", "other.qcow2"]


def test_ensure_pool_is_idempotent_and_sees_files_added_behind_libvirt(
    hv: Hypervisor, pool: tuple[str, Path]
) -> None:
    pool_name, base = pool
    hv.ensure_pool(pool_name, str(base.parent))
    info = virsh_info("pool-info", pool_name)
    assert (info["State"], info["Persistent"], info["Autostart"]) == ("running", "yes", "yes")
    make_base_image(base.parent, "late.qcow2")
    assert hv.volume_exists(pool_name, "late.qcow2")


def test_ensure_network_active_starts_an_isolated_network(hv: Hypervisor, network: str) -> None:
    hv.ensure_network_active(network)
    hv.ensure_network_active(network)
    info = virsh_info("net-info", network)
    assert (info["Active"], info["Autostart"]) == ("yes", "yes")
    with pytest.raises(NotFound):
        hv.ensure_network_active(unique())


def test_domain_lifecycle_on_real_qemu_leaves_nothing_behind(
    hv: Hypervisor, pool: tuple[str, Path], network: str, domain_name: str
) -> None:
    pool_name, base = pool
    hv.ensure_network_active(network)
    disk = hv.create_overlay(pool_name, f"{domain_name}.qcow2", str(base), 8 * MIB)
    spec = DomainSpec(
        name=domain_name,
        uuid=str(uuid.uuid4()),
        **guest_kind(hv),
        vcpus=1,
        memory_mib=64,
        disk_path=disk,
        network=network,
        mac="52:54:00:7e:57:01",
        description="</description><evil/> & 'quotes'",
        vnc_password="s3cret",
        metadata={"owner": "integration"},
    )

    defined = hv.define_domain(build_domain_xml(spec))
    assert defined.state == "shutoff"
    assert domstate(domain_name) == "shut off"

    assert hv.start(domain_name).state == "running"
    assert domstate(domain_name) == "running"
    assert hv.start(domain_name).state == "running"
    live = parse_domain_xml(hv.domain_xml(domain_name))
    assert live.vnc_port is not None and live.vnc_port >= 5900  # autoport chose one
    assert live.macs == ["52:54:00:7e:57:01"]
    assert live.metadata == {"owner": "integration"}

    assert hv.suspend(domain_name).state == "paused"
    assert domstate(domain_name) == "paused"
    assert hv.suspend(domain_name).state == "paused"
    assert hv.resume(domain_name).state == "running"
    assert domstate(domain_name) == "running"

    assert hv.reboot(domain_name).state == "running"
    assert domstate(domain_name) == "running"

    # The boot sector only spins, so the guest never answers the ACPI power button.
    with pytest.raises(VirtError, match="did not shut down within 1 s; use Force off"):
        hv.shutdown(domain_name, timeout=1)

    assert hv.destroy(domain_name).state == "shutoff"
    assert domstate(domain_name) == "shut off"
    assert hv.destroy(domain_name).state == "shutoff"
    with pytest.raises(VirtError, match="not running"):
        hv.reboot(domain_name)

    hv.undefine_domain(domain_name)
    hv.undefine_domain(domain_name)
    assert hv.find_domain(domain_name) is None
    assert virsh("dominfo", domain_name, check=False).returncode != 0

    hv.delete_volume(pool_name, f"{domain_name}.qcow2")
    assert not Path(disk).exists()
    assert hv.list_volumes(pool_name) == ["base.qcow2"]


def test_undefine_domain_forces_off_a_running_domain(
    hv: Hypervisor, pool: tuple[str, Path], network: str, domain_name: str
) -> None:
    pool_name, base = pool
    hv.ensure_network_active(network)
    disk = hv.create_overlay(pool_name, f"{domain_name}.qcow2", str(base), 8 * MIB)
    spec = DomainSpec(
        name=domain_name,
        uuid=str(uuid.uuid4()),
        **guest_kind(hv),
        vcpus=1,
        memory_mib=64,
        disk_path=disk,
        network=network,
    )
    hv.define_domain(build_domain_xml(spec))
    hv.start(domain_name)
    hv.undefine_domain(domain_name)
    assert virsh("dominfo", domain_name, check=False).returncode != 0
    hv.delete_volume(pool_name, f"{domain_name}.qcow2")
    assert not Path(disk).exists()
