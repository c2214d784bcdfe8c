"""The usage panel, rendered inside VM and host pages: `{% usage_panel vm %}`."""

from __future__ import annotations

from typing import Any

from django import template

from hosts.models import Host
from vms.models import VirtualMachine

from ..panel import usage_context

register = template.Library()


@register.inclusion_tag("monitoring/_usage.html", takes_context=True)
def usage_panel(context: template.Context, obj: VirtualMachine | Host) -> dict[str, Any]:
    """Render the usage panel of a VM or host for the period the page's URL asks for."""
    request = context.get("request")
    period = request.GET.get("period") if request is not None else None
    return usage_context(obj, period)
