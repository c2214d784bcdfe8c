"""Whether a host answers: its last connection error, recorded and cleared in one place."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.utils import timezone

from operations.registry import HostHooks, TargetHooks, spec_for
from operations.undo import Step, recorded_steps_undo

from .models import Host, HostStatus

if TYPE_CHECKING:
    from operations.models import Operation
from .virt import VirtError, connect_failure, is_connected

logger = logging.getLogger(__name__)

# The probe's verdict (hosts.services.host_refresh): only the next refresh changes it, not a
# host that merely answers again.
NO_ACCEL_ERROR = "No acceleration ran a test guest; see the probe report."
# Hosts whose periodic work (collection, reconciliation) runs; the others are skipped.
WORKING_STATUSES = (HostStatus.UP,)


def host_is_working(host: Host) -> bool:
    """Return whether collection and reconciliation should reach the host (up, not down or
    in maintenance)."""
    return host.status in WORKING_STATUSES


def host_error_record(*, host_id: int, error: VirtError | str) -> None:
    """Record why the host could not be reached or read, for its page and the host list."""
    text = str(error)
    Host.objects.filter(pk=host_id).update(last_error=text)
    logger.warning("host %s: %s", host_id, text)


def host_reached(*, host_id: int) -> None:
    """Note that the host answered: clear its last error (not the probe's verdict)."""
    Host.objects.filter(pk=host_id).exclude(last_error=NO_ACCEL_ERROR).update(last_error="")
    Host.objects.filter(pk=host_id).update(last_seen_at=timezone.now())


def host_after_operation(*, host: Host, succeeded: bool) -> None:
    """Record on the host a connect failure the operation just met, or clear an old one."""
    failure = connect_failure(host.uri)
    if failure is not None:
        host_error_record(host_id=host.pk, error=failure)
    elif (succeeded and host.last_error.startswith("cannot connect to")
          and is_connected(host.uri)):
        # Only an operation that really reached libvirt proves the host answers again.
        host_reached(host_id=host.pk)


class HostOperationHooks(HostHooks):
    """What the operations engine asks of hosts: how many are up, what a run met."""

    def hosts_up(self) -> int:
        """Return how many hosts are up."""
        return Host.objects.filter(status=HostStatus.UP).count()

    def after_operation(self, host_id: int, *, succeeded: bool) -> None:
        """Record on the host a connect failure the operation met, or clear an old one."""
        host = Host.objects.filter(pk=host_id).first()
        if host is not None:
            host_after_operation(host=host, succeeded=succeeded)


class HostTargetHooks(TargetHooks):
    """The engine's questions about an operation on a host (not on one VM)."""

    def failure_message(self, op: Operation) -> str:
        """Return the kind's own words for a failure on the host ({host}), else the default."""
        spec = spec_for(op.kind)
        if spec is not None and spec.failed_words:
            return spec.failed_words.format(host=op.host)
        return super().failure_message(op)

    def steps_undo(self, op: Operation, steps: list[Step]) -> list[Step]:
        """Give back a dead run's recorded steps (their owner is the host)."""
        return recorded_steps_undo(Host.objects.get(pk=op.host_id), steps)
