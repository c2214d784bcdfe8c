"""NAT backends: forward a public IPv4 address to a VM's private one on the NAT box.

Plain values in, plain values out; no Django models. `IptablesNat` reaches the NAT box through
the one SSH runner (`hosts.remote`) with argv lists only. Every rule it adds carries the comment
`portal-nat`, so `clear` can find and remove the portal's rules and nothing else. Like Baadal's
software NAT, a mapping is a /32 alias on the public interface plus a DNAT rule for traffic to
the public address and an SNAT rule for traffic from the private one. A port forward (SSH for a
VM without a public IP) is a DNAT rule from one TCP port of the NAT box's own address to the
private address's port 22, plus FORWARD accepts both ways.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from hosts.remote import RemoteError, RemoteHost, Result, run

logger = logging.getLogger(__name__)

COMMENT = "portal-nat"
IPTABLES_WAIT_SECONDS = "10"
_INTERFACE_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
# iptables -C: 0 the rule exists, 1 it does not; anything else is a real failure.
_RULE_ABSENT = 1


def _ipv4(value: object, what: str) -> str:
    """Return value as a canonical unicast IPv4 address, or raise ValueError."""
    if not isinstance(value, str | ipaddress.IPv4Address):
        raise ValueError(f"{what} must be an IPv4 address, not {type(value).__name__}")
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} is not an IPv4 address") from exc
    if (
        address.is_unspecified
        or address.is_loopback
        or address.is_multicast
        or address.is_link_local
        or address.is_reserved
    ):
        raise ValueError(f"{what} {value} cannot be NATed (not a unicast host address)")
    return str(address)


@dataclass(frozen=True)
class NatMapping:
    """One public IPv4 address forwarded both ways to one private IPv4 address."""

    public_ip: str
    private_ip: str

    def __post_init__(self) -> None:
        """Refuse anything but two different unicast IPv4 addresses; store them canonical."""
        public = _ipv4(self.public_ip, "public IP")
        private = _ipv4(self.private_ip, "private IP")
        if public == private:
            raise ValueError(f"public and private IP are the same ({public})")
        object.__setattr__(self, "public_ip", public)
        object.__setattr__(self, "private_ip", private)


def _port(value: object, what: str) -> int:
    """Return value as a TCP port number, or raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{what} {value!r} is not a TCP port (1-65535)")
    return value


@dataclass(frozen=True)
class PortForward:
    """One TCP port of the NAT box's address forwarded to a port of a private address."""

    public_ip: str
    public_port: int
    private_ip: str
    private_port: int = 22

    def __post_init__(self) -> None:
        """Refuse anything but unicast IPv4 addresses and real port numbers; store canonical."""
        object.__setattr__(self, "public_ip", _ipv4(self.public_ip, "public IP"))
        object.__setattr__(self, "private_ip", _ipv4(self.private_ip, "private IP"))
        if self.public_ip == self.private_ip:
            raise ValueError(f"public and private IP are the same ({self.public_ip})")
        _port(self.public_port, "public port")
        _port(self.private_port, "private port")


class NatBackend(Protocol):
    """What the networking services need from a NAT box."""

    def apply(self, mapping: NatMapping) -> None:
        """Make the mapping effective; do nothing for what is already there."""
        ...

    def remove(self, mapping: NatMapping) -> None:
        """Remove exactly what apply added; do nothing for what is already gone."""
        ...

    def forward(self, forward: PortForward) -> None:
        """Make the port forward effective; do nothing for what is already there."""
        ...

    def unforward(self, forward: PortForward) -> None:
        """Remove exactly what forward added; do nothing for what is already gone."""
        ...

    def clear(self, mappings: Iterable[NatMapping]) -> None:
        """Remove every rule the portal added (forwards too) and the aliases of these mappings."""
        ...


class NullNat:
    """A portal without a NAT box: record nothing, only log."""

    def apply(self, mapping: NatMapping) -> None:
        """Log the mapping that a NAT box would apply."""
        logger.info("NAT disabled: not mapping %s -> %s", mapping.public_ip, mapping.private_ip)

    def remove(self, mapping: NatMapping) -> None:
        """Log the mapping that a NAT box would remove."""
        logger.info("NAT disabled: not unmapping %s -> %s", mapping.public_ip, mapping.private_ip)

    def forward(self, forward: PortForward) -> None:
        """Log the port forward that a NAT box would apply."""
        logger.info("NAT disabled: not forwarding %s:%d -> %s:%d", *_ends(forward))

    def unforward(self, forward: PortForward) -> None:
        """Log the port forward that a NAT box would remove."""
        logger.info("NAT disabled: not removing %s:%d -> %s:%d", *_ends(forward))

    def clear(self, mappings: Iterable[NatMapping]) -> None:
        """Log that there is nothing to clear."""
        logger.info("NAT disabled: nothing to clear")


class IptablesNat:
    """Software NAT on a Linux box over SSH: a /32 alias plus DNAT and SNAT rules per mapping."""

    def __init__(self, host: RemoteHost, interface: str) -> None:
        """Keep the NAT box and the interface that carries its public addresses."""
        if not isinstance(interface, str) or not _INTERFACE_RE.match(interface):
            raise ValueError(
                f"interface {interface!r} is not a Linux interface name "
                "(1-15 of letters, digits, '_', '.', '-')"
            )
        if interface in {".", ".."}:
            raise ValueError(f"interface {interface!r} is not a Linux interface name")
        self.host = host
        self.interface = interface

    # ---- commands ----

    def _iptables(self, *args: str, table: str = "nat", check: bool = True) -> Result:
        return run(
            self.host,
            ["iptables", "-w", IPTABLES_WAIT_SECONDS, "-t", table, *args],
            check=check,
        )

    @staticmethod
    def rules(mapping: NatMapping) -> list[list[str]]:
        """Return the DNAT and SNAT rule specifications (chain first) of the mapping."""
        tag = ["-m", "comment", "--comment", COMMENT]
        public, private = mapping.public_ip, mapping.private_ip
        return [
            ["PREROUTING", "-d", f"{public}/32", *tag, "-j", "DNAT", "--to-destination", private],
            ["POSTROUTING", "-s", f"{private}/32", *tag, "-j", "SNAT", "--to-source", public],
        ]

    @staticmethod
    def forward_rules(forward: PortForward) -> list[tuple[str, str, list[str]]]:
        """Return (table, add command, rule specification) of each rule of the port forward."""
        tag = ["-m", "comment", "--comment", COMMENT]
        private, port = f"{forward.private_ip}/32", str(forward.private_port)
        return [
            ("nat", "-A", ["PREROUTING", "-d", f"{forward.public_ip}/32", "-p", "tcp",
                           "-m", "tcp", "--dport", str(forward.public_port), *tag,
                           "-j", "DNAT", "--to-destination",
                           f"{forward.private_ip}:{forward.private_port}"]),
            # Inserted, not appended: an accept after a box's own final DROP would never match.
            ("filter", "-I", ["FORWARD", "-d", private, "-p", "tcp", "-m", "tcp",
                              "--dport", port, *tag, "-j", "ACCEPT"]),
            ("filter", "-I", ["FORWARD", "-s", private, "-p", "tcp", "-m", "tcp",
                              "--sport", port, *tag, "-j", "ACCEPT"]),
        ]

    def _rule_exists(self, rule: list[str], table: str = "nat") -> bool:
        result = self._iptables("-C", *rule, table=table, check=False)
        if result.exit_status == 0:
            return True
        if result.exit_status == _RULE_ABSENT:
            return False
        raise RemoteError(
            f"{self.host.label}: checking {table} rule {shlex.join(rule)} failed "
            f"with status {result.exit_status}: {result.stderr.strip()}",
            exit_status=result.exit_status,
            stderr=result.stderr,
        )

    def _aliases(self) -> set[str]:
        """Return the addresses (with prefix) on the public interface."""
        out = run(self.host, ["ip", "-o", "addr", "show", "dev", self.interface]).stdout
        found: set[str] = set()
        for line in out.splitlines():
            words = line.split()
            for i, word in enumerate(words[:-1]):
                if word == "inet":
                    found.add(words[i + 1])
        return found

    def _alias_del(self, public_ip: str) -> None:
        run(self.host, ["ip", "addr", "del", f"{public_ip}/32", "dev", self.interface])

    # ---- the backend ----

    def apply(self, mapping: NatMapping) -> None:
        """Add the public alias, the DNAT and the SNAT rule, each only when missing."""
        alias = f"{mapping.public_ip}/32"
        if alias not in self._aliases():
            run(self.host, ["ip", "addr", "add", alias, "dev", self.interface])
        for rule in self.rules(mapping):
            if not self._rule_exists(rule):
                self._iptables("-A", *rule)
        logger.info("NAT %s: mapped %s -> %s", self.host.label, *_pair(mapping))

    def remove(self, mapping: NatMapping) -> None:
        """Delete the mapping's two rules and its alias, each only when present."""
        for rule in reversed(self.rules(mapping)):
            if self._rule_exists(rule):
                self._iptables("-D", *rule)
        if f"{mapping.public_ip}/32" in self._aliases():
            self._alias_del(mapping.public_ip)
        logger.info("NAT %s: unmapped %s -> %s", self.host.label, *_pair(mapping))

    def forward(self, forward: PortForward) -> None:
        """Add the port forward's DNAT rule and FORWARD accepts, each only when missing."""
        for table, add, rule in self.forward_rules(forward):
            if not self._rule_exists(rule, table):
                self._iptables(add, *rule, table=table)
        logger.info("NAT %s: forwarded %s:%d -> %s:%d", self.host.label, *_ends(forward))

    def unforward(self, forward: PortForward) -> None:
        """Delete the port forward's rules, each only when present."""
        for table, _add, rule in reversed(self.forward_rules(forward)):
            if self._rule_exists(rule, table):
                self._iptables("-D", *rule, table=table)
        logger.info("NAT %s: removed forward %s:%d -> %s:%d", self.host.label, *_ends(forward))

    def clear(self, mappings: Iterable[NatMapping]) -> None:
        """Delete every rule tagged portal-nat and the /32 aliases of the given mappings."""
        publics = sorted({mapping.public_ip for mapping in mappings})
        deleted = 0
        for table, chain in (("nat", "PREROUTING"), ("nat", "POSTROUTING"),
                             ("filter", "FORWARD")):
            listing = self._iptables("-S", chain, table=table).stdout
            for line in listing.splitlines():
                words = shlex.split(line)
                if len(words) < 2 or words[0] != "-A" or words[1] != chain:
                    continue
                if not _has_comment(words):
                    continue
                self._iptables("-D", *words[1:], table=table)
                deleted += 1
        aliases = self._aliases()
        for public in publics:
            if f"{public}/32" in aliases:
                self._alias_del(public)
        logger.info(
            "NAT %s: cleared %d portal rules and the aliases of %d addresses",
            self.host.label,
            deleted,
            len(publics),
        )


def _pair(mapping: NatMapping) -> tuple[str, str]:
    return mapping.public_ip, mapping.private_ip


def _ends(forward: PortForward) -> tuple[str, int, str, int]:
    return forward.public_ip, forward.public_port, forward.private_ip, forward.private_port


def _has_comment(words: list[str]) -> bool:
    """Tell whether an `iptables -S` rule carries the portal's comment."""
    return any(words[i] == "--comment" and words[i + 1] == COMMENT for i in range(len(words) - 1))


def backend_from_settings(config: dict[str, Any]) -> NatBackend:
    """Return the NAT backend the settings choose."""
    kind = str(config.get("BACKEND") or "none").strip().lower()
    if kind == "none":
        return NullNat()
    if kind == "iptables-ssh":
        address = str(config.get("ADDRESS") or "").strip()
        host_key = str(config.get("HOST_KEY") or "").strip()
        key_file = str(config.get("KEY_FILE") or "").strip()
        missing = [
            name
            for name, value in (
                ("ADDRESS", address),
                ("HOST_KEY", host_key),
                ("KEY_FILE", key_file),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"the iptables-ssh NAT backend needs {', '.join(missing)}")
        try:
            port = int(config.get("PORT") or 22)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"NAT PORT {config.get('PORT')!r} is not a number") from exc
        host = RemoteHost(
            address=address,
            port=port,
            username=str(config.get("USERNAME") or "root"),
            host_key=host_key,
            key_filename=key_file,
        )
        return IptablesNat(host, str(config.get("INTERFACE") or "eth0"))
    raise ValueError(f"unknown NAT backend {kind!r}: use none or iptables-ssh")
