"""Fixtures shared by the RRD store tests (tests/monitoring/test_rrd_*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.rrd import RRDStore


@pytest.fixture
def store(tmp_path: Path) -> RRDStore:
    return RRDStore(tmp_path / "rrd")
