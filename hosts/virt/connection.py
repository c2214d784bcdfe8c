"""Per-URI cache of libvirt connections."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import libvirt

from .errors import VirtError
from .facts import ProbeReport

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Swallow libvirt's own error report; errors reach callers as exceptions."""


# Without a handler libvirt prints every error to stderr, even ones we handle.
libvirt.registerErrorHandler(_ignore_libvirt_error, None)

_connections: dict[str, libvirt.virConnect] = {}
# Probe reports per URI, with the pins they were made under; probing starts guests.
_probes: dict[str, tuple[tuple[str, str], ProbeReport]] = {}
_uri_locks: dict[str, threading.Lock] = {}
_lock = threading.Lock()
_event_loop_started = False


def is_remote(uri: str) -> bool:
    """Return whether uri reaches libvirtd over a network transport."""
    parts = urlsplit(uri)
    return bool(parts.netloc) or ("+" in parts.scheme and not parts.scheme.endswith("+unix"))


def _start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread so keepalives flow."""
    global _event_loop_started
    with _lock:
        if _event_loop_started:
            return
        # Must be registered before the connection that wants keepalives is opened.
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except Exception:  # noqa: BLE001 - a closed handle raises TypeError, a dead one libvirtError
        return False


def _open(uri: str) -> libvirt.virConnect:
    remote = is_remote(uri)
    if remote:
        _start_event_loop()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise VirtError(
            f"cannot connect to {uri}: {exc.get_error_message()}", exc.get_error_code()
        ) from exc
    if remote:
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError as exc:
            conn.close()
            raise VirtError(
                f"cannot enable keepalive on {uri}: {exc.get_error_message()}",
                exc.get_error_code(),
            ) from exc
    return conn


def get_connection(uri: str) -> libvirt.virConnect:
    """Return the cached connection to uri, opening or reopening it when needed."""
    if not isinstance(uri, str) or not uri or any(ord(ch) < 0x21 for ch in uri):
        raise VirtError(f"invalid libvirt URI {uri!r}")
    with _lock:
        conn = _connections.get(uri)
        if conn is not None and _alive(conn):
            return conn
        uri_lock = _uri_locks.setdefault(uri, threading.Lock())
    # Open outside the global lock: a slow SSH host must not stall other hosts.
    with uri_lock:
        with _lock:
            conn = _connections.get(uri)
            if conn is not None and _alive(conn):
                return conn
            stale = _connections.pop(uri, None)
        if stale is not None:
            _close_quietly(stale)
        conn = _open(uri)
        with _lock:
            _connections[uri] = conn
        return conn


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - a dead or already closed handle has nothing to free
        pass


def close_all() -> None:
    """Close and forget every cached connection and cached probe report."""
    with _lock:
        conns = list(_connections.values())
        _connections.clear()
        _probes.clear()
    for conn in conns:
        _close_quietly(conn)


def cached_probe(uri: str, pins: tuple[str, str] | None = None) -> ProbeReport | None:
    """Return the report probed earlier for uri (under these pins, when given), if any."""
    with _lock:
        found = _probes.get(uri)
    if found is None or (pins is not None and found[0] != pins):
        return None
    return found[1]


def remember_probe(uri: str, pins: tuple[str, str], report: ProbeReport) -> None:
    """Record the probe report made for uri under the given (acceleration, CPU mode) pins."""
    with _lock:
        _probes[uri] = (pins, report)
