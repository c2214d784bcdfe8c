"""Snapshots: internal snapshots of a domain, taken, reverted to, deleted and listed."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from .base import HypervisorBase, error_code, state_name, translate
from .checks import check_domain_name, check_snapshot_name, check_text


class Snapshots(HypervisorBase):
    """The snapshots of one host's domains; every method is safe to retry."""

    def _find_snapshot(
        self, dom: libvirt.virDomain, domain: str, name: str
    ) -> libvirt.virDomainSnapshot | None:
        try:
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return None
            raise translate(
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
                raise translate(
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
            return state_name(dom)

    def snapshot_delete(self, domain: str, name: str) -> None:
        """Delete the snapshot; a missing snapshot is fine, a missing domain raises NotFound."""
        check_domain_name(domain)
        check_snapshot_name(name)
        dom = self._lookup_domain(domain, f"delete snapshot '{name}' of")
        snapshot = self._find_snapshot(dom, domain, name)
        if snapshot is not None:
            self._delete(snapshot, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
                         f"cannot delete snapshot '{name}' of domain '{domain}' on {self.uri}")

    def snapshot_names(self, domain: str) -> list[str]:
        """Return the names of the domain's snapshots, sorted."""
        check_domain_name(domain)
        dom = self._lookup_domain(domain, "list snapshots of")
        with self._doing("list snapshots of", f"domain '{domain}'"):
            return sorted(dom.snapshotListNames(0))
