"""Shared by the RRD store tests (tests/monitoring/test_rrd_*.py): the step and test samples.

The `store` fixture (an RRDStore under tmp_path) is in tests/monitoring/conftest.py.
"""

from __future__ import annotations

import time

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
