"""Domains: reading them, defining them, and their power: start, shut down, force off, pause."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from .base import (
    POLL_S,
    UNSUPPORTED_CODES,
    HypervisorBase,
    domain_facts,
    error_code,
    state_name,
    translate,
)
from .checks import check_domain_name
from .errors import NotFound, ShutdownTimeout, VirtError
from .facts import DomainFacts

# Tried in turn, most thorough first: older drivers refuse the newer flags.
_UNDEFINE_FLAG_SETS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    0,
)


class Domains(HypervisorBase):
    """The domains of one host and their lifecycle; every method is safe to retry."""

    def list_domains(self) -> list[DomainFacts]:
        """Return every domain on the host, sorted by name."""
        doms = self._all_domains()
        found = []
        for dom in doms:
            try:
                found.append(domain_facts(dom))
            except libvirt.libvirtError as exc:
                # A domain undefined between listing and reading is simply gone.
                if error_code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                    raise translate(exc, f"cannot list domains on {self.uri}") from exc
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
            state = state_name(dom)
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

    def shutdown(self, name: str, timeout: float = 0,
                 stop_waiting: Callable[[], bool] | None = None) -> DomainFacts:
        """Ask the guest to power off by ACPI; with timeout > 0 wait until it is off.

        `stop_waiting` is asked at every poll: when it answers True the wait ends at once and
        the domain is returned as it is (someone forces it off instead).
        """
        check_domain_name(name)
        dom = self._lookup_domain(name, "shut down")
        with self._doing("shut down", f"domain '{name}'"):
            state = state_name(dom)
            if not dom.isActive():
                return domain_facts(dom)
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
                if stop_waiting is not None and stop_waiting():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ShutdownTimeout(
                        f"domain '{name}' on {self.uri} did not shut down within "
                        f"{timeout:g} s; use Force off", timeout,
                    )
                time.sleep(min(POLL_S, remaining))
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
            if error_code(exc) != libvirt.VIR_ERR_OPERATION_INVALID or dom.isActive():
                raise translate(exc, f"cannot force off domain '{name}' on {self.uri}") from exc
        return self._facts_of(dom, name)

    def reboot(self, name: str) -> DomainFacts:
        """Ask a running guest to reboot."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "reboot")
        with self._doing("reboot", f"domain '{name}'"):
            state = state_name(dom)
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
            state = state_name(dom)
            if state == "paused":
                return domain_facts(dom)
            if not dom.isActive():
                raise VirtError(f"cannot suspend domain '{name}' on {self.uri}: it is shut off")
            dom.suspend()
        return self._facts_of(dom, name)

    def resume(self, name: str) -> DomainFacts:
        """Resume a paused domain; a running one is left alone."""
        check_domain_name(name)
        dom = self._lookup_domain(name, "resume")
        with self._doing("resume", f"domain '{name}'"):
            state = state_name(dom)
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
                if flags == 0 or error_code(exc) not in UNSUPPORTED_CODES:
                    raise translate(exc, f"cannot undefine {what} on {self.uri}") from exc
                # The driver refuses one of the flags: retry with fewer.
