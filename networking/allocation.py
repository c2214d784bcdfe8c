"""Allocation of private IP + MAC pairs, public IPs and VNC ports, never twice."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from portal.errors import PortalError

from .models import VLAN, PrivateIP, PublicIP

if TYPE_CHECKING:
    from vms.models import VirtualMachine


class PoolExhausted(PortalError):
    """No free address or port is left in the pool."""


def ip_allocate(*, vm: VirtualMachine, vlan: VLAN) -> PrivateIP:
    """Give the VM a free private IP and MAC on the VLAN, keeping one it already holds there."""
    take = _allocate_postgres if connection.vendor == "postgresql" else _allocate
    ip = take(vm, vlan, timezone.now())
    if ip is None:
        raise PoolExhausted(f"No free private IP address is left on {vlan}.")
    return ip


def _allocate(vm: VirtualMachine, vlan: VLAN, now: datetime) -> PrivateIP | None:
    with transaction.atomic():
        held = PrivateIP.objects.filter(vm=vm, vlan=vlan).first()
        if held is not None:
            return held
        # skip_locked lets concurrent allocators take different rows instead of queueing
        # behind one another; "of" keeps the lock off joined rows.
        row = (PrivateIP.objects.select_for_update(skip_locked=True, of=("self",))
               .filter(vlan=vlan, vm__isnull=True, host__isnull=True).order_by("id").first())
        if row is not None:
            row.vm, row.allocated_at = vm, now
            row.save(update_fields=["vm", "allocated_at"])
        return row


# The same as _allocate in one statement (keep a held address, else take the first free
# one, skipping rows other allocators hold locked): one round trip and one commit per
# allocation, the pool's hot path when many workers install at once.
_ALLOCATE_SQL = """
WITH held AS (
    SELECT id, address, mac, allocated_at FROM {t} WHERE vm_id = %(vm)s AND vlan_id = %(vlan)s
    LIMIT 1
), taken AS (
    UPDATE {t} SET vm_id = %(vm)s, allocated_at = %(now)s
    WHERE NOT EXISTS (SELECT 1 FROM held) AND id = (
        SELECT id FROM {t} WHERE vlan_id = %(vlan)s AND vm_id IS NULL AND host_id IS NULL
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id, address, mac, allocated_at
)
SELECT id, address, mac, allocated_at FROM held
UNION ALL SELECT id, address, mac, allocated_at FROM taken
"""


def _allocate_postgres(vm: VirtualMachine, vlan: VLAN, now: datetime) -> PrivateIP | None:
    sql = _ALLOCATE_SQL.format(t=connection.ops.quote_name(PrivateIP._meta.db_table))
    with connection.cursor() as cursor:
        cursor.execute(sql, {"vm": vm.pk, "vlan": vlan.pk, "now": now})
        row = cursor.fetchone()
    if row is None:
        return None
    return PrivateIP(id=row[0], address=row[1], mac=row[2], allocated_at=row[3], vlan=vlan,
                     vm=vm)


def ip_release(*, vm: VirtualMachine, address: str | None = None) -> int:
    """Give back the VM's private addresses (or just one of them) to the pool."""
    qs = PrivateIP.objects.filter(vm=vm)
    if address is not None:
        qs = qs.filter(address=address)
    return qs.update(vm=None, allocated_at=None)


def public_ip_allocate(*, vm: VirtualMachine) -> PublicIP:
    """Give the VM a free public IP, keeping one it already holds."""
    with transaction.atomic():
        held = PublicIP.objects.filter(vm=vm).first()
        if held is not None:
            return held
        candidate = (
            PublicIP.objects.select_for_update(skip_locked=True)
            .filter(vm__isnull=True)
            .order_by("id")
            .first()
        )
        if candidate is None:
            raise PoolExhausted("No free public IP address is left in the pool.")
        candidate.vm = vm
        candidate.allocated_at = timezone.now()
        candidate.save(update_fields=["vm", "allocated_at"])
        return candidate


def public_ip_release(*, vm: VirtualMachine) -> int:
    """Give back the VM's public IP to the pool."""
    return PublicIP.objects.filter(vm=vm).update(vm=None, allocated_at=None)


def vnc_port_range() -> tuple[int, int]:
    """Return the first and last VNC port the portal hands out on each host."""
    first, last = settings.PORTAL["VNC_PORTS"]
    return first, last


def vnc_port_allocate(*, vm: VirtualMachine, avoid: set[int] | frozenset[int] = frozenset()
                      ) -> int:
    """Give the VM the lowest free VNC port on its host, keeping one it already has.

    `avoid` holds ports the host's other domains use that the database does not know of.
    """
    from hosts.models import Host
    from vms.models import VirtualMachine

    if vm.vnc_port is not None:
        return vm.vnc_port
    if vm.host_id is None:
        raise PortalError(f"{vm.name} has no host to take a VNC port on.")
    first, last = vnc_port_range()
    for _ in range(3):
        try:
            with transaction.atomic():
                # The host row serialises allocators of one host; the unique constraint on
                # (host, vnc_port) is the safety net.
                Host.objects.select_for_update().filter(pk=vm.host_id).first()
                used = set(VirtualMachine.objects.filter(host_id=vm.host_id, vnc_port__isnull=False)
                           .values_list("vnc_port", flat=True)) | set(avoid)
                port = next((p for p in range(first, last + 1) if p not in used), None)
                if port is None:
                    raise PoolExhausted(
                        f"No free VNC port is left on host {vm.host} ({first}-{last})."
                    )
                VirtualMachine.objects.filter(pk=vm.pk).update(vnc_port=port)
                vm.vnc_port = port
                return port
        except IntegrityError:
            continue
    raise PoolExhausted(f"Could not take a VNC port on host {vm.host}; try again.")


def vnc_port_release(*, vm: VirtualMachine) -> None:
    """Give back the VM's VNC port."""
    from vms.models import VirtualMachine

    VirtualMachine.objects.filter(pk=vm.pk).update(vnc_port=None)
    vm.vnc_port = None
