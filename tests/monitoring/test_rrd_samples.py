"""The RRD store's samples: batched writes and reads of VM and host history."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import rrdtool

from monitoring import rrd
from monitoring.rrd import FINE_STEP, METRICS, PERIODS, RRDError, Series
from tests.monitoring.rrd_helpers import STEP, aligned_now, sample, two_hours


def by_time(series: Series, metric: str) -> dict[int, float | None]:
    """Map each row's time to the metric's value."""
    return dict(zip(series.times, series.column(metric), strict=True))


# ---- writes and reads ----


def test_samples_written_in_a_batch_read_back_from_the_hour_and_day_archives(store):
    end = aligned_now()
    samples = two_hours(end)
    store.update_many({("vm", "web-1"): samples})

    day = store.fetch("vm", "web-1", "day", end=end)
    hour = store.fetch("vm", "web-1", "hour", end=end)

    # The day has a row per collection; the hour's fine rows hold each sample's value back
    # to the sample before it.
    assert (day.step, hour.step) == (STEP, FINE_STEP)
    assert day.metrics == METRICS
    # A new file starts at its first sample, which fills only its own 10 s row: the day's
    # rows begin with the second sample.
    for series, first in ((day, 1), (hour, 12)):
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
    for at, written in samples[1:]:  # the first sample fills only its own 10 s row
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
    # The first sample fills only its own 10 s row, not a day's row.
    assert [values[at] for at, _ in samples[1:]] == [v["memory"] for _, v in samples[1:]]


def test_averages_are_the_mean_of_the_known_values_written(store):
    end = aligned_now()
    samples = two_hours(end)
    store.update_many({("vm", "web-1"): samples})

    averages = store.averages("vm", "web-1", "day")

    for metric in METRICS:  # the first sample fills only its own 10 s row
        known = [v[metric] for _, v in samples[1:] if v[metric] is not None]
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

    assert steps == {"hour": 10, "day": 300, "week": 1800, "month": 7200, "year": 86400}
    for period in PERIODS:
        series = store.fetch("vm", "web-1", period, "MAX", end=end)
        assert series.end - series.start >= PERIODS[period]
        # Two hours always fill 5- and 30-minute rows (2-hour and daily rows may need more).
        if period in ("hour", "day", "week"):
            assert series.has_data, period


def test_the_week_archive_keeps_maxima_the_average_smooths(store):
    end = aligned_now() // 1800 * 1800
    # A first sample at the row's start, so the six after it fill the whole half hour.
    store.update_many({("vm", "web-1"): [(end - 6 * STEP, {"cpu": 10.0}), *[
        (end - 6 * STEP + i * STEP, {"cpu": 90.0 if i == 3 else 10.0}) for i in range(1, 7)
    ]]})

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


def test_a_rate_shows_in_the_hour_as_soon_as_the_second_sample_is_written(store):
    # Two samples 20 s apart inside one collection period: no 300 s row is written yet.
    first = aligned_now() - 170
    store.update_many({("vm", "web-1"): [(first, {"memory": 1.0})]})
    store.update_many({("vm", "web-1"): [(first + 20, {"cpu": 42.0, "memory": 1.0})]})

    hour = store.fetch("vm", "web-1", "hour", end=first + 20)

    cpu = {at: value for at, value in zip(hour.times, hour.column("cpu"), strict=True)
           if value is not None}
    assert cpu == {first + 10: 42.0, first + 20: 42.0}
    assert all(v is None for v in store.fetch("vm", "web-1", "day").column("cpu"))
    assert store.latest("vm", "web-1")["cpu"] == 42.0
    assert store.first_known("vm", "web-1") is not None
