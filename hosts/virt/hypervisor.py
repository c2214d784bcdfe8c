"""Operations on one libvirt host: facts, domain lifecycle, storage and networks."""

from __future__ import annotations

import logging
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from .connection import cached_accel, get_connection, remember_accel
from .errors import NotFound, VirtError
from .facts import DomainFacts, HostFacts, ImageFacts
from .names import (
    check_abs_path,
    check_domain_name,
    check_network_name,
    check_pool_name,
    check_size,
    check_volume_name,
)
from .stats import (
    DomainSample,
    HostSample,
    device_targets,
    domain_sample_from_calls,
    domain_sample_from_record,
    host_sample_from_stats,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

_NOT_FOUND_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_STORAGE_VOL,
        libvirt.VIR_ERR_NO_NETWORK,
    }
)

# Codes a driver answers with when it does not know an undefine flag.
_UNSUPPORTED_CODES = frozenset(
    {
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    }
)

_UNDEFINE_FLAG_SETS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    0,
)

BACKING_FORMATS = ("qcow2", "raw")
_SHUTDOWN_POLL_S = 0.25
_SIZE_UNITS = {
    "b": 1, "bytes": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}  # fmt: skip


def _error_code(exc: libvirt.libvirtError) -> int | None:
    return exc.get_error_code()


def _translate(exc: libvirt.libvirtError, doing: str) -> VirtError:
    code = _error_code(exc)
    cls = NotFound if code in _NOT_FOUND_CODES else VirtError
    return cls(f"{doing}: {exc.get_error_message()}", code)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _state_name(dom: libvirt.virDomain) -> str:
    return DOMAIN_STATES.get(dom.state()[0], "nostate")


def _domain_facts(dom: libvirt.virDomain) -> DomainFacts:
    state, max_kib, _cur_kib, vcpus, _cpu_ns = dom.info()
    return DomainFacts(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=DOMAIN_STATES.get(state, "nostate"),
        vcpus=vcpus,
        memory_mib=max_kib // 1024,
    )


def _size_bytes(elem: ET.Element | None) -> int:
    if elem is None or not (elem.text or "").strip():
        return 0
    unit = elem.get("unit", "bytes").lower()
    return int(elem.text.strip()) * _SIZE_UNITS.get(unit, 1)


# ElementTree never fetches external entities and expat >= 2.4 caps entity expansion; the
# XML parsed here comes from libvirt or from vms.domain_xml, so the S314 warnings are noqa'd.


def _image_facts(vol: libvirt.virStorageVol) -> ImageFacts:
    root = ET.fromstring(vol.XMLDesc(0))  # noqa: S314
    fmt = root.find("target/format")
    return ImageFacts(
        path=vol.path(),
        format=fmt.get("type", "") if fmt is not None else "",
        capacity_bytes=_size_bytes(root.find("capacity")),
        backing_path=(root.findtext("backingStore/path") or "").strip() or None,
    )


def _probe_domain_xml() -> str:
    """Build the smallest KVM domain that proves KVM can actually run a guest."""
    root = ET.Element("domain", type="kvm")
    ET.SubElement(root, "name").text = f"portal-kvm-probe-{uuid.uuid4().hex[:12]}"
    ET.SubElement(root, "memory", unit="MiB").text = "32"
    ET.SubElement(root, "vcpu").text = "1"
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type").text = "hvm"
    ET.SubElement(root, "devices")
    return ET.tostring(root, encoding="unicode")


class Hypervisor:
    """One libvirt host reached through its URI; every method is safe to retry."""

    def __init__(self, uri: str) -> None:
        """Remember the URI; the connection is opened (and cached) on first use."""
        if not isinstance(uri, str) or not uri:
            raise VirtError(f"invalid libvirt URI {uri!r}")
        self.uri = uri

    def __repr__(self) -> str:
        """Return a debugging representation naming the URI."""
        return f"Hypervisor({self.uri!r})"

    # -- plumbing ---------------------------------------------------------------

    def _conn(self) -> libvirt.virConnect:
        return get_connection(self.uri)

    @contextmanager
    def _doing(self, action: str, what: str) -> Iterator[None]:
        """Translate libvirt errors into VirtError naming the action and object."""
        try:
            yield
        except libvirt.libvirtError as exc:
            raise _translate(exc, f"cannot {action} {what} on {self.uri}") from exc

    def _lookup_domain(self, name: str, action: str) -> libvirt.virDomain:
        conn = self._conn()
        with self._doing(action, f"domain '{name}'"):
            return conn.lookupByName(name)

    def _facts_of(self, dom: libvirt.virDomain, name: str) -> DomainFacts:
        with self._doing("read", f"domain '{name}'"):
            return _domain_facts(dom)

    def _lookup_pool(self, name: str, action: str) -> libvirt.virStoragePool:
        conn = self._conn()
        with self._doing(action, f"pool '{name}'"):
            return conn.storagePoolLookupByName(name)

    def _find_volume(
        self, pool: libvirt.virStoragePool, pool_name: str, volume: str
    ) -> libvirt.virStorageVol | None:
        """Return the volume, refreshing the pool once in case it appeared behind libvirt."""
        what = f"volume '{volume}' in pool '{pool_name}'"
        for attempt in range(2):
            try:
                return pool.storageVolLookupByName(volume)
            except libvirt.libvirtError as exc:
                if _error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise _translate(exc, f"cannot look up {what} on {self.uri}") from exc
            if attempt == 0:
                with self._doing("refresh", f"pool '{pool_name}'"):
                    pool.refresh(0)
        return None

    # -- host -------------------------------------------------------------------

    def facts(self) -> HostFacts:
        """Return what the host offers, probing KVM once per URI."""
        conn = self._conn()
        with self._doing("read facts of", "host"):
            _model, memory_mib, cpus, *_rest = conn.getInfo()
            driver = conn.getType()
            return HostFacts(
                hostname=conn.getHostname(),
                cpus=cpus,
                memory_mib=memory_mib,
                accel=self._accel(conn, driver),
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor=f"{driver} {_version(conn.getVersion())}",
            )

    def _accel(self, conn: libvirt.virConnect, driver: str) -> str:
        if driver.upper() == "TEST":
            return "test"
        accel = cached_accel(self.uri)
        if accel is None:
            accel = "kvm" if self._kvm_works(conn) else "qemu"
            remember_accel(self.uri, accel)
        return accel

    def _kvm_works(self, conn: libvirt.virConnect) -> bool:
        """Return whether a KVM guest really starts; /dev/kvm may exist yet be unusable."""
        try:
            conn.getDomainCapabilities(None, None, None, "kvm", 0)
        except libvirt.libvirtError as exc:
            log.info("no KVM on %s: %s", self.uri, exc.get_error_message())
            return False
        flags = libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY
        try:
            dom = conn.createXML(_probe_domain_xml(), flags)
        except libvirt.libvirtError as exc:
            log.info("KVM guest does not start on %s: %s", self.uri, exc.get_error_message())
            return False
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            # AUTODESTROY removes it when the connection closes, so this is not a leak.
            log.warning("cannot destroy KVM probe on %s: %s", self.uri, exc.get_error_message())
        return True

    # -- domains: reading ---------------------------------------------------------

    def list_domains(self) -> list[DomainFacts]:
        """Return every domain on the host, sorted by name."""
        conn = self._conn()
        with self._doing("list", "domains"):
            doms = conn.listAllDomains(0)
        found = []
        for dom in doms:
            try:
                found.append(_domain_facts(dom))
            except libvirt.libvirtError as exc:
                # A domain undefined between listing and reading is simply gone.
                if _error_code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                    raise _translate(exc, f"cannot list domains on {self.uri}") from exc
        return sorted(found, key=lambda f: f.name)

    def find_domain(self, name: str) -> DomainFacts | None:
        """Return the domain's facts, or None when it does not exist."""
        try:
            return self.domain(name)
        except NotFound:
            return None

    def domain(self, name: str) -> DomainFacts:
        """Return the domain's facts; raise NotFound when it does not exist."""
        check_domain_name(name)
        return self._facts_of(self._lookup_domain(name, "look up"), name)

    def domain_xml(self, name: str, secure: bool = False) -> str:
        """Return the domain's XML; secure includes secrets such as the VNC password."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "read XML of")
        with self._doing("read XML of", f"domain '{name}'"):
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE if secure else 0)

    # -- domains: changing --------------------------------------------------------

    def define_domain(self, xml: str) -> DomainFacts:
        """Define (or redefine) a persistent domain from XML."""
        try:
            root = ET.fromstring(xml)  # noqa: S314
        except (ET.ParseError, TypeError) as exc:
            raise VirtError(f"invalid domain XML: {exc}") from exc
        if root.tag != "domain":
            raise VirtError(f"invalid domain XML: root element is <{root.tag}>, not <domain>")
        name = check_domain_name((root.findtext("name") or "").strip())
        conn = self._conn()
        with self._doing("define", f"domain '{name}'"):
            dom = conn.defineXML(xml)
        return self._facts_of(dom, name)

    def start(self, name: str) -> DomainFacts:
        """Start a shut-off domain or resume a paused one; a running one is left alone."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "start")
        with self._doing("start", f"domain '{name}'"):
            state = _state_name(dom)
            if state == "paused":
                dom.resume()
            elif state == "pmsuspended":
                dom.pMWakeup(0)
            elif state in ("shutdown", "crashed"):
                raise VirtError(
                    f"cannot start domain '{name}' on {self.uri}: it is {state}; "
                    "use Force off first"
                )
            elif not dom.isActive():
                dom.create()
        return self._facts_of(dom, name)

    def shutdown(self, name: str, timeout: float = 0) -> DomainFacts:
        """Ask the guest to power off by ACPI; with timeout > 0 wait until it is off."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "shut down")
        with self._doing("shut down", f"domain '{name}'"):
            state = _state_name(dom)
            if not dom.isActive():
                return _domain_facts(dom)
            if state == "paused":
                # A paused guest cannot see the ACPI button; qemu would refuse with less clarity.
                raise VirtError(
                    f"cannot shut down domain '{name}' on {self.uri}: it is paused; "
                    "resume it first or use Force off"
                )
            dom.shutdown()
        if timeout > 0:
            deadline = time.monotonic() + timeout
            while True:
                with self._doing("shut down", f"domain '{name}'"):
                    if not dom.isActive():
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise VirtError(
                        f"domain '{name}' on {self.uri} did not shut down within "
                        f"{timeout:g} s; use Force off"
                    )
                time.sleep(min(_SHUTDOWN_POLL_S, remaining))
        return self._facts_of(dom, name)

    def destroy(self, name: str) -> DomainFacts:
        """Force the domain off; an already shut-off domain is left alone."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "force off")
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            # It may have powered off by itself between the check and the destroy.
            if _error_code(exc) != libvirt.VIR_ERR_OPERATION_INVALID or dom.isActive():
                raise _translate(exc, f"cannot force off domain '{name}' on {self.uri}") from exc
        return self._facts_of(dom, name)

    def reboot(self, name: str) -> DomainFacts:
        """Ask a running guest to reboot."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "reboot")
        with self._doing("reboot", f"domain '{name}'"):
            state = _state_name(dom)
            if state not in ("running", "blocked"):
                raise VirtError(
                    f"cannot reboot domain '{name}' on {self.uri}: it is {state}, not running"
                )
            dom.reboot(0)
        return self._facts_of(dom, name)

    def suspend(self, name: str) -> DomainFacts:
        """Pause a running domain; an already paused one is left alone."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "suspend")
        with self._doing("suspend", f"domain '{name}'"):
            state = _state_name(dom)
            if state == "paused":
                return _domain_facts(dom)
            if not dom.isActive():
                raise VirtError(f"cannot suspend domain '{name}' on {self.uri}: it is shut off")
            dom.suspend()
        return self._facts_of(dom, name)

    def resume(self, name: str) -> DomainFacts:
        """Resume a paused domain; a running one is left alone."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "resume")
        with self._doing("resume", f"domain '{name}'"):
            state = _state_name(dom)
            if state == "paused":
                dom.resume()
            elif not dom.isActive():
                raise VirtError(
                    f"cannot resume domain '{name}' on {self.uri}: it is shut off; start it"
                )
        return self._facts_of(dom, name)

    def undefine_domain(self, name: str) -> None:
        """Force off and undefine the domain with its metadata; a missing one is fine."""
        check_domain_name(name)
        try:
            dom = self._lookup_domain(name, "undefine")
        except NotFound:
            return
        what = f"domain '{name}'"
        try:
            with self._doing("undefine", what):
                persistent = dom.isPersistent()
                if dom.isActive():
                    dom.destroy()
                if not persistent:
                    return  # a transient domain vanishes when destroyed
                self._undefine(dom, what)
        except NotFound:
            return

    def _undefine(self, dom: libvirt.virDomain, what: str) -> None:
        for flags in _UNDEFINE_FLAG_SETS:
            try:
                dom.undefineFlags(flags)
                return
            except libvirt.libvirtError as exc:
                if flags == 0 or _error_code(exc) not in _UNSUPPORTED_CODES:
                    raise _translate(exc, f"cannot undefine {what} on {self.uri}") from exc
                # The driver refuses one of the flags: retry with fewer.

    # -- storage ------------------------------------------------------------------

    def ensure_pool(self, name: str, path: str) -> None:
        """Make sure a directory pool exists at path, is active, autostarts and is fresh."""
        check_pool_name(name)
        check_abs_path("pool path", path)
        conn = self._conn()
        what = f"pool '{name}'"
        try:
            pool = self._lookup_pool(name, "look up")
        except NotFound:
            root = ET.Element("pool", type="dir")
            ET.SubElement(root, "name").text = name
            ET.SubElement(ET.SubElement(root, "target"), "path").text = path
            with self._doing("define", what):
                pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
            with self._doing("build", what):
                pool.build(0)
        else:
            with self._doing("read", what):
                current = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")  # noqa: S314
            if current != path:
                raise VirtError(
                    f"cannot use {what} on {self.uri}: it points at {current!r}, not {path!r}"
                )
        with self._doing("start", what):
            if not pool.isActive():
                pool.create(0)
        with self._doing("set autostart of", what):
            if not pool.autostart():
                pool.setAutostart(1)
        with self._doing("refresh", what):
            pool.refresh(0)

    def create_overlay(
        self,
        pool: str,
        volume: str,
        backing_path: str,
        capacity_bytes: int,
        *,
        backing_format: str = "qcow2",
    ) -> str:
        """Create a qcow2 volume backed by backing_path and return its path."""
        check_pool_name(pool)
        check_volume_name(volume)
        check_abs_path("backing path", backing_path)
        check_size("capacity", capacity_bytes)
        if backing_format not in BACKING_FORMATS:
            raise VirtError(
                f"invalid backing format {backing_format!r}: use one of {BACKING_FORMATS}"
            )
        what = f"volume '{volume}' in pool '{pool}'"
        handle = self._lookup_pool(pool, f"create volume '{volume}' in")
        existing = self._find_volume(handle, pool, volume)
        if existing is None:
            root = ET.Element("volume", type="file")
            ET.SubElement(root, "name").text = volume
            ET.SubElement(root, "capacity", unit="bytes").text = str(capacity_bytes)
            ET.SubElement(ET.SubElement(root, "target"), "format", type="qcow2")
            backing = ET.SubElement(root, "backingStore")
            ET.SubElement(backing, "path").text = backing_path
            ET.SubElement(backing, "format", type=backing_format)
            try:
                vol = handle.createXML(ET.tostring(root, encoding="unicode"), 0)
                return vol.path()
            except libvirt.libvirtError as exc:
                # Lost a race with a redelivered task: judge the winner's volume below.
                if _error_code(exc) != libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                    raise _translate(exc, f"cannot create {what} on {self.uri}") from exc
            existing = self._find_volume(handle, pool, volume)
            if existing is None:
                raise VirtError(f"cannot create {what} on {self.uri}: it vanished while created")
        with self._doing("inspect", what):
            facts = _image_facts(existing)
        if facts.backing_path != backing_path:
            raise VirtError(
                f"cannot create {what} on {self.uri}: it already exists with backing "
                f"{facts.backing_path!r}, not {backing_path!r}"
            )
        return facts.path

    def create_volume(self, pool: str, volume: str, capacity_bytes: int) -> str:
        """Create an empty qcow2 volume and return its path; an existing one is kept."""
        check_pool_name(pool)
        check_volume_name(volume)
        check_size("capacity", capacity_bytes)
        what = f"volume '{volume}' in pool '{pool}'"
        handle = self._lookup_pool(pool, f"create volume '{volume}' in")
        existing = self._find_volume(handle, pool, volume)
        if existing is not None:
            with self._doing("inspect", what):
                return existing.path()
        root = ET.Element("volume", type="file")
        ET.SubElement(root, "name").text = volume
        ET.SubElement(root, "capacity", unit="bytes").text = str(capacity_bytes)
        ET.SubElement(ET.SubElement(root, "target"), "format", type="qcow2")
        with self._doing("create", what):
            return handle.createXML(ET.tostring(root, encoding="unicode"), 0).path()

    def delete_volume(self, pool: str, volume: str) -> None:
        """Delete the volume; a missing volume is fine, a missing pool raises NotFound."""
        check_pool_name(pool)
        check_volume_name(volume)
        what = f"volume '{volume}' in pool '{pool}'"
        handle = self._lookup_pool(pool, f"delete volume '{volume}' from")
        vol = self._find_volume(handle, pool, volume)
        if vol is None:
            return
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            if _error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise _translate(exc, f"cannot delete {what} on {self.uri}") from exc

    def volume_exists(self, pool: str, volume: str) -> bool:
        """Return whether the pool holds the volume."""
        check_pool_name(pool)
        check_volume_name(volume)
        handle = self._lookup_pool(pool, f"look up volume '{volume}' in")
        return self._find_volume(handle, pool, volume) is not None

    def list_volumes(self, pool: str) -> list[str]:
        """Return the names of the pool's volumes, sorted, after a refresh."""
        check_pool_name(pool)
        handle = self._lookup_pool(pool, "list volumes of")
        with self._doing("list volumes of", f"pool '{pool}'"):
            handle.refresh(0)
            return sorted(handle.listVolumes())

    def inspect_image(self, pool: str, volume: str) -> ImageFacts:
        """Return format, capacity and backing file of a volume as libvirt reads them."""
        check_pool_name(pool)
        check_volume_name(volume)
        what = f"volume '{volume}' in pool '{pool}'"
        handle = self._lookup_pool(pool, f"inspect volume '{volume}' in")
        vol = self._find_volume(handle, pool, volume)
        if vol is None:
            raise NotFound(
                f"cannot inspect {what} on {self.uri}: no such volume",
                libvirt.VIR_ERR_NO_STORAGE_VOL,
            )
        with self._doing("inspect", what):
            return _image_facts(vol)

    # -- networks -----------------------------------------------------------------

    def ensure_network_active(self, name: str) -> None:
        """Start an inactive network and mark it autostart; raise NotFound if it is missing."""
        check_network_name(name)
        conn = self._conn()
        what = f"network '{name}'"
        with self._doing("activate", what):
            net = conn.networkLookupByName(name)
            if net.isActive():
                return
            net.create()
            if net.isPersistent() and not net.autostart():
                net.setAutostart(1)

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

    def network_dhcp_host_add(self, network: str, mac: str, ip: str, name: str) -> None:
        """Add a DHCP host entry; an identical one is kept, a clashing one is refused."""
        check_network_name(network)
        mac = mac.lower()
        for have_mac, have_ip, _ in self.network_dhcp_hosts(network):
            if have_mac == mac and have_ip == ip:
                return
            if have_mac == mac or have_ip == ip:
                raise VirtError(
                    f"cannot add DHCP host {mac} -> {ip} to network '{network}' on {self.uri}: "
                    f"it already has {have_mac} -> {have_ip}"
                )
        entry = ET.Element("host", mac=mac, name=name, ip=ip)
        self._network_update(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, entry,
                             f"add DHCP host {mac} -> {ip} to")

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

    def _network_update(self, network: str, command: int, entry: ET.Element, doing: str) -> None:
        with self._doing(doing, f"network '{network}'"):
            net = self._conn().networkLookupByName(network)
            flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
            if net.isActive():
                flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
            net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                       ET.tostring(entry, encoding="unicode"), flags)

    # --- network interfaces of domains ------------------------------------------------------

    def replace_interface(self, name: str, old_mac: str, interface_xml: str,
                          unplug_timeout: float = 10) -> None:
        """Swap the domain's interface with old_mac for a new one, live when it runs.

        A running guest must release the old interface (ACPI hot-unplug) within
        unplug_timeout seconds; one that does not keeps its old interface and the swap fails.
        """
        check_domain_name(name)
        old_mac = old_mac.lower()
        dom = self._lookup_domain(name, "change the interface of")
        with self._doing("read", f"domain '{name}'"):
            root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))  # noqa: S314
            active = bool(dom.isActive())
        devices = root.find("devices")
        old = next((i for i in (devices.findall("interface") if devices is not None else [])
                    if (i.find("mac") is not None
                        and i.find("mac").get("address", "").lower() == old_mac)), None)
        new = ET.fromstring(interface_xml)  # noqa: S314 - built by vms.domain_xml
        if old is None:
            # A retried move may find the new interface already in place.
            macs = [i.find("mac").get("address", "").lower()
                    for i in devices.findall("interface") if i.find("mac") is not None]
            new_mac = new.find("mac").get("address", "").lower()
            if new_mac in macs:
                return
            raise VirtError(f"cannot change the interface of domain '{name}' on {self.uri}: "
                            f"it has no interface with MAC {old_mac}")
        if not active:
            devices.remove(old)
            devices.append(new)
            with self._doing("redefine", f"domain '{name}'"):
                self._conn().defineXML(ET.tostring(root, encoding="unicode"))
            return
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
        old_xml = ET.tostring(old, encoding="unicode")
        with self._doing("detach an interface from", f"domain '{name}'"):
            dom.detachDeviceFlags(old_xml, flags)
        # Detaching is a request to the guest; wait until it lets go of the device.
        deadline = time.monotonic() + unplug_timeout
        while old_mac in dom.XMLDesc(0).lower():
            if time.monotonic() >= deadline:
                try:
                    dom.attachDeviceFlags(old_xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                except libvirt.libvirtError:
                    log.exception("could not restore the interface %s of %s", old_mac, name)
                raise VirtError(
                    f"cannot change the interface of domain '{name}' on {self.uri}: the guest "
                    f"did not release it within {unplug_timeout:g} s (no hot-unplug support?); "
                    "shut the VM down and retry"
                )
            time.sleep(_SHUTDOWN_POLL_S)
        try:
            with self._doing("attach an interface to", f"domain '{name}'"):
                dom.attachDeviceFlags(interface_xml, flags)
        except VirtError:
            # Put the old interface back so the VM keeps its network.
            try:
                dom.attachDeviceFlags(ET.tostring(old, encoding="unicode"), flags)
            except libvirt.libvirtError:
                log.exception("could not restore the interface %s of %s", old_mac, name)
            raise

    def ensure_network(self, xml: str) -> None:
        """Define and start the network described by xml unless one of that name exists."""
        root = ET.fromstring(xml)  # noqa: S314 - built by the caller with ElementTree
        name = check_network_name(root.findtext("name", ""))
        conn = self._conn()
        try:
            conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if _error_code(exc) != libvirt.VIR_ERR_NO_NETWORK:
                raise _translate(exc, f"cannot look up network '{name}' on {self.uri}") from exc
            with self._doing("define", f"network '{name}'"):
                conn.networkDefineXML(xml)
        self.ensure_network_active(name)

    def vnc_ports_in_use(self) -> set[int]:
        """Return the VNC ports the host's domains hold: running ones and fixed ones."""
        ports: set[int] = set()
        with self._doing("list domains of", "the host"):
            domains = self._conn().listAllDomains(0)
            for dom in domains:
                root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314 - XML from libvirt itself
                for graphics in root.iterfind("devices/graphics"):
                    port = graphics.get("port", "-1")
                    if port.isdigit() and int(port) > 0:
                        ports.add(int(port))
        return ports

    # --- utilisation counters -----------------------------------------------------------------

    _DOMAIN_STATS = (
        libvirt.VIR_DOMAIN_STATS_STATE
        | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
        | libvirt.VIR_DOMAIN_STATS_BALLOON
        | libvirt.VIR_DOMAIN_STATS_VCPU
        | libvirt.VIR_DOMAIN_STATS_INTERFACE
        | libvirt.VIR_DOMAIN_STATS_BLOCK
    )

    def domain_samples(self) -> list[DomainSample]:
        """Return the counters of every domain, active or not, from one bulk call, by name."""
        conn = self._conn()
        # No domain filter: inactive domains come back too, with their state and little else.
        # NOWAIT: a domain busy with a job (migration, snapshot) answers what it can at once
        # instead of holding up the whole host's cycle for the job's duration.
        with self._doing("read stats of", "domains"):
            records = conn.getAllDomainStats(
                self._DOMAIN_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
            )
        # name() and UUIDString() read the handle itself: no call to libvirtd per domain.
        samples = [
            domain_sample_from_record(dom.name(), dom.UUIDString(), record, DOMAIN_STATES)
            for dom, record in records
        ]
        return sorted(samples, key=lambda s: s.name)

    def domain_samples_loop(self) -> list[DomainSample]:
        """Return the same counters with calls per domain: the baseline of bench/collection.py."""
        conn = self._conn()
        with self._doing("list", "domains"):
            doms = conn.listAllDomains(0)
        samples = []
        for dom in doms:
            info = self._quietly(dom.info)
            state = DOMAIN_STATES.get(info[0], "nostate") if info is not None else "nostate"
            memory = blocks = interfaces = None
            if state != "shutoff":
                memory = self._quietly(dom.memoryStats)
                xml = self._quietly(dom.XMLDesc, 0)
                if xml is not None:
                    disks, nics = device_targets(xml)
                    blocks = [self._quietly(dom.blockStats, dev) for dev in disks]
                    interfaces = [self._quietly(dom.interfaceStats, dev) for dev in nics]
            samples.append(domain_sample_from_calls(
                dom.name(), dom.UUIDString(), state, info, memory, blocks, interfaces
            ))
        return sorted(samples, key=lambda s: s.name)

    @staticmethod
    def _quietly(call: Callable[..., _T], *args: object) -> _T | None:
        """Return call(*args), or None when libvirt refuses."""
        try:
            return call(*args)
        except libvirt.libvirtError:
            return None

    def host_sample(self) -> HostSample:
        """Return the host's CPU time and memory counters; what the driver lacks is None."""
        conn = self._conn()
        with self._doing("read stats of", "host"):
            cpus = conn.getInfo()[2]
        cpu = self._host_stats(conn.getCPUStats, libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, "CPU")
        memory = self._host_stats(
            conn.getMemoryStats, libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, "memory"
        )
        return host_sample_from_stats(cpus, cpu, memory)

    def _host_stats(
        self, call: Callable[[int, int], dict[str, int]], which: int, what: str
    ) -> dict[str, int] | None:
        """Return a node stats dict, or None when the driver does not keep it."""
        try:
            return call(which, 0)
        except libvirt.libvirtError as exc:
            if _error_code(exc) in _UNSUPPORTED_CODES:
                return None
            raise _translate(exc, f"cannot read {what} stats of host on {self.uri}") from exc
