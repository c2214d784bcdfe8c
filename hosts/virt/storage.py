"""Storage: directory pools and their volumes (overlays, copies, uploads), read and written."""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET

import libvirt

from .base import HypervisorBase, error_code, translate
from .checks import SIZE_UNITS, check_abs_path, check_pool_name, check_size, check_volume_name
from .errors import NotFound, VirtError
from .facts import ImageFacts

log = logging.getLogger(__name__)

BACKING_FORMATS = ("qcow2", "raw")
_UPLOAD_CHUNK = 256 * 1024
# Waits before each retry of a pool refresh that libvirt refused because a volume is being
# built in the pool (about 3 s in all).
_REFRESH_RETRY_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def _pool_busy(exc: libvirt.libvirtError) -> bool:
    """Return whether libvirt refused a pool action because a volume is being built in it."""
    # VIR_ERR_INTERNAL_ERROR carries it, like many others; only the text tells.
    return "asynchronous jobs running" in (exc.get_error_message() or "")


def _size_bytes(elem: ET.Element | None) -> int:
    if elem is None or not (elem.text or "").strip():
        return 0
    unit = elem.get("unit", "bytes").lower()
    return int(elem.text.strip()) * SIZE_UNITS.get(unit, 1)


def _image_facts(vol: libvirt.virStorageVol) -> ImageFacts:
    root = ET.fromstring(vol.XMLDesc(0))  # noqa: S314
    fmt = root.find("target/format")
    return ImageFacts(
        path=vol.path(),
        format=fmt.get("type", "") if fmt is not None else "",
        capacity_bytes=_size_bytes(root.find("capacity")),
        backing_path=(root.findtext("backingStore/path") or "").strip() or None,
    )


class Storage(HypervisorBase):
    """The storage pools of one host and their volumes; every method is safe to retry."""

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
                if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise translate(exc, f"cannot look up {what} on {self.uri}") from exc
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
                    raise translate(exc, f"cannot refresh pool '{pool_name}' on {self.uri}") \
                        from exc
                if delay is None:
                    log.info("pool %s on %s stayed busy; not refreshed", pool_name, self.uri)
                    return False
            time.sleep(delay)
        return False

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
                raise translate(exc, f"cannot start {what} on {self.uri}") from exc
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
                raise translate(exc, f"cannot define {what} on {self.uri}") from exc
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
                if error_code(exc) != libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                    raise translate(exc, f"cannot create {what} on {self.uri}") from exc
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

    def _volume_in(self, pool: str, volume: str, action: str) -> libvirt.virStorageVol | None:
        """Check both names and return the pool's volume, or None when the pool has none."""
        check_pool_name(pool)
        check_volume_name(volume)
        handle = self._lookup_pool(pool, action)
        return self._find_volume(handle, pool, volume)

    def delete_volume(self, pool: str, volume: str) -> None:
        """Delete the volume; a missing volume is fine, a missing pool raises NotFound."""
        vol = self._volume_in(pool, volume, f"delete volume '{volume}' from")
        if vol is not None:
            self._delete(vol, libvirt.VIR_ERR_NO_STORAGE_VOL,
                         f"cannot delete volume '{volume}' in pool '{pool}' on {self.uri}")

    def volume_exists(self, pool: str, volume: str) -> bool:
        """Return whether the pool holds the volume."""
        return self._volume_in(pool, volume, f"look up volume '{volume}' in") is not None

    def list_volumes(self, pool: str) -> list[str]:
        """Return the names of the pool's volumes, sorted, after a refresh when libvirt allows."""
        check_pool_name(pool)
        handle = self._lookup_pool(pool, "list volumes of")
        self._refresh_pool(handle, pool)
        with self._doing("list volumes of", f"pool '{pool}'"):
            return sorted(handle.listVolumes())

    def inspect_image(self, pool: str, volume: str) -> ImageFacts:
        """Return format, capacity and backing file of a volume as libvirt reads them."""
        what = f"volume '{volume}' in pool '{pool}'"
        vol = self._volume_in(pool, volume, f"inspect volume '{volume}' in")
        if vol is None:
            raise NotFound(
                f"cannot inspect {what} on {self.uri}: no such volume",
                libvirt.VIR_ERR_NO_STORAGE_VOL,
            )
        with self._doing("inspect", what):
            return _image_facts(vol)

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
                if error_code(exc) != libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                    raise translate(exc, doing) from exc
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

    def pool_state(self, name: str) -> tuple[bool, int]:
        """Return whether the pool is active and the bytes free in it (0 when it is not).

        The pool is re-read first (skipped while libvirt builds a volume in it), so the free
        space is the file system's now; raise NotFound when there is no such pool.
        """
        check_pool_name(name)
        pool = self._lookup_pool(name, "read")
        with self._doing("read", f"pool '{name}'"):
            if not pool.isActive():
                return False, 0
        self._refresh_pool(pool, name)
        with self._doing("read", f"pool '{name}'"):
            return True, int(pool.info()[3])
