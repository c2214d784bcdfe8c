"""What every part of the Hypervisor shares: its URI, its connection, translated errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from .connection import get_connection
from .errors import NotFound, VirtError
from .facts import DomainFacts

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

# Codes a driver answers with when it does not know a flag or a call.
UNSUPPORTED_CODES = frozenset(
    {
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    }
)

# How often a wait for the guest (power-off, hot-unplug) looks again.
POLL_S = 0.25


def error_code(exc: libvirt.libvirtError) -> int | None:
    """Return libvirt's error code of exc."""
    return exc.get_error_code()


def translate(exc: libvirt.libvirtError, doing: str) -> VirtError:
    """Return the adapter's error for exc: NotFound for a missing object, else VirtError."""
    code = error_code(exc)
    cls = NotFound if code in _NOT_FOUND_CODES else VirtError
    return cls(f"{doing}: {exc.get_error_message()}", code)


def state_name(dom: libvirt.virDomain) -> str:
    """Return the domain's state as one of DOMAIN_STATES' names."""
    return DOMAIN_STATES.get(dom.state()[0], "nostate")


def domain_facts(dom: libvirt.virDomain) -> DomainFacts:
    """Return the observed state of a domain handle."""
    state, max_kib, _cur_kib, vcpus, _cpu_ns = dom.info()
    return DomainFacts(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=DOMAIN_STATES.get(state, "nostate"),
        vcpus=vcpus,
        memory_mib=max_kib // 1024,
    )


# ElementTree never fetches external entities and expat >= 2.4 caps entity expansion; the
# XML the adapter parses comes from libvirt or from domain_xml, so the S314 warnings are noqa'd.


class HypervisorBase:
    """One libvirt host reached through its URI; the parts of Hypervisor build on this."""

    def __init__(self, uri: str) -> None:
        """Remember the URI; the connection is opened (and cached) on first use."""
        if not isinstance(uri, str) or not uri:
            raise VirtError(f"invalid libvirt URI {uri!r}")
        self.uri = uri

    def __repr__(self) -> str:
        """Return a debugging representation naming the URI."""
        return f"Hypervisor({self.uri!r})"

    def _conn(self) -> libvirt.virConnect:
        return get_connection(self.uri)

    @contextmanager
    def _doing(self, action: str, what: str) -> Iterator[None]:
        """Translate libvirt errors into VirtError naming the action and object."""
        try:
            yield
        except libvirt.libvirtError as exc:
            raise translate(exc, f"cannot {action} {what} on {self.uri}") from exc

    def _lookup_domain(self, name: str, action: str) -> libvirt.virDomain:
        conn = self._conn()
        with self._doing(action, f"domain '{name}'"):
            return conn.lookupByName(name)

    def _all_domains(self) -> list[libvirt.virDomain]:
        conn = self._conn()
        with self._doing("list", "domains"):
            return conn.listAllDomains(0)

    def _facts_of(self, dom: libvirt.virDomain, name: str) -> DomainFacts:
        with self._doing("read", f"domain '{name}'"):
            return domain_facts(dom)

    @staticmethod
    def _delete(handle: libvirt.virStorageVol | libvirt.virDomainSnapshot, missing: int,
                doing: str) -> None:
        """Delete a volume or snapshot; one that libvirt says is gone already is fine."""
        try:
            handle.delete(0)
        except libvirt.libvirtError as exc:
            if error_code(exc) != missing:
                raise translate(exc, doing) from exc

    @staticmethod
    def _quietly(call: Callable[..., _T], *args: object) -> _T | None:
        """Return call(*args), or None when libvirt refuses."""
        try:
            return call(*args)
        except libvirt.libvirtError:
            return None
