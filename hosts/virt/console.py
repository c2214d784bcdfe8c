"""Consoles of domains: where VNC listens, and the serial console through libvirt's stream."""

from __future__ import annotations

import ipaddress
import socket
import threading
import xml.etree.ElementTree as ET

import libvirt

from .base import HypervisorBase, error_code
from .checks import check_domain_name
from .connection import get_connection, is_remote
from .errors import VirtError

LOCAL_VNC_ADDRESS = "127.0.0.1"
_READ_SIZE = 4096


def vnc_listen_address(uri: str, address: str) -> str:
    """Return the IP a domain's VNC listens on: the host's management address, never 'any'.

    The local host (a URI without a network transport, or a host with no address) listens on
    127.0.0.1; another host on the IP its address names, so only the console proxy reaches it.
    """
    if not is_remote(uri) or not address:
        return LOCAL_VNC_ADDRESS
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        try:
            infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise VirtError(f"cannot resolve the host address {address!r}: {exc}") from exc
        # IPv4 first: qemu's VNC and most management networks are IPv4.
        ips = sorted((ipaddress.ip_address(info[4][0]) for info in infos),
                     key=lambda a: a.version)
        if not ips:
            raise VirtError(f"the host address {address!r} resolves to nothing") from None
        ip = ips[0]
    if ip.is_unspecified:
        raise VirtError(f"the host address {address!r} would expose VNC on every interface")
    return str(ip)


class Consoles(HypervisorBase):
    """The VNC displays of one host's domains."""

    def vnc_ports_in_use(self) -> set[int]:
        """Return the VNC ports the host's domains hold: running ones and fixed ones."""
        ports: set[int] = set()
        with self._doing("list domains of", "the host"):
            domains = self._conn().listAllDomains(0)
            for dom in domains:
                try:
                    xml = dom.XMLDesc(0)
                except libvirt.libvirtError as exc:
                    if error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                        continue  # went away while the host was listed (a transient domain)
                    raise
                root = ET.fromstring(xml)  # noqa: S314 - XML from libvirt itself
                for graphics in root.iterfind("devices/graphics"):
                    port = graphics.get("port", "-1")
                    if port.isdigit() and int(port) > 0:
                        ports.add(int(port))
        return ports


class SerialConsole:
    """The serial console of a running domain, through libvirt's console stream.

    Works over any transport libvirt has (qemu+ssh:// included): no port is opened on the
    host. Reading blocks, so callers run ``read`` in a thread; ``close`` from any thread ends
    a blocked read.
    """

    def __init__(self, uri: str, domain: str) -> None:
        """Open the domain's first console, taking it over from any stale session."""
        check_domain_name(domain)
        self.uri = uri
        self.domain = domain
        self._closed = threading.Event()
        conn = get_connection(uri)
        try:
            dom = conn.lookupByName(domain)
            self._stream = conn.newStream(0)
            dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as exc:
            raise VirtError(
                f"cannot open the serial console of domain '{domain}' on {uri}: "
                f"{exc.get_error_message()}", exc.get_error_code()) from exc

    def read(self) -> bytes:
        """Return the next bytes from the guest, or b'' once the console has ended."""
        if self._closed.is_set():
            return b""
        try:
            data = self._stream.recv(_READ_SIZE)
        except libvirt.libvirtError:
            # A closed stream (ours, or the domain stopped) ends the console.
            self.close()
            return b""
        if isinstance(data, int) or not data:
            # -2 is "try again" on a non-blocking stream; ours blocks, so any int means the end.
            self.close()
            return b""
        return data

    def write(self, data: bytes) -> None:
        """Send bytes to the guest, as if typed on its serial line."""
        if self._closed.is_set():
            raise VirtError(f"the serial console of domain '{self.domain}' is closed")
        view = memoryview(data)
        try:
            while view:
                sent = self._stream.send(bytes(view))
                if sent < 0:
                    raise VirtError(f"the serial console of domain '{self.domain}' refused input")
                view = view[sent:]
        except libvirt.libvirtError as exc:
            self.close()
            raise VirtError(f"cannot write to the serial console of domain '{self.domain}': "
                            f"{exc.get_error_message()}", exc.get_error_code()) from exc

    def close(self) -> None:
        """End the console; safe to call twice and from any thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._stream.abort()
        except libvirt.libvirtError:
            pass  # already closed by the other side

    @property
    def closed(self) -> bool:
        """Return whether the console has ended."""
        return self._closed.is_set()
