"""Fast tests of the SSH runner against a paramiko server in a thread on 127.0.0.1.

The server understands a few made-up commands (never a shell): `echo`, `fail <status> <text>`,
`sleep <seconds>`, `cat` (stdin back) and `words ...` (the argv it parsed, one per line), and
records every command string it received, so the tests see exactly what the client sent.
"""

from __future__ import annotations

import io
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hosts import remote
from hosts.remote import RemoteError, RemoteHost, Result, fetch_host_key, format_host_key, run


def new_ed25519_key() -> paramiko.Ed25519Key:
    """Return a fresh Ed25519 key made in memory."""
    return paramiko.Ed25519Key(file_obj=io.StringIO(new_ed25519_pem()))


def new_ed25519_pem() -> str:
    """Return a fresh Ed25519 private key in OpenSSH format."""
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


@dataclass
class FakeSSHServer:
    """A paramiko SSH server that runs made-up commands and counts its connections."""

    host_key: paramiko.PKey
    client_key: paramiko.PKey
    commands: list[str] = field(default_factory=list)
    auth_attempts: int = 0
    connections: int = 0
    port: int = 0
    client_pem: str = ""
    transports: list[paramiko.Transport] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.drop_connections()
        self._sock.close()

    def drop_connections(self) -> None:
        for transport in list(self.transports):
            transport.close()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=_Interface(self))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    def execute(self, channel: paramiko.Channel, command: str) -> None:
        """Run one made-up command on channel, then send its exit status and close."""
        self.commands.append(command)
        words = shlex.split(command)
        status = 0
        try:
            # This thread starts before paramiko has sent the reply to the exec request; a real
            # sshd never closes a channel before that reply, so wait for the client's stdin EOF
            # (which it sends only after the reply) unless the command means to exit early.
            if words[0] == "quick":
                time.sleep(0.05)
                channel.send_exit_status(int(words[1]))
                return
            deadline = time.monotonic() + 5
            while not channel.eof_received and words[0] != "cat":
                if time.monotonic() > deadline or self.stop.wait(0.001):
                    break
            if words[0] == "echo":
                channel.sendall((" ".join(words[1:]) + "\n").encode())
            elif words[0] == "words":
                channel.sendall("".join(w + "\n" for w in words[1:]).encode())
            elif words[0] == "fail":
                channel.sendall_stderr(" ".join(words[2:]).encode() + b"\n")
                status = int(words[1])
            elif words[0] == "sleep":
                self.stop.wait(float(words[1]))
            elif words[0] == "cat":
                data = b""
                while chunk := channel.recv(65536):
                    data += chunk
                channel.sendall(data)
            else:
                channel.sendall_stderr(f"{words[0]}: command not found\n".encode())
                status = 127
            channel.send_exit_status(status)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away (a timeout test)
        finally:
            channel.close()


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: FakeSSHServer) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.server.auth_attempts += 1
        if username == "root" and key == self.server.client_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(
            target=self.server.execute, args=(channel, command.decode()), daemon=True
        ).start()
        return True


@pytest.fixture
def server() -> Iterator[FakeSSHServer]:
    srv = FakeSSHServer(host_key=new_ed25519_key(), client_key=new_ed25519_key())
    srv.client_pem = new_ed25519_pem()
    srv.client_key = paramiko.Ed25519Key(file_obj=io.StringIO(srv.client_pem))
    srv.start()
    yield srv
    remote.close_all()
    srv.close()


@pytest.fixture
def host(server: FakeSSHServer, tmp_path: Path) -> RemoteHost:
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(server.client_pem)
    return RemoteHost(
        address="127.0.0.1",
        port=server.port,
        host_key=format_host_key(server.host_key),
        key_filename=str(key_file),
        connect_timeout=5,
        command_timeout=10,
    )


# ---- argv and input validation (no network) ----


@pytest.mark.parametrize(
    "argv",
    [
        "iptables -t nat -S",
        ("iptables", "-S"),
        [],
        ["ip", 4],
        ["ip", b"addr"],
        ["ip", None],
        ["echo", "a\0b"],
        [""],
    ],
    ids=["str", "tuple", "empty", "int", "bytes", "none", "nul", "empty-program"],
)
def test_run_refuses_anything_but_a_list_of_clean_strings(argv: object) -> None:
    unused = RemoteHost(address="192.0.2.1", host_key="", key_filename="/nonexistent")
    with pytest.raises(ValueError):
        run(unused, argv)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"address": ""},
        {"address": "-oProxyCommand=x"},
        {"address": "a b"},
        {"port": 0},
        {"port": 70000},
        {"port": "22"},
        {"username": "root; rm"},
        {"username": ""},
        {"host_key": "ssh-ed25519"},
        {"host_key": "ssh-ed25519 not-base64!"},
        {"host_key": "ssh-nonsense AAAA"},
        {"connect_timeout": 0},
        {"command_timeout": -1},
    ],
)
def test_remote_host_refuses_bad_fields(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"address": "192.0.2.1", **kwargs}
    with pytest.raises(ValueError):
        RemoteHost(**fields)  # type: ignore[arg-type]


def test_remote_host_accepts_a_public_key_line_with_comment() -> None:
    key = new_ed25519_key()
    line = f"{format_host_key(key)} root@nat"
    assert RemoteHost(address="192.0.2.1", host_key=line).host_key == line


def test_empty_host_key_refuses_to_connect(server: FakeSSHServer, host: RemoteHost) -> None:
    blind = RemoteHost(address="127.0.0.1", port=server.port, key_filename=host.key_filename)
    with pytest.raises(RemoteError, match="no host key is recorded"):
        run(blind, ["echo", "hi"])
    assert server.connections == 0


def test_missing_key_filename_refuses_to_connect(server: FakeSSHServer, host: RemoteHost) -> None:
    keyless = RemoteHost(address="127.0.0.1", port=server.port, host_key=host.host_key)
    with pytest.raises(RemoteError, match="no private key file"):
        run(keyless, ["echo", "hi"])
    assert server.connections == 0


# ---- against the in-thread server ----


def test_run_returns_stdout_and_exit_status(host: RemoteHost) -> None:
    assert run(host, ["echo", "hello", "world"]) == Result(
        stdout="hello world\n", stderr="", exit_status=0
    )


def test_run_sends_argv_quoted_with_shlex_join(server: FakeSSHServer, host: RemoteHost) -> None:
    argv = ["words", "a b", "$(reboot)", "it's", ";", "|", "*", "", "--comment", "x\ny"]
    result = run(host, argv)
    assert server.commands == [shlex.join(argv)]
    assert result.stdout == "".join(word + "\n" for word in argv[1:])


def test_failing_command_raises_with_command_status_and_stderr(host: RemoteHost) -> None:
    with pytest.raises(RemoteError) as caught:
        run(host, ["fail", "3", "no", "such", "chain"])
    error = caught.value
    assert error.exit_status == 3
    assert error.stderr == "no such chain\n"
    assert "fail 3 no such chain" in error.message
    assert "status 3" in error.message
    assert "no such chain" in error.message
    assert f"127.0.0.1:{host.port}" in error.message


def test_failing_command_with_check_false_returns_the_result(host: RemoteHost) -> None:
    result = run(host, ["fail", "1", "absent"], check=False)
    assert result == Result(stdout="", stderr="absent\n", exit_status=1)


def test_long_stderr_is_cut_to_its_tail_in_the_message(host: RemoteHost) -> None:
    words = [f"w{i}" for i in range(400)]
    with pytest.raises(RemoteError) as caught:
        run(host, ["fail", "2", *words])
    _, _, tail = caught.value.message.partition("exited with status 2: ")
    assert tail.endswith("w398 w399")
    assert "w0 " not in tail
    assert len(tail) <= 501
    assert caught.value.stderr.startswith("w0 w1")


def test_command_exiting_before_reading_stdin_reports_its_status(host: RemoteHost) -> None:
    big = "x" * (8 * 1024 * 1024)  # more than the SSH window, so sending blocks
    with pytest.raises(RemoteError, match="status 4") as caught:
        run(host, ["quick", "4"], stdin=big)
    assert caught.value.exit_status == 4
    assert run(host, ["quick", "0"], stdin=big).exit_status == 0


def test_stdin_reaches_the_command(host: RemoteHost) -> None:
    text = "line one\nsecond 'quoted' line\n" * 2000
    assert run(host, ["cat"], stdin=text).stdout == text


def test_command_timeout_raises_remote_error(host: RemoteHost) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError, match="timed out after 0.3 s") as caught:
        run(host, ["sleep", "30"], timeout=0.3)
    assert time.monotonic() - started < 3
    assert caught.value.exit_status is None


def test_host_default_command_timeout_applies(server: FakeSSHServer, host: RemoteHost) -> None:
    impatient = RemoteHost(
        address=host.address,
        port=host.port,
        host_key=host.host_key,
        key_filename=host.key_filename,
        command_timeout=0.3,
    )
    with pytest.raises(RemoteError, match="timed out"):
        run(impatient, ["sleep", "30"])


def test_connection_is_reused_between_commands(server: FakeSSHServer, host: RemoteHost) -> None:
    for _ in range(5):
        run(host, ["echo", "x"])
    assert server.connections == 1
    remote.close_all()
    run(host, ["echo", "x"])
    assert server.connections == 2


def test_concurrent_commands_share_one_connection(server: FakeSSHServer, host: RemoteHost) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results.append(run(host, ["echo", str(i)]).stdout)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert sorted(results) == sorted(f"{i}\n" for i in range(8))
    assert server.connections == 1


def test_dead_cached_connection_is_reopened(server: FakeSSHServer, host: RemoteHost) -> None:
    run(host, ["echo", "before"])
    server.drop_connections()
    assert run(host, ["echo", "after"]).stdout == "after\n"
    assert server.connections == 2


def test_dead_connection_not_yet_noticed_is_reopened(
    server: FakeSSHServer, host: RemoteHost
) -> None:
    run(host, ["echo", "before"])
    # The client still believes the connection is alive; opening a session fails instead.
    cached = next(iter(remote._clients.values()))
    transport = cached.get_transport()
    assert transport is not None
    original = transport.open_session

    def broken(*args: object, **kwargs: object) -> paramiko.Channel:
        raise paramiko.SSHException("connection reset")

    transport.open_session = broken  # type: ignore[method-assign]
    try:
        assert run(host, ["echo", "after"]).stdout == "after\n"
    finally:
        transport.open_session = original  # type: ignore[method-assign]
    assert server.connections == 2


def test_different_host_key_is_refused_before_authenticating(
    server: FakeSSHServer, host: RemoteHost
) -> None:
    impostor_expected = RemoteHost(
        address=host.address,
        port=host.port,
        host_key=format_host_key(new_ed25519_key()),
        key_filename=host.key_filename,
    )
    with pytest.raises(RemoteError, match="is not the recorded one") as caught:
        run(impostor_expected, ["echo", "x"])
    assert caught.value.exit_status is None
    assert server.auth_attempts == 0
    assert server.commands == []


def test_host_key_of_another_type_is_refused(server: FakeSSHServer, host: RemoteHost) -> None:
    ecdsa_expected = RemoteHost(
        address=host.address,
        port=host.port,
        host_key=format_host_key(paramiko.ECDSAKey.generate()),
        key_filename=host.key_filename,
    )
    with pytest.raises(RemoteError, match="refusing to connect"):
        run(ecdsa_expected, ["echo", "x"])
    assert server.commands == []


def test_wrong_client_key_fails_authentication(
    server: FakeSSHServer, host: RemoteHost, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    other.write_text(new_ed25519_pem())
    stranger = RemoteHost(
        address=host.address, port=host.port, host_key=host.host_key, key_filename=str(other)
    )
    with pytest.raises(RemoteError, match="authentication"):
        run(stranger, ["echo", "x"])
    assert server.commands == []


def test_unreadable_private_key_is_a_remote_error(host: RemoteHost, tmp_path: Path) -> None:
    missing = RemoteHost(
        address=host.address,
        port=host.port,
        host_key=host.host_key,
        key_filename=str(tmp_path / "absent"),
    )
    with pytest.raises(RemoteError, match="cannot read the private key"):
        run(missing, ["echo", "x"])


def test_fetch_host_key_returns_the_server_key(server: FakeSSHServer) -> None:
    assert fetch_host_key("127.0.0.1", server.port, timeout=5) == format_host_key(server.host_key)


def test_connect_timeout_when_the_server_never_speaks(host: RemoteHost) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel completes the handshake; nobody sends a banner
    try:
        mute = RemoteHost(
            address="127.0.0.1",
            port=silent.getsockname()[1],
            host_key=host.host_key,
            key_filename=host.key_filename,
            connect_timeout=0.3,
        )
        started = time.monotonic()
        with pytest.raises(RemoteError, match=r"127\.0\.0\.1"):
            run(mute, ["echo", "x"])
        with pytest.raises(RemoteError):
            fetch_host_key("127.0.0.1", mute.port, timeout=0.3)
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_refused_connection_is_a_remote_error(host: RemoteHost) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    nobody = RemoteHost(
        address="127.0.0.1", port=port, host_key=host.host_key, key_filename=host.key_filename
    )
    with pytest.raises(RemoteError, match="cannot connect"):
        run(nobody, ["echo", "x"])
    with pytest.raises(RemoteError, match="cannot connect"):
        fetch_host_key("127.0.0.1", port, timeout=1)
