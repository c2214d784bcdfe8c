"""The RRD store: file layout, safe paths, batched writes and reads of VM and host history."""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import rrdtool

from monitoring import rrd
from monitoring.rrd import KINDS, METRICS, PERIODS, RRDError, RRDStore, Series

STEP = 300


def aligned_now() -> int:
    """Return the current time rounded down to a whole step."""
    return int(time.time()) // STEP * STEP


def sample(i: int) -> dict[str, float | None]:
    """Return the i-th test sample: increasing values, disk_read unknown every fourth sample."""
    return {
        "cpu": float(i),
        "memory": i * 1_000_000.0,
        "disk_read": None if i % 4 == 0 else i * 10.0,
        "disk_write": i * 20.0,
        "net_rx": i * 30.0,
        "net_tx": i * 40.0,
    }


def two_hours(end: int) -> list[tuple[int, dict[str, float | None]]]:
    """Return 24 samples, one per step, the last at `end`."""
    return [(end - (24 - i) * STEP, sample(i)) for i in range(1, 25)]


def by_time(series: Series, metric: str) -> dict[int, float | None]:
    """Map each row's time to the metric's value."""
    return dict(zip(series.times, series.column(metric), strict=True))


@pytest.fixture
def store(tmp_path: Path) -> RRDStore:
    return RRDStore(tmp_path / "rrd")


# ---- layout ----


def test_ensure_creates_gauges_and_archives_for_every_period_within_the_size_budget(store):
    path = store.ensure("vm", "web-1")

    assert path == store.directory / "vm" / "web-1.rrd"
    assert path.stat().st_size <= 200 * 1024
    info = rrdtool.info(str(path))
    assert info["step"] == STEP
    names = {key.split("]")[0][3:] for key in info if key.startswith("ds[")}
    assert names == set(METRICS)
    for metric in METRICS:
        assert info[f"ds[{metric}].type"] == "GAUGE"
        assert info[f"ds[{metric}].minimal_heartbeat"] == 2 * STEP
        assert info[f"ds[{metric}].min"] == 0.0
    assert info["ds[cpu].max"] == 100.0
    for metric in METRICS[1:]:
        maximum = info[f"ds[{metric}].max"]
        assert maximum is None or math.isnan(maximum)  # unbounded

    archives = set()
    index = 0
    while f"rra[{index}].cf" in info:
        archives.add((info[f"rra[{index}].cf"], info[f"rra[{index}].pdp_per_row"],
                      info[f"rra[{index}].rows"]))
        index += 1
    expected = {(cf, pdp, rows) for cf in ("AVERAGE", "MAX")
                for pdp, rows in ((1, 317), (6, 370), (24, 410), (288, 403))}
    assert archives == expected
    # Each period is held whole at its resolution by both consolidations.
    for cf in ("AVERAGE", "MAX"):
        spans = {pdp: pdp * rows * STEP for c, pdp, rows in archives if c == cf}
        assert spans[1] >= PERIODS["day"] >= PERIODS["hour"]
        assert spans[6] >= PERIODS["week"]
        assert spans[24] >= PERIODS["month"]
        assert spans[288] >= PERIODS["year"]


def test_ensure_keeps_an_existing_file_and_its_data(store):
    end = aligned_now()
    store.update_many({("vm", "web-1"): two_hours(end)})
    before = store.path_for("vm", "web-1").read_bytes()

    store.ensure("vm", "web-1")
    # Even a creator that missed the file on its check is refused by --no-overwrite.
    with pytest.raises(rrdtool.OperationalError, match="File exists"):
        rrdtool.create(str(store.path_for("vm", "web-1")), "--no-overwrite",
                       "DS:x:GAUGE:600:0:U", "RRA:AVERAGE:0.5:1:10")

    assert store.path_for("vm", "web-1").read_bytes() == before
    assert store.last_update("vm", "web-1") == end


def test_hosts_and_vms_get_separate_files(store):
    assert store.path_for("vm", "node-1") != store.path_for("host", "node-1")
    store.ensure("host", "node-1")
    assert store.exists("host", "node-1")
    assert not store.exists("vm", "node-1")


# ---- paths ----


@pytest.mark.parametrize("key", [
    "../x", "/etc/passwd", "A", "x/y", "", "-x", "x" * 65, "x\n", "x.rrd", "..", "x y", None,
])
def test_path_for_refuses_keys_outside_the_pattern_and_creates_nothing(tmp_path, key):
    store = RRDStore(tmp_path / "rrd")

    with pytest.raises(ValueError):
        store.path_for("vm", key)
    with pytest.raises(ValueError):
        store.ensure("vm", key)
    with pytest.raises(ValueError):
        store.update_many({("vm", key): [(aligned_now(), {"cpu": 1.0})]})

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["disk", "", "VM", "../vm", "archive"])
def test_path_for_refuses_unknown_kinds(tmp_path, kind):
    store = RRDStore(tmp_path / "rrd")
    with pytest.raises(ValueError):
        store.path_for(kind, "web-1")
    with pytest.raises(ValueError):
        store.ensure(kind, "web-1")
    assert list(tmp_path.iterdir()) == []


def test_path_for_refuses_a_kind_folder_linked_outside_the_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store = RRDStore(tmp_path / "rrd")
    store.directory.mkdir()
    (store.directory / "vm").symlink_to(outside)

    with pytest.raises(ValueError, match="outside"):
        store.ensure("vm", "web-1")
    assert list(outside.iterdir()) == []


def test_every_path_lies_inside_the_directory(store):
    for kind in KINDS:
        assert store.path_for(kind, "a-1").is_relative_to(store.directory)


# ---- writes and reads ----


def test_samples_written_in_a_batch_read_back_from_the_hour_and_day_archives(store):
    end = aligned_now()
    samples = two_hours(end)
    store.update_many({("vm", "web-1"): samples})

    day = store.fetch("vm", "web-1", "day", end=end)
    hour = store.fetch("vm", "web-1", "hour", end=end)

    assert day.step == hour.step == STEP
    assert day.metrics == METRICS
    for series, first in ((day, 0), (hour, 12)):
        for metric in METRICS:
            values = by_time(series, metric)
            for at, written in samples[first:]:
                if written[metric] is None:
                    assert values[at] is None, (metric, at)
                else:
                    assert values[at] == pytest.approx(written[metric]), (metric, at)
    # The hour holds the last hour only; the day holds nothing before the first sample.
    assert min(hour.times) >= end - PERIODS["hour"]
    assert all(value is None for at, value in by_time(day, "cpu").items() if at < samples[0][0])
    assert day.has_data and hour.has_data


def test_unknown_values_are_stored_as_unknown(store):
    end = aligned_now()
    store.update_many({("vm", "web-1"): [
        (end - STEP, {"cpu": 10.0, "memory": None}),
        (end, {"cpu": float("nan"), "memory": 5.0}),
    ]})

    series = store.fetch("vm", "web-1", "hour", end=end)

    assert by_time(series, "cpu")[end - STEP] == 10.0
    assert by_time(series, "cpu")[end] is None
    assert by_time(series, "memory")[end - STEP] is None
    assert by_time(series, "memory")[end] == 5.0
    # Metrics left out of a sample are unknown too.
    assert by_time(series, "net_tx")[end] is None


def test_redelivered_and_older_samples_are_skipped_without_error(store):
    end = aligned_now()
    samples = two_hours(end - STEP)
    store.update_many({("vm", "web-1"): samples})

    changed = [(at, {**values, "cpu": 99.0}) for at, values in samples]
    # The same collection again, older ones, a duplicate, and one new sample.
    store.update_many({("vm", "web-1"): [*changed, (end, sample(50)), (end, sample(60))]})
    store.update_one("vm", "web-1", end - 10 * STEP, sample(70))

    values = by_time(store.fetch("vm", "web-1", "day", end=end), "cpu")
    for at, written in samples:
        assert values[at] == pytest.approx(written["cpu"])
    assert values[end] == 50.0
    assert store.last_update("vm", "web-1") == end


def test_a_sample_older_than_a_rounded_down_last_update_is_skipped_on_retry(
        store, monkeypatch, update_calls):
    end = aligned_now()
    store.update_many({("vm", "web-1"): [(end - STEP + 7, sample(1))]})
    # rrdcached answers `last` rounded down to a step; the refusal names the real time.
    monkeypatch.setattr(rrd.rrdtool, "last", lambda *args: end - STEP)

    store.update_many({("vm", "web-1"): [(end - STEP + 7, sample(1)), (end, sample(2))]})

    assert len(update_calls) == 3
    assert [v.split(":")[0] for v in update_calls[-1][3:]] == [str(end)]
    monkeypatch.undo()
    assert store.last_update("vm", "web-1") == end


def test_samples_are_written_in_time_order_whatever_order_they_come_in(store):
    end = aligned_now()
    samples = two_hours(end)
    shuffled = samples[:]
    random.Random(4).shuffle(shuffled)

    store.update_many({("vm", "web-1"): shuffled})

    values = by_time(store.fetch("vm", "web-1", "day", end=end), "memory")
    assert [values[at] for at, _ in samples] == [v["memory"] for _, v in samples]


def test_averages_are_the_mean_of_the_known_values_written(store):
    end = aligned_now()
    samples = two_hours(end)
    store.update_many({("vm", "web-1"): samples})

    averages = store.averages("vm", "web-1", "day")

    for metric in METRICS:
        known = [v[metric] for _, v in samples if v[metric] is not None]
        assert averages[metric] == pytest.approx(sum(known) / len(known)), metric


def test_latest_is_the_last_known_value_of_each_metric(store):
    end = aligned_now()
    store.update_many({("vm", "web-1"): two_hours(end)})

    latest = store.latest("vm", "web-1")

    # Sample 24 is the last; its disk_read is unknown, so sample 23's is the last known.
    assert latest == pytest.approx({**sample(24), "disk_read": sample(23)["disk_read"]})


def test_an_object_without_a_file_reads_as_no_data(store):
    series = store.fetch("vm", "never", "week")

    assert series.rows == []
    assert not series.has_data
    assert store.latest("vm", "never") == {}
    assert store.averages("vm", "never", "day") == dict.fromkeys(METRICS)
    assert store.last_update("vm", "never") is None
    assert not store.exists("vm", "never")


def test_a_new_file_without_samples_has_no_data(store):
    store.ensure("host", "node-1")
    assert not store.fetch("host", "node-1", "day").has_data
    assert store.latest("host", "node-1") == dict.fromkeys(METRICS)


@pytest.mark.parametrize("period", ["minute", "", "Day", None])
def test_fetch_refuses_unknown_periods(store, period):
    with pytest.raises(ValueError):
        store.fetch("vm", "web-1", period)
    with pytest.raises(ValueError):
        store.averages("vm", "web-1", period)


def test_fetch_refuses_unknown_consolidations(store):
    with pytest.raises(ValueError):
        store.fetch("vm", "web-1", "day", "LAST")


def test_fetch_reads_every_period_from_an_archive_that_covers_it(store):
    end = aligned_now()
    store.update_many({("vm", "web-1"): two_hours(end)})

    steps = {period: store.fetch("vm", "web-1", period, end=end).step for period in PERIODS}

    assert steps == {"hour": 300, "day": 300, "week": 1800, "month": 7200, "year": 86400}
    for period in PERIODS:
        series = store.fetch("vm", "web-1", period, "MAX", end=end)
        assert series.end - series.start >= PERIODS[period]
        # Two hours always fill 5- and 30-minute rows (2-hour and daily rows may need more).
        if period in ("hour", "day", "week"):
            assert series.has_data, period


def test_the_week_archive_keeps_maxima_the_average_smooths(store):
    end = aligned_now() // 1800 * 1800
    store.update_many({("vm", "web-1"): [
        (end - 6 * STEP + i * STEP, {"cpu": 90.0 if i == 3 else 10.0}) for i in range(1, 7)
    ]})

    average = by_time(store.fetch("vm", "web-1", "week", end=end), "cpu")[end]
    maximum = by_time(store.fetch("vm", "web-1", "week", "MAX", end=end), "cpu")[end]

    assert average == pytest.approx((5 * 10 + 90) / 6)
    assert maximum == 90.0


@pytest.mark.parametrize("at", [1_000_000, 0, -5, float("nan"), "1700000000", True])
def test_times_rrdtool_would_misread_are_refused_before_anything_is_written(store, at):
    with pytest.raises(ValueError, match="Unix time"):
        store.update_many({
            ("vm", "a"): [(aligned_now(), {"cpu": 1.0})],
            ("vm", "b"): [(at, {"cpu": 1.0})],
        })
    with pytest.raises(ValueError, match="Unix time"):
        store.ensure("vm", "c", start=at)
    assert not any(store.exists("vm", key) for key in "abc")


def test_unknown_metrics_are_refused_before_anything_is_written(store):
    end = aligned_now()
    with pytest.raises(ValueError, match="gpu"):
        store.update_many({
            ("vm", "a"): [(end, {"cpu": 1.0})],
            ("vm", "b"): [(end, {"gpu": 1.0})],
        })
    assert not store.exists("vm", "a")
    assert not store.exists("vm", "b")


def test_one_broken_file_does_not_stop_the_others(store):
    end = aligned_now()
    broken = store.path_for("vm", "broken")
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an rrd file")

    with pytest.raises(RRDError, match="broken"):
        store.update_many({
            ("vm", "broken"): [(end, sample(1))],
            ("vm", "fine"): [(end, sample(1))],
        })

    assert store.last_update("vm", "fine") == end


# ---- batching ----


@pytest.fixture
def update_calls(monkeypatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    real = rrdtool.update

    def counting(*args: str) -> None:
        calls.append(args)
        real(*args)

    monkeypatch.setattr(rrd.rrdtool, "update", counting)
    return calls


def test_update_many_makes_one_update_call_per_file(store, update_calls):
    end = aligned_now()
    keys = [f"vm-{i}" for i in range(5)]
    batch = {("vm", key): list(reversed(two_hours(end))) for key in keys}
    batch[("host", "node-1")] = two_hours(end)

    store.update_many(batch)

    assert len(update_calls) == 6
    files = [Path(call[0]) for call in update_calls]
    assert sorted(files) == sorted(store.path_for(kind, key) for kind, key in batch)
    for call in update_calls:
        assert call[1:3] == ("--template", ":".join(METRICS))
        values = call[3:]
        assert len(values) == 24
        times = [int(v.split(":")[0]) for v in values]
        assert times == sorted(times)
        assert values[3].split(":")[3] == "U"  # sample 4's unknown disk_read


def test_update_many_skips_the_call_when_every_sample_is_old(store, update_calls):
    end = aligned_now()
    store.update_many({("vm", "web-1"): two_hours(end)})
    store.update_many({("vm", "web-1"): two_hours(end)})
    assert len(update_calls) == 1


def test_update_one_makes_one_call_per_sample(store, update_calls):
    end = aligned_now()
    for at, values in two_hours(end)[:5]:
        store.update_one("vm", "web-1", at, values)
    assert len(update_calls) == 5
    assert all(len(call) == 4 for call in update_calls)


# ---- retirement ----


def test_archive_moves_the_file_aside_once(store):
    end = aligned_now()
    store.update_many({("vm", "web-1"): two_hours(end)})
    original = store.path_for("vm", "web-1")
    content = original.read_bytes()

    moved = store.archive("vm", "web-1")

    assert moved is not None
    assert moved.parent == store.directory / "archive"
    assert re.fullmatch(r"vm-web-1-\d{14}\.rrd", moved.name)
    assert moved.read_bytes() == content
    assert not original.exists()
    assert store.archive("vm", "web-1") is None
    assert store.latest("vm", "web-1") == {}


def test_archiving_twice_in_one_second_keeps_both_files(store):
    store.ensure("vm", "web-1")
    first = store.archive("vm", "web-1")
    store.ensure("vm", "web-1")
    second = store.archive("vm", "web-1")
    assert first != second
    assert first.exists() and second.exists()


def test_archive_of_an_object_without_a_file_is_none(store):
    assert store.archive("host", "never") is None
    assert not (store.directory / "archive").exists()


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
