"""The RRD store through rrdcached: every call names the daemon, and its failures are handled."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading

import pytest

from monitoring import rrd
from monitoring.rrd import METRICS, RRDError, RRDStore
from tests.monitoring.rrd_helpers import STEP, aligned_now, sample

# ---- rrdcached ----


class FakeRRDTool:
    """Record rrdtool calls and answer them as a daemon-backed rrdtool would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, end: int) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.end = end
        for name in ("create", "update", "last", "fetch", "graphv", "flushcached", "info"):
            monkeypatch.setattr(rrd.rrdtool, name, self._recorder(name))

    def _recorder(self, name: str):
        def record(*args: str):
            self.calls.append((name, args))
            if name == "last":
                return self.end - 10 * STEP
            if name == "fetch":
                rows = [(float(i),) * len(METRICS) for i in range(12)]
                return (self.end - 3600, self.end, STEP), METRICS, rows
            if name == "graphv":
                return {"image": b"\x89PNG fake"}
            if name == "info":
                return {"step": STEP}
            return None

        return record


@pytest.fixture
def fake_rrdcached():
    """Listen on a unix socket as rrdcached would; yield its address and the commands it got."""
    folder = tempfile.mkdtemp(prefix="rrdc-", dir="/tmp")  # short: socket paths max 108 bytes
    path = os.path.join(folder, "sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    server.settimeout(0.05)
    commands: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                commands.append(data.decode().strip())
                conn.sendall(b"0 Gone!\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix:{path}", commands
    stop.set()
    thread.join(timeout=5)
    server.close()
    shutil.rmtree(folder)


def test_every_call_goes_through_the_daemon_when_one_is_set(tmp_path, monkeypatch,
                                                            fake_rrdcached):
    from monitoring import charts

    address, commands = fake_rrdcached
    store = RRDStore(tmp_path / "rrd", daemon=address)
    end = aligned_now()
    fake = FakeRRDTool(monkeypatch, end)

    store.ensure("vm", "web-1")
    path = store.path_for("vm", "web-1")
    path.write_bytes(b"")  # the fake create made no file
    store.update_many({("vm", "web-1"): [(end, sample(1))]})
    store.fetch("vm", "web-1", "hour")
    store.latest("vm", "web-1")
    store.info("vm", "web-1")
    charts.render_png(store, "vm", "web-1", "cpu", "day", "web-1")
    store.archive("vm", "web-1")

    names = [name for name, _ in fake.calls]
    for name in ("create", "last", "update", "fetch", "graphv", "info", "flushcached"):
        assert name in names
    for name, args in fake.calls:
        index = args.index("--daemon")
        assert args[index + 1] == address, name
    # The daemon forgets a path before a new file is made there and after it is archived.
    assert commands == [f"FORGET {path}", f"FORGET {path}"]


def test_archive_through_an_unreachable_daemon_fails_and_keeps_the_file(tmp_path):
    store = RRDStore(tmp_path / "rrd", daemon="unix:/nonexistent/rrdcached.sock")
    path = store.path_for("vm", "web-1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    # The daemon may hold values not yet in the file: without a flush the file stays.
    with pytest.raises(RRDError, match="flushcached"):
        store.archive("vm", "web-1")
    assert path.exists()


def test_a_failed_forget_is_logged_and_archiving_goes_on(tmp_path, monkeypatch, caplog):
    store = RRDStore(tmp_path / "rrd", daemon="unix:/nonexistent/rrdcached.sock")
    monkeypatch.setattr(rrd.rrdtool, "flushcached", lambda *args: None)
    path = store.path_for("vm", "web-1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")

    moved = store.archive("vm", "web-1")

    assert moved is not None and moved.exists()
    assert "FORGET" in caplog.text


@pytest.mark.parametrize(("address", "valid"), [
    ("unix:/run/rrdcached.sock", True), ("/run/rrdcached.sock", True),
    ("rrd.example.org:42217", True), ("10.0.0.5", True), ("[::1]:42217", True),
    ("host:port", False), ("a b", False), ("host;rm -rf /", False),
])
def test_daemon_addresses_are_checked(tmp_path, address, valid):
    if valid:
        assert RRDStore(tmp_path, daemon=address).daemon_args() == ["--daemon", address]
    else:
        with pytest.raises(ValueError):
            RRDStore(tmp_path, daemon=address)


def test_no_daemon_argument_without_a_daemon(store, monkeypatch):
    end = aligned_now()
    fake = FakeRRDTool(monkeypatch, end)
    store.update_many({("vm", "web-1"): [(end, sample(1))]})
    store.fetch("vm", "web-1", "hour")
    assert fake.calls
    assert all("--daemon" not in args for _, args in fake.calls)
    assert store.daemon_args() == []
