"""DHCP host entries that hand each VM its address, behind one small interface."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

logger = logging.getLogger(__name__)
HOSTNAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")


@dataclass(frozen=True)
class DhcpEntry:
    """One fixed address: this MAC gets this IP on this network."""

    network: str
    mac: str
    ip: str
    hostname: str


class DhcpBackend(Protocol):
    """Adds and removes DHCP host entries; both are idempotent."""

    def add(self, uri: str, entry: DhcpEntry) -> None:
        """Make the entry exist."""

    def remove(self, uri: str, entry: DhcpEntry) -> None:
        """Make the entry not exist."""


class NoDhcp:
    """For networks whose addresses are configured some other way."""

    def add(self, uri: str, entry: DhcpEntry) -> None:
        """Record nothing."""
        logger.info("no DHCP backend: %s -> %s not written", entry.mac, entry.ip)

    def remove(self, uri: str, entry: DhcpEntry) -> None:
        """Record nothing."""


class LibvirtDhcp:
    """Host entries in the libvirt network of the VM's host (libvirt runs dnsmasq)."""

    def add(self, uri: str, entry: DhcpEntry) -> None:
        """Add the entry to the host's libvirt network."""
        from hosts.virt import Hypervisor

        # The portal owns its pools: an entry left for one of its addresses or MACs (by a VM
        # removed behind the portal's back) is stale, and would block the address forever.
        replaced = Hypervisor(uri).network_dhcp_host_add(entry.network, entry.mac, entry.ip,
                                                         entry.hostname, replace=True)
        for mac, ip in replaced:
            logger.warning("network %s: replaced the stale DHCP entry %s -> %s",
                           entry.network, mac, ip)

    def remove(self, uri: str, entry: DhcpEntry) -> None:
        """Remove the entry of this MAC from the host's libvirt network."""
        from hosts.virt import Hypervisor

        Hypervisor(uri).network_dhcp_host_remove(entry.network, entry.mac)


class IscDhcpSSH:
    """One file per host entry in a directory that an ISC dhcpd includes, written over SSH."""

    def __init__(self, host: object, config_dir: str, reload: list[str]) -> None:
        path = PurePosixPath(config_dir)
        if not path.is_absolute() or ".." in path.parts:
            raise ValueError(f"invalid DHCP config directory {config_dir!r}")
        if not isinstance(reload, list | tuple) or not reload or not all(
                isinstance(a, str) and a for a in reload):
            raise ValueError("the DHCP reload command must be a non-empty argv list")
        self.host = host
        self.config_dir = path
        self.reload = list(reload)

    def _path(self, entry: DhcpEntry) -> str:
        if not HOSTNAME_RE.fullmatch(entry.hostname):
            raise ValueError(f"invalid DHCP host name {entry.hostname!r}")
        return str(self.config_dir / f"{entry.hostname}.conf")

    @staticmethod
    def render(entry: DhcpEntry) -> str:
        """Return the dhcpd host block of the entry."""
        return (f"host {entry.hostname} {{ hardware ethernet {entry.mac}; "
                f"fixed-address {entry.ip}; }}\n")

    def add(self, uri: str, entry: DhcpEntry) -> None:
        """Write the entry's file (unchanged content is left alone) and reload dhcpd."""
        from hosts.remote import run

        path, text = self._path(entry), self.render(entry)
        current = run(self.host, ["cat", path], check=False)
        if current.exit_status == 0 and current.stdout == text:
            return
        run(self.host, ["mkdir", "-p", str(self.config_dir)])
        run(self.host, ["tee", path], stdin=text)
        run(self.host, self.reload)

    def remove(self, uri: str, entry: DhcpEntry) -> None:
        """Delete the entry's file, if present, and reload dhcpd."""
        from hosts.remote import run

        path = self._path(entry)
        if run(self.host, ["test", "-e", path], check=False).exit_status != 0:
            return
        run(self.host, ["rm", "-f", path])
        run(self.host, self.reload)


def backend_from_settings(config: dict) -> DhcpBackend:
    """Return the DHCP backend the settings choose."""
    kind = config.get("BACKEND", "libvirt")
    if kind == "libvirt":
        return LibvirtDhcp()
    if kind == "none":
        return NoDhcp()
    if kind == "isc-ssh":
        from hosts.remote import RemoteHost

        host = RemoteHost(address=config["ADDRESS"], port=int(config.get("PORT", 22)),
                          username=config.get("USERNAME", "root"),
                          host_key=config.get("HOST_KEY", ""),
                          key_filename=config.get("KEY_FILE") or None)
        return IscDhcpSSH(host, config.get("CONFIG_DIR", "/etc/dhcp/portal.d"),
                          config.get("RELOAD", ["systemctl", "restart", "isc-dhcp-server"]))
    raise ValueError(f"unknown DHCP backend {kind!r}: use libvirt, isc-ssh or none")
