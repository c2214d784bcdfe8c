"""Adding ranges of private and public addresses, validated as a whole before any is saved."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import MAC_VALIDATOR, VLAN, PrivateIP, PublicIP

# QEMU's prefix: its first octet has the locally-administered bit set and the multicast bit
# clear, so generated MACs never collide with a vendor's.
MAC_PREFIX = (0x52, 0x54, 0x00)


def _address(field: str, text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError as exc:
        raise ValidationError({field: f"'{text}' is not an IPv4 address."}) from exc


def parse_range(first: str, last: str) -> list[ipaddress.IPv4Address]:
    """Return every address from first to last, refusing reversed and oversized ranges."""
    lo, hi = _address("first", first), _address("last", last)
    if hi < lo:
        raise ValidationError({"last": f"The range is reversed: {hi} comes before {lo}."})
    size = int(hi) - int(lo) + 1
    limit = settings.PORTAL["MAX_RANGE"]
    if size > limit:
        raise ValidationError(
            {"last": f"The range holds {size} addresses; add at most {limit} at once."}
        )
    return [ipaddress.IPv4Address(int(lo) + i) for i in range(size)]


def mac_is_local_unicast(mac: str) -> bool:
    """Return whether the MAC is locally administered and unicast."""
    first = int(mac.split(":")[0], 16)
    return bool(first & 0x02) and not first & 0x01


def macs_generate(count: int, taken: Iterable[str] = ()) -> list[str]:
    """Return `count` new locally administered unicast MACs, unique among themselves and taken."""
    used = set(taken) | set(PrivateIP.objects.values_list("mac", flat=True))
    out: list[str] = []
    while len(out) < count:
        mac = ":".join(f"{b:02x}" for b in (*MAC_PREFIX, *secrets.token_bytes(3)))
        if mac not in used:
            used.add(mac)
            out.append(mac)
    return out


def _clean_macs(macs: list[str], count: int) -> list[str]:
    cleaned = [m.strip().lower().replace("-", ":") for m in macs if m.strip()]
    if len(cleaned) != count:
        raise ValidationError({"macs": f"Give one MAC per address: {count} expected, "
                                       f"{len(cleaned)} given."})
    for mac in cleaned:
        try:
            MAC_VALIDATOR(mac)
        except ValidationError as exc:
            raise ValidationError({"macs": f"'{mac}' is not a MAC address."}) from exc
        if int(mac.split(":")[0], 16) & 0x01:
            raise ValidationError({"macs": f"{mac} is a multicast MAC."})
    dupes = sorted({m for m in cleaned if cleaned.count(m) > 1})
    if dupes:
        raise ValidationError({"macs": f"Repeated MAC: {', '.join(dupes)}."})
    taken = sorted(PrivateIP.objects.filter(mac__in=cleaned).values_list("mac", flat=True))
    if taken:
        raise ValidationError({"macs": f"Already in the pool: {', '.join(taken[:5])}."})
    return cleaned


def _overlap(addresses: list[ipaddress.IPv4Address]) -> list[str]:
    texts = [str(a) for a in addresses]
    found = [*PrivateIP.objects.filter(address__in=texts).values_list("address", flat=True),
             *PublicIP.objects.filter(address__in=texts).values_list("address", flat=True)]
    return sorted(found, key=lambda a: int(ipaddress.IPv4Address(a)))


def private_range_add(*, vlan: VLAN, first: str, last: str,
                      macs: list[str] | None = None) -> list[PrivateIP]:
    """Add the private addresses first..last to the VLAN, each with a given or new MAC."""
    addresses = parse_range(first, last)
    net = vlan.network
    outside = [a for a in (addresses[0], addresses[-1]) if a not in net]
    if outside:
        raise ValidationError({"first" if outside[0] == addresses[0] else "last":
                               f"{outside[0]} is outside {vlan.name}'s subnet {net}."})
    reserved = {net.network_address, net.broadcast_address} if net.prefixlen < 31 else set()
    if vlan.gateway:
        reserved.add(ipaddress.IPv4Address(vlan.gateway))
    clash = sorted(a for a in addresses if a in reserved)
    if clash:
        raise ValidationError({"first": f"{clash[0]} is the subnet's network, broadcast or "
                                        "gateway address."})
    with transaction.atomic():
        overlap = _overlap(addresses)
        if overlap:
            more = f" and {len(overlap) - 3} more" if len(overlap) > 3 else ""
            raise ValidationError({"first": f"Already in a pool: {', '.join(overlap[:3])}{more}."})
        mac_list = (_clean_macs(macs, len(addresses)) if macs
                    else macs_generate(len(addresses)))
        rows = [PrivateIP(vlan=vlan, address=str(a), mac=m) for a, m in zip(addresses, mac_list,
                                                                            strict=True)]
        return PrivateIP.objects.bulk_create(rows)


def public_range_add(*, first: str, last: str) -> list[PublicIP]:
    """Add the public addresses first..last to the public pool."""
    addresses = parse_range(first, last)
    for a in (addresses[0], addresses[-1]):
        if a.is_loopback or a.is_multicast or a.is_unspecified or a.is_link_local or a.is_reserved:
            raise ValidationError({"first": f"{a} cannot be a public address."})
    vlans = [v for v in VLAN.objects.all() if any(a in v.network for a in
                                                  (addresses[0], addresses[-1]))]
    if vlans:
        raise ValidationError({"first": f"The range lies inside VLAN {vlans[0].name}'s subnet."})
    with transaction.atomic():
        overlap = _overlap(addresses)
        if overlap:
            raise ValidationError({"first": f"Already in a pool: {', '.join(overlap[:3])}."})
        return PublicIP.objects.bulk_create([PublicIP(address=str(a)) for a in addresses])
