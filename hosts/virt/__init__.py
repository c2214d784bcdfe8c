"""The libvirt adapter: the only package that imports libvirt; no Django here."""

from .base import DOMAIN_STATES
from .checks import DISK_TARGET_RE, DOMAIN_NAME_RE, OBJECT_NAME_RE, SNAPSHOT_NAME_RE
from .connection import (
    close_all,
    connect_failure,
    get_connection,
    host_label,
    is_connected,
    is_remote,
)
from .console import SerialConsole, vnc_listen_address
from .errors import ConnectError, NotFound, ShutdownTimeout, VirtError
from .facts import (
    POWER_STATES,
    DomainFacts,
    HostFacts,
    ImageFacts,
    ProbeAttempt,
    ProbeReport,
    power_state,
)
from .hypervisor import Hypervisor
from .probe import ShapeBuilder
from .stats import DomainSample, HostSample

__all__ = [
    "DISK_TARGET_RE",
    "DOMAIN_NAME_RE",
    "DOMAIN_STATES",
    "OBJECT_NAME_RE",
    "POWER_STATES",
    "SNAPSHOT_NAME_RE",
    "ConnectError",
    "DomainFacts",
    "DomainSample",
    "HostFacts",
    "HostSample",
    "Hypervisor",
    "ImageFacts",
    "NotFound",
    "ProbeAttempt",
    "ProbeReport",
    "SerialConsole",
    "ShapeBuilder",
    "ShutdownTimeout",
    "VirtError",
    "close_all",
    "connect_failure",
    "get_connection",
    "host_label",
    "is_connected",
    "is_remote",
    "power_state",
    "vnc_listen_address",
]
