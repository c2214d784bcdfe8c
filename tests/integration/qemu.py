"""Helpers of the hypervisor tier: virsh, unique names and a bootable base image."""

from __future__ import annotations

import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from hosts.services import PROBE_BOOT_MEMORY_MIB, PROBE_BOOT_SETTLE_S
from hosts.virt import Hypervisor, ProbeReport
from hosts.virt.domain_xml import build_probe_xml

URI = "qemu:///system"
MIB = 1024**2
_reports: dict[tuple[str, str], ProbeReport] = {}


def probe_shape(domain_type: str, cpu_mode: str) -> str:
    return build_probe_xml(domain_type=domain_type, cpu_mode=cpu_mode)


def probed(hv: Hypervisor, boot_disk: str = "") -> ProbeReport:
    """Return how guests run on the host, probing once per test session (it takes seconds).

    Give the image the test's guest boots: on some nested hosts KVM runs the firmware and a
    spinning boot sector but stops a real bootloader, so only booting it tells.
    """
    key = (hv.uri, boot_disk)
    if key not in _reports:
        def shape(domain_type: str, cpu_mode: str) -> str:
            return build_probe_xml(domain_type=domain_type, cpu_mode=cpu_mode,
                                   boot_disk=boot_disk or None,
                                   memory_mib=PROBE_BOOT_MEMORY_MIB)

        _reports[key] = hv.probe(shape if boot_disk else probe_shape, fresh=True,
                                 settle_s=PROBE_BOOT_SETTLE_S if boot_disk else None)
    return _reports[key]


def guest_kind(hv: Hypervisor, boot_disk: str = "") -> dict[str, str]:
    """Return the DomainSpec fields (domain type, CPU mode) that run the guest on the host."""
    report = probed(hv, boot_disk)
    return {"domain_type": report.accel, "cpu_mode": report.cpu_mode}


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120, check=check
    )


def virsh_info(command: str, name: str) -> dict[str, str]:
    """Return the 'Key: value' lines of virsh pool-info / net-info as a dict."""
    lines = virsh(command, name).stdout.splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v}


def domstate(name: str) -> str:
    return virsh("domstate", name).stdout.strip()


def unique(prefix: str = "portaltest") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_base_image(workdir: Path, name: str = "base.qcow2") -> Path:
    """Write a 1 MiB disk whose boot sector spins forever, converted to qcow2."""
    raw = workdir.parent / f"{workdir.name}.raw"
    sector = bytes([0xEB, 0xFE]) + bytes(508) + b"\x55\xaa"  # jmp $ ; boot signature
    raw.write_bytes(sector + bytes(MIB - len(sector)))
    base = workdir / name
    try:
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(base)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    finally:
        raw.unlink()
    base.chmod(0o644)
    return base


def qemu_img_info(path: str) -> dict:
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", path],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout)


def make_network(workdir: Path, prefix: str, octet: int) -> tuple[str, str]:
    """Define an isolated network with DHCP on <prefix>.<octet>.0/24; return name, subnet."""
    name = unique("portaltest")[:24]
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "bridge", name=f"ptbr{uuid.uuid4().hex[:6]}")
    ip = ET.SubElement(root, "ip", address=f"{prefix}.{octet}.1", netmask="255.255.255.0")
    # Dynamic leases below .100, where the tests' pools start, as on the demo's networks.
    ET.SubElement(ET.SubElement(ip, "dhcp"), "range", start=f"{prefix}.{octet}.2",
                  end=f"{prefix}.{octet}.99")
    xml_file = workdir / f"{name}.xml"
    xml_file.write_text(ET.tostring(root, encoding="unicode"))
    virsh("net-define", str(xml_file), check=True)
    xml_file.unlink()
    return name, f"{prefix}.{octet}.0/24"
