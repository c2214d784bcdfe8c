"""Hypervisor tier: a real libvirtd reached over TCP through a relay that can stop answering.

The relay forwards `qemu+tcp://127.0.0.1:<port>/system` to the local libvirtd's socket. While
it relays, the adapter works as with any host; once it freezes (keeps every socket open, moves
no byte), an in-flight call is aborted by libvirt's keepalive, new connects give up after the
connect timeout, and reconciliation records the reason on the host. Time bounds are generous
upper bounds that prove "bounded" (3x the expected figure), not benchmarks.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hosts.virt import ConnectError, Hypervisor, VirtError, close_all
from hosts.virt import connection as conn_module

pytestmark = pytest.mark.hypervisor

LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 1, 2
CONNECT_TIMEOUT = 2.0


class Relay:
    """TCP to libvirtd's UNIX socket, relaying until frozen."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.uri = f"qemu+tcp://127.0.0.1:{self.server.getsockname()[1]}/system"
        self.frozen = threading.Event()
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.server, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        while not self.stopped.is_set():
            for key, _ in sel.select(timeout=0.1):
                sock = key.fileobj
                if sock is self.server:
                    client, _ = self.server.accept()
                    self.sockets.append(client)
                    if self.frozen.is_set():
                        continue  # accepted, never answered
                    upstream = socket.socket(socket.AF_UNIX)
                    upstream.connect(LIBVIRT_SOCKET)
                    self.sockets.append(upstream)
                    peers[client], peers[upstream] = upstream, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(upstream, selectors.EVENT_READ)
                    continue
                if self.frozen.is_set():
                    sel.unregister(sock)  # keep it open, move nothing
                    continue
                data = sock.recv(65536)
                if not data:
                    sel.unregister(sock)
                    continue
                peers[sock].sendall(data)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()
        self.server.close()


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> Iterator[Relay]:
    if not os.path.exists(LIBVIRT_SOCKET):
        pytest.fail(f"{LIBVIRT_SOCKET} is missing: libvirtd does not run as one daemon here")
    monkeypatch.setattr(conn_module, "KEEPALIVE_INTERVAL", KEEPALIVE_INTERVAL)
    monkeypatch.setattr(conn_module, "KEEPALIVE_COUNT", KEEPALIVE_COUNT)
    monkeypatch.setattr(conn_module, "CONNECT_TIMEOUT", CONNECT_TIMEOUT)
    close_all()
    r = Relay()
    yield r
    close_all()
    r.close()


def test_a_host_that_stops_answering_aborts_the_call_under_way(relay: Relay) -> None:
    hv = Hypervisor(relay.uri)
    assert isinstance(hv.list_domains(), list)  # the relay reaches the real libvirtd
    relay.frozen.set()
    started = time.monotonic()
    with pytest.raises(VirtError, match="keepalive"):
        hv.list_domains()  # sent, never answered: keepalive closes the connection
    bound = KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 1)
    assert time.monotonic() - started < 3 * bound
    # The next call opens a new connection, which the frozen host never answers either.
    started = time.monotonic()
    with pytest.raises(ConnectError, match=r"no answer within"):
        hv.list_domains()
    assert time.monotonic() - started < 3 * CONNECT_TIMEOUT


@pytest.mark.django_db
def test_reconciling_a_frozen_host_records_why_and_gives_up_in_bounded_time(relay: Relay) -> None:
    from tests import factories as f
    from vms.tasks import reconcile_host

    host = f.HostFactory(name="frozen", uri=relay.uri)
    assert "error" not in reconcile_host(host.pk)
    host.refresh_from_db()
    assert host.last_error == "" and host.reconciled_at is not None
    relay.frozen.set()
    close_all()  # a fresh worker: it must connect to the frozen host
    started = time.monotonic()
    result = reconcile_host(host.pk)
    assert time.monotonic() - started < 3 * CONNECT_TIMEOUT
    assert result["error"].startswith(f"cannot connect to host 127.0.0.1 ({relay.uri})")
    host.refresh_from_db()
    assert host.last_error.startswith(f"cannot connect to host 127.0.0.1 ({relay.uri}): "
                                      "no answer within")
    # A second comparison while the back-off lasts does not try the host again.
    reached = len(relay.sockets)
    assert "the next attempt in" in reconcile_host(host.pk)["error"]
    assert len(relay.sockets) == reached
