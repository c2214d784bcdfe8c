"""Round-robin history of each VM's and host's load, one rrdtool file per object.

Every file holds the six METRICS as GAUGE data sources and AVERAGE and MAX archives for the
five PERIODS: FINE_STEP (10 s) for the hour, one collection period (300 s by default) for the
day, 30 minutes for the week, 2 hours for the month and 1 day for the year, each 10 % longer
than its period so a graph of the whole period is always served by the finest archive. The
file's own step is FINE_STEP and its heartbeat two collection periods, so a sample fills the
fine rows back to the one before it at once: the hour shows a rate as soon as two samples
exist, instead of when a 300 s row is complete. That is about 185 KiB per file at the default
period (Baadal kept 9.4 MB per VM). A file made with another step (before FINE_STEP) is
rebuilt from itself (`rrdtool create --source`) on its next write, keeping its history.

Writes are batched: `update_many` makes one `rrdtool.update` call per file with all of its
new samples; samples not newer than the file's last update are skipped, so a redelivered
collection does no harm. With an rrdcached address every call passes `--daemon`, so the cache
daemon owns the writes and flushes the files before they are read.

No Django here: the caller passes the directory, step and daemon address from its settings.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rrdtool

METRICS = ("cpu", "memory", "disk_read", "disk_write", "net_rx", "net_tx")
PERIODS = {
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 31 * 86400,
    "year": 366 * 86400,
}
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")
KINDS = ("vm", "host")
CFS = ("AVERAGE", "MAX")

# The files' own step: the hour's rows. A collection fills every row since the one before it.
FINE_STEP = 10
# Seconds one archive row covers, per period: the hour gets the fine step ("fine"), the day
# one collection period ("period").
_RESOLUTIONS: dict[str, int | str] = {"hour": "fine", "day": "period", "week": 1800,
                                      "month": 7200, "year": 86400}
# Rows beyond the period, so the finest archive still covers a whole period a while after
# the last update (rrdtool fetch only picks an archive that covers the full range).
_ROW_MARGIN = 1.1
_XFF = "0.5"
_ARCHIVE_FOLDER = "archive"
# rrdtool reads a shorter number given as --start or --end as a date (e.g. 999700 as a month),
# so times must be real Unix times: from 2001-09-09 on.
MIN_TIME = 1_000_000_000
_DAEMON_PORT = 42217
_DAEMON_TIMEOUT = 5.0
logger = logging.getLogger(__name__)
_ALREADY_UPDATED = re.compile(r"when last update time is (\d+(?:\.\d+)?)")
# Files this process has seen at the current step: checked once, not on every write.
_CURRENT: set[str] = set()


class RRDError(Exception):
    """An rrdtool call failed."""


@dataclass(frozen=True)
class Series:
    """Rows fetched from one file: row i covers the step ending at start + (i + 1) * step."""

    start: int
    end: int
    step: int
    metrics: tuple[str, ...]
    rows: list[tuple[float | None, ...]]

    @property
    def has_data(self) -> bool:
        """Tell whether any row holds a known value."""
        return any(value is not None for row in self.rows for value in row)

    @property
    def times(self) -> list[int]:
        """Return the Unix time each row ends at."""
        return [self.start + (i + 1) * self.step for i in range(len(self.rows))]

    def column(self, metric: str) -> list[float | None]:
        """Return one metric's values, row by row."""
        index = self.metrics.index(metric)
        return [row[index] for row in self.rows]


def _archives(step: int, period: int | None = None) -> list[tuple[int, int]]:
    """Return (steps per row, rows) for each archive, finest first, at file step `step`."""
    by_pdp: dict[int, int] = {}
    for name, seconds in PERIODS.items():
        resolution = _RESOLUTIONS[name]
        if resolution == "fine":
            resolution = step
        elif resolution == "period":
            resolution = period or step
        pdp = max(1, round(int(resolution) / step))
        rows = math.ceil(seconds * _ROW_MARGIN / (pdp * step))
        by_pdp[pdp] = max(rows, by_pdp.get(pdp, 0))
    return sorted(by_pdp.items())


def _daemon_endpoint(address: str) -> str | tuple[str, int]:
    """Return the socket path, or (host, port), of an rrdcached address as rrdtool reads it."""
    if address.startswith("unix:"):
        return address[len("unix:"):]
    if address.startswith("/"):
        return address
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([\w.-]+)(?::(\d+))?", address)
    if not match:
        raise ValueError(f"invalid rrdcached address {address!r}")
    return match[1] or match[3], int(match[2] or match[4] or _DAEMON_PORT)


def _unix_time(value: float, what: str) -> int:
    """Return a Unix time as an int, refusing one rrdtool would read as a date."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a Unix time, not {value!r}")
    if value < MIN_TIME:
        raise ValueError(f"{what} {value!r} is not a Unix time after 2001-09-09")
    return int(value)


def _value(value: float | None) -> str:
    """Format one value for rrdtool update: unknown, NaN and infinities become U."""
    if value is None:
        return "U"
    if isinstance(value, bool):
        raise ValueError("a metric value must be a number, not a bool")
    number = float(value)
    return repr(number) if math.isfinite(number) else "U"


def _clean(value: float | None) -> float | None:
    """Return a fetched value, with NaN as None."""
    if value is None or math.isnan(value):
        return None
    return float(value)


class RRDStore:
    """The RRD files of VMs and hosts under one directory."""

    def __init__(self, directory: str | Path, step: int = 300, daemon: str | None = None) -> None:
        """Keep files under `directory` for samples every `step` seconds, through rrdcached."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise ValueError("step must be a positive number of seconds")
        self.directory = Path(directory).resolve()
        # `step` is the collection period: the heartbeat and the day's rows. The files' own
        # step, the hour's rows, is finer, so a new sample shows without waiting for a row.
        self.step = step
        self.file_step = min(step, FINE_STEP)
        self.daemon = daemon or None
        if self.daemon:
            _daemon_endpoint(self.daemon)

    # ---- paths ----

    def path_for(self, kind: str, key: str) -> Path:
        """Return the file of one VM or host, refusing anything that would leave the directory."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise ValueError(f"invalid key {key!r}: lower-case letters, digits and '-' only")
        path = (self.directory / kind / f"{key}.rrd").resolve()
        if not path.is_relative_to(self.directory):
            raise ValueError(f"{kind} {key!r} resolves outside the RRD directory")
        return path

    def exists(self, kind: str, key: str) -> bool:
        """Tell whether the object has a file yet."""
        return self.path_for(kind, key).is_file()

    def daemon_args(self) -> list[str]:
        """Return the rrdtool arguments that route a call through rrdcached, if configured."""
        return ["--daemon", self.daemon] if self.daemon else []

    def _forget(self, path: Path) -> None:
        """Drop rrdcached's state for a file, so a new file at that path starts afresh."""
        if not self.daemon:
            return
        # rrdcached keeps each file's last update time after the file is gone and would refuse
        # a new file's samples as too old. rrdtool's Python binding has no FORGET.
        endpoint = _daemon_endpoint(self.daemon)
        try:
            if isinstance(endpoint, str):
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(_DAEMON_TIMEOUT)
            else:
                conn = socket.create_connection(endpoint, timeout=_DAEMON_TIMEOUT)
            with conn:
                if isinstance(endpoint, str):
                    conn.connect(endpoint)
                name = str(path).replace("\\", "\\\\").replace(" ", "\\ ")
                conn.sendall(f"FORGET {name}\n".encode())
                reply = b""
                while b"\n" not in reply and len(reply) < 4096:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
        except OSError as exc:
            logger.warning("rrdcached at %s: FORGET %s failed: %s", self.daemon, path, exc)
            return
        # "-1 No such file or directory" only means the daemon held nothing for it.
        logger.debug("rrdcached FORGET %s: %s", path, reply.decode(errors="replace").strip())

    def _call(self, function_name: str, *args: str) -> Any:
        """Call one rrdtool function, raising RRDError on failure."""
        function = getattr(rrdtool, function_name)
        try:
            return function(*args)
        except (rrdtool.OperationalError, rrdtool.ProgrammingError) as exc:
            raise RRDError(f"rrdtool {function_name}: {exc}") from exc

    # ---- writes ----

    def _layout(self) -> list[str]:
        """Return the rrdtool create arguments of the data sources and archives."""
        args = ["--step", str(self.file_step)]
        heartbeat = 2 * self.step
        for metric in METRICS:
            maximum = "100" if metric == "cpu" else "U"
            args.append(f"DS:{metric}:GAUGE:{heartbeat}:0:{maximum}")
        for cf in CFS:
            for pdp, rows in _archives(self.file_step, self.step):
                args.append(f"RRA:{cf}:{_XFF}:{pdp}:{rows}")
        return args

    def ensure(self, kind: str, key: str, start: int | None = None) -> Path:
        """Create the object's file if it is missing and return its path."""
        path = self.path_for(kind, key)
        if path.is_file():
            self._upgrade(path)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._forget(path)
        args = [str(path), *self.daemon_args(), "--no-overwrite"]
        if start is not None:
            args += ["--start", str(_unix_time(start, "start"))]
        args += self._layout()
        try:
            self._call("create", *args)
        except RRDError:
            # --no-overwrite: another worker created it between our check and our create.
            if path.is_file():
                return path
            raise
        _CURRENT.add(str(path))
        return path

    def _upgrade(self, path: Path) -> None:
        """Rebuild a file made with another step from itself, keeping its history."""
        if str(path) in _CURRENT:
            return
        # Through the daemon, info flushes its pending values into the file first.
        if int(self._call("info", str(path), *self.daemon_args())["step"]) != self.file_step:
            fresh = path.with_name(f".{path.name}.{os.getpid()}.new")
            fresh.unlink(missing_ok=True)
            self._call("create", str(fresh), "--source", str(path), *self._layout())
            os.replace(fresh, path)
            self._forget(path)
            logger.info("rebuilt %s at a %d s step", path, self.file_step)
        _CURRENT.add(str(path))

    def last_update(self, kind: str, key: str) -> int | None:
        """Return the file's last update time (rrdcached rounds it down to a step), or None."""
        path = self.path_for(kind, key)
        if not path.is_file():
            return None
        return int(self._call("last", str(path), *self.daemon_args()))

    def update_many(
        self,
        batch: Mapping[tuple[str, str], Sequence[tuple[int, Mapping[str, float | None]]]],
    ) -> None:
        """Write each file's samples in one rrdtool call, skipping samples it already has."""
        prepared: list[tuple[str, str, list[tuple[int, list[str]]]]] = []
        for (kind, key), samples in batch.items():
            self.path_for(kind, key)
            rows: list[tuple[int, list[str]]] = []
            for at, values in samples:
                unknown = set(values) - set(METRICS)
                if unknown:
                    raise ValueError(f"unknown metrics {sorted(unknown)} for {kind} {key}")
                fields = [_value(values.get(metric)) for metric in METRICS]
                rows.append((_unix_time(at, "sample time"), fields))
            if rows:
                rows.sort(key=lambda row: row[0])
                prepared.append((kind, key, rows))

        failures: list[str] = []
        for kind, key, rows in prepared:
            try:
                self._write(kind, key, rows)
            except RRDError as exc:
                # One broken file must not stop the other VMs' history.
                failures.append(f"{kind} {key}: {exc}")
        if failures:
            raise RRDError(f"{len(failures)} file(s) not updated: " + "; ".join(failures))

    def _write(self, kind: str, key: str, rows: list[tuple[int, list[str]]]) -> None:
        """Append the rows newer than the file's last update in one rrdtool update call."""
        # A new file starts one fine step before its first sample: that sample fills its own
        # 10 s row, not minutes before the object existed.
        path = self.ensure(kind, key, start=rows[0][0] - self.file_step)
        last: float | None = self.last_update(kind, key)
        for attempt in range(2):
            values: list[str] = []
            newest = last
            for at, fields in rows:
                # Not newer than the last update: a redelivered or overlapping collection.
                if newest is not None and at <= newest:
                    continue
                values.append(":".join([str(at), *fields]))
                newest = at
            if not values:
                return
            try:
                self._call(
                    "update", str(path), *self.daemon_args(),
                    "--template", ":".join(METRICS), *values,
                )
                return
            except RRDError as exc:
                # rrdcached answers `last` rounded down to a step, so a sample just after it
                # can still be old: the refusal names the real last update; retry past it.
                found = _ALREADY_UPDATED.search(str(exc))
                if attempt or not found or (last is not None and float(found[1]) <= last):
                    raise
                last = float(found[1])

    def update_one(self, kind: str, key: str, at: int, values: Mapping[str, float | None]) -> None:
        """Write one sample in its own rrdtool call (the unbatched baseline)."""
        self.update_many({(kind, key): [(at, values)]})

    # ---- reads ----

    def fetch(
        self, kind: str, key: str, period: str, cf: str = "AVERAGE", *, end: int | None = None
    ) -> Series:
        """Return the rows of the last `period` (ending now, or at `end`)."""
        if period not in PERIODS:
            raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
        if cf not in CFS:
            raise ValueError(f"unknown consolidation {cf!r}; expected one of {', '.join(CFS)}")
        path = self.path_for(kind, key)
        stop = int(time.time()) if end is None else _unix_time(end, "end")
        begin = stop - PERIODS[period]
        if not path.is_file():
            return Series(begin, stop, self.file_step, METRICS, [])
        result = self._call(
            "fetch", str(path), cf, *self.daemon_args(),
            "--start", str(begin), "--end", str(stop),
        )
        (first, last, step), names, raw = result
        order = [names.index(metric) for metric in METRICS]
        rows = [tuple(_clean(row[i]) for i in order) for row in raw]
        return Series(int(first), int(last), int(step), METRICS, rows)

    def averages(self, kind: str, key: str, period: str) -> dict[str, float | None]:
        """Return the mean of the known values of each metric over the period."""
        series = self.fetch(kind, key, period)
        result: dict[str, float | None] = {}
        for metric in METRICS:
            known = [v for v in series.column(metric) if v is not None]
            result[metric] = sum(known) / len(known) if known else None
        return result

    def latest(self, kind: str, key: str) -> dict[str, float | None]:
        """Return each metric's last known value over the past day; empty if there is no file."""
        if not self.exists(kind, key):
            return {}
        # rrdtool lastupdate reports U for a file rrdcached has just flushed, so read rows:
        # the hour's fine rows first, which hold a new sample at once.
        result: dict[str, float | None] = dict.fromkeys(METRICS)
        for period in ("hour", "day"):
            series = self.fetch(kind, key, period)
            for metric in METRICS:
                known = [v for v in series.column(metric) if v is not None]
                if result[metric] is None and known:
                    result[metric] = known[-1]
        return result

    def first_known(self, kind: str, key: str) -> int | None:
        """Return when the object's oldest known value of the past day ends, or None."""
        if not self.exists(kind, key):
            return None
        # The day's rows first; the hour's fine rows hold what no day row does yet.
        for period in ("day", "hour"):
            series = self.fetch(kind, key, period)
            for at, row in zip(series.times, series.rows, strict=True):
                if any(value is not None for value in row):
                    return at
        return None

    def info(self, kind: str, key: str) -> dict[str, object]:
        """Return rrdtool info for the object's file."""
        path = self.path_for(kind, key)
        return self._call("info", str(path), *self.daemon_args())

    # ---- retirement ----

    def archive(self, kind: str, key: str) -> Path | None:
        """Move the object's file to the archive folder; None if it had no file."""
        path = self.path_for(kind, key)
        if not path.is_file():
            return None
        if self.daemon:
            # Write the daemon's pending values into the file before it moves away.
            self._call("flushcached", *self.daemon_args(), str(path))
        folder = self.directory / _ARCHIVE_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        target = folder / f"{kind}-{key}-{stamp}.rrd"
        counter = 1
        while target.exists():
            target = folder / f"{kind}-{key}-{stamp}-{counter}.rrd"
            counter += 1
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None  # another worker archived it first
        self._forget(path)
        return target
