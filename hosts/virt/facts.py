"""Plain value objects the adapter returns instead of libvirt handles."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostFacts:
    """What a hypervisor host offers."""

    hostname: str
    cpus: int
    memory_mib: int
    accel: str  # 'kvm' | 'qemu' | 'test'
    libvirt_version: str
    hypervisor: str


@dataclass(frozen=True)
class DomainFacts:
    """The observed state of one domain."""

    name: str
    uuid: str
    state: str  # see hosts.virt.hypervisor.DOMAIN_STATES
    vcpus: int
    memory_mib: int


@dataclass(frozen=True)
class ImageFacts:
    """A storage volume as libvirt describes it."""

    path: str
    format: str
    capacity_bytes: int
    backing_path: str | None
