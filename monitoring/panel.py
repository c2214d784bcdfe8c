"""The usage panel of a VM or host page: averages, latest figures and graphs of one period.

The pages render it on the server (the `usage_panel` template tag), so it works without
JavaScript; htmx refreshes it from `views.vm_usage` / `views.host_usage`, which render the
same context.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.urls import reverse

from hosts.models import Host
from vms.models import VirtualMachine

from .charts import METRIC_LABELS, format_value
from .collector import host_key, rrd_store, vm_key
from .rrd import METRICS, PERIODS

# A panel without figures asks again this often, so the first ones show up by themselves.
EMPTY_REFRESH_SECONDS = 15
# Data younger than this is shown over the hour by default: on a day's axis it would be a
# sliver at the right edge.
YOUNG_DATA_SECONDS = 3 * PERIODS["hour"]


def usage_target(obj: VirtualMachine | Host) -> tuple[str, str]:
    """Return the RRD kind and key of a VM or host."""
    if isinstance(obj, VirtualMachine):
        return "vm", vm_key(obj)
    if isinstance(obj, Host):
        return "host", host_key(obj)
    raise TypeError(f"no usage for {type(obj).__name__}")


def default_period(kind: str, key: str, now: float | None = None) -> str:
    """Return the period to show first: the hour while the history is young, else the day."""
    first = rrd_store().first_known(kind, key)
    now = time.time() if now is None else now
    return "hour" if first is None or now - first < YOUNG_DATA_SECONDS else "day"


def _duration(seconds: int) -> str:
    """Return a row's length in words: 5 minutes, 2 hours, 1 day."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


def usage_context(obj: VirtualMachine | Host, period: str | None = None) -> dict[str, Any]:
    """Return the template context of the usage panel of `obj` over `period` (None: default)."""
    kind, key = usage_target(obj)
    store = rrd_store()
    if period not in PERIODS:
        period = default_period(kind, key)
    averages = store.averages(kind, key, period)
    latest = store.latest(kind, key)
    rows = []
    for metric in METRICS:
        label, unit = METRIC_LABELS[metric]
        show = format_value(unit)
        rows.append({"metric": metric, "label": label, "average": show(averages.get(metric)),
                     "latest": show(latest.get(metric)),
                     "has_data": averages.get(metric) is not None})
    has_data = any(row["has_data"] for row in rows)
    # A period without figures while the hour has some: its rows are longer and none is
    # complete yet (a VM that started a few minutes ago, on the day's view).
    row_wait = ""
    if not has_data and period != "hour" and store.first_known(kind, key) is not None:
        row_wait = _duration(store.fetch(kind, key, period).step)
    return {
        "kind": kind, "pk": obj.pk, "period": period, "periods": list(PERIODS), "rows": rows,
        "has_data": has_data, "row_wait": row_wait,
        "usage_url": reverse(f"monitoring:{kind}_usage", args=[obj.pk]),
        "graph_url": f"monitoring:{kind}_graph_svg", "png_url": f"monitoring:{kind}_graph_png",
        # Part of each graph's URL: a browser keeps a graph only until the next collection.
        "version": store.last_update(kind, key) or 0,
        "collect_every": settings.PORTAL_MONITOR["PERIOD"],
        "refresh": settings.PORTAL_MONITOR["PERIOD"] if has_data else EMPTY_REFRESH_SECONDS,
    }
