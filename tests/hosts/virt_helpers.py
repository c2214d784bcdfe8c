"""Shared by the libvirt adapter tests (tests/hosts/test_virt_*.py): names, sizes and XML.

The fixtures that give each test its own test-driver host (`uri`, `hv`, `web1`, `pool`) are in
tests/hosts/conftest.py.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import hosts.virt.base as virt_base

# libvirt error codes, spelled out because only hosts.virt may import libvirt.
VIR_ERR_NO_SUPPORT = 3
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_NO_NETWORK = 43
VIR_ERR_NO_STORAGE_POOL = 49
VIR_ERR_NO_STORAGE_VOL = 50
VIR_ERR_NO_DOMAIN_SNAPSHOT = 72

POOL = "portal-main"
POOL_PATH = "/srv/portal/main"
BASE = "/srv/portal/main/debian-12.qcow2"
GIB = 1024**3


def write_node_file(path: Path) -> str:
    """Write a test-driver host with 4 CPUs and 2 GiB and return its URI."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (
        ("mhz", "2000"), ("model", "x86_64"), ("active", "4"), ("nodes", "1"),
        ("sockets", "1"), ("cores", "4"), ("threads", "1"),
    ):  # fmt: skip
        ET.SubElement(cpu, tag).text = value
    ET.SubElement(node, "memory").text = str(2 * 1024 * 1024)  # KiB
    path.write_text(ET.tostring(node, encoding="unicode"))
    return f"test://{path}"


def domain_xml(name: str = "web1", memory_mib: int = 128, vcpus: int = 2) -> str:
    root = ET.Element("domain", type="test")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(root, "vcpu").text = str(vcpus)
    ET.SubElement(ET.SubElement(root, "os"), "type", arch="x86_64").text = "hvm"
    return ET.tostring(root, encoding="unicode")


def forbid_libvirt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach libvirt fail the test."""

    def refuse(uri: str) -> None:
        raise AssertionError(f"libvirt was called for {uri}")

    monkeypatch.setattr(virt_base, "get_connection", refuse)


BAD_DOMAIN_NAMES = [
    "", "Web1", "1web", "-web", "web_1", "web.1", "web 1", "web/1", "../etc", "w" * 64,
    "web1\n", "wéb", None, 7,
]  # fmt: skip
