"""Usage graphs and averages of VMs and hosts; the web reads RRD files, never libvirt."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from hosts.models import Host
from vms.models import VirtualMachine

from .charts import METRIC_LABELS, render_png, render_svg
from .collector import host_key, rrd_store, vm_key
from .panel import usage_context
from .rrd import METRICS, PERIODS

CONTENT_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


def _graph(kind: str, key: str, title: str, metric: str, period: str, fmt: str) -> HttpResponse:
    if metric not in METRICS or period not in PERIODS or fmt not in CONTENT_TYPES:
        raise Http404
    step = settings.PORTAL_MONITOR["PERIOD"]
    # A new collection makes a new graph at once, not a period later.
    version = rrd_store().last_update(kind, key) or 0
    cache_key = f"graph:{kind}:{key}:{metric}:{period}:{fmt}:{version}"
    body = cache.get(cache_key)
    if body is None:
        render = render_png if fmt == "png" else render_svg
        body = render(rrd_store(), kind, key, metric, period,
                      f"{title}: {METRIC_LABELS[metric][0]}, last {period}")
        cache.set(cache_key, body, timeout=step)
    response = HttpResponse(body, content_type=CONTENT_TYPES[fmt])
    response["Cache-Control"] = f"private, max-age={step}"
    return response


# The SVG graphs are embedded with <object> (for their tooltips), which counts as a frame.
@xframe_options_sameorigin
@login_required
@require_GET
def vm_graph(request: HttpRequest, pk: int, metric: str, period: str, fmt: str) -> HttpResponse:
    """Draw one metric of a VM the user may see."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    return _graph("vm", vm_key(vm), vm.name, metric, period, fmt)


@xframe_options_sameorigin
@login_required
@require_GET
def host_graph(request: HttpRequest, pk: int, metric: str, period: str,
               fmt: str) -> HttpResponse:
    """Draw one metric of a host (admins)."""
    host = get_object_or_404(Host.objects.visible_to(request.user), pk=pk)
    return _graph("host", host_key(host), host.name, metric, period, fmt)


def _usage(request: HttpRequest, obj: VirtualMachine | Host) -> HttpResponse:
    period = request.GET.get("period")
    if period is not None and period not in PERIODS:
        raise Http404
    return render(request, "monitoring/_usage.html", usage_context(obj, period))


@login_required
@require_GET
def vm_usage(request: HttpRequest, pk: int) -> HttpResponse:
    """Render a VM's graphs and averages for the chosen period."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    return _usage(request, vm)


@login_required
@require_GET
def host_usage(request: HttpRequest, pk: int) -> HttpResponse:
    """Render a host's graphs and averages for the chosen period (admins)."""
    host = get_object_or_404(Host.objects.visible_to(request.user), pk=pk)
    return _usage(request, host)
