"""Graphs of one metric of one VM or host over a period: PNG from rrdtool, SVG from pygal.

Both say "No data yet" instead of drawing an empty frame when the period holds no value of
the metric. Both speak IEC units (KiB, MiB/s) like the usage table (`format_value`), draw
lines thick enough to see when scaled into the page, and the SVG marks every point when there
are few, so one collection on a day's axis is a dot, not a pixel.

User text (the title) never reaches rrdtool's graph syntax: it travels only as
the argument of --title, with backslashes and control characters removed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pygal
import rrdtool
from pygal.etree import etree
from pygal.style import Style

from monitoring.rrd import METRICS, PERIODS, RRDError, RRDStore

METRIC_LABELS: dict[str, tuple[str, str]] = {
    "cpu": ("CPU", "%"),
    "memory": ("Memory", "bytes"),
    "disk_read": ("Disk read", "bytes/s"),
    "disk_write": ("Disk write", "bytes/s"),
    "net_rx": ("Network received", "bytes/s"),
    "net_tx": ("Network sent", "bytes/s"),
}
NO_DATA_TEXT = "No data yet"

WIDTH_RANGE = (100, 2000)
HEIGHT_RANGE = (50, 1000)
AVERAGE_COLOUR = "#7aa6d6"
MAX_COLOUR = "#1f4e79"
SVG_COLOURS = ("#1f4e79", "#e07b39")  # average, maximum

# Control characters, and backslashes, which rrdtool reads as escapes (\n, \l, \:) in text.
_UNSAFE_TITLE = re.compile(r"[\x00-\x1f\x7f\\]")

# Tooltip and x-axis label time formats, per period.
_TOOLTIP_FORMATS = {
    "hour": "%H:%M",
    "day": "%a %H:%M",
    "week": "%a %d %b %H:%M",
    "month": "%d %b %H:%M",
    "year": "%d %b %Y",
}
_LABEL_FORMATS = {
    "hour": "%H:%M",
    "day": "%H:%M",
    "week": "%a %d",
    "month": "%d %b",
    "year": "%b %Y",
}
# Known points past this many per series are drawn without dots; hovering one still shows
# its value. Fewer (a VM that just started, on the day's axis) are marked with big dots.
_DENSE = 60
_IEC_PREFIXES = ("", "Ki", "Mi", "Gi", "Ti")
# rrdtool's fonts, in points: its defaults (8) turn unreadable when the image is scaled down.
_PNG_FONTS = ("DEFAULT:11", "TITLE:13", "AXIS:10", "UNIT:11", "LEGEND:11")
_SVG_FONTS = {"title_font_size": 20, "label_font_size": 15, "major_label_font_size": 15,
              "legend_font_size": 16, "value_font_size": 14, "value_label_font_size": 14,
              "tooltip_font_size": 15, "no_data_font_size": 24}
_SVG_LINE_WIDTH = 3
# Label spacings of a time axis shorter than two days, in minutes.
_TICK_MINUTES = (1, 2, 5, 10, 15, 30, 60, 180, 360, 720)
# An SVG whose object has no values in most of the period starts shortly before its first
# value, but shows at least this many rows and this many seconds: a VM that started a minute
# ago draws a line across the graph, not a dot at its right edge.
_MIN_ROWS = 10
_MIN_SECONDS = 120
_DENSE_CSS = "inline:g.dots circle.dot{opacity:0} g.dots:hover circle.dot{opacity:1}"


def _check(metric: str, period: str, width: int, height: int) -> None:
    """Refuse an unknown metric or period and an unreasonable image size."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
    for name, value, (low, high) in (("width", width, WIDTH_RANGE),
                                     ("height", height, HEIGHT_RANGE)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer from {low} to {high}")


def rrd_title(title: str) -> str:
    """Return the title with everything rrdtool could read as syntax removed."""
    return " ".join(_UNSAFE_TITLE.sub(" ", str(title)).split())[:150]


def _rrd_path(path: str) -> str:
    """Escape a file name for a DEF, where ':' separates fields."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


def iec_scale(peak: float | None) -> tuple[int, str]:
    """Return the power of 1024 and its IEC prefix that print `peak` below 1024."""
    exponent = 0
    size = abs(peak or 0.0)
    while size >= 1024 and exponent < len(_IEC_PREFIXES) - 1:
        size /= 1024
        exponent += 1
    return exponent, _IEC_PREFIXES[exponent]


def png_args(
    store: RRDStore, kind: str, key: str, metric: str, period: str, title: str,
    width: int = 640, height: int = 200, *, has_data: bool = True, peak: float | None = None,
) -> list[str]:
    """Return the rrdtool graphv arguments of one metric's PNG."""
    _check(metric, period, width, height)
    label, unit = METRIC_LABELS[metric]
    args = [
        "-", "--imgformat", "PNG",
        "--start", f"-{PERIODS[period]}", "--end", "now",
        "--width", str(width), "--height", str(height), "--full-size-mode",
        "--title", rrd_title(title),
        *[arg for font in _PNG_FONTS for arg in ("--font", font)],
        *store.daemon_args(),
    ]
    if not has_data:
        return args + [
            "--lower-limit", "0", "--upper-limit", "1", "--rigid",
            "--y-grid", "none", "--x-grid", "none",
            "--font", "LEGEND:14",
            # rrdtool refuses a graph without any element that draws; an invisible rule.
            "HRULE:0#00000000",
            f"COMMENT:{NO_DATA_TEXT}\\c",
        ]
    path = _rrd_path(str(store.path_for(kind, key)))
    defs = [f"DEF:avg={path}:{metric}:AVERAGE", f"DEF:max={path}:{metric}:MAX"]
    args += ["--lower-limit", "0"]
    if unit == "%":
        args += ["--vertical-label", "%", "--upper-limit", "100"]
        number = "%6.1lf %%"
    else:
        # One IEC unit for the whole graph (the axis and the figures): the values are scaled
        # by CDEF, and rrdtool adds no SI prefix of its own (--units-exponent 0).
        exponent, prefix = iec_scale(peak)
        shown = f"{prefix}B" + ("/s" if unit.endswith("/s") else "")
        args += ["--vertical-label", shown, "--units-exponent", "0"]
        defs = [f"DEF:avg_raw={path}:{metric}:AVERAGE", f"DEF:max_raw={path}:{metric}:MAX",
                f"CDEF:avg=avg_raw,{1024 ** exponent},/",
                f"CDEF:max=max_raw,{1024 ** exponent},/"]
        number = f"%7.2lf {shown}"
    return args + [
        *defs,
        "VDEF:avg_last=avg,LAST",
        "VDEF:avg_avg=avg,AVERAGE",
        "VDEF:max_max=max,MAXIMUM",
        f"AREA:avg{AVERAGE_COLOUR}:{label} average",
        f"LINE2:max{MAX_COLOUR}:{label} maximum\\l",
        f"GPRINT:avg_last:Last {number}",
        f"GPRINT:avg_avg:Average {number}",
        f"GPRINT:max_max:Maximum {number}\\l",
    ]


def _metric_peak(store: RRDStore, kind: str, key: str, metric: str, period: str) -> float | None:
    """Return the period's largest known value of the metric (either consolidation), or None."""
    known = [value for cf in ("AVERAGE", "MAX")
             for value in store.fetch(kind, key, period, cf).column(metric) if value is not None]
    return max(known, default=None)


def render_png(
    store: RRDStore, kind: str, key: str, metric: str, period: str, title: str,
    width: int = 640, height: int = 200,
) -> bytes:
    """Render one metric over a period as a PNG, or a PNG saying there is no data yet."""
    _check(metric, period, width, height)
    peak = _metric_peak(store, kind, key, metric, period)
    args = png_args(store, kind, key, metric, period, title, width, height,
                    has_data=peak is not None, peak=peak)
    try:
        result = rrdtool.graphv(*args)
    except (rrdtool.OperationalError, rrdtool.ProgrammingError) as exc:
        raise RRDError(f"rrdtool graphv: {exc}") from exc
    return bytes(result["image"])


def format_value(unit: str) -> Callable[[float | None], str]:
    """Return a formatter that prints a value of `unit` (METRIC_LABELS) in IEC units."""
    if unit == "%":
        return lambda value: "" if value is None else f"{value:.1f} %"
    suffix = "/s" if unit.endswith("/s") else ""

    def human(value: float | None) -> str:
        if value is None:
            return ""
        exponent, prefix = iec_scale(value)
        size = float(value) / 1024 ** exponent
        return f"{size:.1f} {prefix}B{suffix}" if prefix else f"{size:.0f} B{suffix}"

    return human


def _compact(times: list[datetime], values: list[float | None]) -> list[tuple[datetime,
                                                                              float | None]]:
    """Keep the first and last row of each run of equal values: the same line, fewer points.

    A collection fills every fine row since the previous one with its value, so the hour's
    360 rows hold about 24 distinct points at the default period.
    """
    kept = []
    last = len(values) - 1
    for i, value in enumerate(values):
        if i in (0, last) or values[i - 1] != value or values[i + 1] != value:
            kept.append((times[i], value))
    return kept


def _local(tag: object) -> str:
    """Return an element's tag without its namespace."""
    return str(tag).rsplit("}", 1)[-1]


def _add_native_tooltips(tree: Any) -> None:
    """Give each point an SVG <title>, so browsers show its value without pygal's script."""
    for group in tree.iter():
        if _local(group.tag) != "g" or group.get("class") != "dots":
            continue
        for desc in group:
            if _local(desc.tag) == "desc" and desc.get("class") == "value" and desc.text:
                namespace = group.tag[: -len("g")]
                title = etree.Element(f"{namespace}title")
                title.text = desc.text
                group.insert(0, title)
                break


def _ticks(period: str, first: datetime, last: datetime) -> list[datetime]:
    """Return calendar-aligned x-axis label times between two wall-clock times."""
    if period in ("hour", "day") or last - first < timedelta(days=2):
        # At most about seven labels, at a round number of minutes.
        every = next((timedelta(minutes=m) for m in _TICK_MINUTES
                      if (last - first) / timedelta(minutes=m) <= 7),
                     timedelta(minutes=_TICK_MINUTES[-1]))
        midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
        moment = midnight + math.ceil((first - midnight) / every) * every
        ticks = []
        while moment <= last:
            ticks.append(moment)
            moment += every
        return ticks
    moment = first.replace(hour=0, minute=0, second=0, microsecond=0)
    if moment < first:
        moment += timedelta(days=1)
    ticks = []
    while moment <= last:
        if (period == "week"
                or (period == "month" and moment.weekday() == 0)
                or (period == "year" and moment.day == 1)):
            ticks.append(moment)
        moment += timedelta(days=1)
    return ticks


def _y_range(unit: str, values: list[float | None]) -> tuple[float, float] | None:
    """Return a fixed y range where pygal's own would collapse (percent, or all zeros)."""
    if unit == "%":
        return (0, 100)
    if max((v for v in values if v is not None), default=0) <= 0:
        # A flat zero line would give an empty range and a column of repeated labels.
        return (0, 1024 if unit.startswith("bytes") else 1)
    return None


def render_svg(
    store: RRDStore, kind: str, key: str, metric: str, period: str, title: str,
    width: int = 480, height: int = 280, *, tz: tzinfo = UTC, js: tuple[str, ...] = (),
) -> bytes:
    """Render one metric over a period as an SVG line chart with a tooltip on every point."""
    _check(metric, period, width, height)
    label, unit = METRIC_LABELS[metric]
    average = store.fetch(kind, key, period)
    values = average.column(metric)
    style = Style(colors=SVG_COLOURS, background="white", plot_background="white",
                  stroke_width=_SVG_LINE_WIDTH, stroke_width_hover=_SVG_LINE_WIDTH + 1,
                  **_SVG_FONTS)
    common = {
        "width": width, "height": height, "title": str(title), "no_data_text": NO_DATA_TEXT,
        "js": list(js), "style": style, "legend_at_bottom": True,
    }
    if not any(value is not None for value in values):
        chart = pygal.DateTimeLine(
            **common, show_x_labels=False, show_y_labels=False, show_y_guides=False,
            show_x_guides=False, show_legend=False,
        )
        tree = chart.render_tree()
        return etree.tostring(tree, xml_declaration=True, encoding="utf-8")

    maximum = store.fetch(kind, key, period, "MAX").column(metric)
    if len(maximum) != len(values):
        maximum = [None] * len(values)
    # Leave out the leading rows before the object had any value (a young VM), keeping a
    # quarter of the known span before it and a minimum window.
    first = next(i for i, value in enumerate(values) if value is not None)
    shown = max(len(values) - first + (len(values) - first) // 4,
                _MIN_ROWS, math.ceil(_MIN_SECONDS / average.step))
    begin = max(0, len(values) - shown)
    values, maximum = values[begin:], maximum[begin:]
    # Row times are UTC; pygal reads naive datetimes as UTC, so pass wall time in `tz`.
    moments = [datetime.fromtimestamp(t, tz).replace(tzinfo=None)
               for t in average.times[begin:]]
    tooltip_format, label_format = _TOOLTIP_FORMATS[period], _LABEL_FORMATS[period]
    if moments[-1] - moments[0] < timedelta(days=1):
        label_format = "%H:%M"
    x_labels = [{"value": moment, "label": moment.strftime(label_format)}
                for moment in _ticks(period, moments[0], moments[-1])]
    points = _compact(moments, values)
    dense = sum(value is not None for _, value in points) > _DENSE
    chart = pygal.DateTimeLine(
        **common,
        allow_interruptions=True, show_x_guides=False, x_label_rotation=20,
        x_labels=x_labels or None,
        x_value_formatter=lambda moment: moment.strftime(tooltip_format),
        value_formatter=format_value(unit), truncate_label=-1, truncate_legend=-1,
        dots_size=2 if dense else 5, css=["file://style.css", "file://graph.css"]
        + ([_DENSE_CSS] if dense else []),
        range=_y_range(unit, values), include_x_axis=True, max_scale=6,
    )
    chart.add(f"{label} average", points)
    # At one step per row the maximum equals the average: draw it only when it says more.
    if any(
        m is not None and (a is None or not math.isclose(m, a))
        for m, a in zip(maximum, values, strict=True)
    ):
        chart.add(f"{label} maximum", _compact(moments, maximum))
    tree = chart.render_tree()
    _add_native_tooltips(tree)
    return etree.tostring(tree, xml_declaration=True, encoding="utf-8")
