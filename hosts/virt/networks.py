"""Networks: libvirt networks, kept defined and active, and the DHCP host entries in them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from .base import HypervisorBase, error_code, translate
from .checks import check_network_name
from .errors import VirtError


class Networks(HypervisorBase):
    """The libvirt networks of one host; every method is safe to retry."""

    def ensure_network(self, xml: str) -> None:
        """Define and start the network described by xml unless one of that name exists."""
        root = ET.fromstring(xml)  # noqa: S314 - built by the caller with ElementTree
        name = check_network_name(root.findtext("name", ""))
        conn = self._conn()
        try:
            conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if error_code(exc) != libvirt.VIR_ERR_NO_NETWORK:
                raise translate(exc, f"cannot look up network '{name}' on {self.uri}") from exc
            with self._doing("define", f"network '{name}'"):
                conn.networkDefineXML(xml)
        self.ensure_network_active(name)

    def ensure_network_active(self, name: str) -> None:
        """Start an inactive network and mark it autostart; raise NotFound if it is missing."""
        check_network_name(name)
        conn = self._conn()
        what = f"network '{name}'"
        with self._doing("activate", what):
            net = conn.networkLookupByName(name)
            if net.isActive():
                return
        try:
            net.create()
        except libvirt.libvirtError as exc:
            # Another worker's install may have started it meanwhile.
            if not self._quietly(net.isActive):
                raise translate(exc, f"cannot activate {what} on {self.uri}") from exc
        with self._doing("activate", what):
            if net.isPersistent() and not net.autostart():
                net.setAutostart(1)

    def network_is_active(self, name: str) -> bool:
        """Return whether the network is up; raise NotFound when it is not defined."""
        check_network_name(name)
        conn = self._conn()
        with self._doing("read", f"network '{name}'"):
            return bool(conn.networkLookupByName(name).isActive())

    # --- DHCP host entries of libvirt networks ----------------------------------------------

    def network_dhcp_hosts(self, network: str) -> list[tuple[str, str, str]]:
        """Return the (mac, ip, name) DHCP host entries of the network."""
        check_network_name(network)
        with self._doing("read", f"network '{network}'"):
            xml = self._conn().networkLookupByName(network).XMLDesc(0)
        root = ET.fromstring(xml)  # noqa: S314 - XML from libvirt itself
        return [
            (h.get("mac", "").lower(), h.get("ip", ""), h.get("name", ""))
            for h in root.findall("./ip/dhcp/host")
        ]

    def network_dhcp_host_add(self, network: str, mac: str, ip: str, name: str,
                              replace: bool = False) -> list[tuple[str, str]]:
        """Add a DHCP host entry; an identical one is kept.

        An entry with the same MAC or IP but not both is refused, or with `replace` removed
        first; the (mac, ip) pairs removed are returned.
        """
        check_network_name(network)
        mac = mac.lower()
        replaced: list[tuple[str, str]] = []
        for have_mac, have_ip, have_name in self.network_dhcp_hosts(network):
            if have_mac == mac and have_ip == ip:
                return replaced
            if have_mac == mac or have_ip == ip:
                if not replace:
                    raise VirtError(
                        f"cannot add DHCP host {mac} -> {ip} to network '{network}' on "
                        f"{self.uri}: it already has {have_mac} -> {have_ip}"
                    )
                old = ET.Element("host", mac=have_mac, ip=have_ip)
                if have_name:
                    old.set("name", have_name)
                self._network_update(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, old,
                                     f"remove DHCP host {have_mac} from")
                replaced.append((have_mac, have_ip))
        entry = ET.Element("host", mac=mac, name=name, ip=ip)
        self._network_update(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, entry,
                             f"add DHCP host {mac} -> {ip} to")
        return replaced

    def network_dhcp_host_remove(self, network: str, mac: str) -> None:
        """Remove the DHCP host entry of this MAC; a missing entry is fine."""
        check_network_name(network)
        mac = mac.lower()
        for have_mac, have_ip, have_name in self.network_dhcp_hosts(network):
            if have_mac == mac:
                entry = ET.Element("host", mac=have_mac, ip=have_ip)
                if have_name:
                    entry.set("name", have_name)
                self._network_update(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, entry,
                                     f"remove DHCP host {mac} from")

    def network_dhcp_ranges(self, network: str) -> list[tuple[str, str]]:
        """Return the (start, end) dynamic DHCP ranges of the network."""
        check_network_name(network)
        with self._doing("read", f"network '{network}'"):
            xml = self._conn().networkLookupByName(network).XMLDesc(0)
        root = ET.fromstring(xml)  # noqa: S314 - XML from libvirt itself
        return [(r.get("start", ""), r.get("end", "")) for r in root.findall("./ip/dhcp/range")]

    def network_dhcp_range_set(self, network: str, start: str, end: str) -> None:
        """Make start-end the network's one dynamic DHCP range (leases never take a pool's IP)."""
        ranges = self.network_dhcp_ranges(network)
        section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE
        if (start, end) not in ranges:
            self._network_update(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                                 ET.Element("range", start=start, end=end),
                                 f"add DHCP range {start}-{end} to", section=section)
        for have_start, have_end in ranges:
            if (have_start, have_end) != (start, end):
                self._network_update(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                                     ET.Element("range", start=have_start, end=have_end),
                                     f"remove DHCP range {have_start}-{have_end} from",
                                     section=section)

    def _network_update(self, network: str, command: int, entry: ET.Element, doing: str,
                        section: int = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST) -> None:
        with self._doing(doing, f"network '{network}'"):
            net = self._conn().networkLookupByName(network)
            flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
            if net.isActive():
                flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
            net.update(command, section, -1, ET.tostring(entry, encoding="unicode"), flags)
