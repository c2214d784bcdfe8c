"""Fast tests of the libvirt adapter's networks against libvirt's test driver.

Each test gets its own host from a node file under tmp_path (see tests/hosts/conftest.py).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from hosts.virt import Hypervisor, NotFound, VirtError, get_connection
from tests.hosts.virt_helpers import VIR_ERR_NO_NETWORK, forbid_libvirt


def define_network(uri: str, name: str) -> None:
    """Define an inactive network directly, as an administrator would."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    get_connection(uri).networkDefineXML(ET.tostring(root, encoding="unicode"))


@pytest.mark.parametrize("name", ["", "Default", "net/1", "n" * 64])
def test_ensure_network_active_refuses_bad_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid network name"):
        hv.ensure_network_active(name)


# -- networks --------------------------------------------------------------------------------


def test_ensure_network_active_starts_and_autostarts_an_inactive_network(
    hv: Hypervisor, uri: str
) -> None:
    define_network(uri, "isolated")
    hv.ensure_network_active("isolated")
    net = get_connection(uri).networkLookupByName("isolated")
    assert net.isActive()
    assert net.autostart()


def test_ensure_network_active_is_a_no_op_on_an_active_network(hv: Hypervisor, uri: str) -> None:
    define_network(uri, "isolated")
    hv.ensure_network_active("isolated")
    hv.ensure_network_active("isolated")
    assert get_connection(uri).networkLookupByName("isolated").isActive()


def test_ensure_network_active_raises_not_found_for_a_missing_network(
    hv: Hypervisor,
) -> None:
    with pytest.raises(NotFound, match="network 'ghost'") as caught:
        hv.ensure_network_active("ghost")
    assert caught.value.code == VIR_ERR_NO_NETWORK
