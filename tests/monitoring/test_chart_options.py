"""Graphs that can be read: visible lines and points at any zoom, big text, IEC units."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest
import rrdtool

from monitoring import charts
from monitoring.charts import format_value, iec_scale, render_png, render_svg

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(("unit", "value", "shown"), [
    ("%", 12.345, "12.3 %"),
    ("bytes", 512.0, "512 B"),
    ("bytes", 1e9, "953.7 MiB"),
    ("bytes", 3 * 1024**3, "3.0 GiB"),
    ("bytes/s", 2048.0, "2.0 KiB/s"),
    ("bytes/s", 5 * 1024**2, "5.0 MiB/s"),
    ("bytes/s", None, ""),
])
def test_values_are_printed_in_iec_units(unit, value, shown):
    assert format_value(unit)(value) == shown


def test_the_scale_is_the_power_of_1024_that_keeps_the_peak_below_1024():
    assert iec_scale(None) == (0, "")
    assert iec_scale(1023.0) == (0, "")
    assert iec_scale(1024.0) == (1, "Ki")
    assert iec_scale(3 * 1024**2) == (2, "Mi")


@pytest.fixture
def fresh(store):
    """A VM sampled three times in its first five minutes: one five-minute row of the day."""
    end = int(time.time()) // 300 * 300
    store.update_many({("vm", "web-1"): [
        (at, {"cpu": 40.0, "net_rx": 3 * 1024**2}) for at in (end - 600, end - 400, end - 290)]})
    return store


@pytest.fixture
def store(tmp_path):
    from monitoring.rrd import RRDStore

    return RRDStore(tmp_path / "rrd")


def test_a_single_row_on_the_day_is_a_big_dot_on_a_thick_line(fresh):
    svg = render_svg(fresh, "vm", "web-1", "cpu", "day", "web-1")
    root = ET.fromstring(svg)

    dots = [c for c in root.iter(f"{SVG}circle") if "dot" in (c.get("class") or "")]
    assert dots and all(float(c.get("r")) >= 4 for c in dots)
    # Sparse points are never hidden until hovered (that is for dense series only).
    assert b"circle.dot{opacity:0}" not in svg
    # The lines (class "reactive") are drawn 3 px wide, pygal's default being 1.
    assert re.search(rb"\.reactive\{[^}]*stroke-width:3[;}]", svg)


def test_svg_text_is_big_enough_to_read_when_the_graph_is_scaled_down(fresh):
    svg = render_svg(fresh, "vm", "web-1", "cpu", "hour", "web-1").decode()
    sizes = {int(size) for size in re.findall(r"font-size:\s*(\d+)px", svg)}
    assert sizes and min(sizes) >= 14


def test_svg_axis_of_a_rate_is_in_iec_units(fresh):
    root = ET.fromstring(render_svg(fresh, "vm", "web-1", "net_rx", "hour", "web-1"))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.endswith("/s")]
    assert labels and all(re.fullmatch(r"[\d.]+ (B|KiB|MiB)/s", label) for label in labels)
    assert any(label.endswith("MiB/s") for label in labels)


def test_png_has_big_fonts_a_thick_line_and_one_iec_unit(fresh, monkeypatch):
    calls = []
    real = rrdtool.graphv
    monkeypatch.setattr(charts.rrdtool, "graphv", lambda *a: calls.append(a) or real(*a))

    image = render_png(fresh, "vm", "web-1", "net_rx", "day", "web-1")

    assert image.startswith(b"\x89PNG")
    (args,) = calls
    fonts = dict(args[i + 1].split(":") for i, a in enumerate(args) if a == "--font")
    assert int(fonts["DEFAULT"]) >= 10 and int(fonts["AXIS"]) >= 10
    assert int(fonts["TITLE"]) > int(fonts["AXIS"])
    assert any(a.startswith("LINE2:") for a in args)
    assert args[args.index("--vertical-label") + 1] == "MiB/s"
    assert any(a.startswith("GPRINT:avg_avg:") and a.endswith("MiB/s") for a in args)


def dot_xs(svg: bytes) -> list[float]:
    root = ET.fromstring(svg)
    return [float(c.get("cx")) for c in root.iter(f"{SVG}circle")
            if "dot" in (c.get("class") or "")]


def test_a_young_history_is_drawn_across_the_graph_not_at_its_right_edge(store):
    now = int(time.time())
    store.update_many({("vm", "web-1"): [(now - 60, {"cpu": 10.0}), (now - 40, {"cpu": 10.0}),
                                         (now - 20, {"cpu": 30.0}), (now, {"cpu": 30.0})]})

    svg = render_svg(store, "vm", "web-1", "cpu", "hour", "web-1")

    xs = dot_xs(svg)
    width = 480
    # A minute of data in an hour would sit in the right 2 % of the plot; it spans a fifth.
    assert xs and max(xs) - min(xs) > width / 5
    labels = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")
              if t.text and re.fullmatch(r"\d\d:\d\d", t.text)]
    assert len(labels) >= 2  # the time axis is labelled at a finer spacing


def test_a_full_period_of_history_keeps_the_whole_period(store):
    end = int(time.time()) // 300 * 300
    store.update_many({("vm", "web-1"): [
        (end - 3600 + i * 300, {"cpu": 5.0 * (i % 3)}) for i in range(13)]})

    root = ET.fromstring(render_svg(store, "vm", "web-1", "cpu", "hour", "web-1"))

    labels = [t.text for t in root.iter(f"{SVG}text")
              if t.text and re.fullmatch(r"\d\d:\d\d", t.text)]
    minutes = sorted(int(h) * 60 + int(m) for h, m in (label.split(":") for label in labels))
    assert (minutes[-1] - minutes[0]) % (24 * 60) >= 40
