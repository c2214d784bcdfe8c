"""Operations on one libvirt host: facts, domain lifecycle, storage and networks."""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from .connection import cached_probe, get_connection, remember_probe
from .errors import NotFound, VirtError
from .facts import DomainFacts, HostFacts, ImageFacts, ProbeReport
from .names import (
    check_abs_path,
    check_count,
    check_disk_target,
    check_domain_name,
    check_network_name,
    check_pool_name,
    check_size,
    check_snapshot_name,
    check_text,
    check_volume_name,
)
from .probe import ShapeBuilder, run_probe
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
        libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
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


# Waits before each retry of a pool refresh that libvirt refused because a volume is being
# built in the pool (about 3 s in all).
_REFRESH_RETRY_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def _pool_busy(exc: libvirt.libvirtError) -> bool:
    """Return whether libvirt refused a pool action because a volume is being built in it."""
    # VIR_ERR_INTERNAL_ERROR carries it, like many others; only the text tells.
    return "asynchronous jobs running" in (exc.get_error_message() or "")


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


# -- snapshots, extra disks and resizing ---------------------------------------------------------

# The same hard limits as vms.domain_xml; the portal's configured bounds are checked before.
MAX_VCPUS = 256
MIN_MEMORY_MIB = 64
MAX_MEMORY_MIB = 4 * 1024 * 1024
# Inactive: the persistent definition; secure: keep the VNC password when it is redefined.
_XML_INACTIVE_SECURE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
_UPLOAD_CHUNK = 256 * 1024
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _disk_element(path: str, target: str, bus: str = "virtio") -> ET.Element:
    """Build the XML of a qcow2 file disk."""
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "target", dev=target, bus=bus)
    return disk


def _disks(root: ET.Element) -> Iterator[tuple[ET.Element, str, str]]:
    """Yield (element, target dev, source file or '') of every disk device of a domain."""
    for disk in root.iterfind("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        path = source.get("file", "") if source is not None and disk.get("type") == "file" else ""
        yield disk, target.get("dev", "") if target is not None else "", path


def _disk_with_source(root: ET.Element, path: str) -> ET.Element | None:
    return next((disk for disk, _dev, source in _disks(root) if source == path), None)


def _set_size(root: ET.Element, tag: str, kib: int) -> None:
    elem = root.find(tag)
    if elem is None:
        elem = ET.SubElement(root, tag)
    elem.set("unit", "KiB")
    elem.text = str(kib)


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
        self, pool: libvirt.virStoragePool, pool_name: str, volume: str, *, refresh: bool = True
    ) -> libvirt.virStorageVol | None:
        """Return the volume, refreshing the pool once if it is unknown (unless refresh=False)."""
        # A file may appear behind libvirt's back; a caller about to create the volume
        # expects it not to exist and skips the refresh, which clashes with other creations.
        what = f"volume '{volume}' in pool '{pool_name}'"
        for attempt in range(2):
            try:
                return pool.storageVolLookupByName(volume)
            except libvirt.libvirtError as exc:
                if _error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise _translate(exc, f"cannot look up {what} on {self.uri}") from exc
            if attempt == 0 and (not refresh or not self._refresh_pool(pool, pool_name)):
                return None
        return None

    def _refresh_pool(self, pool: libvirt.virStoragePool, pool_name: str) -> bool:
        """Re-read the pool's directory; return False when libvirt stayed busy building a volume.

        libvirt refuses to refresh a pool while a volume is being created in it (another
        worker's install); the refresh is retried briefly, then skipped: the volumes libvirt
        made itself are in its list already.
        """
        for delay in (*_REFRESH_RETRY_S, None):
            try:
                pool.refresh(0)
                return True
            except libvirt.libvirtError as exc:
                if not _pool_busy(exc):
                    raise _translate(exc, f"cannot refresh pool '{pool_name}' on {self.uri}") \
                        from exc
                if delay is None:
                    log.info("pool %s on %s stayed busy; not refreshed", pool_name, self.uri)
                    return False
            time.sleep(delay)
        return False

    # -- host -------------------------------------------------------------------

    def facts(self) -> HostFacts:
        """Return what the host offers; acceleration and CPU mode are those last probed."""
        conn = self._conn()
        with self._doing("read facts of", "host"):
            _model, memory_mib, cpus, *_rest = conn.getInfo()
            driver = conn.getType()
            report = self._test_driver_report(driver) or cached_probe(self.uri)
            return HostFacts(
                hostname=conn.getHostname(),
                cpus=cpus,
                memory_mib=memory_mib,
                accel=report.accel if report else "",
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor=f"{driver} {_version(conn.getVersion())}",
                cpu_mode=report.cpu_mode if report else "",
            )

    @staticmethod
    def _test_driver_report(driver: str) -> ProbeReport | None:
        # libvirt's test driver runs no guests; there is nothing to probe.
        return ProbeReport("test", "") if driver.upper() == "TEST" else None

    def probe(self, shape: ShapeBuilder, *, accel_pin: str = "", cpu_mode_pin: str = "",
              fresh: bool = False, settle_s: float | None = None) -> ProbeReport:
        """Find the acceleration and CPU mode that run guests of this shape; cached per URI.

        shape(domain type, CPU mode) returns the XML of a throw-away domain shaped like the
        portal's VMs; each must keep running for settle_s seconds. Pins are used as given;
        the chain is still tried and reported.
        """
        pins = (accel_pin, cpu_mode_pin)
        if not fresh and (report := cached_probe(self.uri, pins)) is not None:
            return report
        conn = self._conn()
        with self._doing("probe", "acceleration of host"):
            report = self._test_driver_report(conn.getType())
            if report is None:
                try:
                    report = run_probe(conn, self.uri, shape, accel_pin=accel_pin,
                                       cpu_mode_pin=cpu_mode_pin, settle_s=settle_s)
                except ValueError as exc:
                    raise VirtError(f"cannot probe host {self.uri}: {exc}") from exc
        remember_probe(self.uri, pins, report)
        return report

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
        """Make sure a directory pool exists at path, is active and autostarts.

        Safe to run from many workers at once. An active pool is not refreshed: libvirt
        refuses that while another worker creates a volume in it, and it knows the volumes
        it made; lookups refresh when a volume is missing.
        """
        check_pool_name(name)
        check_abs_path("pool path", path)
        what = f"pool '{name}'"
        try:
            pool = self._lookup_pool(name, "look up")
        except NotFound:
            pool = self._define_pool(name, path)
        with self._doing("read", what):
            current = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")  # noqa: S314
        if current != path:
            raise VirtError(
                f"cannot use {what} on {self.uri}: it points at {current!r}, not {path!r}"
            )
        try:
            if not pool.isActive():
                pool.create(0)  # starting a pool reads its directory
        except libvirt.libvirtError as exc:
            # Another worker may have started it meanwhile.
            if not self._quietly(pool.isActive):
                raise _translate(exc, f"cannot start {what} on {self.uri}") from exc
        with self._doing("set autostart of", what):
            if not pool.autostart():
                pool.setAutostart(1)

    def _define_pool(self, name: str, path: str) -> libvirt.virStoragePool:
        """Define and build a directory pool; one another worker just defined is used as is."""
        what = f"pool '{name}'"
        root = ET.Element("pool", type="dir")
        ET.SubElement(root, "name").text = name
        ET.SubElement(ET.SubElement(root, "target"), "path").text = path
        try:
            pool = self._conn().storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            try:
                return self._lookup_pool(name, "look up")
            except NotFound:
                raise _translate(exc, f"cannot define {what} on {self.uri}") from exc
        with self._doing("build", what):
            pool.build(0)
        return pool

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
        existing = self._find_volume(handle, pool, volume, refresh=False)
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
        existing = self._find_volume(handle, pool, volume, refresh=False)
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
        """Return the names of the pool's volumes, sorted, after a refresh when libvirt allows."""
        check_pool_name(pool)
        handle = self._lookup_pool(pool, "list volumes of")
        self._refresh_pool(handle, pool)
        with self._doing("list volumes of", f"pool '{pool}'"):
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
        try:
            net.create()
        except libvirt.libvirtError as exc:
            # Another worker's install may have started it meanwhile.
            if not self._quietly(net.isActive):
                raise _translate(exc, f"cannot activate {what} on {self.uri}") from exc
        with self._doing("activate", what):
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
                try:
                    xml = dom.XMLDesc(0)
                except libvirt.libvirtError as exc:
                    if _error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                        continue  # went away while the host was listed (a transient domain)
                    raise
                root = ET.fromstring(xml)  # noqa: S314 - XML from libvirt itself
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

    # --- snapshots ----------------------------------------------------------------------------

    def _find_snapshot(
        self, dom: libvirt.virDomain, domain: str, name: str
    ) -> libvirt.virDomainSnapshot | None:
        try:
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if _error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return None
            raise _translate(
                exc, f"cannot look up snapshot '{name}' of domain '{domain}' on {self.uri}"
            ) from exc

    def snapshot_create(self, domain: str, name: str, description: str = "") -> None:
        """Take an internal snapshot, with memory when the domain runs; an existing one is kept."""
        check_domain_name(domain)
        check_snapshot_name(name)
        check_text("snapshot description", description)
        dom = self._lookup_domain(domain, f"create snapshot '{name}' of")
        if self._find_snapshot(dom, domain, name) is not None:
            return
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = name
        if description:
            # ElementTree escapes it: the user's text can only ever be text.
            ET.SubElement(root, "description").text = description
        try:
            dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            # A redelivered task may have taken the same snapshot meanwhile.
            if self._find_snapshot(dom, domain, name) is None:
                raise _translate(
                    exc, f"cannot create snapshot '{name}' of domain '{domain}' on {self.uri}"
                ) from exc

    def snapshot_revert(self, domain: str, name: str) -> str:
        """Revert the domain to the snapshot and return the domain's state afterwards."""
        check_domain_name(domain)
        check_snapshot_name(name)
        dom = self._lookup_domain(domain, "revert")
        with self._doing("revert", f"domain '{domain}' to snapshot '{name}'"):
            snapshot = dom.snapshotLookupByName(name, 0)
            dom.revertToSnapshot(snapshot, 0)
            return _state_name(dom)

    def snapshot_delete(self, domain: str, name: str) -> None:
        """Delete the snapshot; a missing snapshot is fine, a missing domain raises NotFound."""
        check_domain_name(domain)
        check_snapshot_name(name)
        dom = self._lookup_domain(domain, f"delete snapshot '{name}' of")
        snapshot = self._find_snapshot(dom, domain, name)
        if snapshot is None:
            return
        try:
            snapshot.delete(0)
        except libvirt.libvirtError as exc:
            if _error_code(exc) != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise _translate(
                    exc, f"cannot delete snapshot '{name}' of domain '{domain}' on {self.uri}"
                ) from exc

    def snapshot_names(self, domain: str) -> list[str]:
        """Return the names of the domain's snapshots, sorted."""
        check_domain_name(domain)
        dom = self._lookup_domain(domain, "list snapshots of")
        with self._doing("list snapshots of", f"domain '{domain}'"):
            return sorted(dom.snapshotListNames(0))

    # --- disks --------------------------------------------------------------------------------

    def clone_volume(
        self, pool: str, source_volume: str, new_volume: str, *, target_pool: str | None = None
    ) -> str:
        """Copy a volume, backing chain flattened, into a new qcow2 volume; return its path."""
        check_pool_name(pool)
        check_volume_name(source_volume)
        check_volume_name(new_volume)
        dest_pool = pool if target_pool is None else check_pool_name(target_pool)
        source = f"volume '{source_volume}' in pool '{pool}'"
        what = f"volume '{new_volume}' in pool '{dest_pool}'"
        doing = f"cannot clone {source} to {what} on {self.uri}"
        if (dest_pool, new_volume) == (pool, source_volume):
            raise VirtError(f"{doing}: a volume cannot be cloned onto itself")
        dest = self._lookup_pool(dest_pool, f"clone volume '{source_volume}' into")
        existing = self._find_volume(dest, dest_pool, new_volume, refresh=False)
        if existing is None:
            handle = self._lookup_pool(pool, f"clone volume '{source_volume}' from")
            vol = self._find_volume(handle, pool, source_volume)
            if vol is None:
                raise NotFound(f"{doing}: no such volume", libvirt.VIR_ERR_NO_STORAGE_VOL)
            with self._doing("inspect", source):
                facts = _image_facts(vol)
            if facts.format not in BACKING_FORMATS:
                raise VirtError(
                    f"{doing}: its format is {facts.format or 'unknown'!r}, "
                    f"not one of {BACKING_FORMATS}"
                )
            # No <backingStore>: libvirt runs `qemu-img convert -f <fmt> -O qcow2`, which
            # reads through the source's backing chain and writes a standalone image.
            root = ET.Element("volume", type="file")
            ET.SubElement(root, "name").text = new_volume
            ET.SubElement(root, "capacity", unit="bytes").text = str(facts.capacity_bytes)
            ET.SubElement(ET.SubElement(root, "target"), "format", type="qcow2")
            try:
                return dest.createXMLFrom(ET.tostring(root, encoding="unicode"), vol, 0).path()
            except libvirt.libvirtError as exc:
                # Lost a race with a redelivered task: judge the winner's volume below.
                if _error_code(exc) != libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                    raise _translate(exc, doing) from exc
            existing = self._find_volume(dest, dest_pool, new_volume)
            if existing is None:
                raise VirtError(f"{doing}: it vanished while created")
        with self._doing("inspect", what):
            facts = _image_facts(existing)
        if facts.format != "qcow2" or facts.backing_path is not None:
            raise VirtError(
                f"{doing}: it already exists as {facts.format or 'unknown'} "
                f"with backing {facts.backing_path!r}, not as a standalone qcow2 copy"
            )
        return facts.path

    def _read_definitions(
        self, dom: libvirt.virDomain, action: str, what: str
    ) -> tuple[ET.Element, ET.Element | None]:
        """Return the domain's persistent XML and, when it is active, its live XML."""
        with self._doing(action, what):
            active = bool(dom.isActive())
            config = ET.fromstring(dom.XMLDesc(_XML_INACTIVE_SECURE))  # noqa: S314
            live = ET.fromstring(dom.XMLDesc(0)) if active else None  # noqa: S314
        return config, live

    def _redefine(self, root: ET.Element, what: str) -> None:
        with self._doing("redefine", what):
            self._conn().defineXML(ET.tostring(root, encoding="unicode"))

    def _has_disk(self, root: ET.Element, path: str, target: str, doing: str) -> bool:
        """Return whether root has path as target; raise when either is taken otherwise."""
        for _disk, dev, source in _disks(root):
            if source == path and dev == target:
                return True
            if source == path:
                raise VirtError(f"{doing}: it is already attached as {dev}")
            if dev == target:
                raise VirtError(f"{doing}: {target} already holds {source or 'another disk'}")
        return False

    def attach_disk(self, domain: str, path: str, target: str) -> str:
        """Attach a qcow2 file as an extra virtio disk; return 'live' or 'config'."""
        check_domain_name(domain)
        check_abs_path("disk path", path)
        check_disk_target(target)
        action = f"attach disk {path} as {target} to"
        what = f"domain '{domain}'"
        doing = f"cannot {action} {what} on {self.uri}"
        dom = self._lookup_domain(domain, action)
        config, live = self._read_definitions(dom, action, what)
        in_config = self._has_disk(config, path, target, doing)
        if live is None:
            if not in_config:
                devices = config.find("devices")
                if devices is None:
                    devices = ET.SubElement(config, "devices")
                devices.append(_disk_element(path, target))
                self._redefine(config, what)
            return "config"
        flags = 0 if self._has_disk(live, path, target, doing) else _LIVE
        flags |= 0 if in_config else _CONFIG
        if flags:
            with self._doing(action, what):
                dom.attachDeviceFlags(
                    ET.tostring(_disk_element(path, target), encoding="unicode"), flags
                )
        return "live"

    def detach_disk(self, domain: str, path: str, unplug_timeout: float = 10) -> str:
        """Detach the disk whose source is path; return 'live', 'config' or 'absent'.

        A running guest must release the disk (hot-unplug) within unplug_timeout seconds;
        one that does not keeps it, in its live and persistent definitions, and this fails.
        """
        check_domain_name(domain)
        check_abs_path("disk path", path)
        action = f"detach disk {path} from"
        what = f"domain '{domain}'"
        dom = self._lookup_domain(domain, action)
        config, live = self._read_definitions(dom, action, what)
        in_config = _disk_with_source(config, path)
        in_live = _disk_with_source(live, path) if live is not None else None
        if in_live is None:
            if in_config is None:
                return "absent"
            if live is None:
                config.find("devices").remove(in_config)
                self._redefine(config, what)
            else:
                with self._doing(action, what):
                    dom.detachDeviceFlags(self._disk_xml(in_config), _CONFIG)
            return "config"
        disk_xml = self._disk_xml(in_live)
        with self._doing(action, what):
            dom.detachDeviceFlags(disk_xml, _LIVE | (0 if in_config is None else _CONFIG))
        # Detaching is a request to the guest; wait until it lets go of the device.
        deadline = time.monotonic() + unplug_timeout
        while True:
            with self._doing(action, what):
                live = ET.fromstring(dom.XMLDesc(0))  # noqa: S314
            if _disk_with_source(live, path) is None:
                return "live"
            if time.monotonic() >= deadline:
                break
            time.sleep(_SHUTDOWN_POLL_S)
        if in_config is not None:
            self._restore_config_disk(dom, domain, path, disk_xml)
        raise VirtError(
            f"cannot {action} {what} on {self.uri}: the guest did not release it within "
            f"{unplug_timeout:g} s (no hot-unplug support?); shut the VM down and retry"
        )

    @staticmethod
    def _disk_xml(disk: ET.Element) -> str:
        """Return a minimal copy of a disk element; libvirt matches it by target."""
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        bus = target.get("bus", "virtio") if target is not None else "virtio"
        source = disk.find("source")
        copy = _disk_element(source.get("file", "") if source is not None else "", dev, bus)
        driver = disk.find("driver")
        if driver is not None:
            copy.find("driver").attrib.update(driver.attrib)
        return ET.tostring(copy, encoding="unicode")

    def _restore_config_disk(
        self, dom: libvirt.virDomain, domain: str, path: str, disk_xml: str
    ) -> None:
        """Put a disk the guest kept back into the persistent definition."""
        try:
            config = ET.fromstring(dom.XMLDesc(_XML_INACTIVE_SECURE))  # noqa: S314
            if _disk_with_source(config, path) is None:
                dom.attachDeviceFlags(disk_xml, _CONFIG)
        except libvirt.libvirtError:
            log.exception("could not restore the disk %s of %s in its config", path, domain)

    def disk_targets(self, domain: str) -> dict[str, str]:
        """Return target dev -> source path of the domain's file disks, as it runs now."""
        check_domain_name(domain)
        dom = self._lookup_domain(domain, "read disks of")
        with self._doing("read disks of", f"domain '{domain}'"):
            root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314
        return {
            dev: source
            for disk, dev, source in _disks(root)
            if dev and source and disk.get("device", "disk") == "disk"
        }

    # --- resizing -----------------------------------------------------------------------------

    def set_resources(self, domain: str, vcpus: int, memory_mib: int) -> str:
        """Give the domain vcpus and memory_mib; return 'live', 'next-start' or 'config'."""
        check_domain_name(domain)
        check_count("vCPU count", vcpus, 1, MAX_VCPUS)
        check_count("memory in MiB", memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB)
        kib = memory_mib * 1024
        what = f"domain '{domain}'"
        dom = self._lookup_domain(domain, "resize")
        self._resize_config(dom, domain, vcpus, kib)
        with self._doing("resize", what):
            if not dom.isActive():
                return "config"
        self._resize_live(dom, domain, vcpus, kib)
        with self._doing("read", what):
            live_vcpus = dom.vcpusFlags(_LIVE)
            live_kib = dom.info()[2]
        return "live" if (live_vcpus, live_kib) == (vcpus, kib) else "next-start"

    def _resize_config(self, dom: libvirt.virDomain, domain: str, vcpus: int, kib: int) -> None:
        """Write the sizes into the persistent definition, the maximums first."""
        try:
            dom.setVcpusFlags(vcpus, _CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
            dom.setVcpusFlags(vcpus, _CONFIG)
            # Lowering the maximum lowers the current size with it, so this order always works.
            dom.setMemoryFlags(kib, _CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
            dom.setMemoryFlags(kib, _CONFIG)
            return
        except libvirt.libvirtError as exc:
            if _error_code(exc) not in _UNSUPPORTED_CODES:
                raise _translate(exc, f"cannot resize domain '{domain}' on {self.uri}") from exc
            log.info("resizing %s on %s by redefining it: %s", domain, self.uri,
                     exc.get_error_message())
        what = f"domain '{domain}'"
        with self._doing("read", what):
            root = ET.fromstring(dom.XMLDesc(_XML_INACTIVE_SECURE))  # noqa: S314
        vcpu = root.find("vcpu")
        if vcpu is None:
            vcpu = ET.SubElement(root, "vcpu")
        vcpu.attrib.pop("current", None)
        vcpu.text = str(vcpus)
        _set_size(root, "memory", kib)
        _set_size(root, "currentMemory", kib)
        self._redefine(root, what)

    def _resize_live(self, dom: libvirt.virDomain, domain: str, vcpus: int, kib: int) -> None:
        """Apply what the running domain's maximums allow; the rest waits for its next start."""
        try:
            if dom.vcpusFlags(_LIVE) != vcpus and vcpus <= dom.vcpusFlags(
                _LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM
            ):
                dom.setVcpusFlags(vcpus, _LIVE)
        except libvirt.libvirtError as exc:
            log.info("%s on %s keeps its vCPUs until its next start: %s", domain, self.uri,
                     exc.get_error_message())
        try:
            _state, max_kib, current_kib, *_rest = dom.info()
            if current_kib != kib and kib <= max_kib:
                dom.setMemoryFlags(kib, _LIVE)
        except libvirt.libvirtError as exc:
            log.info("%s on %s keeps its memory until its next start: %s", domain, self.uri,
                     exc.get_error_message())

    # --- uploads ------------------------------------------------------------------------------

    def upload_volume(self, pool: str, volume: str, data: bytes) -> str:
        """Store data as a raw volume written through a libvirt stream; return its path.

        The stream runs over the libvirt connection itself, so a remote host needs no other
        channel. A volume of that name already there is replaced whole.
        """
        check_pool_name(pool)
        check_volume_name(volume)
        if not isinstance(data, bytes | bytearray) or not data:
            raise VirtError(f"invalid data for volume '{volume}': give non-empty bytes")
        conn = self._conn()
        what = f"volume '{volume}' in pool '{pool}'"
        handle = self._lookup_pool(pool, f"upload volume '{volume}' to")
        existing = self._find_volume(handle, pool, volume, refresh=False)
        if existing is not None:
            with self._doing("replace", what):
                existing.delete(0)
        root = ET.Element("volume", type="file")
        ET.SubElement(root, "name").text = volume
        ET.SubElement(root, "capacity", unit="bytes").text = str(len(data))
        ET.SubElement(ET.SubElement(root, "target"), "format", type="raw")
        with self._doing("create", what):
            vol = handle.createXML(ET.tostring(root, encoding="unicode"), 0)
        try:
            with self._doing("upload", what):
                # libvirt's test driver keeps no volume contents and cannot take an upload.
                if conn.getType().upper() != "TEST":
                    self._stream_to(conn, vol, bytes(data), what)
                return vol.path()
        except VirtError:
            try:
                vol.delete(0)
            except libvirt.libvirtError:
                log.exception("could not remove the half-written %s on %s", what, self.uri)
            raise

    def _stream_to(
        self, conn: libvirt.virConnect, vol: libvirt.virStorageVol, data: bytes, what: str
    ) -> None:
        stream = conn.newStream(0)
        try:
            vol.upload(stream, 0, len(data), 0)
            offset = 0
            while offset < len(data):
                sent = stream.send(data[offset : offset + _UPLOAD_CHUNK])
                if sent <= 0:
                    raise VirtError(f"cannot upload {what} on {self.uri}: the stream stalled")
                offset += sent
            stream.finish()
        except BaseException:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass  # the stream is already closed on the server; the error below says why
            raise
