"""Disks that follow a domain to another host when its datastore is not shared.

A VM's disk is a qcow2 overlay on its template's image; its cloud-init seed is a read-only
ISO beside it. On the destination every image must sit at the same path as here, in the pool
of the same name. Bases missing there are copied whole through libvirt streams (download here,
upload there: both run over the libvirt connections, so the hosts need no other channel);
a base already there is used as is. For a live move (`VIR_MIGRATE_NON_SHARED_INC`) the
writable disk is pre-created there as an empty overlay on the same base, which libvirt
refuses to do for an incremental copy, and qemu copies its top layer while the guest runs; for
a stopped domain the overlay itself is copied. Read-only disks (the seed) are copied whole.

`DiskCopy` names what was made on the destination (removed when the move fails) and what
moved (removed here once the domain runs there); a base is never removed from the source, as
other domains may be built on it.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import libvirt

from .base import UNSUPPORTED_CODES, error_code, translate
from .checks import check_domain_name
from .connection import get_connection
from .errors import VirtError
from .storage import Storage

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


@dataclass
class DiskCopy:
    """What a disk copy made on the destination and which source volumes moved (pool, name)."""

    created: list[tuple[str, str]] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    bases: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Disk:
    path: str
    readonly: bool


def _file_disks(xml: str) -> list[_Disk]:
    root = ET.fromstring(xml)  # noqa: S314 - from libvirt
    disks = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if disk.get("type") == "file" and path:
            disks.append(_Disk(path, disk.find("readonly") is not None
                               or disk.get("device") == "cdrom"))
    return disks


def _volume_xml(vol: libvirt.virStorageVol) -> tuple[ET.Element, str | None]:
    root = ET.fromstring(vol.XMLDesc(0))  # noqa: S314 - from libvirt
    backing = (root.findtext("backingStore/path") or "").strip() or None
    return root, backing


def _is_test(conn: libvirt.virConnect) -> bool:
    return conn.getType().upper() == "TEST"


class MigrationDisks(Storage):
    """Copying a domain's disks to another host's pools of the same names."""

    def disks_copy_to(self, name: str, dest_uri: str, *, live: bool) -> DiskCopy:
        """Put the domain's disks on dest_uri as a move needs them; return what was done.

        On failure what was made on the destination is removed again before the error is
        raised.
        """
        check_domain_name(name)
        dom = self._lookup_domain(name, "copy the disks of")
        with self._doing("read the disks of", f"domain '{name}'"):
            disks = _file_disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        copy = DiskCopy()
        try:
            for disk in disks:
                self._disk_copy(disk, dest_uri, live=live, copy=copy)
        except BaseException:
            self.disks_remove_copies(dest_uri, copy)
            raise
        return copy

    def disks_copy_plan(self, name: str, dest_uri: str) -> list[tuple[str, str]]:
        """Return the volumes (pool, name) a copy would make on dest_uri, bases first."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "read the disks of")
        with self._doing("read the disks of", f"domain '{name}'"):
            disks = _file_disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        conn, dconn = self._conn(), get_connection(dest_uri)
        planned: list[tuple[str, str]] = []
        for disk in disks:
            vol, pool = self._volume_at(conn, disk.path)
            chain = [(pool, vol.name())]
            backing = _volume_xml(vol)[1]
            while backing and self._volume_there(dconn, backing) is None:
                vol, pool = self._volume_at(conn, backing)
                chain.append((pool, vol.name()))
                backing = _volume_xml(vol)[1]
            planned.extend(v for v in reversed(chain) if v not in planned)
        return planned

    def disks_remove_copies(self, dest_uri: str, copy: DiskCopy) -> None:
        """Remove the volumes a disk copy made on dest_uri (a failed move's)."""
        for pool, volume in reversed(copy.created):
            type(self)(dest_uri).delete_volume(pool, volume)

    def disks_remove_moved(self, copy: DiskCopy) -> None:
        """Remove here the volumes that moved (never the bases they were built on)."""
        for pool, volume in copy.moved:
            self.delete_volume(pool, volume)

    # -- one disk -------------------------------------------------------------------------

    def _disk_copy(self, disk: _Disk, dest_uri: str, *, live: bool, copy: DiskCopy) -> None:
        vol, pool = self._volume_at(self._conn(), disk.path)
        root, backing = _volume_xml(vol)
        if backing:
            self._base_ensure(backing, dest_uri, copy)
        dconn = get_connection(dest_uri)
        if self._volume_there(dconn, disk.path) is not None:
            raise VirtError(f"cannot copy {disk.path} to {dest_uri}: a volume is there already")
        dest_pool = self._pool_there(dconn, pool, disk.path)
        name = vol.name()
        if live and not disk.readonly:
            # An empty overlay on the same base: qemu fills it while the guest runs.
            for tag in ("key", "allocation", "physical", "source", "target/path"):
                elem = root.find(tag)
                if elem is not None:
                    parent = root.find(tag.rpartition("/")[0]) if "/" in tag else root
                    parent.remove(elem)
            with self._doing("create", f"volume '{name}' on {dest_uri}"):
                dest_pool.createXML(ET.tostring(root, encoding="unicode"), 0)
            copy.created.append((pool, name))
        else:
            self._stream_copy(vol, dconn, dest_pool, pool, name, copy)
        copy.moved.append((pool, name))

    def _base_ensure(self, path: str, dest_uri: str, copy: DiskCopy) -> None:
        """Copy a backing image (and its own backing first) when the destination lacks it."""
        dconn = get_connection(dest_uri)
        if self._volume_there(dconn, path) is not None:
            return
        vol, pool = self._volume_at(self._conn(), path)
        _root, backing = _volume_xml(vol)
        if backing:
            self._base_ensure(backing, dest_uri, copy)
        self._stream_copy(vol, dconn, self._pool_there(dconn, pool, path), pool, vol.name(),
                          copy)
        copy.bases.append((pool, vol.name()))

    def _stream_copy(self, vol: libvirt.virStorageVol, dconn: libvirt.virConnect,
                     dest_pool: libvirt.virStoragePool, pool: str, name: str,
                     copy: DiskCopy) -> None:
        """Copy a volume's file byte for byte into a new volume of dest_pool."""
        what = f"volume '{name}' in pool '{pool}'"
        try:
            physical = vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
        except libvirt.libvirtError as exc:
            if error_code(exc) not in UNSUPPORTED_CODES:
                raise translate(exc, f"cannot inspect {what} on {self.uri}") from exc
            with self._doing("inspect", what):
                physical = vol.info()[2]  # the test driver's: no contents to copy anyway
        root = ET.Element("volume", type="file")
        ET.SubElement(root, "name").text = name
        # Raw and as long as the file: the upload writes it whole; the pool's next refresh
        # reads its real format (qcow2 with its backing) from the bytes.
        ET.SubElement(root, "capacity", unit="bytes").text = str(max(physical, 1))
        ET.SubElement(ET.SubElement(root, "target"), "format", type="raw")
        with self._doing("create", f"{what} on {dconn.getURI()}"):
            new = dest_pool.createXML(ET.tostring(root, encoding="unicode"), 0)
        copy.created.append((pool, name))
        if _is_test(self._conn()) or _is_test(dconn):
            return  # libvirt's test driver keeps no volume contents
        down, up = self._conn().newStream(0), dconn.newStream(0)
        try:
            vol.download(down, 0, physical, 0)
            new.upload(up, 0, physical, 0)
            while chunk := down.recv(_CHUNK):
                if not isinstance(chunk, bytes):
                    raise VirtError(f"cannot copy {what}: the download stalled")
                sent = 0
                while sent < len(chunk):
                    sent += up.send(chunk[sent:])
            down.finish()
            up.finish()
        except libvirt.libvirtError as exc:
            for stream in (down, up):
                try:
                    stream.abort()
                except libvirt.libvirtError:
                    pass  # already closed by the other side; the error says why
            raise translate(exc, f"cannot copy {what} from {self.uri} to "
                                 f"{dconn.getURI()}") from exc
        with self._doing("refresh", f"pool '{pool}' on {dconn.getURI()}"):
            dest_pool.refresh(0)

    # -- lookups --------------------------------------------------------------------------

    def _volume_at(self, conn: libvirt.virConnect, path: str
                   ) -> tuple[libvirt.virStorageVol, str]:
        vol = self._volume_there(conn, path)
        if vol is None:
            raise VirtError(f"cannot copy {path} from {self.uri}: no pool here holds it")
        with self._doing("read the pool of", path):
            return vol, vol.storagePoolLookupByVolume().name()

    @staticmethod
    def _volume_there(conn: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
        try:
            return conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise translate(exc, f"cannot look up {path} on {conn.getURI()}") from exc
        folder, _sep, base = path.rpartition("/")
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            try:
                if ET.fromstring(pool.XMLDesc(0)).findtext("target/path") != folder:  # noqa: S314
                    continue
                pool.refresh(0)  # a file made behind libvirt's back
                return pool.storageVolLookupByName(base)
            except libvirt.libvirtError:
                continue
        return None

    @staticmethod
    def _pool_there(conn: libvirt.virConnect, pool: str, path: str) -> libvirt.virStoragePool:
        try:
            handle = conn.storagePoolLookupByName(pool)
        except libvirt.libvirtError as exc:
            raise translate(exc, f"cannot copy {path} to {conn.getURI()}: it has no pool "
                                 f"'{pool}'") from exc
        there = ET.fromstring(handle.XMLDesc(0)).findtext("target/path")  # noqa: S314
        if there != path.rpartition("/")[0]:
            raise VirtError(f"cannot copy {path} to {conn.getURI()}: its pool '{pool}' is at "
                            f"{there!r}, not where the disk must be")
        return handle
