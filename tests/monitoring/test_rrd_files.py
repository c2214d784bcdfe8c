"""The RRD store's files: their layout, safe paths, and moving a retired object's file aside."""

from __future__ import annotations

import math
import re

import pytest
import rrdtool

from monitoring.rrd import FINE_STEP, KINDS, METRICS, PERIODS, RRDStore
from tests.monitoring.rrd_helpers import STEP, aligned_now, two_hours

# ---- layout ----


def test_ensure_creates_gauges_and_archives_for_every_period_within_the_size_budget(store):
    path = store.ensure("vm", "web-1")

    assert path == store.directory / "vm" / "web-1.rrd"
    assert path.stat().st_size <= 200 * 1024
    info = rrdtool.info(str(path))
    # The files' own step is fine (the hour's rows); the heartbeat spans two collections.
    assert info["step"] == FINE_STEP
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
                for pdp, rows in ((1, 397), (30, 317), (180, 370), (720, 410), (8640, 403))}
    assert archives == expected
    # Each period is held whole at its resolution by both consolidations.
    for cf in ("AVERAGE", "MAX"):
        spans = {pdp: pdp * rows * FINE_STEP for c, pdp, rows in archives if c == cf}
        assert spans[1] >= PERIODS["hour"]
        assert spans[30] >= PERIODS["day"]
        assert spans[180] >= PERIODS["week"]
        assert spans[720] >= PERIODS["month"]
        assert spans[8640] >= PERIODS["year"]


def test_a_file_of_the_old_five_minute_step_is_rebuilt_with_its_history(store):
    end = aligned_now()
    path = store.path_for("vm", "web-1")
    path.parent.mkdir(parents=True)
    rrdtool.create(str(path), "--step", str(STEP), "--start", str(end - 3 * 3600),
                   *[f"DS:{m}:GAUGE:{2 * STEP}:0:U" for m in METRICS],
                   "RRA:AVERAGE:0.5:1:317", "RRA:MAX:0.5:1:317")
    rrdtool.update(str(path), "--template", ":".join(METRICS),
                   *[f"{at}:{at % 97}:1:2:3:4:5" for at in range(end - 2 * 3600, end - STEP + 1,
                                                                  STEP)])

    store.update_many({("vm", "web-1"): [(end, {"cpu": 50.0})]})

    assert rrdtool.info(str(path))["step"] == FINE_STEP
    day = store.fetch("vm", "web-1", "day", end=end)
    cpu = dict(zip(day.times, day.column("cpu"), strict=True))
    # The old history is kept (consolidated rows are floating point averages).
    assert cpu[end - STEP] == pytest.approx((end - STEP) % 97)
    assert cpu[end] == pytest.approx(50.0)
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


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
