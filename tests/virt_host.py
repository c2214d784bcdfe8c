"""A libvirt test-driver host and small domains on it, for tests and bench/collection.py.

The test driver (`test://<node file>`) runs the host in-process; nothing here needs Django.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def write_node_file(path: Path, *, sockets: int = 1, cores: int = 4, threads: int = 1,
                    memory_kib: int = 2 * 1024 * 1024) -> str:
    """Write an empty test-driver host (4 CPUs and 2 GiB unless told) and return its URI."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (("mhz", 2000), ("active", sockets * cores * threads), ("nodes", 1),
                       ("sockets", sockets), ("cores", cores), ("threads", threads)):
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(memory_kib)
    path.write_text(ET.tostring(node, encoding="unicode"))
    return f"test://{path}"


def domain_xml(name: str, *, memory_mib: int, vcpus: int, disk: str, mac: str,
               balloon: bool = False) -> str:
    """Build a test-driver domain with one disk and one interface (and a balloon if told)."""
    root = ET.Element("domain", type="test")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(root, "vcpu").text = str(vcpus)
    ET.SubElement(ET.SubElement(root, "os"), "type", arch="x86_64").text = "hvm"
    devices = ET.SubElement(root, "devices")
    drive = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(drive, "source", file=disk)
    ET.SubElement(drive, "target", dev="vda", bus="virtio")
    nic = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(nic, "mac", address=mac)
    ET.SubElement(nic, "source", network="default")
    if balloon:
        ET.SubElement(devices, "memballoon", model="virtio")
    return ET.tostring(root, encoding="unicode")


def with_disk(xml: str, path: str, target: str) -> str:
    """Return the domain XML with one more file disk (virtio, at `target`)."""
    root = ET.fromstring(xml)
    disk = ET.SubElement(root.find("devices"), "disk", type="file", device="disk")
    ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "target", dev=target, bus="virtio")
    return ET.tostring(root, encoding="unicode")


def with_vnc(xml: str, port: int, password: str | None = None) -> str:
    """Return the domain XML with a VNC display on a fixed port (and password)."""
    root = ET.fromstring(xml)
    graphics = ET.SubElement(root.find("devices"), "graphics", type="vnc", port=str(port),
                             autoport="no")
    if password is not None:
        graphics.set("passwd", password)
    return ET.tostring(root, encoding="unicode")
