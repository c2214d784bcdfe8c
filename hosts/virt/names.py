"""Checks applied to every name and path before it reaches libvirt."""

from __future__ import annotations

import posixpath
import re

from .errors import VirtError

DOMAIN_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# Volumes need dots for suffixes such as '.qcow2'; pools and networks share that shape.
OBJECT_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")


def _check(kind: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise VirtError(f"invalid {kind} name {value!r}: it must match {pattern.pattern}")
    return value


def check_domain_name(name: object) -> str:
    """Return name if it is a valid domain name, else raise VirtError."""
    return _check("domain", name, DOMAIN_NAME_RE)


def check_volume_name(name: object) -> str:
    """Return name if it is a valid storage volume name, else raise VirtError."""
    return _check("volume", name, OBJECT_NAME_RE)


def check_pool_name(name: object) -> str:
    """Return name if it is a valid storage pool name, else raise VirtError."""
    return _check("pool", name, OBJECT_NAME_RE)


def check_network_name(name: object) -> str:
    """Return name if it is a valid network name, else raise VirtError."""
    return _check("network", name, OBJECT_NAME_RE)


def check_abs_path(kind: str, path: object) -> str:
    """Return path if it is absolute, normalised and printable, else raise VirtError."""
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path)
        # normpath keeps a leading '//' but that is never what we want either
        or posixpath.normpath(path) != path
        or path.startswith("//")
    ):
        raise VirtError(f"invalid {kind} {path!r}: give an absolute, normalised path")
    return path


def check_size(kind: str, value: object) -> int:
    """Return value if it is a positive whole number of bytes, else raise VirtError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise VirtError(f"invalid {kind} {value!r}: give a positive number of bytes")
    return value
