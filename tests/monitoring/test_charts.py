"""Charts of one metric over a period: PNG through rrdtool graph, SVG through pygal."""

from __future__ import annotations

import re
import struct
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rrdtool

from monitoring import charts
from monitoring.charts import METRIC_LABELS, NO_DATA_TEXT, render_png, render_svg
from monitoring.rrd import METRICS, RRDStore

STEP = 300
SVG = "{http://www.w3.org/2000/svg}"


def aligned_now() -> int:
    """Return the current time rounded down to a whole step."""
    return int(time.time()) // STEP * STEP


def png_size(image: bytes) -> tuple[int, int]:
    """Return a PNG's width and height from its header."""
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", image[16:24])


@pytest.fixture
def store(tmp_path: Path) -> RRDStore:
    return RRDStore(tmp_path / "rrd")


@pytest.fixture
def filled(store: RRDStore) -> list[tuple[int, dict[str, float | None]]]:
    """Write 12 samples of web-1 ending now: cpu 5..60 %, memory in MiB, one unknown disk_read."""
    end = aligned_now()
    samples = [(end - (12 - i) * STEP, {
        "cpu": 5.0 * i,
        "memory": i * 64 * 1024 * 1024.0,
        "disk_read": None if i == 6 else i * 1024.0,
        "disk_write": 0.0,
        "net_rx": 2048.0,
        "net_tx": 512.0,
    }) for i in range(1, 13)]
    store.update_many({("vm", "web-1"): samples})
    return samples


@pytest.fixture
def graph_calls(monkeypatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    real = rrdtool.graphv

    def recording(*args: str):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(charts.rrdtool, "graphv", recording)
    return calls


def test_metric_labels_name_every_metric_with_its_unit():
    assert set(METRIC_LABELS) == set(METRICS)
    assert METRIC_LABELS["cpu"] == ("CPU", "%")
    assert METRIC_LABELS["memory"] == ("Memory", "bytes")
    for metric in ("disk_read", "disk_write", "net_rx", "net_tx"):
        assert METRIC_LABELS[metric][1] == "bytes/s"


# ---- PNG ----


def test_png_of_a_metric_with_data_draws_average_and_maximum(store, filled, graph_calls):
    image = render_png(store, "vm", "web-1", "memory", "day", "web-1 memory")

    assert png_size(image) == (640, 200)
    (args,) = graph_calls
    assert args[0] == "-"
    assert args[args.index("--start") + 1] == "-86400"
    path = str(store.path_for("vm", "web-1"))
    assert f"DEF:avg_raw={path}:memory:AVERAGE" in args
    assert f"DEF:max_raw={path}:memory:MAX" in args
    # Memory peaks at 768 MiB: the whole graph, axis and figures, speaks MiB (IEC).
    assert "CDEF:avg=avg_raw,1048576,/" in args
    assert "CDEF:max=max_raw,1048576,/" in args
    assert args[args.index("--vertical-label") + 1] == "MiB"
    assert args[args.index("--units-exponent") + 1] == "0"
    assert any(a.startswith("AREA:avg#") for a in args)
    assert any(a.startswith("LINE2:max#") for a in args)
    gprints = [a for a in args if a.startswith("GPRINT:")]
    assert [g.split(":")[1] for g in gprints] == ["avg_last", "avg_avg", "max_max"]
    assert all(g.endswith(("MiB", "MiB\\l")) for g in gprints)
    assert not any(NO_DATA_TEXT in a for a in args)


def test_png_of_cpu_is_a_percentage_from_0_to_100(store, filled, graph_calls):
    render_png(store, "vm", "web-1", "cpu", "hour", "web-1 CPU", width=400, height=150)
    (args,) = graph_calls
    assert args[args.index("--upper-limit") + 1] == "100"
    assert args[args.index("--vertical-label") + 1] == "%"
    assert "--base" not in args


def test_png_without_a_file_says_no_data_yet(store, filled, graph_calls):
    with_data = render_png(store, "vm", "web-1", "cpu", "day", "web-1")
    image = render_png(store, "vm", "never", "cpu", "day", "never")

    assert png_size(image) == (640, 200)
    assert image != with_data
    args = graph_calls[-1]
    assert f"COMMENT:{NO_DATA_TEXT}\\c" in args
    assert not any(a.startswith(("DEF:", "AREA:", "LINE")) for a in args)
    assert not store.exists("vm", "never")


def test_png_of_a_metric_without_values_in_the_period_says_no_data_yet(store, graph_calls):
    end = aligned_now()
    store.update_many({("vm", "web-1"): [(end - STEP, {"cpu": 5.0}), (end, {"cpu": 6.0})]})

    image = render_png(store, "vm", "web-1", "net_rx", "hour", "web-1 network")

    assert image.startswith(b"\x89PNG")
    assert f"COMMENT:{NO_DATA_TEXT}\\c" in graph_calls[-1]


@pytest.mark.parametrize("title", [
    "web:1\\nDEF:x=/etc/passwd:cpu:AVERAGE",
    "a\\:b:c\\\\d",
    "--daemon",
    "COMMENT:injected\\g\r\n\t",
])
def test_png_title_cannot_inject_rrdtool_syntax(store, filled, graph_calls, title):
    image = render_png(store, "vm", "web-1", "cpu", "day", title)

    assert image.startswith(b"\x89PNG")
    (args,) = graph_calls
    slot = args.index("--title") + 1
    sent = args[slot]
    assert "\\" not in sent
    assert not re.search(r"[\x00-\x1f]", sent)
    # The title is the one argument carrying user text; options and graph elements are ours.
    others = args[:slot] + args[slot + 1:]
    assert all("passwd" not in a and "injected" not in a for a in others)
    fonts = {others[i + 1] for i, a in enumerate(others) if a == "--font"}
    assert len([a for a in others if re.match(r"^[A-Z]+[0-9]?:", a) and a not in fonts]) == 10
    assert "--daemon" not in others


def test_png_reads_a_directory_with_a_colon_in_its_name(tmp_path, graph_calls):
    store = RRDStore(tmp_path / "a:b")
    end = aligned_now()
    store.update_many({("vm", "web-1"): [(end - STEP, {"cpu": 5.0}), (end, {"cpu": 6.0})]})

    image = render_png(store, "vm", "web-1", "cpu", "hour", "web-1")

    assert image.startswith(b"\x89PNG")
    assert any("a\\:b" in a for a in graph_calls[-1] if a.startswith("DEF:"))


@pytest.mark.parametrize("render", [render_png, render_svg])
@pytest.mark.parametrize(("metric", "period", "size"), [
    ("gpu", "day", {}),
    ("cpu", "decade", {}),
    ("cpu", "", {}),
    ("cpu", "day", {"width": 10_000}),
    ("cpu", "day", {"height": 0}),
])
def test_unknown_metric_period_or_size_is_refused(store, render, metric, period, size):
    with pytest.raises(ValueError):
        render(store, "vm", "web-1", metric, period, "t", **size)


def test_render_refuses_a_bad_key(store):
    with pytest.raises(ValueError):
        render_png(store, "vm", "../etc", "cpu", "day", "t")
    with pytest.raises(ValueError):
        render_svg(store, "vm", "../etc", "cpu", "day", "t")


# ---- SVG ----


def parse(svg: bytes) -> ET.Element:
    """Parse an SVG document, failing the test if it is not well-formed XML."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    """Return the text of every element."""
    return [element.text for element in root.iter() if element.text]


def point_values(root: ET.Element) -> list[str]:
    """Return the tooltip text of every drawn point, in order."""
    return [desc.text for desc in root.iter(f"{SVG}desc") if desc.get("class") == "value"]


def distinct(values: list[str]) -> list[str]:
    """Return the values without consecutive repeats."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def test_svg_draws_each_known_value_with_a_tooltip(store, filled):
    svg = render_svg(store, "vm", "web-1", "cpu", "hour", "web-1 <CPU> & load")
    root = parse(svg)

    assert "web-1 <CPU> & load" in texts(root)
    values = point_values(root)
    last_hour = [v for at, v in filled if at > filled[-1][0] - 3600]
    # Each collection fills the hour's fine rows since the one before: one run per sample,
    # drawn as its first and last point.
    assert distinct([v.split(": ")[-1] for v in values]) == [
        f"{v['cpu']:.1f} %" for v in last_hour]
    assert len(values) <= 2 * len(last_hour)
    # The x values are times of day.
    assert all(re.fullmatch(r"\d\d:\d\d: .*", v) for v in values)
    # Browsers show the value on hover without pygal's script: each point carries a <title>.
    dots = [g for g in root.iter(f"{SVG}g") if g.get("class") == "dots"]
    assert [g[0].tag for g in dots] == [f"{SVG}title"] * len(values)
    assert [g[0].text for g in dots] == values
    labels = [t.text for t in root.iter(f"{SVG}text") if t.text and re.fullmatch(
        r"\d\d:\d\d", t.text)]
    assert labels


def test_svg_leaves_a_gap_for_unknown_values(store, filled):
    root = parse(render_svg(store, "vm", "web-1", "disk_read", "hour", "web-1 disk"))

    values = point_values(root)
    assert len(distinct([v.split(": ")[-1] for v in values])) == 11  # 12 samples, 1 unknown
    assert any(v.endswith("KiB/s") for v in values)
    # allow_interruptions splits the line at the gap.
    lines = [p for p in root.iter(f"{SVG}path") if "reactive" in (p.get("class") or "")]
    assert len(lines) == 2


def test_svg_formats_bytes_with_binary_units(store, filled):
    root = parse(render_svg(store, "vm", "web-1", "memory", "hour", "web-1 memory"))
    assert point_values(root)[-1].endswith(": 768.0 MiB")


def test_svg_loads_no_script_from_elsewhere(store, filled):
    svg = render_svg(store, "vm", "web-1", "cpu", "hour", "web-1")
    root = parse(svg)
    for script in root.iter(f"{SVG}script"):
        assert not any(key.endswith("href") for key in script.attrib)
    assert b"kozea.github.io/pygal.js" not in svg


def test_svg_adds_the_scripts_the_caller_serves(store, filled):
    svg = render_svg(store, "vm", "web-1", "cpu", "hour", "web-1",
                     js=("/static/pygal-tooltips.min.js",))
    assert b"/static/pygal-tooltips.min.js" in svg


def test_svg_of_the_week_shows_maxima_beside_averages(store):
    end = aligned_now() // 1800 * 1800
    store.update_many({("vm", "web-1"): [
        (end - 12 * STEP + i * STEP, {"cpu": 90.0 if i % 6 == 3 else 10.0}) for i in range(1, 13)
    ]})

    root = parse(render_svg(store, "vm", "web-1", "cpu", "week", "web-1"))

    legend = " ".join(texts(root))
    assert "CPU average" in legend
    assert "CPU maximum" in legend
    assert "90.0 %" in " ".join(point_values(root))


def test_svg_of_the_hour_draws_no_separate_maximum(store, filled):
    root = parse(render_svg(store, "vm", "web-1", "cpu", "hour", "web-1"))
    assert "CPU maximum" not in " ".join(texts(root))


def test_svg_without_data_says_no_data_yet(store):
    root = parse(render_svg(store, "vm", "never", "cpu", "day", "never <seen>"))

    assert NO_DATA_TEXT in texts(root)
    assert "never <seen>" in texts(root)
    assert point_values(root) == []


def test_svg_times_follow_the_given_time_zone(store, filled):
    from datetime import timedelta, timezone

    utc = point_values(parse(render_svg(store, "vm", "web-1", "cpu", "hour", "t")))
    shifted = point_values(parse(render_svg(store, "vm", "web-1", "cpu", "hour", "t",
                                            tz=timezone(timedelta(hours=5, minutes=30)))))

    def minutes(value: str) -> int:
        hours, mins = value.split(": ")[0].split(":")
        return int(hours) * 60 + int(mins)

    assert (minutes(shifted[0]) - minutes(utc[0])) % (24 * 60) == 330


def test_an_all_zero_series_gets_distinct_axis_labels(tmp_path):
    import time as _time
    import xml.etree.ElementTree as ET

    from monitoring.charts import render_svg
    from monitoring.rrd import RRDStore

    store = RRDStore(tmp_path)
    now = int(_time.time()) // 300 * 300
    store.update_many({("vm", "zeros"): [
        (now - 3000 + i * 300, {"net_rx": 0.0}) for i in range(10)]})
    svg = render_svg(store, "vm", "zeros", "net_rx", "hour", "idle")
    root = ET.fromstring(svg)
    labels = [t.text for t in root.iter() if t.tag.endswith("text") and t.text
              and t.text.endswith("/s")]
    assert labels and len(labels) == len(set(labels))
