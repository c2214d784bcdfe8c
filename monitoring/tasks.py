"""Thin django-q2 tasks of monitoring: one collection task per active host."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from hosts.health import WORKING_STATUSES, host_is_working
from hosts.models import Host
from vms.models import VirtualMachine

from .collector import host_collect

logger = logging.getLogger(__name__)
# After a VM starts, its host is collected at once and again these many seconds later: rates
# need two samples, and the periodic collection may be minutes away. A sample completes the
# hour's 10 s rows only up to its own time (the row it falls in waits for the next sample), so
# two follow-ups make a line of several rows, not one point. django-q's scheduler looks for
# due schedules about every 15 s: they run 15-30 s and 35-50 s after the start.
FOLLOW_UP_SECONDS = (15, 35)


def collect_all() -> int:
    """Enqueue one collection task per host that is up (not down, not in maintenance)."""
    hosts = list(Host.objects.filter(status__in=WORKING_STATUSES).exclude(accel="")
                 .values_list("pk", flat=True))
    for pk in hosts:
        async_task("monitoring.tasks.collect_host", pk, task_name=f"collect-host-{pk}")
    return len(hosts)


def collect_host(host_id: int) -> dict:
    """Collect one host's and its VMs' utilisation, unless it went down since it was queued."""
    host = Host.objects.filter(pk=host_id).first()
    return host_collect(host=host) if host and host_is_working(host) else {}


def host_collect_soon(host_id: int, reason: str) -> None:
    """Enqueue a collection of the host now and one more after each of FOLLOW_UP_SECONDS."""
    async_task("monitoring.tasks.collect_host", host_id, task_name=f"collect-host-{host_id}")
    now = timezone.now()
    Schedule.objects.bulk_create(Schedule(
        name=f"collect-host-{host_id}-after-{reason}-{seconds}s"[:100],
        func="monitoring.tasks.collect_host", args=repr(host_id), schedule_type=Schedule.ONCE,
        repeats=-1, next_run=now + timedelta(seconds=seconds),
    ) for seconds in FOLLOW_UP_SECONDS)


def vm_started_collect(sender: type, *, vm: VirtualMachine, **kwargs: object) -> None:
    """Collect a VM's host right after it started (receiver of `vms.signals.vm_started`)."""
    host_id, pk = vm.host_id, vm.pk
    if host_id is None:
        return

    def enqueue() -> None:
        try:
            host_collect_soon(host_id, f"vm-{pk}")
        except Exception:  # the VM runs either way; the periodic collection will come
            logger.exception("could not enqueue the collection of host %s", host_id)

    transaction.on_commit(enqueue)
