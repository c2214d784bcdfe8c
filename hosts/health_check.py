"""The periodic health check of a host: reachable, libvirtd, pools, networks, free disk.

Each check's result and when it last passed are recorded on the host (`Host.health_checks`).
An up host failing `FAILS_BEFORE_DOWN` checks in a row is marked down with the reason, and
admins hear of it once, through the digest of failures (`operations.alerts`). A host the
check marked down that passes again stays down: an administrator marks it up.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import PortalError
from operations.alerts import alerts_flush_quietly
from operations.models import AdminAlert, Operation, OperationKind, OperationStatus
from operations.registry import handles

from .models import HEALTH_CHECKS, Datastore, Host, HostStatus
from .virt import Hypervisor, NotFound, VirtError, is_remote

logger = logging.getLogger(__name__)

GIB = 1024 ** 3
# The port a remote libvirt URI connects to, by its transport (qemu://host/ is TLS).
_TRANSPORT_PORTS = {"ssh": 22, "libssh": 22, "libssh2": 22, "tcp": 16509, "tls": 16514, "": 16514}
_LABELS = dict(HEALTH_CHECKS)

# The libvirt networks a host must have up (those the VLANs use). The networking
# application, which sits above hosts, says where to read them (`host_networks_source_set`).
_networks_source: Callable[[Host], list[str]] | None = None


def host_networks_source_set(source: Callable[[Host], list[str]]) -> None:
    """Read the libvirt networks every host needs through this function."""
    global _networks_source  # noqa: PLW0603 - set once, from NetworkingConfig.ready()
    _networks_source = source


# Told of each host the check has just marked down (the VMs application may respawn its VMs
# elsewhere: `vms.services.respawn`). It sits above hosts, so it registers itself.
_down_listener: Callable[[Host], None] | None = None


def host_marked_down_listener_set(listener: Callable[[Host], None]) -> None:
    """Call this function with every host the health check marks down."""
    global _down_listener  # noqa: PLW0603 - set once, from VmsConfig.ready()
    _down_listener = listener


def _tell_marked_down(host: Host) -> None:
    if _down_listener is None:
        return
    try:
        _down_listener(host)
    except Exception:  # the host is marked down whatever the listener met
        logger.exception("what follows marking %s down failed", host.name)


@dataclass(frozen=True)
class CheckResult:
    """One check: its name (`HEALTH_CHECKS`), whether it passed, and why."""

    name: str
    ok: bool
    detail: str


def host_peer(host: Host) -> tuple[str, int] | None:
    """Return the address and port the host's libvirt URI reaches, or None for this machine."""
    if not is_remote(host.uri):
        return None
    parts = urlsplit(host.uri)
    transport = parts.scheme.partition("+")[2]
    port = parts.port or _TRANSPORT_PORTS.get(transport, 16514)
    return (parts.hostname or host.address), port


def _reachable(host: Host, timeout: float) -> CheckResult:
    peer = host_peer(host)
    if peer is None:
        return CheckResult("reachable", True, "this machine")
    address, port = peer
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except OSError as exc:
        return CheckResult("reachable", False, f"no TCP connection to {address}:{port}: {exc}")
    return CheckResult("reachable", True, f"{address}:{port} accepts connections")


def _pools(hv: Hypervisor, datastores: list[Datastore], min_free_gib: int,
           ) -> tuple[CheckResult, CheckResult]:
    inactive, low, free = [], [], []
    for ds in datastores:
        try:
            active, available = hv.pool_state(ds.pool_name)
        except NotFound:
            active, available = False, 0
        if not active:
            inactive.append(ds.name)
            continue
        gib = available / GIB
        free.append(f"{ds.name} {gib:.1f} GiB")
        if gib < min_free_gib:
            low.append(f"{ds.name} has {gib:.1f} GiB free")
    pools = (CheckResult("pools", False, "not active: " + ", ".join(inactive)) if inactive
             else CheckResult("pools", True, f"{len(datastores)} active" if datastores
                              else "no datastore"))
    if low:
        disk = CheckResult("disk", False, f"below {min_free_gib} GiB: " + "; ".join(low))
    elif inactive and not free:
        disk = CheckResult("disk", False, "not read: no datastore's pool is active")
    else:
        disk = CheckResult("disk", True, ", ".join(free) or "no datastore")
    return pools, disk


def _networks(hv: Hypervisor, names: list[str]) -> CheckResult:
    down = []
    for name in names:
        try:
            if not hv.network_is_active(name):
                down.append(f"{name} inactive")
        except NotFound:
            down.append(f"{name} missing")
    if down:
        return CheckResult("networks", False, ", ".join(down))
    return CheckResult("networks", True, ", ".join(names) + " up" if names else "none needed")


def host_checks_run(host: Host) -> list[CheckResult]:
    """Run every check on the host; a check that could not run for an earlier one fails."""
    config = settings.PORTAL_HOST_HEALTH
    reach = _reachable(host, float(config["REACH_TIMEOUT"]))
    results = [reach]
    hv = Hypervisor(host.uri)
    if reach.ok:
        try:
            facts = hv.facts()
            results.append(CheckResult("libvirtd", True, f"libvirt {facts.libvirt_version}"))
        except VirtError as exc:
            results.append(CheckResult("libvirtd", False, str(exc)))
    else:
        results.append(CheckResult("libvirtd", False, "not tried: the host is not reachable"))
    if not results[-1].ok:
        why = "not checked: libvirtd did not answer"
        return results + [CheckResult(name, False, why) for name in ("pools", "networks", "disk")]
    names = _networks_source(host) if _networks_source is not None else []
    try:
        pools, disk = _pools(hv, list(Datastore.objects.filter(hosts=host)),
                             int(config["MIN_FREE_GIB"]))
        networks = _networks(hv, names)
    except VirtError as exc:
        # libvirtd answered, then stopped: what it said is the reason for every check left.
        return results + [CheckResult(name, False, str(exc))
                          for name in ("pools", "networks", "disk")]
    return [*results, pools, networks, disk]


def _down_reason(results: list[CheckResult], failures: int) -> str:
    failed = "; ".join(f"{_LABELS[r.name]}: {r.detail}" for r in results if not r.ok)
    times = "once" if failures == 1 else f"{failures} times"
    return f"The health check failed {times} in a row ({failed})."


def host_health_record(host: Host, results: list[CheckResult], *,
                       now: datetime | None = None) -> Host:
    """Record the results on the host; mark an up host down after too many failures in a row."""
    now = now or timezone.now()
    passed = all(r.ok for r in results)
    limit = max(1, int(settings.PORTAL_HOST_HEALTH["FAILS_BEFORE_DOWN"]))
    marked = False
    with transaction.atomic():
        row = Host.objects.select_for_update().get(pk=host.pk)
        previous = row.health_checks or {}
        checks = {}
        for r in results:
            last = now.isoformat() if r.ok else (previous.get(r.name) or {}).get("last_passed")
            checks[r.name] = {"ok": r.ok, "detail": r.detail, "last_passed": last}
        failures = 0 if passed else row.health_failures + 1
        fields = {"health_checks": checks, "health_checked_at": now,
                  "health_failures": failures}
        if not passed and failures >= limit and row.status == HostStatus.UP:
            marked = True
            reason = _down_reason(results, failures)
            fields.update(status=HostStatus.DOWN, down_reason=reason, down_by_check=True)
            # Recorded as a failed operation of the host: it shows in the host's history and
            # the attention list, and the admins' digest mails it once.
            Operation.objects.create(
                kind=OperationKind.HOST_DOWN, host=row, status=OperationStatus.FAILED,
                message=f"{row.name} was marked down: it takes no new VMs until an "
                        "administrator marks it up again.",
                detail=reason, admin_alert=AdminAlert.PENDING, finished_at=now)
        Host.objects.filter(pk=row.pk).update(**fields)
    if marked:
        logger.warning("host %s marked down by the health check", host.name)
        alerts_flush_quietly()
    host.refresh_from_db()
    if marked:
        _tell_marked_down(host)
    return host


def host_health_check(host: Host) -> Host:
    """Check the host now and record the results (`host_health_record`)."""
    return host_health_record(host, host_checks_run(host))


# Retrying the record of a host marked down checks it again (it is not put back up).
@handles(OperationKind.HOST_DOWN, target="host", scope=(), permission="hosts.manage_host")
def host_health_check_again(op: Operation) -> str:
    """Check the host again now; fail, saying which checks, while it does not pass."""
    host = host_health_check(Host.objects.get(pk=op.host_id))
    failed = [f"{row['label']}: {row['detail']}" for row in host.health_rows if not row["ok"]]
    if failed:
        raise PortalError(f"{host.name} still fails its health check ({'; '.join(failed)}).")
    if host.status == HostStatus.DOWN:
        return f"{host.name} passes its health check again; mark it up from its page."
    return f"{host.name} passes its health check."
