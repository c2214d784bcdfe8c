"""The one SSH runner: argv commands on hosts whose host key was recorded at registration.

Commands are argv lists joined with `shlex.join`, so a remote shell sees every argument as one
literal word. The server's host key must equal the recorded one (RejectPolicy, no known_hosts
files, no agent, no default keys). Connections are cached per host and reused; every connect
and every command has a timeout; every failure is raised as `RemoteError`.

This is the only module that imports paramiko, and it imports nothing from Django.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass

import paramiko
from paramiko.pkey import UnknownKeyType

logger = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 15
STDERR_TAIL_CHARS = 500
_READ_CHUNK = 65536
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")


class RemoteError(Exception):
    """A command on a remote host failed, timed out or could not be sent."""

    def __init__(self, message: str, *, exit_status: int | None = None, stderr: str = "") -> None:
        """Keep a readable message, the command's exit status (None if it never ran), stderr."""
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status
        self.stderr = stderr

    def __str__(self) -> str:
        """Return the readable message."""
        return self.message


def _parse_host_key(text: str) -> paramiko.PKey:
    """Parse an OpenSSH public key line ("type base64 [comment]") into a paramiko key."""
    parts = text.split()
    if len(parts) < 2:
        raise ValueError(f"host key {text!r} is not 'type base64'")
    key_type, blob = parts[0], parts[1]
    try:
        data = base64.b64decode(blob, validate=True)
        return paramiko.PKey.from_type_string(key_type, data)
    except (binascii.Error, ValueError, paramiko.SSHException, UnknownKeyType) as exc:
        raise ValueError(f"host key of type {key_type!r} cannot be read: {exc}") from exc


def format_host_key(key: paramiko.PKey) -> str:
    """Return key as the "type base64" line recorded for a host."""
    return f"{key.get_name()} {key.get_base64()}"


@dataclass(frozen=True)
class RemoteHost:
    """Where and as whom to run commands, and the host key the server must present."""

    address: str
    port: int = 22
    username: str = "root"
    host_key: str = ""
    key_filename: str | None = None
    connect_timeout: float = 10
    command_timeout: float = 60

    def __post_init__(self) -> None:
        """Refuse an address, port, user name, host key or timeout that cannot be right."""
        if not isinstance(self.address, str) or not self.address:
            raise ValueError("address must be a non-empty string")
        if any(c.isspace() or c == "\0" for c in self.address) or self.address.startswith("-"):
            raise ValueError(f"address {self.address!r} is not a host name or IP address")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"port {self.port!r} is not an integer")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 1-65535")
        if not isinstance(self.username, str) or not _USERNAME_RE.match(self.username):
            raise ValueError(f"user name {self.username!r} is not a valid login name")
        if self.host_key:
            _parse_host_key(self.host_key)
        for name in ("connect_timeout", "command_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")

    @property
    def label(self) -> str:
        """Return "user@address:port" for messages."""
        return f"{self.username}@{self.address}:{self.port}"


@dataclass(frozen=True)
class Result:
    """What a finished command printed and how it exited."""

    stdout: str
    stderr: str
    exit_status: int


def _check_argv(argv: object) -> list[str]:
    """Return argv if it is a non-empty list of NUL-free strings, else raise ValueError."""
    if not isinstance(argv, list):
        raise ValueError(f"a command must be a list of arguments, not {type(argv).__name__}")
    if not argv:
        raise ValueError("a command must not be empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise ValueError(f"argument {arg!r} is a {type(arg).__name__}, not a str")
        if "\0" in arg:
            raise ValueError(f"argument {arg!r} contains a NUL character")
    if not argv[0]:
        raise ValueError("the program name must not be empty")
    return list(argv)


def _tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """Return the last limit characters of text, stripped."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def fetch_host_key(address: str, port: int = 22, timeout: float = 10) -> str:
    """Return the server's host key as "type base64", for recording when a host is registered."""
    where = f"{address}:{port}"
    transport: paramiko.Transport | None = None
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise RemoteError(f"{where}: cannot connect to read the host key: {exc}") from exc
    try:
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        return format_host_key(transport.get_remote_server_key())
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise RemoteError(
            f"{where}: cannot read the host key: {exc or type(exc).__name__}"
        ) from exc
    finally:
        if transport is not None:
            transport.close()
        sock.close()


# ---- connection cache ----

_CacheKey = tuple[str, int, str, str, str | None]
_clients: dict[_CacheKey, paramiko.SSHClient] = {}
_key_locks: dict[_CacheKey, threading.Lock] = {}
_lock = threading.Lock()


def _cache_key(host: RemoteHost) -> _CacheKey:
    return (host.address, host.port, host.username, host.host_key, host.key_filename)


def _connect(host: RemoteHost) -> paramiko.SSHClient:
    """Open and authenticate a connection whose server presents exactly host.host_key."""
    if not host.host_key:
        raise RemoteError(
            f"{host.label}: no host key is recorded; refusing to connect "
            "(record it with fetch_host_key when registering the host)"
        )
    if not host.key_filename:
        raise RemoteError(f"{host.label}: no private key file is configured; refusing to connect")
    expected = _parse_host_key(host.host_key)
    try:
        pkey = paramiko.PKey.from_path(host.key_filename)
    except (OSError, paramiko.SSHException, ValueError, UnknownKeyType) as exc:
        raise RemoteError(
            f"{host.label}: cannot read the private key {host.key_filename}: {exc}"
        ) from exc

    client = paramiko.SSHClient()
    # Only the recorded key counts: no ~/.ssh/known_hosts, and anything else is rejected.
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    client.get_host_keys().add(name, expected.get_name(), expected)
    try:
        client.connect(
            host.address,
            port=host.port,
            username=host.username,
            pkey=pkey,
            timeout=host.connect_timeout,
            banner_timeout=host.connect_timeout,
            auth_timeout=host.connect_timeout,
            channel_timeout=host.connect_timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        _close(client)
        got = exc.key
        raise RemoteError(
            f"{host.label}: the server's host key ({got.get_name()} "
            f"{got.fingerprint}) is not the recorded one ({expected.get_name()} "
            f"{expected.fingerprint}); refusing to connect"
        ) from exc
    except paramiko.AuthenticationException as exc:
        _close(client)
        raise RemoteError(
            f"{host.label}: authentication with {host.key_filename} failed: {exc}"
        ) from exc
    except TimeoutError as exc:
        _close(client)
        raise RemoteError(
            f"{host.label}: connecting timed out after {host.connect_timeout:g} s"
        ) from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        _close(client)
        reason = str(exc) or type(exc).__name__
        raise RemoteError(f"{host.label}: cannot connect: {reason}") from exc
    transport = client.get_transport()
    if transport is None:  # pragma: no cover - connect() either sets it or raises
        _close(client)
        raise RemoteError(f"{host.label}: cannot connect: no transport")
    transport.set_keepalive(KEEPALIVE_INTERVAL)
    # Commands are small request/response exchanges; Nagle plus delayed ACKs adds 40 ms each.
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def _client(host: RemoteHost, *, stale: paramiko.SSHClient | None = None) -> paramiko.SSHClient:
    """Return the cached live connection for host, replacing a dead or stale one."""
    key = _cache_key(host)
    with _lock:
        key_lock = _key_locks.setdefault(key, threading.Lock())
    # One opener per host: concurrent callers wait and share the same connection.
    with key_lock:
        with _lock:
            client = _clients.get(key)
        # Only the connection the caller saw fail is replaced, not one another thread reopened.
        if client is not None and (client is stale or not _alive(client)):
            logger.info("ssh %s: reopening a dead connection", host.label)
            _drop(key, client)
            client = None
        if client is None:
            client = _connect(host)
            with _lock:
                _clients[key] = client
        return client


def _close(client: paramiko.SSHClient) -> None:
    """Close client's connection now, not when paramiko's reader thread next wakes."""
    transport = client.get_transport()
    if transport is not None:
        try:
            transport.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected
    client.close()


def _drop(key: _CacheKey, client: paramiko.SSHClient) -> None:
    with _lock:
        if _clients.get(key) is client:
            del _clients[key]
    _close(client)


def close_all() -> None:
    """Close every cached connection."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        _close(client)


# ---- running commands ----


def _open_channel(host: RemoteHost, command: str) -> paramiko.Channel:
    """Open a session channel on the cached connection, reopening a dead connection once."""
    stale: paramiko.SSHClient | None = None
    for attempt in (1, 2):
        client = _client(host, stale=stale)
        stale = client
        transport = client.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("the connection is closed")
            return transport.open_session(timeout=host.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # Nothing ran yet, so trying again on a new connection is safe.
            if attempt == 2:
                _drop(_cache_key(host), client)
                raise RemoteError(
                    f"{host.label}: `{command}`: cannot open a session: {exc}"
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _drain(channel: paramiko.Channel, out: list[bytes], err: list[bytes]) -> None:
    while channel.recv_ready():
        out.append(channel.recv(_READ_CHUNK))
    while channel.recv_stderr_ready():
        err.append(channel.recv_stderr(_READ_CHUNK))


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes, int] | None:
    """Read stdout and stderr until the command exits; return None when the deadline passes."""
    out: list[bytes] = []
    err: list[bytes] = []
    # The channel's pipe becomes readable on stdout or stderr data and stays so after EOF;
    # poll, unlike select, copes with descriptor numbers above 1023 in a busy worker.
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)
    while True:
        _drain(channel, out, err)
        remaining = deadline - time.monotonic()
        if channel.eof_received or channel.closed:
            if not channel.status_event.wait(max(remaining, 0)):
                return None
            _drain(channel, out, err)
            return b"".join(out), b"".join(err), channel.recv_exit_status()
        if remaining <= 0:
            return None
        poller.poll(remaining * 1000)


def run(
    host: RemoteHost,
    argv: list[str],
    *,
    check: bool = True,
    timeout: float | None = None,
    stdin: str | None = None,
) -> Result:
    """Run argv on host and return its output; raise RemoteError on failure or timeout."""
    argv = _check_argv(argv)
    if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    limit = host.command_timeout if timeout is None else timeout
    command = shlex.join(argv)
    deadline = time.monotonic() + limit
    channel = _open_channel(host, command)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        channel.close()

    # paramiko waits for the exec reply and for window space without a timeout of its own.
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0), expire)
    watchdog.daemon = True
    try:
        watchdog.start()
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if timed_out.is_set():
                raise RemoteError(f"{host.label}: `{command}` timed out after {limit:g} s") from exc
            raise RemoteError(f"{host.label}: `{command}`: cannot start: {exc}") from exc
        try:
            if stdin is not None:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError):
            # The command exited before reading all its input, or the connection dropped;
            # its exit status (or the lack of one) below tells which.
            pass
        finally:
            watchdog.cancel()
            watchdog.join()  # once it has ended, timed_out is final
        collected = None if timed_out.is_set() else _collect(channel, deadline)
    finally:
        channel.close()
    if collected is None:
        raise RemoteError(f"{host.label}: `{command}` timed out after {limit:g} s")
    out, err, status = collected
    result = Result(
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        exit_status=status,
    )
    if status == -1:
        # paramiko's value when the channel closed without an exit status.
        raise RemoteError(
            f"{host.label}: `{command}`: the connection closed before the command finished",
            stderr=result.stderr,
        )
    if check and status != 0:
        tail = _tail(result.stderr) or "(no stderr)"
        raise RemoteError(
            f"{host.label}: `{command}` exited with status {status}: {tail}",
            exit_status=status,
            stderr=result.stderr,
        )
    return result
