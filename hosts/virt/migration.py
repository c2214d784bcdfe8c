"""Migration: moving a domain to another host, live or stopped, with its snapshots' metadata.

Live migration is libvirt's managed migration (`migrate3` from this host's connection to the
destination's), or peer-to-peer on request: live, persistent on the destination, undefined
here once it runs there. On a shared datastore the disk stays where it is (`UNSAFE`: libvirt
cannot tell NFS from a local directory and would refuse a disk whose cache is not `none`); on a
datastore that is not shared the disk is copied during the migration (`NON_SHARED_INC`, onto
an overlay made there first on the same base, copied there too when missing:
`migration_disks`), and a stopped domain's disks are copied through libvirt streams. Disks
that moved are removed here once the domain is defined there; bases stay.

Internal snapshots live inside the qcow2 image, which the move keeps, but libvirt refuses to
migrate a domain that still has snapshot metadata. Their XML is read (secure, parents first)
and the metadata dropped here before the move; after it the metadata is redefined on the
destination (the current snapshot kept), or here again when the move fails.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import libvirt

from .base import UNSUPPORTED_CODES, error_code, translate
from .checks import check_domain_name
from .connection import get_connection
from .domain_xml import retarget_domain_xml
from .domains import Domains
from .errors import NotFound, VirtError
from .facts import DomainFacts
from .migration_disks import DiskCopy, MigrationDisks

log = logging.getLogger(__name__)

LIVE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
_MIGRATABLE_XML = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
# How often a running migration's job is read for its progress and a cancel looked for.
PROGRESS_POLL_S = 0.5


@dataclass(frozen=True)
class MigrationProgress:
    """How far a migration job is: bytes in all, done and left (0 when not known yet)."""

    total: int
    processed: int
    remaining: int


@dataclass(frozen=True)
class SnapshotMetadata:
    """A domain's snapshots as libvirt describes them, parents first, and the current one."""

    xmls: tuple[str, ...]
    current: str | None

    def retargeted(self, *, vnc_port: int | None, vnc_listen: str) -> SnapshotMetadata:
        """Return the same snapshots with their saved domains' VNC display moved."""
        return SnapshotMetadata(
            tuple(retarget_domain_xml(x, vnc_port=vnc_port, vnc_listen=vnc_listen)
                  for x in self.xmls), self.current)


@dataclass(frozen=True)
class MigrationResult:
    """A domain as it runs after its move, and why its snapshots did not follow, if not."""

    facts: DomainFacts
    snapshot_problem: str = ""


def migration_uri(dest_uri: str) -> str | None:
    """Return the address qemu sends a live migration to: the destination URI's host."""
    host = urlsplit(dest_uri).hostname
    if not host:
        return None
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"


def _snapshot_name(xml: str) -> str:
    return (ET.fromstring(xml).findtext("name") or "").strip()  # noqa: S314 - from libvirt


class Migration(Domains, MigrationDisks):
    """Moving one host's domains to another host; every step says what it left behind."""

    # -- snapshot metadata ---------------------------------------------------------------

    def snapshot_metadata(self, name: str) -> SnapshotMetadata:
        """Return the domain's snapshots' XML (secure, parents first) and the current one."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "read snapshots of")
        with self._doing("read snapshots of", f"domain '{name}'"):
            names = dom.snapshotListNames(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
            xmls = tuple(
                dom.snapshotLookupByName(n, 0).getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)
                for n in names)
            current = dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None
        return SnapshotMetadata(xmls, current)

    def snapshot_metadata_drop(self, name: str) -> None:
        """Forget the domain's snapshots in libvirt only; the disk keeps their data."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "drop snapshot metadata of")
        with self._doing("drop snapshot metadata of", f"domain '{name}'"):
            for snap in dom.listAllSnapshots(0):
                snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)

    def snapshot_metadata_define(self, name: str, metadata: SnapshotMetadata) -> None:
        """Redefine snapshots from their XML (those already known are kept), current last."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "redefine snapshots of")
        with self._doing("redefine snapshots of", f"domain '{name}'"):
            known = set(dom.snapshotListNames(0))
            for xml in metadata.xmls:
                snap = _snapshot_name(xml)
                flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
                if snap == metadata.current:
                    flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
                if snap in known and snap != metadata.current:
                    continue
                dom.snapshotCreateXML(xml, flags)

    # -- job ------------------------------------------------------------------------------

    def migration_progress(self, name: str) -> MigrationProgress | None:
        """Return how far the domain's job is, or None when it has none."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "read the job of")
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError as exc:
            if error_code(exc) not in UNSUPPORTED_CODES:
                raise translate(exc, f"cannot read the job of domain '{name}' on {self.uri}"
                                ) from exc
            info = self._quietly(dom.jobInfo)
            if not info or info[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return None
            return MigrationProgress(total=info[3], processed=info[4], remaining=info[5])
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return MigrationProgress(total=int(stats.get("data_total", 0)),
                                 processed=int(stats.get("data_processed", 0)),
                                 remaining=int(stats.get("data_remaining", 0)))

    def migration_abort(self, name: str) -> None:
        """Cancel the domain's running job (a migration); a domain with none is fine."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "cancel the job of")
        try:
            dom.abortJob()
        except libvirt.libvirtError as exc:
            if error_code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:
                raise translate(exc, f"cannot cancel the job of domain '{name}' on {self.uri}"
                                ) from exc

    # -- moves ----------------------------------------------------------------------------

    def migrate_live(self, name: str, dest_uri: str, *, shared: bool, vnc_port: int | None,
                     vnc_listen: str, peer_to_peer: bool = False, migrate_uri: str = "",
                     progress: Callable[[MigrationProgress], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> MigrationResult:
        """Move a running domain to dest_uri while it runs; return how it runs there.

        `migrate_uri` is where qemu sends the guest (`tcp://<address>`), by default the
        destination URI's host. `progress` is called with the job's progress at every poll
        and `should_stop` asked: when it answers yes (or `progress` raises) the job is
        aborted. On any failure the domain keeps running here with its snapshots, and nothing
        of it is left on the destination, unless libvirt says it finished there (then that
        counts as done).
        """
        check_domain_name(name)
        dom = self._lookup_domain(name, "migrate")
        with self._doing("migrate", f"domain '{name}'"):
            if not dom.isActive():
                raise VirtError(f"cannot migrate domain '{name}' live on {self.uri}: "
                                "it is not running")
            live_xml = dom.XMLDesc(_MIGRATABLE_XML)
            persist_xml = dom.XMLDesc(_MIGRATABLE_XML | libvirt.VIR_DOMAIN_XML_INACTIVE)
        dconn = get_connection(dest_uri)
        moved = {"vnc_port": vnc_port, "vnc_listen": vnc_listen}
        params: dict[str, object] = {
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: retarget_domain_xml(live_xml, **moved),
            libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: retarget_domain_xml(persist_xml, **moved),
        }
        uri = migrate_uri or migration_uri(dest_uri)
        if uri:
            # Peer to peer too: the destination would name itself by its hostname otherwise.
            params[libvirt.VIR_MIGRATE_PARAM_URI] = uri
        flags = LIVE_FLAGS | (libvirt.VIR_MIGRATE_UNSAFE if shared
                              else libvirt.VIR_MIGRATE_NON_SHARED_INC)
        if peer_to_peer:
            flags |= libvirt.VIR_MIGRATE_PEER2PEER
        copy = DiskCopy() if shared else self.disks_copy_to(name, dest_uri, live=True)
        try:
            snapshots = self.snapshot_metadata(name)
            if snapshots.xmls:
                self.snapshot_metadata_drop(name)
        except BaseException:
            self.disks_remove_copies(dest_uri, copy)
            raise
        try:
            self._run_job(dom, name, lambda: (
                dom.migrateToURI3(dest_uri, params, flags) if peer_to_peer
                else dom.migrate3(dconn, params, flags)), progress, should_stop)
        except BaseException as exc:
            if self._arrived(name, dest_uri):
                # libvirt's last phase failed after the guest moved: it runs there, done.
                return self._moved(dest_uri, name, snapshots, moved, copy)
            self._left_on_destination(dest_uri, name)
            self.disks_remove_copies(dest_uri, copy)
            if snapshots.xmls:
                self.snapshot_metadata_define(name, snapshots)
            if isinstance(exc, libvirt.libvirtError):
                raise translate(exc, f"cannot migrate domain '{name}' from {self.uri} to "
                                     f"{dest_uri}") from exc
            raise
        return self._moved(dest_uri, name, snapshots, moved, copy)

    def _moved(self, dest_uri: str, name: str, snapshots: SnapshotMetadata, moved: dict,
               copy: DiskCopy) -> MigrationResult:
        """Finish a live move: snapshots there, the disks that moved removed here."""
        result = self._bring_snapshots(dest_uri, name, snapshots, moved)
        try:
            self.disks_remove_moved(copy)
        except VirtError as exc:  # the guest runs there: a stale copy here is only space
            problem = f"its old disk could not be removed from {self.uri}: {exc}"
            return MigrationResult(result.facts, "; ".join(
                p for p in (result.snapshot_problem, problem) if p))
        return result

    def migrate_cold(self, name: str, dest_uri: str, *, shared: bool, vnc_port: int | None,
                     vnc_listen: str) -> DomainFacts:
        """Move a stopped domain's definition and snapshots to dest_uri; undefine it here.

        On a shared datastore its disk stays where it is; otherwise its disks are copied
        there first (bases only when missing) and removed here once it is defined there.
        """
        check_domain_name(name)
        dom = self._lookup_domain(name, "migrate")
        with self._doing("migrate", f"domain '{name}'"):
            if dom.isActive():
                raise VirtError(f"cannot migrate domain '{name}' stopped on {self.uri}: "
                                "it is running")
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        moved = {"vnc_port": vnc_port, "vnc_listen": vnc_listen}
        snapshots = self.snapshot_metadata(name)
        dest = type(self)(dest_uri)
        if dest.find_domain(name) is not None:
            raise VirtError(f"cannot migrate domain '{name}' to {dest_uri}: a domain of that "
                            "name is defined there already")
        copy = DiskCopy() if shared else self.disks_copy_to(name, dest_uri, live=False)
        try:
            facts = dest.define_domain(retarget_domain_xml(xml, **moved))
            if snapshots.xmls:
                dest.snapshot_metadata_define(
                    name, snapshots.retargeted(vnc_port=vnc_port, vnc_listen=vnc_listen))
        except BaseException:
            dest.undefine_domain(name)
            self.disks_remove_copies(dest_uri, copy)
            raise
        self.undefine_domain(name)
        try:
            self.disks_remove_moved(copy)
        except VirtError:  # it is defined there: a stale copy here is only space
            log.exception("could not remove the moved disks of %s from %s", name, self.uri)
        return facts

    # -- helpers --------------------------------------------------------------------------

    def _run_job(self, dom: libvirt.virDomain, name: str, call: Callable[[], object],
                 progress: Callable[[MigrationProgress], None] | None,
                 should_stop: Callable[[], bool] | None) -> None:
        """Run a blocking migration call in a thread; report its progress; abort on demand."""
        outcome: dict[str, BaseException] = {}

        def run() -> None:
            try:
                call()
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc

        worker = threading.Thread(target=run, name=f"migrate-{name}", daemon=True)
        worker.start()
        stopped: BaseException | None = None
        while worker.is_alive():
            worker.join(PROGRESS_POLL_S)
            if not worker.is_alive() or stopped is not None:
                continue
            try:
                if should_stop is not None and should_stop():
                    raise MigrationCancelled(f"the migration of domain '{name}' was cancelled")
                if progress is not None:
                    job = self._quietly(dom.jobStats, 0)
                    if job and job.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE:
                        progress(MigrationProgress(
                            total=int(job.get("data_total", 0)),
                            processed=int(job.get("data_processed", 0)),
                            remaining=int(job.get("data_remaining", 0))))
            except BaseException as exc:
                stopped = exc
                self._quietly(dom.abortJob)
        error = stopped if stopped is not None else outcome.pop("error", None)
        stopped = None
        if error is not None:
            # Raised without a cycle through this frame, which would keep the domain's
            # connection (and a test driver's whole state) alive until the next collection.
            try:
                raise error
            finally:
                del error

    def _arrived(self, name: str, dest_uri: str) -> bool:
        """Return whether the domain runs on the destination and no longer here."""
        here = self._quietly(lambda: get_connection(self.uri).lookupByName(name).isActive())
        there = self._quietly(lambda: get_connection(dest_uri).lookupByName(name).isActive())
        return bool(there) and not here

    @staticmethod
    def _left_on_destination(dest_uri: str, name: str) -> None:
        """Remove what a failed move left of the domain on the destination (never the source's)."""
        try:
            dom = get_connection(dest_uri).lookupByName(name)
        except libvirt.libvirtError:
            return
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        except libvirt.libvirtError as exc:
            if error_code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                raise translate(exc, f"cannot remove domain '{name}' left on {dest_uri} by a "
                                     "failed migration") from exc

    def _bring_snapshots(self, dest_uri: str, name: str, snapshots: SnapshotMetadata,
                         moved: dict) -> MigrationResult:
        """Redefine the snapshots on the destination the domain now runs on; say if not."""
        dest = type(self)(dest_uri)
        problem = ""
        if snapshots.xmls:
            try:
                dest.snapshot_metadata_define(name, snapshots.retargeted(**moved))
            except VirtError as exc:
                # The guest has moved: a failure here must not be mistaken for a failed move.
                problem = str(exc)
        try:
            return MigrationResult(dest.domain(name), problem)
        except NotFound as exc:
            raise VirtError(f"domain '{name}' is not on {dest_uri} after its migration") from exc


class MigrationCancelled(VirtError):
    """A migration was cancelled on request; the domain stays where it was."""


