"""Plain value objects the adapter returns instead of libvirt handles."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostFacts:
    """What a hypervisor host offers."""

    hostname: str
    cpus: int
    memory_mib: int
    accel: str  # 'kvm' | 'qemu' | 'test', or '' while the host has not been probed
    libvirt_version: str
    hypervisor: str
    cpu_mode: str = ""  # the probed CPU mode, in domain_xml's terms


@dataclass(frozen=True)
class ProbeAttempt:
    """One acceleration and CPU mode tried on a host, and how it went."""

    accel: str  # 'kvm' | 'qemu'
    cpu_mode: str  # '' | 'host-passthrough' | 'host-model' | 'custom:<model>'
    ok: bool
    reason: str  # 'ran' or the first line of the error, trimmed

    def as_dict(self) -> dict[str, object]:
        """Return the attempt as JSON-ready data."""
        return {"accel": self.accel, "cpu_mode": self.cpu_mode, "ok": self.ok,
                "reason": self.reason}


@dataclass(frozen=True)
class ProbeReport:
    """The acceleration and CPU mode a host's guests get, and every attempt behind them."""

    accel: str  # '' when nothing ran
    cpu_mode: str
    attempts: tuple[ProbeAttempt, ...] = ()
    pinned: bool = False  # the result was pinned by an administrator, not probed

    def as_dict(self) -> dict[str, object]:
        """Return the report as JSON-ready data."""
        return {"accel": self.accel, "cpu_mode": self.cpu_mode, "pinned": self.pinned,
                "attempts": [a.as_dict() for a in self.attempts]}


# What the portal records for each libvirt domain state (the values are VM states of
# vms.models.VMState); a state libvirt adds later reads as unknown.
POWER_STATES = {
    "running": "running", "blocked": "running", "shutdown": "running",
    "paused": "paused", "pmsuspended": "paused", "shutoff": "shutoff",
    "crashed": "crashed", "nostate": "unknown",
}


def power_state(state: str | None) -> str:
    """Return the portal's state for a libvirt domain state; unknown for no domain."""
    return POWER_STATES.get(state or "", "unknown")


@dataclass(frozen=True)
class DomainFacts:
    """The observed state of one domain."""

    name: str
    uuid: str
    state: str  # see hosts.virt.base.DOMAIN_STATES
    vcpus: int
    memory_mib: int


@dataclass(frozen=True)
class ImageFacts:
    """A storage volume as libvirt describes it."""

    path: str
    format: str
    capacity_bytes: int
    backing_path: str | None
