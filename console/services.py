"""Issue and redeem console tokens: the only writes of the console."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from core.errors import PortalError
from hosts.virt import VirtError, vnc_listen_address
from vms.models import VirtualMachine, VMState

from .conf import origin_allowed
from .models import ConsoleKind, ConsoleToken

TOKEN_BYTES = 32  # 256 bits from the OS's CSPRNG
# A console shows something only while qemu runs the VM.
CONSOLE_STATES = (VMState.RUNNING, VMState.PAUSED)
# Tokens nobody used are kept this long for the record, then removed.
KEEP_UNUSED = timedelta(days=1)


class ConsoleRefused(PortalError):
    """A token or a connection that the proxy must turn away, with a reason for the user."""


@dataclass(frozen=True)
class ConsoleTarget:
    """What the proxy needs to open the console a redeemed token stands for."""

    token_id: int
    user_id: int
    kind: str
    vm_name: str
    domain: str
    host_uri: str
    vnc_address: str
    vnc_port: int | None
    vnc_password: str


def token_hash(token: str) -> str:
    """Return the SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def _check_console(vm: VirtualMachine, kind: str) -> None:
    if kind not in ConsoleKind.values:
        raise PortalError(f"'{kind}' is not a console.")
    if vm.state not in CONSOLE_STATES or vm.host_id is None:
        raise PortalError(f"{vm.name} is {vm.get_state_display().lower()}; its console opens "
                          "while it runs.")
    if kind == ConsoleKind.VNC and not vm.vnc_port:
        raise PortalError(f"{vm.name} has no graphical display.")


def console_token_issue(*, user, vm: VirtualMachine, kind: str) -> str:  # noqa: ANN001
    """Make a single-use console token for the user and VM; return it (only its hash is kept)."""
    if not user.has_perm("vms.operate_vm", vm):
        raise PortalError(f"You may not open the console of {vm.name}.")
    _check_console(vm, kind)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = timezone.now()
    record = ConsoleToken(token_hash=token_hash(token), user=user, vm=vm, host_id=vm.host_id,
                          kind=kind,
                          expires_at=now + timedelta(seconds=settings.PORTAL_CONSOLE_TOKEN_SECONDS))
    record.full_clean()
    with transaction.atomic():
        ConsoleToken.objects.filter(expires_at__lt=now - KEEP_UNUSED, uses=0).delete()
        record.save()
    return token


def _open_for_user(user_id: int, now) -> int:  # noqa: ANN001
    # A proxy that died cannot close its sessions; they stop counting after the longest session.
    since = now - timedelta(seconds=settings.PORTAL_CONSOLE_MAX_SECONDS)
    total = ConsoleToken.objects.filter(
        user_id=user_id, open_connections__gt=0, redeemed_at__gte=since,
    ).aggregate(n=Sum("open_connections"))["n"]
    return total or 0


def _session_user_id(session_key: str | None) -> str | None:
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user_id = store.get(SESSION_KEY)
    return None if user_id is None else str(user_id)


def console_token_redeem(*, token: str, kind: str, origin: str | None,
                         session_key: str | None = None) -> ConsoleTarget:
    """Use a token once for a console of the given kind; raise ConsoleRefused if it may not be.

    With PORTAL_CONSOLE_SAME_SESSION the websocket must also carry the portal session of the
    user the token was issued to, so a token that leaked to someone else is worth nothing.
    """
    if not origin_allowed(origin):
        raise ConsoleRefused("This page may not open consoles.")
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise ConsoleRefused("The console link is not valid.")
    now = timezone.now()
    digest = token_hash(token)
    with transaction.atomic():
        # One conditional UPDATE: two connections racing for one token cannot both win.
        won = ConsoleToken.objects.filter(
            token_hash=digest, kind=kind, expires_at__gt=now,
            uses__lt=settings.PORTAL_CONSOLE_PER_TOKEN,
        ).update(uses=F("uses") + 1, open_connections=F("open_connections") + 1,
                 redeemed_at=now, origin=(origin or "")[:255])
        if not won:
            raise ConsoleRefused("This console link was used already or has expired; "
                                 "open the console again.")
        record = ConsoleToken.objects.select_related("vm", "host", "user").get(token_hash=digest)
        if _open_for_user(record.user_id, now) > settings.PORTAL_CONSOLE_PER_USER:
            raise ConsoleRefused(f"You have {settings.PORTAL_CONSOLE_PER_USER} consoles open "
                                 "already; close one first.")
        if settings.PORTAL_CONSOLE_SAME_SESSION and \
                _session_user_id(session_key) != str(record.user_id):
            raise ConsoleRefused("This console link belongs to another login.")
        vm, user = record.vm, record.user
        if not user.is_active or not user.has_perm("vms.operate_vm", vm):
            raise ConsoleRefused("You may no longer open this console.")
        if vm.host_id != record.host_id:
            raise ConsoleRefused(f"{vm.name} moved to another host; open the console again.")
        try:
            _check_console(vm, kind)
            address = vnc_listen_address(record.host.uri, record.host.address)
        except (PortalError, VirtError) as exc:
            raise ConsoleRefused(str(exc)) from exc
    return ConsoleTarget(
        token_id=record.pk, user_id=record.user_id, kind=kind, vm_name=vm.name,
        domain=vm.domain_name, host_uri=record.host.uri, vnc_address=address,
        vnc_port=vm.vnc_port, vnc_password=vm.vnc_password,
    )


def console_session_close(*, token_id: int) -> None:
    """Record that a console connection opened with the token has ended."""
    ConsoleToken.objects.filter(pk=token_id, open_connections__gt=0).update(
        open_connections=F("open_connections") - 1, closed_at=timezone.now())
