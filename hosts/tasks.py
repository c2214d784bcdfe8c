"""Thin django-q2 tasks of hosts: they take ids and call a service."""

from __future__ import annotations

from django_q.tasks import async_task

from .health_check import host_health_check
from .models import Host


def health_check_all() -> dict:
    """Queue one health check per host: a host that does not answer holds up only its own."""
    result = {}
    for pk, name in Host.objects.values_list("pk", "name"):
        async_task("hosts.tasks.health_check_host", pk, task_name=f"health-host-{pk}")
        result[name] = "queued"
    return result


def health_check_host(host_id: int) -> dict:
    """Check one host and record the results."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return {"skipped": "no such host"}
    host = host_health_check(host)
    return {"host": host.name, "state": host.health_state, "status": host.status}
