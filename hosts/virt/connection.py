"""Per-URI cache of libvirt connections, each opened within a bounded time."""

from __future__ import annotations

import os
import socket
import threading
import time
from urllib.parse import urlsplit

import libvirt

from .errors import ConnectError, VirtError
from .facts import ProbeReport


def _seconds(name: str, default: float) -> float:
    """Return a positive number of seconds from the environment (no Django in the adapter)."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


# A remote peer that stops answering aborts in-flight calls after about interval * count s.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
# libvirt has no connect timeout: a host that accepts TCP and never answers hangs the
# handshake for good. The open runs in a daemon thread and is given up after this long.
CONNECT_TIMEOUT = _seconds("PORTAL_LIBVIRT_CONNECT_TIMEOUT", 10)
# After a failed connect, connects to the same URI fail at once with the same error for this
# long instead of each waiting for the timeout again (a per-URI circuit breaker).
CONNECT_BACKOFF = _seconds("PORTAL_LIBVIRT_CONNECT_BACKOFF", 30)
_DEFAULT_PORTS = {"tcp": 16509, "tls": 16514}


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Swallow libvirt's own error report; errors reach callers as exceptions."""


# Without a handler libvirt prints every error to stderr, even ones we handle.
libvirt.registerErrorHandler(_ignore_libvirt_error, None)

_connections: dict[str, libvirt.virConnect] = {}
# Probe reports per URI, with the pins they were made under; probing starts guests.
_probes: dict[str, tuple[tuple[str, str], ProbeReport]] = {}
_uri_locks: dict[str, threading.Lock] = {}
# URI -> (monotonic time until which connects fail fast, the error they fail with).
_backoff: dict[str, tuple[float, ConnectError]] = {}
# URI -> an open given up on that has not returned yet; one at a time per URI.
_pending: dict[str, threading.Thread] = {}
_lock = threading.Lock()
_event_loop_pid = 0


def is_remote(uri: str) -> bool:
    """Return whether uri reaches libvirtd over a network transport."""
    parts = urlsplit(uri)
    return bool(parts.netloc) or ("+" in parts.scheme and not parts.scheme.endswith("+unix"))


def _start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread so keepalives flow."""
    global _event_loop_pid
    with _lock:
        # A forked worker inherits the flag but not the thread: start one of its own.
        if _event_loop_pid == os.getpid():
            return
        if not _event_loop_pid:
            # Must be registered before the connection that wants keepalives is opened.
            libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_pid = os.getpid()


def host_label(uri: str) -> str:
    """Return the host a URI points at, for messages: its host name or 'this machine'."""
    return urlsplit(uri).hostname or "this machine"


def _connect_error(uri: str, reason: str, code: int | None = None) -> ConnectError:
    host = urlsplit(uri).hostname
    where = f"host {host}" if host else "libvirt on this machine"
    return ConnectError(
        f"cannot connect to {where} ({uri}): {reason}; check that libvirtd runs there and "
        "that the network reaches it", uri, code)


def _reason(exc: BaseException) -> tuple[str, int | None]:
    """Return what libvirt said about a failed open, and its error code."""
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or "libvirt gave no reason", exc.get_error_code()
    # libvirt-python turns a Python error raised inside one of its callbacks into
    # "SystemError: <built-in function virConnectOpen> returned a result with an exception set".
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, libvirt.libvirtError):
        return _reason(cause)
    return f"the connection failed ({(cause or exc).__class__.__name__}: {cause or exc})", None


def _open_bounded(uri: str, timeout: float) -> libvirt.virConnect:
    """Open uri in a daemon thread; give up after timeout seconds without blocking on it."""
    outcome: dict[str, object] = {}
    done = threading.Event()
    guard = threading.Lock()

    def attempt() -> None:
        try:
            conn, error = libvirt.open(uri), None
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            conn, error = None, exc
        with guard:
            if outcome.get("abandoned"):
                # Nobody waits any more: free what a late answer opened.
                if conn is not None:
                    _close_quietly(conn)
                with _lock:
                    if _pending.get(uri) is threading.current_thread():
                        del _pending[uri]
                return
            outcome["conn"], outcome["error"] = conn, error
            done.set()

    thread = threading.Thread(target=attempt, name=f"libvirt-open {uri}", daemon=True)
    thread.start()
    done.wait(timeout)
    with guard:
        if not done.is_set():
            outcome["abandoned"] = True
            with _lock:
                _pending[uri] = thread
    if not done.is_set():
        _cut_stuck_sockets(uri)
        raise _connect_error(uri, f"no answer within {timeout:g} s")
    error = outcome["error"]
    if error is not None:
        if not isinstance(error, Exception):
            raise error  # KeyboardInterrupt and the like are not connection failures
        raise _connect_error(uri, *_reason(error)) from error
    return outcome["conn"]  # type: ignore[return-value]


def _peer(uri: str) -> tuple[set[str], int] | None:
    """Return the addresses and port a qemu+tcp:// or qemu+tls:// URI connects to."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if transport not in _DEFAULT_PORTS or not parts.hostname:
        return None
    port = parts.port or _DEFAULT_PORTS[transport]
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    return {info[4][0] for info in infos}, port


def _cut_stuck_sockets(uri: str) -> None:
    """Shut down this process's TCP sockets to the URI's peer so the given-up open returns.

    Only called when no cached connection shares that peer; a silent peer would otherwise
    keep the open (and its thread and socket) waiting for as long as the TCP session lives.
    """
    peer = _peer(uri)
    if peer is None:
        return
    with _lock:
        others = list(_connections)
    if any(_peer(other) == peer for other in others):
        return
    addresses, port = peer
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in fds:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(name))) as sock:
                if sock.type != socket.SOCK_STREAM or sock.family not in (
                        socket.AF_INET, socket.AF_INET6):
                    continue
                address, remote_port = sock.getpeername()[:2]
                if address in addresses and remote_port == port:
                    sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            continue


def _after_fork_in_child() -> None:
    """Start a forked worker afresh: the parent's sockets, threads and held locks are not its."""
    global _lock
    _lock = threading.Lock()
    _uri_locks.clear()
    _connections.clear()
    _backoff.clear()
    _pending.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except Exception:  # noqa: BLE001 - a closed handle raises TypeError, a dead one libvirtError
        return False


def _open(uri: str) -> libvirt.virConnect:
    remote = is_remote(uri)
    if remote:
        _start_event_loop()
    conn = _open_bounded(uri, CONNECT_TIMEOUT)
    if remote:
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError as exc:
            _close_quietly(conn)
            raise _connect_error(uri, f"keepalive refused: {exc.get_error_message()}",
                                 exc.get_error_code()) from exc
    return conn


def _fail_fast(uri: str) -> None:
    """Raise the last connect error of uri while its back-off lasts or its open still hangs."""
    with _lock:
        until, error = _backoff.get(uri, (0.0, None))
        pending = _pending.get(uri)
    if pending is not None and not pending.is_alive():
        pending = None
    left = until - time.monotonic()
    if error is None or (left <= 0 and pending is None):
        return
    when = (f"the next attempt in {left:.0f} s" if left > 0
            else "an earlier attempt is still waiting for an answer")
    raise ConnectError(f"{error.message} ({when})", uri, error.code)


def connect_failure(uri: str) -> ConnectError | None:
    """Return the error the last connect to uri failed with, while its back-off lasts."""
    with _lock:
        until, error = _backoff.get(uri, (0.0, None))
    return error if until > time.monotonic() else None


def is_connected(uri: str) -> bool:
    """Return whether this process holds a live connection to uri (without opening one)."""
    with _lock:
        conn = _connections.get(uri)
    return conn is not None and _alive(conn)


def get_connection(uri: str) -> libvirt.virConnect:
    """Return the cached connection to uri, opening or reopening it when needed.

    Opening waits at most CONNECT_TIMEOUT seconds; after a failure the URI fails fast with
    the same ConnectError for CONNECT_BACKOFF seconds.
    """
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
        _fail_fast(uri)
        try:
            conn = _open(uri)
        except ConnectError as exc:
            with _lock:
                _backoff[uri] = (time.monotonic() + CONNECT_BACKOFF, exc)
            raise
        with _lock:
            _connections[uri] = conn
            _backoff.pop(uri, None)
        return conn


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - a dead or already closed handle has nothing to free
        pass


def close_all() -> None:
    """Close and forget every cached connection, probe report and connect back-off."""
    with _lock:
        conns = list(_connections.values())
        _connections.clear()
        _probes.clear()
        _backoff.clear()
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
