"""Allocation of private IP + MAC pairs, public IPs and SSH ports, never twice."""

from __future__ import annotations

import ipaddress
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.errors import PoolExhausted, PortalError

from .models import VLAN, PrivateIP, PublicIP, SSHPort

if TYPE_CHECKING:
    from vms.models import VirtualMachine


def ip_allocate(*, vm: VirtualMachine, vlan: VLAN) -> PrivateIP:
    """Give the VM a free private IP and MAC on the VLAN, keeping one it already holds there."""
    take = _allocate_postgres if connection.vendor == "postgresql" else _allocate
    ip = take(vm, vlan, timezone.now())
    if ip is None:
        raise PoolExhausted(f"No free private IP address is left on {vlan}.")
    return ip


def _allocate(vm: VirtualMachine, vlan: VLAN, now: datetime) -> PrivateIP | None:
    try:
        return _take(vm, vlan, now)
    except IntegrityError:
        # Another allocator gave this VM its address on the VLAN first (the one-per-VM-and-
        # VLAN constraint refused ours, and our row went back to the pool): read theirs.
        return _take(vm, vlan, now)


def _take(vm: VirtualMachine, vlan: VLAN, now: datetime) -> PrivateIP | None:
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
    params = {"vm": vm.pk, "vlan": vlan.pk, "now": now}
    try:
        row = _run_one(sql, params)
    except IntegrityError:
        # Concurrent statements for one VM both saw it hold nothing and took different rows;
        # the constraint let the first commit win. Run again: "held" now finds its row.
        row = _run_one(sql, params)
    if row is None:
        return None
    return PrivateIP(id=row[0], address=row[1], mac=row[2], allocated_at=row[3], vlan=vlan,
                     vm=vm)


def _run_one(sql: str, params: dict[str, Any]) -> tuple | None:
    # Alone (autocommit) the statement is its own transaction, one round trip; inside a
    # caller's transaction a savepoint keeps a refused statement from aborting all of it.
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


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


# --- forwarded SSH ports ----------------------------------------------------------------------

class SSHPortSettingsError(PortalError):
    """The settings of forwarded SSH ports cannot be used."""


@dataclass(frozen=True)
class SSHPortConfig:
    """Where forwarded SSH ports live: the NAT box's address and the range of ports."""

    address: str
    first: int
    last: int

    @property
    def size(self) -> int:
        """Return how many ports the range holds."""
        return self.last - self.first + 1


def parse_port_range(text: str) -> tuple[int, int]:
    """Return (first, last) of a "first-last" TCP port range, or raise ValueError."""
    first_text, dash, last_text = str(text).strip().partition("-")
    try:
        if not dash:
            raise ValueError
        first, last = int(first_text), int(last_text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port range such as 10000-15000") from None
    if not (1 <= first <= 65535 and 1 <= last <= 65535):
        raise ValueError(f"{text!r} reaches outside the TCP ports 1-65535")
    if last < first:
        raise ValueError(f"{text!r} is reversed: {last} comes before {first}")
    return first, last


def ssh_port_config_from(nat: dict[str, Any]) -> SSHPortConfig | None:
    """Return where SSH ports are forwarded, None when no address is set; raise on bad values.

    The address is PUBLIC_ADDRESS, else the address the portal reaches the NAT box on when
    that is an IPv4 address.
    """
    address = str(nat.get("PUBLIC_ADDRESS") or "").strip()
    if not address:
        address = str(nat.get("ADDRESS") or "").strip()
        try:
            fallback = ipaddress.IPv4Address(address)
        except ValueError:
            return None  # no address, or a host name: nothing to put in a DNAT rule
        if not _forwardable(fallback):
            return None
    try:
        parsed = ipaddress.IPv4Address(address)
    except ValueError:
        raise SSHPortSettingsError(
            f"PORTAL_NAT_PUBLIC_ADDRESS {address!r} is not an IPv4 address; give the NAT "
            "box's address that forwarded SSH ports listen on.") from None
    if not _forwardable(parsed):
        raise SSHPortSettingsError(f"PORTAL_NAT_PUBLIC_ADDRESS {address} cannot take forwarded "
                                   "SSH ports (not a unicast address of the NAT box).")
    try:
        first, last = parse_port_range(nat.get("FORWARD_PORTS") or "")
    except ValueError as exc:
        raise SSHPortSettingsError(f"PORTAL_NAT_FORWARD_PORTS: {exc}.") from None
    box_port = int(nat.get("PORT") or 22)
    if str(nat.get("ADDRESS") or "").strip() == address and first <= box_port <= last:
        raise SSHPortSettingsError(
            f"PORTAL_NAT_FORWARD_PORTS {first}-{last} holds port {box_port}, on which the "
            "portal reaches the NAT box itself; choose a range without it.")
    return SSHPortConfig(address=str(parsed), first=first, last=last)


def _forwardable(address: ipaddress.IPv4Address) -> bool:
    return not (address.is_unspecified or address.is_loopback or address.is_multicast
                or address.is_link_local or address.is_reserved)


def ssh_port_config() -> SSHPortConfig | None:
    """Return where SSH ports are forwarded under the settings, None when they are not."""
    return ssh_port_config_from(settings.PORTAL_NAT)


def ssh_ports_offered() -> bool:
    """Tell whether VMs may ask for a forwarded SSH port (bad settings offer none)."""
    try:
        return ssh_port_config() is not None
    except SSHPortSettingsError:
        return False


def _required_config() -> SSHPortConfig:
    config = ssh_port_config()
    if config is None:
        raise PortalError("This portal forwards no SSH ports: no NAT box address is set "
                          "(PORTAL_NAT_PUBLIC_ADDRESS). Ask an admin.")
    return config


def ssh_ports_fill(config: SSHPortConfig | None = None) -> int:
    """Record every port of the configured range as a pool row; return how many were added."""
    config = config or _required_config()
    in_range = SSHPort.objects.filter(address=config.address,
                                      port__range=(config.first, config.last))
    if in_range.count() == config.size:
        return 0
    have = set(in_range.values_list("port", flat=True))
    missing = [SSHPort(address=config.address, port=p)
               for p in range(config.first, config.last + 1) if p not in have]
    # Another allocator may fill at the same time: the unique constraint keeps one of each.
    SSHPort.objects.bulk_create(missing, ignore_conflicts=True, batch_size=1000)
    return len(missing)


def _take_ssh_port(vm: VirtualMachine, config: SSHPortConfig) -> SSHPort | None:
    with transaction.atomic():
        held = SSHPort.objects.filter(vm=vm).first()
        if held is not None:
            return held
        row = (SSHPort.objects.select_for_update(skip_locked=True)
               .filter(address=config.address, port__range=(config.first, config.last),
                       vm__isnull=True)
               .order_by("port").first())
        if row is not None:
            row.vm, row.allocated_at = vm, timezone.now()
            row.save(update_fields=["vm", "allocated_at"])
        return row


def ssh_port_allocate(*, vm: VirtualMachine) -> SSHPort:
    """Give the VM the lowest free SSH port of the configured range, keeping one it holds."""
    config = _required_config()
    row = _take_ssh_port(vm, config)
    if row is None and ssh_ports_fill(config):
        row = _take_ssh_port(vm, config)
    if row is None:
        raise PoolExhausted(f"No free SSH port is left on {config.address} "
                            f"({config.first}-{config.last}).")
    return row


def ssh_port_release(*, vm: VirtualMachine) -> int:
    """Give back the VM's SSH port to the pool."""
    return SSHPort.objects.filter(vm=vm).update(vm=None, private_address=None,
                                               allocated_at=None, applied_at=None)
