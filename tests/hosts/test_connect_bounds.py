"""Connecting to libvirt is bounded: a connect timeout, a per-URI back-off, clear errors.

The hung host is real: a TCP listener that accepts and never answers, reached by libvirt's own
client over `qemu+tcp://`. Time bounds are generous upper bounds (3x the timeout) that prove
"bounded", not benchmarks.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hosts.virt import ConnectError, Hypervisor, VirtError, close_all, connect_failure
from hosts.virt import connection as conn_module

# Only hosts.virt imports libvirt; its error class is reached through the adapter's module.
LibvirtError = conn_module.libvirt.libvirtError

TIMEOUT = 1.0


class HungListener:
    """A TCP port that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.uri = f"qemu+tcp://127.0.0.1:{self.port}/system"
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(client)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for client in self.accepted:
            client.close()
        self.server.close()


@pytest.fixture
def hung() -> Iterator[HungListener]:
    listener = HungListener()
    yield listener
    listener.close()


@pytest.fixture(autouse=True)
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(conn_module, "CONNECT_TIMEOUT", TIMEOUT)
    monkeypatch.setattr(conn_module, "CONNECT_BACKOFF", 30.0)
    close_all()
    yield
    close_all()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connecting_to_a_host_that_never_answers_fails_within_the_timeout(hung) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        Hypervisor(hung.uri).list_domains()
    assert time.monotonic() - started < 3 * TIMEOUT
    message = str(caught.value)
    assert message.startswith(f"cannot connect to host 127.0.0.1 ({hung.uri}): no answer within")
    assert "check that libvirtd runs there and that the network reaches it" in message
    assert caught.value.uri == hung.uri
    assert hung.accepted, "libvirt's client really reached the listener"


def test_after_a_failed_connect_the_uri_fails_fast_without_trying_again(hung) -> None:
    with pytest.raises(ConnectError):
        Hypervisor(hung.uri).facts()
    tries = len(hung.accepted)
    with pytest.raises(ConnectError, match=r"no answer within .*\(the next attempt in \d+ s\)"):
        Hypervisor(hung.uri).list_domains()
    assert len(hung.accepted) == tries
    assert connect_failure(hung.uri) is not None


def test_once_the_back_off_is_over_the_uri_is_tried_again(hung, monkeypatch) -> None:
    monkeypatch.setattr(conn_module, "CONNECT_BACKOFF", 0.01)
    with pytest.raises(ConnectError):
        Hypervisor(hung.uri).facts()
    tries = len(hung.accepted)
    time.sleep(0.05)
    with pytest.raises(ConnectError, match="no answer within"):
        Hypervisor(hung.uri).facts()
    assert len(hung.accepted) > tries


def test_a_given_up_connect_does_not_leave_its_thread_waiting(hung) -> None:
    with pytest.raises(ConnectError):
        Hypervisor(hung.uri).facts()
    # The adapter shuts the stuck socket down, so libvirt's open returns and its thread ends.
    deadline = time.monotonic() + 3 * TIMEOUT
    while conn_module._pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not conn_module._pending
    assert not [t for t in threading.enumerate() if t.name.startswith("libvirt-open")]


def test_a_refused_connection_names_the_host_and_what_to_check() -> None:
    uri = f"qemu+tcp://127.0.0.1:{closed_port()}/system"
    with pytest.raises(ConnectError) as caught:
        Hypervisor(uri).facts()
    message = str(caught.value)
    assert message.startswith(f"cannot connect to host 127.0.0.1 ({uri}): ")
    assert message.endswith("check that libvirtd runs there and that the network reaches it")


def test_a_system_error_from_libvirt_python_becomes_a_clear_connect_error(monkeypatch) -> None:
    def broken_open(uri: str) -> None:
        try:
            raise LibvirtError("unable to connect to server: Connection timed out")
        except LibvirtError:
            raise SystemError("<built-in function virConnectOpen> returned a result with an "
                              "exception set") from None

    monkeypatch.setattr(conn_module.libvirt, "open", broken_open)
    uri = "qemu+tcp://hv9.example.org/system"
    with pytest.raises(VirtError) as caught:
        Hypervisor(uri).facts()
    message = str(caught.value)
    assert "SystemError" not in message and "virConnectOpen" not in message
    assert message.startswith(f"cannot connect to host hv9.example.org ({uri}): ")
    assert "check that libvirtd runs there" in message


def test_a_success_ends_the_back_off(monkeypatch) -> None:
    uri = "test:///default"
    real_open = conn_module.libvirt.open
    monkeypatch.setattr(conn_module.libvirt, "open", lambda u: (_ for _ in ()).throw(
        LibvirtError("refused")))
    with pytest.raises(ConnectError):
        Hypervisor(uri).facts()
    assert connect_failure(uri) is not None
    monkeypatch.setattr(conn_module.libvirt, "open", real_open)
    monkeypatch.setitem(conn_module._backoff, uri, (0.0, conn_module._backoff[uri][1]))
    assert Hypervisor(uri).facts().hypervisor.startswith("TEST")
    assert connect_failure(uri) is None and uri not in conn_module._backoff
