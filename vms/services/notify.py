"""E-mail: to requesters and approvers once a change commits; about failed operations."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse

from operations.models import Operation, OperationKind

from ..models import VMRequest

logger = logging.getLogger(__name__)


def notify(*, recipients: Iterable[str], subject: str, body: str) -> None:
    """Send an e-mail after the surrounding transaction commits."""
    to = sorted({r for r in recipients if r})
    if not to:
        return

    def _send() -> None:
        try:
            send_mail(f"[VM portal] {subject}", body, settings.DEFAULT_FROM_EMAIL, to)
        except Exception:  # a mail outage must not undo an approval
            logger.exception("could not send mail %r to %s", subject, to)

    transaction.on_commit(_send)


def absolute_url(name: str, *args: object) -> str:
    """Return the portal URL of a named view for use in mail."""
    return settings.PORTAL_BASE_URL.rstrip("/") + reverse(name, args=args)


# ---- failed operations: the owner hears in plain words of their own (admins: the digest,
# `operations.alerts`) ----

def owner_asked_for(op: Operation) -> bool:
    """Return whether the VM's owner asked for the operation, directly or by a request."""
    vm = op.vm
    if vm is None:
        return False
    if op.requested_by_id == vm.owner_id or op.kind == OperationKind.INSTALL:
        return True
    request_id = op.arguments.get("request") if isinstance(op.arguments, dict) else None
    return bool(request_id) and VMRequest.objects.filter(
        pk=request_id, requester_id=vm.owner_id).exists()


def owner_tell_failure(op: Operation) -> None:
    """Tell the VM's owner in plain words that an operation they asked for failed."""
    if not owner_asked_for(op):
        return
    vm = op.vm
    notify(recipients=[vm.owner.email],
           subject=f"{op.get_kind_display()} of your VM {vm.name} failed",
           body=(f"{op.message}\n\n{absolute_url('vms:vm_detail', vm.pk)}"))
